"""Keys, limits, budgets and usage over HTTP: two NOA servers (two 'replicas') sharing the
suite's Redis and a PostgreSQL database of this module's own, driven like a client would."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from databases import fresh_database_url

from noa.build import gateway
from noa.config import parse_config
from noa.http.app import create_app
from noa.testing.fake_upstream import FakeUpstream
from noa.testing.server import ServerThread

MASTER = "sk-master-keys-test"
PRICE = {"input": 1000.0, "output": 2000.0}  # USD per million tokens: costs show at once


class Replica:
    def __init__(self, env: dict[str, str]) -> None:
        config = parse_config(
            {
                "routing": {"retries": 0},
                "providers": {"openai": {"kind": "openai", "max_retries": 0}},
                "models": [
                    {"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini", "price": PRICE},
                    {"id": "other", "provider": "openai", "upstream": "gpt-4o"},
                ],
                "auth": {"key_cache_s": 300},  # revocations must not wait for the cache
                "usage": {"flush_interval_s": 3600},  # tests flush explicitly
            }
        )
        parts = gateway.inprocess(config, env)
        self.service, self.access = parts.service, parts.access
        app = create_app(self.service, auth=self.access.auth, admin=self.access.admin)
        self.server = ServerThread(app).start()
        self.url = self.server.base_url

    def flush(self) -> None:
        self.server.run(self.access.usage.flush())

    def close(self) -> None:
        self.server.run(self.access.aclose())
        self.server.stop()


@pytest.fixture(scope="module")
def database_url() -> str:
    return fresh_database_url()


@pytest.fixture
def replicas(
    upstream_env: dict[str, str], database_url: str, fake: FakeUpstream
) -> Iterator[tuple[Replica, Replica]]:
    import os

    env = upstream_env | {
        "NOA_MASTER_KEY": MASTER,
        "NOA_DATABASE_URL": database_url,
        "NOA_REDIS_URL": os.environ["NOA_TEST_REDIS_URL"],
    }
    a, b = Replica(env), Replica(env)
    yield a, b
    a.close()
    b.close()


def admin(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, url + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=30, **kw
    )


def new_key(url: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    response = admin(url, "POST", "/v1/admin/keys", json={"name": "t", **fields})
    assert response.status_code == 201, response.text
    body = response.json()
    return body.pop("key"), body


def chat(url: str, key: str, text: str = "hello", **extra: Any) -> httpx.Response:
    body = {"model": "gpt", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


async def burst(urls: list[str], key: str, n: int, **extra: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **extra}
        return await asyncio.gather(
            *(
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                )
                for i in range(n)
            )
        )


def test_two_replicas_accept_exactly_the_limit(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    key, _ = new_key(a.url, rpm=7)
    responses = asyncio.run(burst([a.url, b.url], key, 21))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 7 + [429] * 14
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "requests_rate_limit_exceeded"
    accepted = next(r for r in responses if r.status_code == 200)
    assert accepted.headers["x-ratelimit-limit-requests"] == "7"
    assert int(accepted.headers["x-ratelimit-remaining-requests"]) < 7
    assert accepted.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_are_reserved_then_reconciled_with_the_reported_usage(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    key, _ = new_key(a.url, tpm=600)  # refills 10 tokens a second
    first = chat(a.url, key, "one two three", max_tokens=100)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    reserved = 600 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved > used  # an estimate that holds max_tokens
    second = chat(b.url, key, "one two three", max_tokens=100)
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    # the first request's reservation was replaced by what it used (plus what refilled since)
    expected = 600 - used - reserved
    assert expected <= remaining <= expected + 20


def test_a_budget_under_fifty_concurrent_requests_is_never_overspent(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    key, record = new_key(a.url, budget_usd=0.5, budget_period="day")
    responses = asyncio.run(burst([a.url, b.url], key, 50, max_tokens=20))
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert accepted and refused and len(accepted) + len(refused) == 50
    assert refused[0].json()["error"]["code"] == "budget_exceeded"
    a.flush()
    b.flush()
    usage = admin(a.url, "GET", f"/v1/admin/usage?group_by=key&key_id={record['id']}").json()
    spent = usage["data"][0]["cost_usd"]
    # each request reserved the most it could cost (its prompt's bytes and 20 completion
    # tokens), so requests admitted together stay within the budget
    assert spent <= 0.5


def test_revoked_and_expired_keys_are_refused_at_once(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    key, record = new_key(a.url)
    assert chat(b.url, key).status_code == 200  # b has it cached now (for 300 s)
    assert admin(a.url, "DELETE", f"/v1/admin/keys/{record['id']}").json()["state"] == "revoked"
    refused = chat(b.url, key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_revoked"
    assert chat(a.url, key).status_code == 401

    expired, _ = new_key(a.url, expires_at=1.0)
    response = chat(a.url, expired)
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_expired"


def test_rotation_allowed_models_and_admin_scope(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    key, record = new_key(a.url, models=["gpt"])
    assert chat(a.url, key).status_code == 200
    other = httpx.post(
        a.url + "/v1/chat/completions",
        json={"model": "other", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "model_not_allowed"
    forbidden = httpx.get(a.url + "/v1/admin/keys", headers={"authorization": f"Bearer {key}"})
    assert forbidden.status_code == 403

    rotated = admin(a.url, "POST", f"/v1/admin/keys/{record['id']}/rotate")
    assert rotated.status_code == 201
    new_secret = rotated.json()["key"]
    assert chat(a.url, new_secret).status_code == 200
    assert chat(a.url, key).status_code == 401

    admin_key, _ = new_key(a.url, scopes=["admin"])
    listed = httpx.get(a.url + "/v1/admin/keys", headers={"authorization": f"Bearer {admin_key}"})
    assert listed.status_code == 200
    assert all("hash" not in k and "key" not in k for k in listed.json()["data"])
    bad = admin(a.url, "POST", "/v1/admin/keys", json={"rpm": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"


def test_a_key_sees_only_the_models_it_may_use(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    key, _ = new_key(a.url, models=["gpt"])
    as_key = {"authorization": f"Bearer {key}"}
    for path in ("/v1/models", "/api/v1/models"):
        listed = httpx.get(a.url + path, headers=as_key)
        assert listed.status_code == 200
        assert [m["id"] for m in listed.json()["data"]] == ["gpt"]
    everything = admin(a.url, "GET", "/v1/models").json()["data"]
    assert {m["id"] for m in everything} == {"gpt", "other"}

    assert httpx.get(a.url + "/v1/models/gpt", headers=as_key).json()["id"] == "gpt"
    unknown = httpx.get(a.url + "/v1/models/no-such-model", headers=as_key)
    for refused in (
        httpx.get(a.url + "/v1/models/other", headers=as_key),
        httpx.get(a.url + "/api/v1/models/other", headers=as_key),
    ):
        assert refused.status_code == unknown.status_code == 404
        assert refused.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert refused.json()["error"]["type"] == unknown.json()["error"]["type"]
    assert admin(a.url, "GET", "/v1/models/other").status_code == 200

    team = f"team-{uuid.uuid4().hex[:6]}"
    admin(a.url, "PUT", f"/v1/admin/teams/{team}", json={"models": ["other"]})
    member, _ = new_key(a.url, team=team)
    listed = httpx.get(a.url + "/v1/models", headers={"authorization": f"Bearer {member}"})
    assert [m["id"] for m in listed.json()["data"]] == ["other"]


def test_admin_bodies_nested_too_deep_are_refused_and_lists_still_work(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    team = f"team-{uuid.uuid4().hex[:6]}"
    for method, path in (("POST", "/v1/admin/keys"), ("PUT", f"/v1/admin/teams/{team}")):
        refused = admin(a.url, method, path, json={"metadata": deep})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "json_too_deep"
    for path in ("/v1/admin/keys", "/v1/admin/teams"):
        assert admin(a.url, "GET", path).status_code == 200
    assert admin(a.url, "GET", f"/v1/admin/teams/{team}").status_code == 404


def test_team_limits_are_shared_by_its_keys(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    team = f"team-{uuid.uuid4().hex[:6]}"
    assert admin(a.url, "PUT", f"/v1/admin/teams/{team}", json={"rpm": 3}).status_code == 200
    k1, _ = new_key(a.url, team=team)
    k2, _ = new_key(a.url, team=team)
    statuses = [chat(url, k).status_code for url, k in ((a.url, k1), (b.url, k2)) * 3]
    assert sorted(statuses) == [200] * 3 + [429] * 3


def test_own_usage_and_admin_summaries(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    key, record = new_key(a.url)
    for url in (a.url, b.url, a.url):
        assert chat(url, key, "count me").status_code == 200
    a.flush()
    b.flush()
    own = httpx.get(a.url + "/v1/usage", headers={"authorization": f"Bearer {key}"}).json()
    assert own["key_id"] == record["id"]
    assert sum(row["requests"] for row in own["data"]) == 3
    assert {r["model"] for r in own["recent"]} == {"gpt"}
    assert all(r["cost_usd"] > 0 and r["provider"] == "openai" for r in own["recent"])
    by_model = admin(a.url, "GET", "/v1/admin/usage?group_by=model").json()["data"]
    assert any(row["model"] == "gpt" and row["requests"] >= 3 for row in by_model)
    master_own = admin(a.url, "GET", "/v1/usage")
    assert master_own.status_code == 403


def test_the_secret_appears_in_no_log_line_and_no_table(
    replicas: tuple[Replica, Replica], caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    a, _ = replicas
    with caplog.at_level(logging.DEBUG):
        key, _ = new_key(a.url, name="secret-check")
        assert chat(a.url, key).status_code == 200
        chat(a.url, key + "x")  # a wrong one is not logged either
        a.flush()
    assert all(key[12:] not in r.getMessage() for r in caplog.records)

    async def dump() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT * FROM noa_api_keys")
            usage = await conn.fetch("SELECT * FROM noa_usage")
        finally:
            await conn.close()
        return repr([dict(r) for r in rows]) + repr([dict(r) for r in usage])

    stored = asyncio.run(dump())
    assert key[12:] not in stored and key[:12] in stored  # only the visible prefix
