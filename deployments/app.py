"""``build_app``: NOA's Serve application from its config (``serve_config.yaml``'s ``args``).

Gateway (ingress) ── LlamaCpp replicas (one deployment per local provider)
    │      └──────── HealthActor, CacheActor, LimiterActor (several Gateway replicas, or jobs)
    ├── JobRunner ── Router (every job), HealthActor, CacheActor, LimiterActor (jobs.enabled)
    ├── QueueBridge-<name> ── HealthActor, JobRunner (one per ``queues:`` entry)
    └── Router ──── OpenAIAdapter / AnthropicAdapter (enabled providers only), LlamaCpp
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.adapters import ProviderAdapter
from deployments.gateway import Gateway
from deployments.job_runner import JobRunner
from deployments.llamacpp import LlamaCpp
from deployments.queue_bridge import QueueBridge
from deployments.router import RouterDeployment
from deployments.support import CacheActor, HealthActor, LimiterActor
from noa.build.providers import local_provider_configs, provider_infos
from noa.config import NoaConfig, QueueBridgeConfig, ReplicaConfig, parse_config

ADAPTER_NAMES = {"openai": "OpenAIAdapter", "anthropic": "AnthropicAdapter"}
# Serve's own access log line per request and per handle call costs a third of the Gateway's
# throughput (measured: scripts/bench); NOA writes its own, richer line (logger noa.access).
LOGGING = {"enable_access_log": False}


def _sized(deployment: Any, sizing: ReplicaConfig, name: str | None = None) -> Deployment:
    """``deployment`` is a ``@serve.deployment`` class (typed as the class it wraps)."""
    options: dict[str, Any] = {
        "num_replicas": sizing.num_replicas,
        "max_ongoing_requests": sizing.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": sizing.num_cpus},
        "logging_config": LOGGING,
    }
    if name:
        options["name"] = name
    return cast(Deployment, deployment.options(**options))


def _bridge(cfg: QueueBridgeConfig) -> Deployment:
    """A queue bridge's deployment: a fixed number of replicas, or scaled on its lag."""
    scaling = cfg.scaling
    options: dict[str, Any] = {
        "name": f"QueueBridge-{cfg.name}",
        "max_ongoing_requests": 100,  # status calls only: the work is the replica's own loop
        "ray_actor_options": {"num_cpus": cfg.num_cpus},
        "logging_config": LOGGING,
        "graceful_shutdown_timeout_s": 20,
    }
    if scaling.max_replicas > scaling.min_replicas:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "initial_replicas": scaling.min_replicas,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
            "metrics_interval_s": 2.0,
            "look_back_period_s": 10.0,
            "policy": {"policy_function": "deployments.bridge_scaling:lag_policy"},
        }
    else:
        options["num_replicas"] = scaling.min_replicas
    return cast(Deployment, QueueBridge).options(**options)


def _name(base: str, provider: str, default: str) -> str:
    return base if provider == default else f"{base}-{provider}"


def build(config: NoaConfig) -> Application:
    args = config.model_dump(mode="json")
    d = config.deployment
    local = {}
    for name in local_provider_configs(config):
        llama = d.llamacpp
        local[name] = (
            cast(Deployment, LlamaCpp)
            .options(
                name=_name("LlamaCpp", name, "local"),
                num_replicas=llama.num_replicas,
                max_ongoing_requests=llama.max_ongoing_requests,
                ray_actor_options={"num_cpus": llama.num_cpus, "num_gpus": llama.num_gpus},
                logging_config=LOGGING,
            )
            .bind(args, name)
        )
    adapters = {}
    for info in provider_infos(config):
        if info.enabled and info.kind in ADAPTER_NAMES:
            base = ADAPTER_NAMES[info.kind]
            deployment = _sized(ProviderAdapter, d.adapters, _name(base, info.name, info.kind))
            adapters[info.name] = deployment.bind(args, info.name)
    tiny = ReplicaConfig(num_replicas=1, max_ongoing_requests=1000, num_cpus=0)
    health = _sized(HealthActor, tiny).bind(args, local)
    cache = _sized(CacheActor, tiny).bind(args)
    # several Gateway replicas must agree on limits: one actor decides (unless Redis does)
    # several Gateway replicas must agree on limits: one actor decides (unless Redis does);
    # with one Gateway, a JobRunner asks that Gateway (the request hot path stays in-process)
    limiter = _sized(LimiterActor, tiny).bind() if d.gateway.num_replicas > 1 else None
    router = _sized(RouterDeployment, d.router).bind(args, adapters, local, health)
    runner = None
    if config.jobs.enabled:
        runner = _sized(JobRunner, d.job_runner).bind(args, local, router, health, cache, limiter)
    bridges = {b.name: _bridge(b).bind(args, b.name, health, runner) for b in config.queues}
    return _sized(Gateway, d.gateway).bind(
        args, local, router, health, cache, limiter, runner, bridges
    )


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's entry point (``import_path: deployments.app:build_app``)."""
    return build(parse_config(args or {}))
