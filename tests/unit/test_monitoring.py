"""The shipped Grafana dashboard and alert rules use only metrics NOA exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from noa.observability.metrics import SPECS

MONITORING = Path(__file__).resolve().parents[2] / "deployments" / "monitoring"
PROMQL_FUNCTIONS = {
    "sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "by", "ignoring",
    "group_left", "le", "count", "on",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_by = re.sub(r"\b(by|ignoring|on)\s*\([^)]*\)", "", without_labels)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", without_by))
    return {w for w in words if w not in PROMQL_FUNCTIONS and "_" in w}


def exported(name: str) -> bool:
    known = {spec.name for spec in SPECS}
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in known or base in known


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())["groups"][0]
    exprs = [rule["expr"] for rule in rules["rules"]]
    assert len(exprs) >= 5
    names = set().union(*(metric_names(e) for e in exprs))
    assert names and all(exported(n) for n in names), sorted(n for n in names if not exported(n))
    alerts = {rule["alert"] for rule in rules["rules"]}
    for wanted in ("NoaProviderDown", "NoaHighErrorRate", "NoaHighP99Latency", "NoaQueueBacklog"):
        assert wanted in alerts
    assert any("budget" in rule["expr"] for rule in rules["rules"])


def test_grafana_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set().union(*(metric_names(e) for e in exprs))
    assert all(exported(n) for n in names), sorted(n for n in names if not exported(n))
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert {"http_requests_total", "ai_provider_cost_total", "noa_cache_lookups_total"} <= used
