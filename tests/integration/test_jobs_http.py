"""The job API over HTTP on a whole in-process NOA (keys, limits, usage, the fake upstream) with a
runner in the server's event loop: submit, results, billing to the submitting key, idempotency,
scoping, cancel, client errors, retries into dead letters and redrive, bad input, schedules
managed by admins, and the app handle's job methods. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from databases import fresh_database_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from noa.build import gateway
from noa.build import jobs as jobs_build
from noa.config import parse_config
from noa.jobs.webhook_signing import WebhookSecret
from noa.testing.fake_upstream import FakeUpstream, Step
from noa.testing.server import ServerThread

MASTER = "sk-master-jobs-test"
SECRET = str(WebhookSecret.generate())
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
FINAL = {"completed", "failed", "dead", "cancelled"}


class Noa:
    """NOA with its job runner, served on loopback."""

    def __init__(self, env: dict[str, str]) -> None:
        config = parse_config(
            {
                "routing": {"retries": 0},
                "providers": {"openai": {"kind": "openai", "max_retries": 0}},
                "models": [{"id": "gpt", "provider": "openai", "upstream": "gpt-4o-mini"}],
                "usage": {"flush_interval_s": 3600},
                "jobs": {
                    "base_backoff_s": 0.01,
                    "cap_backoff_s": 0.05,
                    "poll_s": 0.05,
                    "webhooks": {"allow_hosts": ["127.0.0.1/32"]},  # the test's receiver
                },
            }
        )
        self.parts = gateway.inprocess(config, env)
        self.jobs = jobs_build.runner(self.parts, owner="test-runner", environ=env)
        self.parts.jobs = jobs_build.api(self.parts, notify=self.jobs.notify, environ=env)
        self.handle = jobs_build.HandleJobs(self.parts.jobs, self.parts.access.auth)
        self.server = ServerThread(self.parts.app()).start()
        self.url = self.server.base_url

        async def start() -> None:
            self.jobs.start()

        self.server.run(start())

    def call(self, method: str, path: str, key: str = MASTER, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}", **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def wait(self, job_id: str, key: str = MASTER, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}", key).json()
            if job["status"] in FINAL or time.monotonic() > deadline:
                return job
            time.sleep(0.02)

    def key(self, **fields: Any) -> str:
        made = self.call("POST", "/v1/admin/keys", json={"name": "k", **fields})
        assert made.status_code in (200, 201), made.text
        secret: str = made.json()["key"]
        return secret

    def close(self) -> None:
        self.server.run(self.jobs.aclose())
        self.server.run(self.parts.aclose())
        self.server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def noa(
    request: pytest.FixtureRequest, upstream_env: dict[str, str], fake: FakeUpstream, tmp_path: Path
) -> Iterator[Noa]:
    url = f"sqlite:///{tmp_path}/noa.db" if request.param == "sqlite" else fresh_database_url()
    server = Noa(
        upstream_env
        | {"NOA_MASTER_KEY": MASTER, "NOA_DATABASE_URL": url, "NOA_WEBHOOK_SECRET": SECRET}
    )
    yield server
    server.close()


def test_a_job_runs_through_the_gateway_and_is_billed_to_its_key(noa: Noa) -> None:
    key = noa.key()
    submitted = noa.call(
        "POST",
        "/v1/jobs",
        key,
        json={"endpoint": "/v1/chat/completions", "body": CHAT, "metadata": {"doc": 7}},
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running", "completed") and job["object"] == "job"
    done = noa.wait(job["id"], key)
    assert done["status"] == "completed", done
    assert done["result"]["object"] == "chat.completion"
    assert done["result"]["choices"][0]["message"]["role"] == "assistant"
    assert done["metadata"] == {"doc": 7} and done["attempts"] == 1
    assert [a["outcome"] for a in done["attempt_history"]] == ["completed"]
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    noa.server.run(noa.parts.access.usage.flush())
    usage = noa.call("GET", "/v1/usage", key).json()
    assert usage["data"] and usage["data"][0]["requests"] == 1, usage


def test_idempotency_key_replays_the_job_and_refuses_another_request(noa: Noa) -> None:
    body = {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "x"}}
    first = noa.call("POST", "/v1/jobs", json=body, headers={"idempotency-key": "doc-1"})
    again = noa.call("POST", "/v1/jobs", json=body, headers={"idempotency-key": "doc-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "y"}}
    clash = noa.call("POST", "/v1/jobs", json=other, headers={"idempotency-key": "doc-1"})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"
    assert noa.wait(first.json()["id"])["status"] == "completed"
    late = noa.call("DELETE", f"/v1/jobs/{first.json()['id']}")
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_finished"


def test_keys_see_their_own_jobs_and_admins_see_all(noa: Noa) -> None:
    a, b = noa.key(), noa.key()
    later = time.time() + 3600  # stays queued
    job = {"endpoint": "/v1/chat/completions", "body": CHAT, "run_at": later}
    ja = noa.call("POST", "/v1/jobs", a, json=job).json()
    jb = noa.call("POST", "/v1/jobs", b, json=job).json()
    assert [j["id"] for j in noa.call("GET", "/v1/jobs", a).json()["data"]] == [ja["id"]]
    assert noa.call("GET", f"/v1/jobs/{jb['id']}", a).status_code == 404
    assert noa.call("DELETE", f"/v1/jobs/{jb['id']}", a).status_code == 404
    everyone = noa.call("GET", "/v1/jobs?status=queued").json()
    assert {j["id"] for j in everyone["data"]} == {ja["id"], jb["id"]}
    listed = noa.call("GET", "/v1/admin/jobs", params={"key_id": jb.get("key_id", "")})
    assert listed.status_code == 200
    page = noa.call("GET", "/v1/jobs?limit=1").json()
    assert page["has_more"] is True and len(page["data"]) == 1
    rest = noa.call("GET", f"/v1/jobs?limit=1&after={page['last_id']}").json()
    assert rest["data"][0]["id"] != page["data"][0]["id"]
    assert noa.call("GET", "/v1/admin/jobs", a).status_code == 403
    stats = noa.call("GET", "/v1/admin/jobs/stats").json()
    assert stats["by_status"]["queued"] == 2


def test_cancel_a_queued_job_twice(noa: Noa) -> None:
    job = noa.call(
        "POST",
        "/v1/jobs",
        json={"endpoint": "/v1/chat/completions", "body": CHAT, "run_at": "2999-01-01T00:00:00Z"},
    ).json()
    cancelled = noa.call("DELETE", f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = noa.call("DELETE", f"/v1/jobs/{job['id']}")  # DELETE is idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_client_error_fails_at_once_with_the_synchronous_error(noa: Noa) -> None:
    job = noa.call(
        "POST",
        "/v1/jobs",
        json={"endpoint": "/v1/chat/completions", "body": {**CHAT, "model": "nope"}},
    ).json()
    done = noa.wait(job["id"])
    assert done["status"] == "failed" and done["attempts"] == 1
    sync = noa.call("POST", "/v1/chat/completions", json={**CHAT, "model": "nope"}).json()
    assert done["error"]["code"] == sync["error"]["code"] == "model_not_found"


def test_retries_end_dead_with_every_reason_then_a_redrive_completes(
    noa: Noa, fake: FakeUpstream
) -> None:
    fake.always = Step(status=500, body={"error": {"message": "boom", "type": "server_error"}})
    job = noa.call(
        "POST",
        "/v1/jobs",
        json={"endpoint": "/v1/chat/completions", "body": CHAT, "max_attempts": 3},
    ).json()
    dead = noa.wait(job["id"])
    assert dead["status"] == "dead" and dead["attempts"] == 3, dead
    outcomes = [a["outcome"] for a in dead["attempt_history"]]
    assert outcomes == ["retried", "retried", "dead"]
    assert all(a["error"] for a in dead["attempt_history"])
    assert noa.call("GET", "/v1/admin/jobs?status=dead").json()["data"][0]["id"] == job["id"]
    fake.always = None
    redriven = noa.call("POST", f"/v1/admin/jobs/{job['id']}/redrive")
    assert redriven.status_code == 200 and redriven.json()["status"] == "queued"
    assert noa.wait(job["id"])["status"] == "completed"
    again = noa.call("POST", f"/v1/admin/jobs/{job['id']}/redrive")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_dead"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"endpoint": "/v1/chat/completions", "body": {**CHAT, "stream": True}}, "body.stream"),
        ({"endpoint": "/v1/images", "body": CHAT}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "body": {"model": "gpt"}}, "body.messages"),
        ({"endpoint": "/v1/chat/completions", "body": CHAT, "priority": "urgent"}, "priority"),
        ({"endpoint": "/v1/chat/completions", "body": CHAT, "max_attempts": 0}, "max_attempts"),
        ({"endpoint": "/v1/chat/completions", "body": CHAT, "run_at": -5}, "run_at"),
        (
            {"endpoint": "/v1/chat/completions", "body": CHAT, "callback_url": "http://10.1.2.3/"},
            "callback_url",
        ),
        ({"endpoint": "/v1/chat/completions", "body": CHAT, "surprise": 1}, "surprise"),
    ],
)
def test_bad_jobs_are_400s_naming_the_field(noa: Noa, body: dict[str, Any], param: str) -> None:
    answer = noa.call("POST", "/v1/jobs", json=body)
    assert answer.status_code == 400, answer.text
    assert param in (answer.json()["error"]["param"] or ""), answer.json()
    assert noa.call("GET", "/v1/admin/jobs/stats").json()["by_status"]["queued"] == 0


def test_a_long_poll_answers_once_the_job_is_final(noa: Noa) -> None:
    body = {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "poll"}}
    job = noa.call("POST", "/v1/jobs", json=body).json()
    done = noa.call("GET", f"/v1/jobs/{job['id']}?wait=20").json()
    assert done["status"] == "completed"
    later = {**body, "run_at": time.time() + 3600}
    queued = noa.call("POST", "/v1/jobs", json=later).json()
    assert noa.call("GET", f"/v1/jobs/{queued['id']}?wait=0.2").json()["status"] == "queued"
    for bad in ("-1", "61", "nan", "soon"):
        answer = noa.call("GET", f"/v1/jobs/{queued['id']}?wait={bad}")
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "wait"


def test_job_routes_need_a_key_and_refuse_bad_ids(noa: Noa) -> None:
    assert httpx.get(noa.url + "/v1/jobs").status_code == 401
    assert noa.call("GET", "/v1/jobs/job_missing").status_code == 404
    assert noa.call("GET", "/v1/jobs?status=weird").status_code == 400
    assert noa.call("GET", "/v1/jobs?limit=0").status_code == 400
    assert noa.call("GET", "/v1/jobs/" + "x" * 300).status_code == 400


def test_admins_manage_schedules(noa: Noa) -> None:
    job = {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "nightly"}}
    bad = noa.call("POST", "/v1/admin/schedules", json={**job, "cron": "61 * * * *"})
    assert bad.status_code == 400
    zone = noa.call(
        "POST", "/v1/admin/schedules", json={**job, "cron": "0 9 * * *", "timezone": "Mars/Base"}
    )
    assert zone.status_code == 400
    made = noa.call(
        "POST",
        "/v1/admin/schedules",
        json={**job, "cron": "0 9 * * *", "timezone": "Europe/Paris", "name": "nightly"},
    )
    assert made.status_code == 201, made.text
    schedule = made.json()
    assert schedule["next_due_at"] > time.time() and schedule["enabled"] is True
    listed = noa.call("GET", "/v1/admin/schedules").json()
    assert [s["id"] for s in listed["data"]] == [schedule["id"]]
    changed = noa.call(
        "PATCH", f"/v1/admin/schedules/{schedule['id']}", json={"enabled": False, "cron": "@daily"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False and changed.json()["cron"] == "@daily"
    key = noa.key()
    assert noa.call("GET", "/v1/admin/schedules", key).status_code == 403
    gone = noa.call("DELETE", f"/v1/admin/schedules/{schedule['id']}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert noa.call("GET", f"/v1/admin/schedules/{schedule['id']}").status_code == 404


def test_a_due_schedule_runs_its_job(noa: Noa) -> None:
    made = noa.call(
        "POST",
        "/v1/admin/schedules",
        json={
            "endpoint": "/v1/embeddings",
            "body": {"model": "gpt", "input": "x"},
            "cron": "* * * * *",
        },
    ).json()

    async def due_now() -> None:
        await noa.parts.db.execute(
            "UPDATE noa_job_schedules SET next_due_at = $1 WHERE id = $2", time.time(), made["id"]
        )

    noa.server.run(due_now())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = noa.call("GET", "/v1/jobs?status=completed").json()["data"]
        if found:
            break
        time.sleep(0.05)
    assert len(found) == 1 and found[0]["result"]["object"] == "list"


def test_the_handle_submits_and_awaits_jobs(noa: Noa) -> None:
    handle = noa.handle
    job = noa.server.run(
        handle.submit(
            {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "h"}}, "h-1", None
        )
    )
    done = noa.server.run(handle.wait(job["id"], 20.0, None))
    assert done["status"] == "completed" and done["result"]["data"][0]["embedding"]
    key = noa.key()
    mine = noa.server.run(
        handle.submit(
            {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "k"}}, None, key
        )
    )
    assert noa.call("GET", f"/v1/jobs/{mine['id']}", key).status_code == 200
    assert noa.call("GET", f"/v1/jobs/{job['id']}", key).status_code == 404


def test_a_restart_resumes_the_queued_jobs(
    upstream_env: dict[str, str], fake: FakeUpstream, tmp_path: Path
) -> None:
    env = upstream_env | {
        "NOA_MASTER_KEY": MASTER,
        "NOA_DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
    }
    first = Noa(env)
    first.server.run(first.jobs.aclose())  # its runner is gone: jobs wait in the database
    body = {"endpoint": "/v1/embeddings", "body": {"model": "gpt", "input": "after restart"}}
    ids = [first.call("POST", "/v1/jobs", json=body).json()["id"] for _ in range(3)]
    assert {first.call("GET", f"/v1/jobs/{i}").json()["status"] for i in ids} == {"queued"}
    first.close()
    second = Noa(env)  # NOA started again on the same store
    try:
        assert [second.wait(i)["status"] for i in ids] == ["completed"] * 3
    finally:
        second.close()


def test_a_finished_job_is_posted_signed_to_its_callback(noa: Noa) -> None:
    got: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: Request) -> Response:
        got.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    receiver = ServerThread(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start()
    try:
        answer = noa.call(
            "POST",
            "/v1/jobs",
            json={
                "endpoint": "/v1/embeddings",
                "body": {"model": "gpt", "input": "w"},
                "callback_url": f"{receiver.base_url}/hook",
            },
        )
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert noa.wait(job["id"])["status"] == "completed"
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) == 1
        body, headers = got[0]
        event = openai.OpenAI(api_key="x", webhook_secret=SECRET).webhooks.unwrap(body, headers)
        payload = json.loads(body)
        assert payload["type"] == "job.completed" and payload["data"]["id"] == job["id"]
        assert event.id == headers["webhook-id"]
        shown = noa.call("GET", f"/v1/jobs/{job['id']}").json()
        while (
            shown["webhook_deliveries"][0]["status"] != "delivered" and time.monotonic() < deadline
        ):
            time.sleep(0.05)
            shown = noa.call("GET", f"/v1/jobs/{job['id']}").json()
        assert shown["webhook_deliveries"][0]["status"] == "delivered"
    finally:
        receiver.stop()
