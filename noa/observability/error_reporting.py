"""Optional error reporting to Sentry: on when ``SENTRY_DSN`` is set (and ``sentry-sdk`` is
installed: ``pip install noa[sentry]``). Errors are what NOA logs at ERROR (unexpected failures,
with the correlation id); events carry no request bodies or headers, and their messages go
through the same PII masking as the logs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from noa.observability.pii import mask

logger = logging.getLogger("noa.errors")


def _scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    event.pop("request", None)
    for entry in event.get("exception", {}).get("values", []):
        if isinstance(entry.get("value"), str):
            entry["value"] = mask(entry["value"])
        for frame in (entry.get("stacktrace") or {}).get("frames", []):
            if isinstance(frame.get("context_line"), str):
                frame["context_line"] = mask(frame["context_line"])
            for key in ("pre_context", "post_context"):
                frame[key] = [mask(line) for line in frame.get(key) or []]
    logentry = event.get("logentry") or {}
    for key in ("message", "formatted"):
        if isinstance(logentry.get(key), str):
            logentry[key] = mask(logentry[key])
    if isinstance(event.get("message"), str):
        event["message"] = mask(event["message"])
    for crumb in (event.get("breadcrumbs") or {}).get("values", []):
        if isinstance(crumb.get("message"), str):
            crumb["message"] = mask(crumb["message"])
    return event


def init_error_reporting(environ: Mapping[str, str] | None = None, **options: Any) -> bool:
    """Start the Sentry SDK when a DSN is configured; whether it started."""
    env = environ if environ is not None else os.environ
    dsn = env.get("SENTRY_DSN")
    if not dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        logger.warning(
            "SENTRY_DSN is set but sentry-sdk is not installed (pip install noa[sentry])"
        )
        return False
    sentry_sdk.init(
        dsn=dsn,
        max_request_body_size="never",
        traces_sample_rate=0.0,  # traces go to OpenTelemetry
        before_send=_scrub,  # type: ignore[arg-type]
        environment=env.get("SENTRY_ENVIRONMENT"),
        **_collect_nothing(sentry_sdk.VERSION),
        **options,
    )
    return True


def _collect_nothing(version: str) -> dict[str, Any]:
    """The SDK's options that keep users, headers, bodies, prompts and a frame's locals (which may
    hold a prompt or a key) out of events: sentry-sdk 3 says so with ``data_collection``, 2 with
    ``send_default_pii`` and ``include_local_variables``; errors logged are events in both."""
    if int(version.split(".")[0]) < 3:
        return {"send_default_pii": False, "include_local_variables": False}
    from sentry_sdk.integrations.logging import LoggingIntegration

    off = {"mode": "off"}
    return {
        # 3 makes events of nothing logged and sends every INFO line as a Sentry log: NOA's
        # errors are what it logs at ERROR, and its other lines stay in its own logs
        "integrations": [LoggingIntegration(level=None, event_level=logging.ERROR)],
        "data_collection": {
            "user_info": False,
            "cookies": off,
            "http_headers": {"request": off},
            "http_bodies": [],
            "url_query_params": off,
            "gen_ai": {"inputs": False, "outputs": False},
            "mcp": {"inputs": False, "outputs": False},
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
    }
