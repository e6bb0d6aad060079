"""Sentry error reporting: off without a DSN; with one, an unexpected error becomes an event
whose text is masked like the logs."""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from sentry_sdk.transport import Transport

from noa.observability.error_reporting import init_error_reporting


class Captured(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(item.payload.json)


def test_off_without_a_dsn_and_masked_with_one() -> None:
    assert init_error_reporting({}) is False
    transport = Captured()
    try:
        assert init_error_reporting(
            {"SENTRY_DSN": "https://key@o1.ingest.example/1"}, transport=transport
        )
        try:
            prompt = " ".join(["a", "prompt", "held", "in", "a", "local"])  # locals stay out
            secret = "sk-proj-AbCdEf0123456789xyz"
            raise RuntimeError(f"boom for jane@example.com with {secret} {len(prompt)}")
        except RuntimeError:
            logging.getLogger("noa.http").error("unhandled error", exc_info=True)
        sentry_sdk.flush()
        assert transport.events, "no event reached the transport"
        text = repr(transport.events)
        assert "jane@example.com" not in text and "sk-proj-AbCdEf" not in text
        assert "a prompt held in a local" not in text
        assert "[email]" in text and "[key]" in text
    finally:
        off()


def off() -> None:
    """Sentry off again for the other tests of this process: no client at all (a bare
    ``sentry_sdk.init()`` would leave one with the SDK's default integrations, whose asyncpg
    breadcrumbs keep every query's parameters: a 1 MiB file chunk each)."""
    sentry_sdk.get_client().close()
    for scope in (
        sentry_sdk.get_global_scope(),
        sentry_sdk.get_isolation_scope(),
        sentry_sdk.get_current_scope(),
    ):
        scope.set_client(None)
