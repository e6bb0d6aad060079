"""Configuration of where NOA keeps things: the response cache's tiers, Redis, the database."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from noa.config.base import Strict, env_secret

CachePolicy = Literal["use", "bypass"]


class CacheTierConfig(Strict):
    enabled: bool = Field(True, description="use this tier")
    ttl_s: float = Field(3600.0, gt=0, description="how long an answer stays in this tier")
    max_entries: int = Field(10_000, ge=1, description="size bound (memory tiers; SQL prunes)")


class SingleFlightConfig(Strict):
    """Identical misses share one upstream call: always within a replica; across replicas
    through the shared tier (a lease per key in Redis or the CacheActor) when on."""

    across_replicas: bool = Field(True, description="meet other replicas at the shared tier")
    lease_s: float = Field(
        10.0, gt=0, description="a lease lapses this long after its holder stops renewing it"
    )
    max_wait_s: float = Field(
        600.0, gt=0, description="wait at most this long for another replica's answer"
    )


class CacheConfig(Strict):
    """The response cache: L1 in each Gateway replica, L2 shared (Redis when configured, else
    the CacheActor), L3 persistent in SQL (the database)."""

    enabled: bool = Field(True, description="the response cache as a whole")
    default: CachePolicy = Field("use", description="policy of models that set none")
    nondeterministic: bool = Field(
        False, description="also cache requests without temperature 0 or a seed"
    )
    max_entry_bytes: int = Field(
        1_048_576, ge=1, description="answers larger than this (encoded) are not stored"
    )
    memory: CacheTierConfig = CacheTierConfig(ttl_s=300, max_entries=10_000)
    shared: CacheTierConfig = CacheTierConfig(ttl_s=3600, max_entries=100_000)
    sql: CacheTierConfig = CacheTierConfig(ttl_s=86_400, max_entries=1_000_000)
    single_flight: SingleFlightConfig = SingleFlightConfig()


class RedisConfig(Strict):
    url_env: str = Field("NOA_REDIS_URL", description="env var with redis://...; unset: no Redis")

    def url(self, environ: Mapping[str, str] | None = None) -> str | None:
        secret = env_secret(self.url_env, environ)
        return secret.get_secret_value() if secret else None


HOME_ENV = "NOA_HOME"  # where NOA keeps its files (the SQLite database); default ~/.noa


def noa_home(environ: Mapping[str, str] | None = None) -> Path:
    env = environ if environ is not None else os.environ
    return Path(env.get(HOME_ENV) or "~/.noa").expanduser()


class DatabaseConfig(Strict):
    """Where keys, usage and the L3 cache live: SQLite by default, PostgreSQL when configured.

    ``sqlite:///name.db`` is relative to ``$NOA_HOME`` (default ``~/.noa``), the same for every
    process of the app wherever Ray starts it; ``sqlite:////abs/path.db`` is absolute.
    """

    url_env: str = Field(
        "NOA_DATABASE_URL", description="env var with postgresql://... or sqlite:///path"
    )
    default_url: str = Field(
        "sqlite:///noa.db", description="used when the env var is unset (embedded default)"
    )

    def url(self, environ: Mapping[str, str] | None = None) -> str:
        secret = env_secret(self.url_env, environ)
        url = secret.get_secret_value() if secret else self.default_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            path = noa_home(environ) / url.removeprefix("sqlite:///")
            return f"sqlite:///{path}"  # absolute: sqlite:////...
        return url
