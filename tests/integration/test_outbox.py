"""The transactional outbox against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.core.errors import BrokerUnavailable
from eeghub.core.outbox import OutboxRelay, enqueue, enqueue_json
from eeghub.core.ports import Message
from tests.fakes import FakeBroker

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[PostgresDatabase]:
    await migrate(database_url)
    db = PostgresDatabase(database_url, max_size=6)
    await db.start()
    yield db
    await db.close()


def broker_with_queue() -> FakeBroker:
    broker = FakeBroker()
    broker.queues["jobs"] = {}
    return broker


async def test_only_committed_messages_are_published(database: PostgresDatabase) -> None:
    broker = broker_with_queue()
    relay = OutboxRelay(database, broker)
    async with database.transaction() as conn:
        await enqueue_json(conn, {"session_id": "s1"}, queue="jobs")
    with pytest.raises(RuntimeError):
        async with database.transaction() as conn:
            await enqueue_json(conn, {"session_id": "rolled-back"}, queue="jobs")
            raise RuntimeError("abort")
    assert broker.published == []  # nothing before the relay runs
    assert await relay.publish_pending() == 1
    [(queue, exchange, message)] = broker.published
    assert queue == "jobs" and exchange is None
    assert json.loads(message.body) == {"session_id": "s1"}
    assert message.content_type == "application/json"
    assert await relay.pending() == 0 and await relay.publish_pending() == 0


async def test_rows_left_by_a_dead_process_are_published_by_the_next(database: PostgresDatabase) -> None:
    async with database.transaction() as conn:  # committed, then "the process died"
        await enqueue(conn, b"late", exchange="ex", headers={"user_id": "u1", "n": 3})
    broker = FakeBroker()
    relay = OutboxRelay(database, broker, poll_interval=0.05)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(100):
            if broker.published:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [(_, exchange, message)] = broker.published
    assert exchange == "ex" and message.body == b"late" and message.headers == {"user_id": "u1", "n": 3}


async def test_broker_outage_keeps_rows_and_order(database: PostgresDatabase) -> None:
    class Flaky(FakeBroker):
        fail = True

        async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
            if self.fail:
                raise BrokerUnavailable("down")
            await super().publish(message, queue=queue, exchange=exchange)

    broker = Flaky()
    relay = OutboxRelay(database, broker)
    async with database.transaction() as conn:
        for i in range(3):
            await enqueue(conn, str(i).encode(), queue="jobs")
    assert await relay.publish_pending() == 0
    row = await database.fetchrow("SELECT attempts, last_error FROM eeghub_outbox ORDER BY id LIMIT 1")
    assert row is not None and row["attempts"] == 1 and "down" in row["last_error"]
    broker.fail = False
    assert await relay.publish_pending() == 3
    assert [m.body for _, _, m in broker.published] == [b"0", b"1", b"2"]


async def test_concurrent_relays_publish_each_row_once(database: PostgresDatabase) -> None:
    async with database.transaction() as conn:
        for i in range(200):
            await enqueue(conn, str(i).encode(), queue="jobs")
    broker = FakeBroker()
    relays = [OutboxRelay(database, broker, batch_size=10) for _ in range(4)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.publish_pending():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    bodies = sorted(int(m.body) for _, _, m in broker.published)
    assert bodies == list(range(200))


async def test_enqueue_needs_exactly_one_target(database: PostgresDatabase) -> None:
    async with database.acquire() as conn:
        with pytest.raises(ValueError):
            await enqueue(conn, b"x")
        with pytest.raises(ValueError):
            await enqueue(conn, b"x", queue="a", exchange="b")
