"""The HTTP server and how the Serve graph is sized and placed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from noa.config.base import Strict

HotPath = Literal["inline", "router"]


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest accepted body")
    access_log: bool = Field(
        True, description="one JSON line per request (logger noa.access) when it completes"
    )


class ReplicaConfig(Strict):
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(1000, ge=1)
    num_cpus: float = Field(0.0, ge=0)


class LlamaReplicaConfig(Strict):
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    num_cpus: float = Field(0.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="1 on GPU clusters; 0 runs on CPU")


class DeploymentConfig(Strict):
    """How the Serve graph is sized and placed."""

    app_name: str = "noa"
    route_prefix: str = "/"
    hot_path: HotPath = Field(
        "inline",
        description=(
            "inline: the Gateway replica routes and calls cloud providers itself (0 handle hops);"
            " router: the Gateway forwards to the Router deployment, which calls the adapters"
        ),
    )
    gateway: ReplicaConfig = ReplicaConfig()
    router: ReplicaConfig = ReplicaConfig()
    adapters: ReplicaConfig = ReplicaConfig()
    llamacpp: LlamaReplicaConfig = LlamaReplicaConfig()
    job_runner: ReplicaConfig = ReplicaConfig()
    health_check_interval_s: float = Field(30.0, gt=0, description="active provider checks")
