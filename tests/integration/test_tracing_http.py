"""Spans of real requests (the SDK's in-memory exporter): gateway -> route -> provider, the
trace id is the correlation id (or the caller's traceparent), failures are marked."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from noa.build import providers, routing
from noa.config import parse_config
from noa.http.app import create_app
from noa.observability.tracing import Tracing, from_environment
from noa.service import NoaService
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

KEY = "tracing-master-key"


def test_a_request_is_one_trace_named_by_its_correlation_id(
    upstream_env: dict[str, str], fake: FakeUpstream
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    config = parse_config({"routing": {"retries": 0}, "providers": {"openai": {"kind": "openai"}}})
    clients = providers.cloud_providers(config, upstream_env)
    router = routing.router(config, clients, tracing=tracing)
    service = NoaService(router, routing.registry(config, upstream_env), tracing=tracing)
    server = ServerThread(create_app(service, master_key=KEY, tracing=tracing)).start()
    body = {"model": "openai/gpt-t", "messages": [{"role": "user", "content": "trace me"}]}
    auth = {"authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=server.base_url, headers=auth, timeout=30) as client:
            ok = client.post("/v1/chat/completions", json=body)
            fake.script.append(Step(status=500))
            failed = client.post("/v1/chat/completions", json=body)
            caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            joined = client.post("/v1/chat/completions", json=body, headers={"traceparent": caller})
    finally:
        server.stop()
    assert (ok.status_code, failed.status_code, joined.status_code) == (200, 502, 200), ok.text
    spans = exporter.get_finished_spans()
    by_trace: dict[str, list[str]] = {}
    for span in spans:
        by_trace.setdefault(f"{span.context.trace_id:032x}", []).append(span.name)

    cid = ok.headers["x-correlation-id"]
    assert sorted(by_trace[cid]) == ["POST /v1/chat/completions", "noa.provider", "noa.route"]
    root = next(
        s for s in spans if s.name.startswith("POST") and f"{s.context.trace_id:032x}" == cid
    )
    route = next(
        s for s in spans if s.name == "noa.route" and s.parent.span_id == root.context.span_id
    )
    call = next(
        s for s in spans if s.name == "noa.provider" and s.parent.span_id == route.context.span_id
    )
    assert root.attributes["http.route"] == "/v1/chat/completions"
    assert root.attributes["http.response.status_code"] == 200
    assert route.attributes["noa.provider"] == "openai"
    assert call.attributes["noa.upstream"] == "gpt-t"

    failed_cid = failed.json()["error"]["correlation_id"]
    failed_spans = [s for s in spans if f"{s.context.trace_id:032x}" == failed_cid]
    assert {s.status.status_code.name for s in failed_spans} == {"ERROR"}
    assert any(e.name == "exception" for s in failed_spans for e in s.events)

    assert "4bf92f3577b34da6a3ce929d0e0e4736" in by_trace  # joined the caller's trace
    joined_root = next(
        s
        for s in spans
        if f"{s.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        and s.name.startswith("POST")
    )
    assert joined_root.parent.span_id == 0x00F067AA0BA902B7
    assert joined_root.attributes["noa.correlation_id"] == joined.headers["x-correlation-id"]


def test_tracing_is_off_without_an_endpoint_and_on_with_one() -> None:
    assert not from_environment({}).enabled
    assert from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}).enabled
