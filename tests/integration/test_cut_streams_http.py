"""Streams cut early are paid for, over HTTP: a budgeted key that reads a few chunks of each
answer and hangs up (or whose upstream fails midway) is charged the prompt and what it read,
in its budget and its usage records, until it is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

MASTER = "sk-master-cut-streams"
PRICE = {"input": 1000.0, "output": 2000.0}  # USD per million tokens: a token is visible
READ = 5  # content chunks each client reads before it hangs up
TEXT = " ".join(["word"] * 60)  # the fake answers "echo: <text>", a chunk per word
BUDGET = 1.0


class Gateway:
    def __init__(self, env: dict[str, str]) -> None:
        config = parse_config(
            {
                "routing": {"retries": 0},
                "providers": {"openai": {"kind": "openai", "max_retries": 0}},
                "models": [
                    {"id": "priced", "provider": "openai", "upstream": "gpt-4o", "price": PRICE}
                ],
                "usage": {"flush_interval_s": 3600},  # the test flushes
            }
        )
        parts = gateway.inprocess(config, env)
        self.access = parts.access
        app = create_app(parts.service, auth=parts.access.auth, admin=parts.access.admin)
        self.server = ServerThread(app).start()
        self.url = self.server.base_url

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {MASTER}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def close(self) -> None:
        self.server.run(self.access.aclose())
        self.server.stop()


@pytest.fixture
def noa(upstream_env: dict[str, str], fake: FakeUpstream, tmp_path: Path) -> Iterator[Gateway]:
    fake.chunk_delay_s = 0.02  # the client hangs up while the answer is still coming
    env = upstream_env | {
        "NOA_MASTER_KEY": MASTER,
        "NOA_DATABASE_URL": f"sqlite:///{tmp_path / 'noa.db'}",
        "NOA_HOME": str(tmp_path),
    }
    served = Gateway(env)
    try:
        yield served
    finally:
        fake.chunk_delay_s = 0.0
        served.close()


def cut_stream(url: str, key: str, read: int) -> tuple[int, int, str | None]:
    """(status, content chunks read, error code) of a stream the client leaves after ``read``
    content chunks."""
    body = {
        "model": "priced",
        "messages": [{"role": "user", "content": TEXT}],
        "max_tokens": 100,
        "stream": True,
    }
    seen = 0
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, 0, response.json()["error"]["code"]
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                return 200, seen, event["error"].get("code")
            if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                seen += 1
                if seen == read:
                    break  # hang up
    return 200, seen, None


def test_cut_streams_consume_a_budget_until_the_key_is_refused(
    noa: Gateway, fake: FakeUpstream
) -> None:
    created = noa.admin("POST", "/v1/admin/keys", json={"name": "cutter", "budget_usd": BUDGET})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    prompt_estimate = len(TEXT) // 4 + 1
    least = (prompt_estimate * PRICE["input"] + READ * PRICE["output"]) / 1e6  # per cut stream
    served, refusal = 0, None
    for i in range(2 * int(BUDGET / least)):
        if i % 4 == 3:
            fake.script.append(Step(cut_after=1 + READ))  # the role chunk, READ words, gone
        status, seen, code = cut_stream(noa.url, key, READ)
        if status == 429:
            refusal = code
            break
        assert status == 200 and seen == READ
        served += 1
    assert refusal == "budget_exceeded", f"{served} cut streams and still not refused"
    assert served <= BUDGET / least  # each paid at least its prompt and the chunks it read

    noa.server.run(noa.access.usage.flush())
    summary = noa.admin("GET", f"/v1/admin/usage?group_by=key&key_id={key_id}").json()["data"]
    assert len(summary) == 1
    row = summary[0]
    assert row["requests"] == served
    assert row["completion_tokens"] >= served * READ
    assert row["prompt_tokens"] >= served * prompt_estimate
    assert served * least <= row["cost_usd"] <= BUDGET
