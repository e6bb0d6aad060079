"""The start-up guards: no public listening with auth off unless opted in, no per-node SQLite
when replicas can run on several nodes; and the Ray facts the Gateway feeds them."""

from __future__ import annotations

import pytest

from deployments.startup import nodes_for
from noa.cli.main import resolve_serve_config
from noa.config import ConfigError, NoaConfig, parse_config
from noa.config.guards import check_public_listen, check_shared_database

NO_AUTH: dict[str, str] = {}
MASTER = {"NOA_MASTER_KEY": "sk-master"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "noa.example.com"])
def test_public_listening_with_auth_off_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="refusing to listen on") as info:
        check_public_listen(NoaConfig(), host, NO_AUTH)
    message = str(info.value)
    assert "NOA_MASTER_KEY" in message and "auth.allow_unauthenticated_public" in message
    assert "NOA_ALLOW_UNAUTHENTICATED_PUBLIC=1" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "localhost", "::1", None])
def test_loopback_or_no_http_server_is_fine_with_auth_off(host: str | None) -> None:
    check_public_listen(NoaConfig(), host, NO_AUTH)


def test_public_listening_with_auth_on_is_fine() -> None:
    check_public_listen(NoaConfig(), "0.0.0.0", MASTER)
    required = parse_config({"auth": {"required": True}})  # keys or JWTs only
    check_public_listen(required, "0.0.0.0", NO_AUTH)


def test_the_operator_can_opt_in_to_public_without_auth() -> None:
    opted_in = parse_config({"auth": {"allow_unauthenticated_public": True}})
    check_public_listen(opted_in, "0.0.0.0", NO_AUTH)
    check_public_listen(NoaConfig(), "0.0.0.0", {"NOA_ALLOW_UNAUTHENTICATED_PUBLIC": "1"})
    with pytest.raises(ConfigError):  # anything but a yes is no
        check_public_listen(NoaConfig(), "0.0.0.0", {"NOA_ALLOW_UNAUTHENTICATED_PUBLIC": "0"})


def test_noa_serve_applies_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOA_MASTER_KEY", raising=False)
    monkeypatch.delenv("NOA_ALLOW_UNAUTHENTICATED_PUBLIC", raising=False)
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        resolve_serve_config(NoaConfig(), "0.0.0.0", None)
    monkeypatch.setenv("NOA_ALLOW_UNAUTHENTICATED_PUBLIC", "true")
    assert resolve_serve_config(NoaConfig(), "0.0.0.0", None).server.host == "0.0.0.0"


def test_sqlite_on_one_node_is_fine() -> None:
    check_shared_database(NoaConfig(), 1, {"NOA_HOME": "/srv/noa"})


def test_sqlite_with_several_nodes_is_refused_naming_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        check_shared_database(NoaConfig(), 3, {"NOA_HOME": "/srv/noa"})
    message = str(info.value)
    assert "3 Ray nodes" in message and "/srv/noa/noa.db" in message
    assert "NOA_DATABASE_URL" in message and "postgresql://" in message
    explicit = {"NOA_DATABASE_URL": "sqlite:////data/noa.db"}
    with pytest.raises(ConfigError, match="SQLite"):
        check_shared_database(NoaConfig(), 2, explicit)


def test_a_shared_database_with_several_nodes_is_fine() -> None:
    check_shared_database(NoaConfig(), 5, {"NOA_DATABASE_URL": "postgresql://db/noa"})
    renamed = parse_config({"database": {"url_env": "MY_DB"}})
    check_shared_database(renamed, 5, {"MY_DB": "postgres://db/noa"})
    with pytest.raises(ConfigError, match="MY_DB"):
        check_shared_database(renamed, 2, {"NOA_DATABASE_URL": "postgresql://db/noa"})


def test_nodes_that_can_host_a_gateway_are_the_live_ones_with_its_cpus() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": True, "Resources": {"CPU": 0.5, "GPU": 1.0}},
        {"Alive": True, "Resources": {}},  # a head started with --num-cpus=0
        {"Alive": False, "Resources": {"CPU": 8.0}},  # gone
    ]
    assert nodes_for(0.0, nodes) == 3  # a replica that asks for no CPU fits anywhere
    assert nodes_for(1.0, nodes) == 1
    assert nodes_for(0.5, nodes) == 2
