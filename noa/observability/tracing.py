"""OpenTelemetry spans: gateway -> router -> provider, one trace per request.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, OTLP over HTTP) or a tracer provider is handed in (tests
use the SDK's in-memory exporter). Off, a span costs one attribute check.

The trace is the request's correlation id: NOA's generated ids are 32 hex digits, which is what a
W3C trace id is, so the root span takes it as its trace id and a trace is found in the tracing
backend by the id in the response header, the error body and the log line. A request that comes
with a ``traceparent`` joins its caller's trace instead (the correlation id is then recorded as
the ``noa.correlation_id`` attribute of the root span).

A job is traced where it runs: each attempt is a consumer span, the child of the span of the
request that submitted it (``current_traceparent()`` is stored with the job), so the job shows in
that request's trace; a batch's lines link to the batch's request instead (ten thousand children
would drown its trace), and a schedule's jobs start traces of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

logger = logging.getLogger("noa.tracing")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Tracing:
    """NOA's spans, through one tracer; ``enabled`` False makes every call a no-op."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self.enabled = provider is not None
        self._tracer = provider.get_tracer("noa") if provider is not None else None

    @contextlib.contextmanager
    def request(
        self, name: str, correlation_id: str, traceparent: str | None, **attributes: Any
    ) -> Iterator[Span | None]:
        """The root span of one HTTP request (a server span)."""
        if self._tracer is None:
            yield None
            return
        parent = _parent(correlation_id, traceparent)
        with self._tracer.start_as_current_span(
            name, context=trace.set_span_in_context(parent), kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("noa.correlation_id", correlation_id)
            for key, value in attributes.items():
                span.set_attribute(key, value)
            yield span

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span | None]:
        """A child of the current span (router, provider attempt, ...)."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(name, kind=SpanKind.INTERNAL) as span:
            for key, value in attributes.items():
                if value is not None:
                    span.set_attribute(key, value)
            yield span

    @contextlib.contextmanager
    def job(
        self, name: str, traceparent: str | None, *, link: bool = False, **attributes: Any
    ) -> Iterator[Span | None]:
        """The span of one run of a job: a child of ``traceparent`` (the submitting request's
        span), or with ``link`` a root linked to it; a root of its own without one."""
        if self._tracer is None:
            yield None
            return
        remote = span_context(traceparent)
        links = [Link(remote)] if remote is not None and link else None
        parent = (
            trace.set_span_in_context(NonRecordingSpan(remote))
            if remote is not None and not link
            else otel_context.Context()  # not whatever happens to be current
        )
        with self._tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.CONSUMER, links=links
        ) as span:
            for key, value in attributes.items():
                if value is not None:
                    span.set_attribute(key, value)
            yield span


def current_traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` (None when nothing is traced here)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_context(traceparent: str | None) -> SpanContext | None:
    """The remote span a W3C ``traceparent`` names; None for none or a malformed one."""
    match = _TRACEPARENT.fullmatch(traceparent.strip().lower()) if traceparent else None
    if match is None or not int(match.group(1), 16) or not int(match.group(2), 16):
        return None
    return SpanContext(
        int(match.group(1), 16),
        int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(3), 16) & 1),
    )


def _parent(correlation_id: str, traceparent: str | None) -> NonRecordingSpan:
    """A remote parent whose trace id is the caller's (``traceparent``) or the correlation id."""
    remote = span_context(traceparent)
    if remote is not None:
        trace_id, span_id = remote.trace_id, remote.span_id
    else:
        cid = correlation_id.replace("-", "").lower()
        trace_id = int(cid, 16) if _HEX32.fullmatch(cid) else random.getrandbits(128)
        span_id = random.getrandbits(64) or 1
    flags = TraceFlags(TraceFlags.SAMPLED)  # NOA records the requests it serves
    return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags))


def record_error(span: Span | None, error: BaseException) -> None:
    if span is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing:
    """OTLP/HTTP export to the configured endpoint, batched; disabled without one."""
    env = environ if environ is not None else os.environ
    endpoint = next((env[name] for name in ENDPOINT_ENVS if env.get(name)), None)
    if endpoint is None:
        return Tracing()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = env.get("OTEL_SERVICE_NAME", "noa")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_* env
    logger.info("tracing: OTLP export to %s", endpoint)
    return Tracing(provider)
