"""The durable job system: runners, retries, webhooks, files and batches."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from noa.config.base import Strict, env_secret

MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


class WebhookConfig(Strict):
    secret_env: str = Field(
        "NOA_WEBHOOK_SECRET",
        description=(
            "env var with the signing secret(s) (whsec_<base64>, several separated by spaces"
            " while rotating: every one signs, the first is the new one)"
        ),
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts or CIDRs a callback may reach although private or loopback",
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="one delivery attempt")
    max_attempts: int = Field(8, ge=1, le=50, description="attempts per delivery")

    def secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        value = env_secret(self.secret_env, environ)
        return value.get_secret_value().split() if value is not None else []


class JobsConfig(Strict):
    enabled: bool = Field(True, description="the job API, batches and the JobRunner deployment")
    lease_s: float = Field(30.0, gt=0, le=3600, description="a claim's lease (heartbeats: /3)")
    concurrency: int = Field(64, ge=1, le=10_000, description="jobs run at once per runner")
    per_model: int | None = Field(None, ge=1, description="jobs run at once per model")
    per_key: int | None = Field(None, ge=1, description="jobs run at once per API key")
    poll_s: float = Field(1.0, gt=0, le=60, description="idle runners look for due jobs")
    base_backoff_s: float = Field(1.0, gt=0, le=3600)
    cap_backoff_s: float = Field(300.0, gt=0, le=86400)
    max_file_bytes: int = Field(MAX_FILE_BYTES, gt=0, description="largest uploaded file")
    webhooks: WebhookConfig = WebhookConfig()
