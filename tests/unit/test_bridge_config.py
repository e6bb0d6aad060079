"""Queue bridges in the config and the Serve graph: ``queues:`` validated (URLs from the
environment, unique names, the job system on), one ``QueueBridge-<name>`` deployment per
bridge, fixed or scaled on lag by ``bridge_scaling.lag_policy``; bridges' health summed over
their replicas."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from deployments.app import _bridge
from deployments.bridge_scaling import desired_replicas, lag_policy
from noa.config import ConfigError, parse_config
from noa.routing.health_center import BRIDGE_STALE_S, bridge_states

BRIDGE = {"name": "orders", "kind": "rabbitmq", "url_env": "NOA_AMQP_URL", "source": "in",
          "dead_letter": "dead"}  # fmt: skip


def config(**bridge: Any) -> Any:
    return parse_config({"queues": [{**BRIDGE, **bridge}]})


def test_a_bridge_reads_its_url_from_the_environment() -> None:
    cfg = config().queues[0]
    assert cfg.url({"NOA_AMQP_URL": "amqp://u:p@h/"}) == "amqp://u:p@h/"
    assert cfg.url({}) is None
    assert config(kind="sqs", url_env=None).queues[0].url({}) is None  # AWS's own endpoint


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"url_env": None}, "needs url_env"),
        ({"url_env": "amqp://inline"}, "environment variable"),
        ({"name": "Has Spaces"}, "queues.0.name"),
        ({"dead_letter": ""}, "dead_letter"),
        ({"concurrency": 0}, "concurrency"),
        ({"scaling": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas"),
        ({"scaling": {"min_replicas": 0}}, "min_replicas"),
        ({"surprise": 1}, "unknown key"),
    ],
)
def test_bad_bridges_are_refused_with_the_key_named(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        config(**change)


def test_names_are_unique_and_bridges_need_jobs() -> None:
    with pytest.raises(ConfigError, match="unique: orders"):
        parse_config({"queues": [BRIDGE, BRIDGE]})
    with pytest.raises(ConfigError, match=r"jobs\.enabled"):
        parse_config({"queues": [BRIDGE], "jobs": {"enabled": False}})


def test_one_deployment_per_bridge_fixed_or_scaled_on_lag() -> None:
    fixed = _bridge(config(scaling={"min_replicas": 2, "max_replicas": 2}).queues[0])
    assert fixed.name == "QueueBridge-orders" and fixed.num_replicas == 2
    scaled = _bridge(config(scaling={"max_replicas": 5}).queues[0])
    auto = scaled._deployment_config.autoscaling_config
    assert auto is not None and (auto.min_replicas, auto.max_replicas) == (1, 5)
    assert auto.policy.policy_function == "deployments.bridge_scaling:lag_policy"


def context(lags: list[float], per: float = 100.0, current: int = 1) -> Any:
    metrics = {"lag": {f"r{i}": v for i, v in enumerate(lags)}, "lag_per_replica": {"r0": per}}
    return SimpleNamespace(
        aggregated_metrics=metrics if lags else {},
        capacity_adjusted_min_replicas=1,
        current_num_replicas=current,
    )


def test_the_policy_asks_for_the_replicas_the_lag_needs() -> None:
    assert desired_replicas(0, 100, 1) == 1
    assert desired_replicas(250, 100, 1) == 3
    assert lag_policy(context([250.0, 240.0]))[0] == 3  # the largest report counts
    assert lag_policy(context([0.0], current=4))[0] == 1  # drained: down to the minimum
    assert lag_policy(context([], current=2))[0] == 2  # no report yet: keep what runs


def test_bridge_states_over_replicas() -> None:
    now = 1000.0
    up = {"status": "up", "kind": "kafka", "lag": 7, "in_flight": 3}
    down = {"status": "down", "kind": "kafka", "lag": None, "in_flight": 0}
    states = bridge_states(
        {
            ("orders", "r1"): (now - 1, up),
            ("orders", "r2"): (now - 1, {**up, "lag": 9, "in_flight": 2}),
            ("events", "r1"): (now - 2, down),
            ("old", "r1"): (now - BRIDGE_STALE_S - 1, up),
        },
        now,
    )
    assert states["orders"]["status"] == "up" and states["orders"]["lag"] == 9
    assert states["orders"]["in_flight"] == 5 and set(states["orders"]["replicas"]) == {"r1", "r2"}
    assert states["events"]["status"] == "down"
    assert states["old"]["status"] == "stale"
