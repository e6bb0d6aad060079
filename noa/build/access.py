"""Access control built from a ``NoaConfig``: keys and teams, who may call
(``Authenticator``), the limiter, admission and usage accounting, over the database.

The same pieces serve a Gateway replica (with a shared limiter handle when several replicas
must agree and no Redis is configured), the in-process app of the tests, and the ``noa keys``
CLI. Nothing here connects at build time: the database opens on first use in the loop that
uses it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from noa.access.accounting import Accounting
from noa.access.admission import Gatekeeper
from noa.access.identity import Authenticator, JwtVerifier, MasterKey
from noa.access.key_secret import KeySecrets, derived_from_master
from noa.access.keys import KeyStore, Limits, TeamStore
from noa.access.limiter import FailoverLimiter, Limiter, LocalLimiter, RedisLimiter
from noa.config import NoaConfig, noa_home
from noa.http.admin import Admin
from noa.observability.metrics import Metrics
from noa.storage.db import Database, LazyDatabase
from noa.storage.migrations import migrate
from noa.storage.usage import UsageQueries, UsageRecorder

Environ = Mapping[str, str]
KEY_SECRET_FILE = "key-secret"


def key_secrets(config: NoaConfig, environ: Environ | None = None) -> KeySecrets:
    """What API keys are hashed under (see ``noa/access/key_secret.py``): ``$NOA_KEY_SECRET``,
    else the secret kept in the database; keys made before that secret existed are still found
    under the master key's derived secret and ``$NOA_HOME/key-secret`` (the older defaults)."""
    env = environ if environ is not None else os.environ
    explicit = env.get(config.auth.key_secret_env, "").strip()
    master = config.auth.master_key(environ)
    legacy = [derived_from_master(master.get_secret_value())] if master is not None else []
    path = noa_home(environ) / KEY_SECRET_FILE
    if path.is_file():
        legacy.append(path.read_text().strip().encode("utf-8"))
    return KeySecrets(
        explicit=explicit.encode("utf-8") if explicit else None,
        legacy=tuple(legacy),
        master_env=config.auth.master_key_env if master is not None else None,
    )


def database(config: NoaConfig, environ: Environ | None = None) -> LazyDatabase:
    """The configured database (one per process), migrated when it first connects."""

    async def setup(db: Database) -> None:
        await migrate(db)

    return LazyDatabase(config.database.url(environ), setup)


def model_limits(config: NoaConfig) -> dict[str, Limits]:
    return {
        m.id: Limits(rpm=m.rate_limits.rpm, tpm=m.rate_limits.tpm)
        for m in config.models
        if m.rate_limits is not None and (m.rate_limits.rpm or m.rate_limits.tpm)
    }


def limiter(
    config: NoaConfig, shared: Limiter | None = None, environ: Environ | None = None
) -> Limiter:
    """Redis when configured; else ``shared`` (the LimiterActor, when several Gateway replicas
    must agree); else this process. A shared limiter that fails falls back as configured."""
    redis_url = config.redis.url(environ)
    primary: Limiter | None = RedisLimiter(redis_url) if redis_url else shared
    if primary is None:
        return LocalLimiter()
    return FailoverLimiter(primary, LocalLimiter(), config.limits.on_store_failure)


@dataclass
class Access:
    """Who may call and what they may spend, wired: the stores, the authenticator, the
    limiter, accounting and the admin API's collaborators."""

    db: Database
    keys: KeyStore
    teams: TeamStore
    auth: Authenticator
    limiter: Limiter
    accounting: Accounting
    usage: UsageRecorder
    admin: Admin

    async def aclose(self) -> None:
        """Write the usage still buffered (the database is closed by its owner)."""
        await self.usage.aclose()


def authenticator(
    config: NoaConfig, keys: KeyStore, teams: TeamStore, environ: Environ | None
) -> Authenticator:
    master = config.auth.master_key(environ)
    jwt = None
    if config.auth.jwt is not None:
        verification = config.auth.jwt.verification_key(environ)
        if verification is None:
            raise ValueError(
                "auth.jwt is configured but its key is not set: "
                f"{config.auth.jwt.secret_env} (HS*) or {config.auth.jwt.public_key_env} (RS*/ES*)"
            )
        jwt = JwtVerifier(config.auth.jwt, verification)
    return Authenticator(
        master=MasterKey(master.get_secret_value()) if master else None,
        keys=keys,
        teams=teams,
        jwt=jwt,
        required=config.auth.required,
        cache_s=config.auth.key_cache_s,
    )


def build(
    config: NoaConfig,
    db: Database,
    *,
    metrics: Metrics | None = None,
    shared_limiter: Limiter | None = None,
    environ: Environ | None = None,
) -> Access:
    """Access over ``db``; ``shared_limiter`` decides for every replica when there is no
    Redis; refusals and settled answers are counted in ``metrics``."""
    keys = KeyStore(db, key_secrets(config, environ))
    teams = TeamStore(db)
    auth = authenticator(config, keys, teams, environ)
    queries = UsageQueries(db)

    async def spend(scope: str, scope_id: str, since: float) -> float:
        if scope == "key":
            return await queries.spent(since=since, key_id=scope_id)
        return await queries.spent(since=since, team=scope_id)

    chosen = limiter(config, shared_limiter, environ)
    gate = Gatekeeper(
        chosen,
        model_limits(config),
        spend,
        completion_estimate=config.limits.estimate_completion_tokens,
        completion_ceiling=config.limits.max_completion_tokens,
        metrics=metrics,
    )
    usage = UsageRecorder(
        db, batch_size=config.usage.batch_size, flush_interval_s=config.usage.flush_interval_s
    )
    return Access(
        db=db,
        keys=keys,
        teams=teams,
        auth=auth,
        limiter=chosen,
        accounting=Accounting(gate, usage, clock=time.perf_counter, metrics=metrics),
        usage=usage,
        admin=Admin(keys, teams, queries, auth, chosen),
    )
