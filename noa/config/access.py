"""Configuration of who may call and what they may spend: auth (master key, API keys, JWT),
where limits are decided, and how usage is written."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from noa.config.base import Strict, env_secret

# The operator's explicit opt-in to serve other machines with auth off (as the config field).
ALLOW_PUBLIC_ENV = "NOA_ALLOW_UNAUTHENTICATED_PUBLIC"


class JwtClaims(Strict):
    """Which claims of a token name the team, scopes, models and limits."""

    team: str = Field("team", description="claim with the team")
    scope: str = Field("scope", description="claim with scopes (space-separated or a list)")
    models: str = Field("noa_models", description="claim listing the models allowed")
    rpm: str = Field("noa_rpm", description="claim with requests per minute")
    tpm: str = Field("noa_tpm", description="claim with tokens per minute")
    budget_usd: str = Field("noa_budget_usd", description="claim with a USD budget")
    budget_period: str = Field("noa_budget_period", description="claim: day|week|month|total")


JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256"]


class JwtConfig(Strict):
    """Bearer JWTs from an identity provider, accepted next to API keys."""

    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list[JwtAlgorithm](["RS256"]),
        description="accepted signature algorithms",
    )
    secret_env: str = Field("NOA_JWT_SECRET", description="env var with the HMAC secret (HS*)")
    public_key_env: str = Field(
        "NOA_JWT_PUBLIC_KEY", description="env var with the PEM public key (RS*/ES*)"
    )
    public_key_file: str | None = Field(None, description="or a PEM file with the public key")
    issuer: str | None = Field(None, description="required `iss`")
    audience: str | None = Field(None, description="required `aud`")
    leeway_s: float = Field(30.0, ge=0, description="clock skew allowed on exp/nbf/iat")
    claims: JwtClaims = JwtClaims()

    def verification_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        if any(a.startswith("HS") for a in self.algorithms):
            secret = env_secret(self.secret_env, environ)
            return secret.get_secret_value() if secret else None
        if self.public_key_file:
            return Path(self.public_key_file).read_text()
        key = env_secret(self.public_key_env, environ)
        return key.get_secret_value() if key else None


class AuthConfig(Strict):
    master_key_env: str = Field(
        "NOA_MASTER_KEY", description="env var whose value, when set, guards every /v1 route"
    )
    required: bool = Field(
        False, description="require a credential even with no master key (keys or JWT only)"
    )
    key_secret_env: str = Field(
        "NOA_KEY_SECRET",
        description="env var with the secret API keys are hashed under (default: a random one"
        " NOA makes once and keeps in the database)",
    )
    key_cache_s: float = Field(
        5.0, ge=0, description="how long a replica trusts a verified key before reading it again"
    )
    jwt: JwtConfig | None = Field(None, description="accept JWT bearer tokens")
    allow_unauthenticated_public: bool = Field(
        False,
        description="serve beyond loopback with auth off (no master key, `required` off):"
        f" refused at start-up unless this is true (or {ALLOW_PUBLIC_ENV}=1)",
    )

    def master_key(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        return env_secret(self.master_key_env, environ)

    def is_on(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether a request needs a credential: a master key is set, or ``required``."""
        return self.required or self.master_key(environ) is not None

    def allows_public_without_auth(self, environ: Mapping[str, str] | None = None) -> bool:
        """The operator opted in to serve other machines with auth off."""
        env = environ if environ is not None else os.environ
        flag = env.get(ALLOW_PUBLIC_ENV, "").strip().lower()
        return self.allow_unauthenticated_public or flag in ("1", "true", "yes")


class LimitsConfig(Strict):
    """Where rate limits and budgets are decided (exact across replicas either way)."""

    on_store_failure: Literal["open", "closed"] = Field(
        "open",
        description="when Redis is unreachable: decide in each replica (open) or answer 503",
    )
    estimate_completion_tokens: int = Field(
        256,
        gt=0,
        description="tokens per minute reserved for a completion when max_tokens is not set",
    )
    max_completion_tokens: int = Field(
        16_384,
        gt=0,
        description="what a budget assumes a completion may use when neither the request"
        " (max_tokens) nor its model (context_length) bounds it",
    )


class UsageConfig(Strict):
    batch_size: int = Field(500, ge=1, description="records per database write")
    flush_interval_s: float = Field(1.0, gt=0, description="longest a record waits")
