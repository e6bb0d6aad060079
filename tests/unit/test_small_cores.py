"""SSE parsing, the TTL LRU, the health monitor, master-key auth, the CLI's bind guards,
test ports."""

import random
import socket
from collections.abc import AsyncIterator

import psutil
import pytest

from deployments.cli import main
from deployments.local import port_in_use
from noa.access.identity import MasterKey
from noa.cache.memory import TtlLru
from noa.cli.main import resolve_serve_config
from noa.config import ConfigError, NoaConfig
from noa.context import accept_or_new
from noa.http.auth import credential_from_headers
from noa.routing.health import HealthMonitor
from noa.testing.ports import HIGH, LOW, free_port
from noa.wire import sse


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_data_events() -> None:
    lines = _lines(
        ": comment",
        "event: x",
        'data: {"a": 1}',
        "",
        "data: one",
        "data: two",
        "",
        "data:[DONE]",
        "",
    )
    assert [d async for d in sse.iter_data(lines)] == ['{"a": 1}', "one\ntwo", "[DONE]"]
    assert sse.encode({"a": "b\nc"}) == b'data: {"a":"b\\nc"}\n\n'


def test_ttl_lru_expiry_and_eviction() -> None:
    clock = Clock()
    store = TtlLru(2, 10, clock)
    store.set("a", 1)
    store.set("b", 2)
    assert store.get("a") == 1
    store.set("c", 3)  # evicts b, the least recently used
    assert store.get("b") is None and store.get("c") == 3
    clock.now += 11
    assert store.get("a") is None
    store.set("d", 4, ttl_s=0)
    assert store.get("d") is None
    assert store.stats() == {"entries": 1, "hits": 2, "misses": 3, "evictions": 1}


async def test_health_monitor_records_probe_results() -> None:
    clock = Clock()
    healthy = True

    async def probe() -> None:
        clock.now += 0.25
        if not healthy:
            raise RuntimeError("connection refused")

    monitor = HealthMonitor({"p": probe}, clock)
    assert monitor.snapshot()["p"]["status"] == "unknown"
    state = (await monitor.check_all())["p"]
    assert state["status"] == "ok" and state["latency_ms"] == 250.0
    healthy = False
    await monitor.check("p")
    await monitor.check("p")
    state = monitor.snapshot()["p"]
    assert state["status"] == "down" and state["consecutive_failures"] == 2
    assert state["error"] == "connection refused"


def test_master_key_and_credentials() -> None:
    key = MasterKey("s3cret")
    assert key.verify("s3cret")
    assert not key.verify("s3cre") and not key.verify("") and not key.verify(None)
    assert credential_from_headers("Bearer s3cret", None) == "s3cret"
    assert credential_from_headers("bearer  s3cret ", None) == "s3cret"
    assert credential_from_headers("Basic abc", "s3cret") is None
    assert credential_from_headers(None, "s3cret") == "s3cret"


def test_correlation_ids_are_accepted_only_when_safe() -> None:
    assert accept_or_new("req-123_abc:1") == "req-123_abc:1"
    for bad in (None, "", "a" * 200, "x\r\nSet-Cookie: y", "spa ce"):
        new = accept_or_new(bad)
        assert new != bad and len(new) == 32


def test_serve_refuses_public_bind_without_master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOA_MASTER_KEY", raising=False)
    with pytest.raises(ConfigError, match="refusing to listen on 0"):
        resolve_serve_config(NoaConfig(), "0.0.0.0", None)
    config = resolve_serve_config(NoaConfig(), None, 9001)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9001)
    monkeypatch.setenv("NOA_MASTER_KEY", "k")
    assert resolve_serve_config(NoaConfig(), "0.0.0.0", None).server.host == "0.0.0.0"


def test_serve_refuses_a_port_already_in_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NOA_MASTER_KEY", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2  # before any Ray process starts
    assert f"127.0.0.1:{port} is already in use" in capsys.readouterr().err


def _time_wait(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT
        for c in psutil.net_connections("tcp")
    )


def test_a_port_left_in_time_wait_by_the_last_run_is_free() -> None:
    """Stop, start again at once: the connections of the run that just stopped wait in
    TIME_WAIT on its port, and nothing listens there any more."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert port_in_use("127.0.0.1", port) and port_in_use("0.0.0.0", port)  # listening
        accepted.close()  # the server's side closes first, so its end waits in TIME_WAIT
        client.close()
    assert _time_wait(port)
    assert not port_in_use("127.0.0.1", port)
    assert not port_in_use("0.0.0.0", port)
    with socket.socket() as again:  # and a server can have it at once
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_a_listener_on_one_address_holds_the_wildcard_not_another_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert port_in_use("0.0.0.0", port) and port_in_use("localhost", port)
        assert not port_in_use("127.0.0.2", port)


def test_test_ports_stay_out_of_the_ranges_ray_draws_from() -> None:
    rng = random.Random(7)
    ports = {free_port(rng) for _ in range(50)}
    assert all(LOW <= p <= HIGH for p in ports) and len(ports) > 40
    with socket.socket() as taken:  # a port in use is never handed out
        taken.bind(("127.0.0.1", free_port(random.Random(1))))
        assert free_port(random.Random(1)) != taken.getsockname()[1]
