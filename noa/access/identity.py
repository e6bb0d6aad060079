"""Who is calling: the master key, an API key (with its team), or a JWT from an identity provider.

``Authenticator.authenticate`` turns a presented credential into a ``Principal`` or raises 401.
Verified keys are kept for ``cache_s`` per replica so the hot path rarely reads the database;
expiry is checked on every request, and a revocation through the admin API reaches every
replica at once through the shared limiter (see ``noa/access/admission.py``). The cache is
bounded (``key_cache.py``): unknown credentials are kept apart from real keys, so trying many
of them never pushes a busy key out.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from noa.access.key_cache import KeyCache
from noa.access.keys import ApiKey, KeyStore, Limits, Period, Team, TeamStore
from noa.config import JwtConfig
from noa.errors import AuthenticationError

Clock = Callable[[], float]
logger = logging.getLogger("noa.auth")
PERIODS = ("day", "week", "month", "total")


class MasterKey:
    """Checks a presented credential against the configured master key. The key is kept only
    as a SHA-256 digest and compared in constant time, so neither its value nor its length
    leaks through timing."""

    def __init__(self, key: str) -> None:
        self._digest = hashlib.sha256(key.encode("utf-8")).digest()

    def verify(self, presented: str | None) -> bool:
        candidate = hashlib.sha256((presented or "").encode("utf-8")).digest()
        return hmac.compare_digest(candidate, self._digest) and bool(presented)


@dataclass(frozen=True)
class Principal:
    kind: Literal["master", "key", "jwt", "anonymous"]
    id: str  # "master", a key id, "jwt:<sub>", "anonymous"
    team: str | None = None
    scopes: frozenset[str] = frozenset()
    models: frozenset[str] | None = None  # None: every model
    limits: Limits = field(default_factory=Limits)
    team_limits: Limits = field(default_factory=Limits)
    expires_at: float | None = None
    name: str | None = None

    @property
    def admin(self) -> bool:
        return self.kind == "master" or "admin" in self.scopes

    @property
    def tenant(self) -> str | None:
        """Whose cache entries these are: the team, else the key or subject; None: shared."""
        if self.kind in ("master", "anonymous"):
            return None
        return f"team:{self.team}" if self.team else self.id

    @property
    def limited(self) -> bool:
        return self.limits.any() or self.team_limits.any()

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


MASTER = Principal("master", "master")
ANONYMOUS = Principal("anonymous", "anonymous")


def _allowed(*lists: tuple[str, ...] | None) -> frozenset[str] | None:
    sets = [frozenset(x) for x in lists if x is not None]
    if not sets:
        return None
    allowed = sets[0]
    for other in sets[1:]:
        allowed &= other
    return allowed


def key_principal(key: ApiKey, team: Team | None) -> Principal:
    return Principal(
        "key",
        key.id,
        team=key.team,
        scopes=frozenset(key.scopes),
        models=_allowed(key.models, team.models if team else None),
        limits=key.limits,
        team_limits=team.limits if team else Limits(),
        expires_at=key.expires_at,
        name=key.name,
    )


class JwtVerifier:
    """Signature, expiry, issuer and audience checked by PyJWT; claims map to a principal."""

    def __init__(self, config: JwtConfig, key: str) -> None:
        import jwt

        self._jwt = jwt
        self.config = config
        self._key = key

    def verify(self, token: str) -> Principal:
        jwt = self._jwt
        c = self.config
        options: dict[str, Any] = {"require": ["exp", "sub"]}
        if c.audience is None:
            options["verify_aud"] = False
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=list(c.algorithms),
                audience=c.audience,
                issuer=c.issuer,
                leeway=c.leeway_s,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("The token has expired", code="token_expired") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(
                "The token is not for this audience", code="invalid_token"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(
                "The token's issuer is not trusted", code="invalid_token"
            ) from None
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"Invalid token: {e}", code="invalid_token") from None
        names = c.claims
        scope = claims.get(names.scope) or ()
        scopes = scope.split() if isinstance(scope, str) else list(scope)
        models = claims.get(names.models)
        period = claims.get(names.budget_period)
        return Principal(
            "jwt",
            f"jwt:{claims['sub']}",
            team=_str_or_none(claims.get(names.team)),
            scopes=frozenset(s for s in scopes if isinstance(s, str)),
            models=frozenset(models) if isinstance(models, list) else None,
            limits=Limits(
                rpm=_int_or_none(claims.get(names.rpm)),
                tpm=_int_or_none(claims.get(names.tpm)),
                budget_usd=_float_or_none(claims.get(names.budget_usd)),
                budget_period=cast(Period, period) if period in PERIODS else None,
            ),
            expires_at=float(claims["exp"]),
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value > 0 else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


@dataclass
class Authenticator:
    """Credential -> principal. ``required``: refuse requests without one."""

    master: MasterKey | None = None
    keys: KeyStore | None = None
    teams: TeamStore | None = None
    jwt: JwtVerifier | None = None
    required: bool = False
    cache_s: float = 5.0
    clock: Clock = time.time
    max_keys: int = 100_000  # keys the database knows, kept per replica
    max_unknown_keys: int = 10_000  # secrets it does not know, kept apart
    # digest -> (read at, what the database said: a principal, a refusal, or no such key)
    _cache: KeyCache[Principal | AuthenticationError] = field(init=False)
    _loading: dict[str, asyncio.Future[Principal | AuthenticationError | None]] = field(
        default_factory=dict
    )
    _refreshes: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._cache = KeyCache(self.max_keys, self.max_unknown_keys)

    @property
    def enabled(self) -> bool:
        return self.required or self.master is not None

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached keys (one, or all): the next request reads the database."""
        if key_id is None:
            self._cache.forget()
            return
        self._cache.forget(lambda known: isinstance(known, Principal) and known.id == key_id)

    async def authenticate(self, credential: str | None) -> Principal:
        if not self.enabled:
            if credential and self.keys is not None and credential.startswith("sk-noa-"):
                return await self._key(credential)  # a key still names who is calling
            return ANONYMOUS
        if not credential:
            raise AuthenticationError("Missing API key: send Authorization: Bearer <key>")
        if self.master is not None and self.master.verify(credential):
            return MASTER
        if self.jwt is not None and looks_like_jwt(credential):
            return self.jwt.verify(credential)
        if self.keys is not None:
            return await self._key(credential)
        raise AuthenticationError("Incorrect API key provided")

    async def _key(self, secret: str) -> Principal:
        """The key's principal. A verified key is trusted for ``cache_s``; after that it is
        still served while one background read refreshes it, so a busy key never makes every
        request wait on the database at once."""
        assert self.keys is not None
        now = self.clock()
        digest = await self.keys.digest(secret)
        cached = self._cache.get(digest)
        if cached is None:
            known = await self._read_once(digest, secret)
        else:
            read_at, known = cached
            if now - read_at >= self.cache_s and digest not in self._loading:
                task = asyncio.get_running_loop().create_task(self._refresh(digest, secret))
                self._refreshes.add(task)
                task.add_done_callback(self._refreshes.discard)
        if known is None:
            raise AuthenticationError("Incorrect API key provided")
        if isinstance(known, AuthenticationError):
            raise known
        if known.expires_at is not None and now >= known.expires_at:
            when = datetime.datetime.fromtimestamp(known.expires_at, datetime.UTC)
            raise AuthenticationError(
                f"This API key expired at {when:%Y-%m-%d %H:%M:%S} UTC", code="key_expired"
            )
        return known

    async def _read_once(self, digest: str, secret: str) -> Principal | AuthenticationError | None:
        """One database read per key at a time; concurrent callers share it."""
        loading = self._loading.get(digest)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Principal | AuthenticationError | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[digest] = future
        try:
            known = await self._load(secret)
        except BaseException as e:
            future.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._loading[digest]
        self._cache.put(digest, self.clock(), known)
        future.set_result(known)
        return known

    async def _refresh(self, digest: str, secret: str) -> None:
        try:
            await self._read_once(digest, secret)
        except Exception as e:  # the database is away: keep what we knew, try again later
            logger.warning("could not re-read an API key: %s", e)

    async def _load(self, secret: str) -> Principal | AuthenticationError | None:
        assert self.keys is not None
        key = await self.keys.verify(secret)
        if key is None:
            return None
        if key.revoked_at is not None:
            return AuthenticationError("This API key has been revoked", code="key_revoked")
        team = await self.teams.get(key.team) if self.teams is not None and key.team else None
        return key_principal(key, team)
