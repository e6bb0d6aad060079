"""Admission: may this principal make this request now? And, once answered, what did it use?

``Gatekeeper.admit`` checks the model is allowed, then asks the limiter for everything at once:
requests and tokens per minute of the key, its team and the model, and a reservation against
the key's and team's budgets. Token limits reserve the request's estimate; budgets reserve its
ceiling (``noa.routing.tokens``: the most its prompt and ``n`` completions can use) at the
highest price among the model's providers, so requests admitted together never overspend.
Refusals are 429 with Retry-After. ``settle`` reconciles the reservation with the usage the
answer reported (a cache hit or a failure refunds it), and returns the usage record to write.
Every admitted answer carries OpenAI's ``x-ratelimit-*`` headers for the tightest request and
token limits that applied.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from noa.access.identity import Principal
from noa.access.keys import Limits
from noa.access.limiter import Limiter
from noa.access.limits import BucketLevel, Decision, Reserve, Take
from noa.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from noa.observability.metrics import Metrics
from noa.routing.plan import Plan
from noa.routing.results import RouteInfo
from noa.routing.tokens import DEFAULT_COMPLETION_CEILING
from noa.wire.operations import Operation

Body = dict[str, Any]
Clock = Callable[[], float]
# (scope "key"|"team", its id, period start) -> USD spent since then, from the usage records
SpendLookup = Callable[[str, str, float], Awaitable[float]]
TOTAL_S = 10 * 365 * 86_400.0


def period_bounds(period: str, now: float) -> tuple[str, float, float]:
    """(label, start, seconds until it ends) of the UTC period containing ``now``."""
    t = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + datetime.timedelta(days=1)
        label = f"{start:%Y-%m-%d}"
    elif period == "week":
        start = (t - datetime.timedelta(days=t.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        end = start + datetime.timedelta(days=7)
        label = f"{start:%G-W%V}"
    elif period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(t.year, t.month)[1]
        end = start + datetime.timedelta(days=days)
        label = f"{start:%Y-%m}"
    else:
        return "total", 0.0, TOTAL_S
    return label, start.timestamp(), end.timestamp() - now


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes >= 1:
        return f"{int(minutes)}m{int(rest)}s"
    return f"{rest:.3g}s"


@dataclass
class Ticket:
    """One admitted request: what was reserved, and the headers to send."""

    principal: Principal
    operation: Operation
    model_id: str
    started: float
    token_buckets: dict[str, float] = field(default_factory=dict)  # bucket -> limit
    tokens_reserved: int = 0
    budgets: list[str] = field(default_factory=list)
    dollars_reserved: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, suffix in (("rpm", "requests"), ("tpm", "tokens")):
        levels = [lv for k, lv in decision.levels.items() if k.startswith(kind + ":")]
        if not levels:
            continue
        tightest: BucketLevel = min(levels, key=lambda lv: (lv.remaining, -lv.reset_s))
        headers[f"x-ratelimit-limit-{suffix}"] = str(int(tightest.limit))
        headers[f"x-ratelimit-remaining-{suffix}"] = str(int(tightest.remaining))
        headers[f"x-ratelimit-reset-{suffix}"] = duration(tightest.reset_s)
    return headers


class Gatekeeper:
    """Admits planned requests against their principal's limits and budgets."""

    def __init__(
        self,
        limiter: Limiter,
        model_limits: dict[str, Limits] | None = None,
        spend: SpendLookup | None = None,
        *,
        completion_estimate: int = 256,
        completion_ceiling: int = DEFAULT_COMPLETION_CEILING,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.limiter = limiter
        self.model_limits = model_limits or {}
        self.spend = spend
        self.completion_estimate = completion_estimate
        self.completion_ceiling = completion_ceiling
        self.clock = clock
        # budget key (its period in its name) -> what the usage records said was spent before
        # this process first used it: read once, by one request, whoever else is waiting
        self._seeds: dict[str, asyncio.Future[float]] = {}
        self._periods: dict[str, tuple[str, float, float]] = {}  # period -> (label, start, end)
        self._refusals = metrics["noa_rate_limit_rejections_total"] if metrics else None

    def _period(self, period: str, now: float) -> tuple[str, float, float]:
        """``period_bounds``, computed once per period rather than per request."""
        known = self._periods.get(period)
        if known is None or not known[1] <= now < known[2]:
            label, start, remaining = period_bounds(period, now)
            known = self._periods[period] = (label, start, now + remaining)
        return known[0], known[1], known[2] - now

    async def _seed(self, budget: str, scope: str, scope_id: str, since: float) -> float:
        """Spent in this period before the limiter knew the budget. The limiter keeps the
        counter from then on, so the records are read once per budget and period."""
        if self.spend is None:
            return 0.0
        known = self._seeds.get(budget)
        if known is None:
            known = asyncio.get_running_loop().create_future()
            self._seeds[budget] = known
            try:
                known.set_result(await self.spend(scope, scope_id, since))
            except Exception as e:
                del self._seeds[budget]  # the next request tries again
                known.set_exception(e)
                known.exception()  # retrieved: waiters (if any) re-raise it
                raise
        return await asyncio.shield(known)

    def needs_check(self, principal: Principal, model_id: str) -> bool:
        return (
            principal.kind in ("key", "jwt")
            or principal.models is not None
            or model_id in self.model_limits
        )

    async def admit(self, principal: Principal, plan: Plan) -> Ticket | None:
        """None when nothing limits this request (the master key on an unlimited model)."""
        model_id = plan.target.model
        if not self.needs_check(principal, model_id):
            return None
        if not principal.allows(model_id):
            raise PermissionDeniedError(
                f"This API key may not use the model `{model_id}`", code="model_not_allowed"
            )
        now = self.clock()
        ticket = Ticket(principal, plan.operation, model_id, now)
        estimate = plan.tokens
        prompt, completion = estimate.prompt, estimate.completion
        completion_max = estimate.completion_max
        if not estimate.limited:  # the request sets no limit: the configured assumptions
            completion = estimate.choices * self.completion_estimate
            if not plan.target.context_length:
                completion_max = estimate.choices * self.completion_ceiling
        tokens = prompt + completion
        takes: list[Take] = []
        scopes: list[tuple[str, str, Limits]] = []
        if principal.kind in ("key", "jwt"):
            scopes.append(("key", principal.id, principal.limits))
        if principal.team:
            scopes.append(("team", principal.team, principal.team_limits))
        model = self.model_limits.get(model_id)
        if model is not None:
            scopes.append(("model", model_id, model))
        for scope, scope_id, limits in scopes:
            if limits.rpm:
                takes.append(Take(f"rpm:{scope}:{scope_id}", limits.rpm, 1))
            if limits.tpm:
                key = f"tpm:{scope}:{scope_id}"
                takes.append(Take(key, limits.tpm, tokens))
                ticket.token_buckets[key] = limits.tpm
        ticket.tokens_reserved = tokens
        reserves: list[Reserve] = []
        budgeted = [
            (s, i, lim) for s, i, lim in scopes if s != "model" and lim.budget_usd is not None
        ]
        if budgeted:
            price_in, price_out = plan.highest_price()
            # the most it can cost: a budget is never overspent by requests admitted together
            amount = estimate.prompt_max * price_in + completion_max * price_out
            ticket.dollars_reserved = amount
            for scope, scope_id, limits in budgeted:
                label, start, remaining = self._period(limits.budget_period or "total", now)
                key = f"budget:{scope}:{scope_id}:{label}"
                seed = await self._seed(key, scope, scope_id, start)
                assert limits.budget_usd is not None
                reserves.append(Reserve(key, limits.budget_usd, amount, remaining, seed))
                ticket.budgets.append(key)
        principal_id = principal.id if principal.kind == "key" else None
        decision = await self.limiter.admit(takes, reserves, principal_id)
        if not decision.allowed:
            if self._refusals is not None:
                self._refusals.inc((decision.reason or "?",))
            raise self._refusal(decision, principal, reserves)
        ticket.headers = _headers(decision)
        return ticket

    @staticmethod
    def _refusal(
        decision: Decision, principal: Principal, reserves: list[Reserve] | None = None
    ) -> Exception:
        if decision.reason == "revoked":
            return AuthenticationError("This API key has been revoked", code="key_revoked")
        scope = (decision.scope or "").split(":")
        what = {"key": "this API key", "team": f"team `{principal.team}`", "model": "this model"}
        whose = what.get(scope[1] if len(scope) > 1 else "", "this request")
        retry = max(1, math.ceil(decision.retry_after_s))
        if decision.reason == "budget":
            period = scope[-1] if len(scope) > 3 else "total"
            refused = next((r for r in reserves or () if r.key == decision.scope), None)
            spent = decision.spent.get(decision.scope or "")
            if refused is not None and spent is not None and spent < refused.limit:
                left = refused.limit - spent
                return RateLimitError(
                    f"The budget of {whose} has ${left:.6g} left for {period}, and this request"
                    f" may cost up to ${refused.amount:.6g} (its prompt and `n` x `max_tokens`"
                    " at the model's highest price; without `max_tokens`, the model's context"
                    " length): set a lower `max_tokens`",
                    code="budget_exceeded",
                    retry_after=retry,
                )
            return RateLimitError(
                f"The budget of {whose} is exhausted for {period}",
                code="budget_exceeded",
                retry_after=retry,
            )
        unit = "requests" if decision.reason == "rpm" else "tokens"
        return RateLimitError(
            f"Rate limit of {whose} reached ({unit} per minute); retry in {retry} s",
            code=f"{unit}_rate_limit_exceeded",
            retry_after=retry,
        )

    @staticmethod
    def cost(route: RouteInfo | None, usage: Body | None) -> tuple[int, int, float]:
        """(prompt tokens, completion tokens, USD) of an answer, at the price of the candidate
        that gave it (the route carries it); an answer from the cache costs nothing."""
        if route is None or not usage or (route.cache or "").startswith("hit"):
            return 0, 0, 0.0
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return prompt, completion, route.cost(prompt, completion)

    async def settle(self, ticket: Ticket, route: RouteInfo | None, usage: Body | None) -> float:
        """Reconcile the reservation with what was used; the answer's cost in USD."""
        prompt, completion, cost = self.cost(route, usage)
        await self.reconcile(ticket, prompt + completion, cost)
        return cost

    async def reconcile(self, ticket: Ticket, used: int, cost: float) -> None:
        """Replace the ticket's reservation with ``used`` tokens and ``cost`` USD."""
        extra = float(used - ticket.tokens_reserved)
        tokens = {k: (limit, extra) for k, limit in ticket.token_buckets.items()}
        dollars = {k: cost - ticket.dollars_reserved for k in ticket.budgets}
        if any(extra for _, extra in tokens.values()) or any(dollars.values()):
            await self.limiter.adjust(tokens, dollars)
