"""The log lines a real server writes: nothing a caller sent that is secret or personal shows up,
and a failed request's correlation id is in both its error body and its log lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.observability.logs import JsonFormatter
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

KEY = "logs-master-key-0123456789"
EMAIL = "jane.doe@example.com"
SECRET = "sk-proj-LeakedUpstreamKey0123456789"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("noa")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_no_secret_or_email_reaches_the_logs_and_failures_carry_their_id(
    upstream_env: dict[str, str], fake: FakeUpstream, lines: io.StringIO
) -> None:
    config = parse_config({"routing": {"retries": 0}, "providers": {"openai": {"kind": "openai"}}})
    service = gateway.inprocess_service(config, upstream_env)
    server = ServerThread(create_app(service, master_key=KEY)).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            auth = {"authorization": f"Bearer {KEY}"}
            prompt = f"my mail is {EMAIL}, my key {SECRET}, card 4111 1111 1111 1111"
            body = {"model": "openai/gpt-x", "messages": [{"role": "user", "content": prompt}]}
            assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
            # a wrong key that is a secret itself, and a model name that is an e-mail address
            refused = client.post("/v1/models", headers={"authorization": f"Bearer {SECRET}"})
            assert refused.status_code == 401
            missing = client.post(
                "/v1/chat/completions", json={**body, "model": EMAIL}, headers=auth
            )
            assert missing.status_code == 404
            # an upstream that fails, echoing personal data and a key in its error message
            echo = f"rejected {EMAIL} with key {SECRET}"
            fake.script.append(Step(status=500, body={"error": {"message": echo}}))
            failed = client.post("/v1/chat/completions", json=body, headers=auth)
            assert failed.status_code == 502
    finally:
        server.stop()
    text = lines.getvalue()
    records = [orjson.loads(line) for line in text.splitlines()]
    assert records, "the server logged nothing"
    for needle in (EMAIL, SECRET, KEY, "4111 1111 1111 1111", "my mail is"):  # nor the prompt
        assert needle not in text, needle
    for response in (refused, missing, failed):
        cid = response.json()["error"]["correlation_id"]
        assert response.headers["x-correlation-id"] == cid
        logged = [r for r in records if r.get("correlation_id") == cid]
        assert any(r["logger"] == "noa.access" for r in logged), cid
        assert {r["status"] for r in logged if r["logger"] == "noa.access"} == {
            response.status_code
        }
    failure_lines = [
        r for r in records if r.get("correlation_id") == failed.json()["error"]["correlation_id"]
    ]
    assert any(r["level"] == "warning" for r in failure_lines)  # the 502 is logged as an error
