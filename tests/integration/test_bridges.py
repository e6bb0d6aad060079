"""The queue bridges against the four real brokers (RabbitMQ, Kafka on tansu, SQS on moto,
Redis Streams), each through its own transport and the suite's PostgreSQL job store:

- 200 messages in, 200 results out: every id answered once, with its correlation id;
- malformed, unknown-model and too-large messages land in the dead-letter destination with
  their reasons, and a job that dies after its retries is published there too;
- a message delivered twice (the same id) makes one job and one result;
- the bridge's process SIGKILLed while it takes a batch loses nothing: another bridge
  answers every message (each id maps to one job: a redelivery finds its job);
- the broker restarted mid-stream: the bridge reconnects, nothing it accepted is lost, and
  results owed while the broker was away are published once it is back.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from bridge_rig import CHILD, Rig, by_id, request, until
from brokers import KINDS, BrokerProbe, private, probe, unique
from databases import fresh_postgres, postgres_dsn

from noa.storage.db import Database
from noa.storage.migrations import migrate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.parametrize("kind", KINDS)


@pytest.fixture
async def pg() -> AsyncIterator[Database]:
    database = await fresh_postgres()
    await migrate(database)
    yield database
    await database.close()


async def rig_on(pg: Database, broker: BrokerProbe, **options: object) -> Rig:
    names = unique("in"), unique("out"), unique("dead")
    await broker.create(*names)
    return Rig(pg, broker, *names, **options)  # type: ignore[arg-type]


async def test_200_messages_in_200_results_out(kind: str, pg: Database) -> None:
    broker = probe(kind)
    rig = await rig_on(pg, broker)
    rig.start()
    try:
        for i in range(200):
            await broker.send(rig.source, request(f"m-{i}", f"hello {i}", correlation_id=f"c-{i}"))
        results = by_id(await broker.read(rig.reply_to, 200, timeout_s=90))
        assert sorted(results) == sorted(f"m-{i}" for i in range(200))
        for i in range(200):
            (one,) = results[f"m-{i}"]  # none duplicated
            assert one["status"] == "completed" and one["result"] == {"echo": f"hello {i}"}
            assert one["correlation_id"] == f"c-{i}" and one["job_id"].startswith("job_")
        assert await rig.jobs() == 200
    finally:
        await rig.stop()
        await broker.close()


async def test_poison_and_dead_jobs_land_in_the_dead_letters(kind: str, pg: Database) -> None:
    broker = probe(kind)
    rig = await rig_on(pg, broker)
    rig.start()
    try:
        await broker.send(rig.source, b"{not json", message_id="bad-json")
        unknown = orjson.loads(request("unknown", "x"))
        unknown["body"]["model"] = "nope"
        await broker.send(rig.source, orjson.dumps(unknown))
        await broker.send(rig.source, request("big", "x" * 5000))
        await broker.send(rig.source, request("doomed", "die"))
        await broker.send(rig.source, request("fine", "ok"))
        dead = by_id(await broker.read(rig.dead_letter, 4, timeout_s=60))
        codes = {m["reason"]["code"]: m for ms in dead.values() for m in ms}
        assert sorted(codes) == ["bad_json", "job_dead", "too_large", "unknown_model"]
        assert len(dead) == 4 and all(len(ms) == 1 for ms in dead.values())
        assert codes["bad_json"]["original"] == "{not json"
        assert codes["unknown_model"]["id"] == "unknown"  # its envelope's id was read
        assert codes["job_dead"]["id"] == "doomed"
        assert (
            codes["too_large"]["truncated"] is False and "x" * 100 in codes["too_large"]["original"]
        )
        assert dead["doomed"][0]["request"]["body"]["messages"][0]["content"] == "die"
        results = by_id(await broker.read(rig.reply_to, 2, timeout_s=60))
        assert results["doomed"][0]["status"] == "dead" and "error" in results["doomed"][0]
        assert results["fine"][0]["result"] == {"echo": "ok"}
        assert await rig.jobs() == 2  # poison never became a job
    finally:
        await rig.stop()
        await broker.close()


async def test_a_redelivered_message_yields_one_result(kind: str, pg: Database) -> None:
    broker = probe(kind)
    rig = await rig_on(pg, broker)
    rig.start()
    try:
        await broker.send(rig.source, request("twice", "once only"))
        first = await broker.read(rig.reply_to, 1, timeout_s=60)
        await broker.send(rig.source, request("twice", "once only"))  # delivered again
        await broker.send(rig.source, request("after", "marker"))
        later = by_id(await broker.read(rig.reply_to, 1, timeout_s=60))
        assert list(later) == ["after"]  # the marker came, the second "twice" made nothing
        assert by_id(first)["twice"][0]["result"] == {"echo": "once only"}
        assert await rig.jobs() == 2
    finally:
        await rig.stop()
        await broker.close()


async def test_a_bridge_killed_mid_batch_loses_nothing(kind: str, pg: Database) -> None:
    broker = probe(kind)
    rig = await rig_on(pg, broker, consumer="survivor")
    row = await pg.fetchrow("SELECT current_schema() AS s")
    assert row is not None
    for i in range(200):
        await broker.send(rig.source, request(f"k-{i}", f"n{i}"))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, kind, postgres_dsn(), row["s"], rig.source, rig.reply_to,
        rig.dead_letter, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).startswith(b"started")

        async def some_taken() -> bool:
            return await rig.jobs() >= 20

        await until(some_taken, 60, "the doomed bridge to take messages")
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    taken = await rig.jobs()
    rig.start()
    try:
        results = by_id(await broker.read(rig.reply_to, 200, timeout_s=120))
        assert sorted(results) == sorted(f"k-{i}" for i in range(200)), f"{taken} taken first"
        for i in range(200):  # one job per message, whoever took it and however often
            assert {r["job_id"] for r in results[f"k-{i}"]} == {results[f"k-{i}"][0]["job_id"]}
        assert await rig.jobs() == 200
    finally:
        await rig.stop()
        await broker.close()


async def test_the_broker_restarted_mid_stream(kind: str, pg: Database, tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    broker = await private(kind, tmp_path)
    rig = await rig_on(pg, broker)
    rig.start(runner=False)  # results owed while the broker is away: published after
    try:
        for i in range(100):
            await broker.send(rig.source, request(f"a-{i}", f"a{i}"))

        async def all_taken() -> bool:
            return await rig.jobs() == 100

        await until(all_taken, 60, "the first 100 messages to be taken")
        await broker.stop()

        async def noticed() -> bool:  # the outage seen, not slept through between two polls
            worker = rig.worker
            return worker is not None and not worker.health.connected

        await until(noticed, 60, "the bridge to see its broker gone")
        await broker.start()
        await broker.create(rig.source, rig.reply_to, rig.dead_letter)
        for i in range(100):
            await broker.send(rig.source, request(f"b-{i}", f"b{i}"))
        rig.start_runner()
        results = by_id(await broker.read(rig.reply_to, 200, timeout_s=120))
        expected = [f"a-{i}" for i in range(100)] + [f"b-{i}" for i in range(100)]
        assert sorted(results) == sorted(expected)
        assert rig.worker is not None and rig.worker.health.reconnects >= 1
        assert await rig.jobs() == 200
    finally:
        await rig.stop()
        await broker.close()
    # the connection given up on the restart is closed with all of its client's tasks (an
    # aiokafka consumer cut short in stop() kept its metadata task once per reconnect)
    await asyncio.sleep(0.1)
    left = [t.get_coro() for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], left
