"""The linker's periodic check: a recently ended, linked session with
unclaimed packets that belong to it is queued for linking again (the packets
whose rows were being written while the linker read); claimed packets,
packets of another session, old sessions and sessions not linked yet are
left alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.config import Settings
from eeghub.plugins.linker import linking
from tests.fakes import FakeOutboxRelay

pytestmark = pytest.mark.postgres


@pytest.fixture
async def ctx(database_url: str) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=2)
    await database.start()
    yield SimpleNamespace(database=database, settings=Settings(), outbox=FakeOutboxRelay())
    await database.close()


async def add_session(ctx: Any, sid: str, device: str, end: datetime, status: str) -> None:
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status, event_correction_status)
           VALUES ($1, 'u-re', $2, $3, $4, $5, 'completed')""",
        sid, device, end - timedelta(seconds=20), end, status,
    )  # fmt: skip


async def add_object(ctx: Any, oid: str, device: str, start: datetime, session_id: str | None) -> None:
    ms = int(start.timestamp() * 1000)
    await ctx.database.execute(
        """INSERT INTO raw_data_objects (object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms,
                                         sampling_rate, lsb_to_volts, session_id)
           VALUES ($1, 'u-re', $2, $3, $4, 250, 1e-6, $5)""",
        oid, device, ms, ms + 996, session_id,
    )  # fmt: skip


async def test_recently_ended_sessions_with_unclaimed_packets_are_queued_again(ctx: Any) -> None:
    now = datetime.now(UTC)
    await add_session(ctx, "r-missed", "d1", now - timedelta(seconds=5), "completed")
    await add_object(ctx, "o-missed", "d1", now - timedelta(seconds=15), None)
    await add_session(ctx, "r-claimed", "d2", now - timedelta(seconds=5), "completed")
    await add_object(ctx, "o-claimed", "d2", now - timedelta(seconds=15), "r-claimed")
    await add_session(ctx, "r-old", "d3", now - timedelta(hours=2), "completed")
    await add_object(ctx, "o-old", "d3", now - timedelta(hours=2, seconds=10), None)
    await add_session(ctx, "r-queued", "d4", now - timedelta(seconds=5), "pending")
    await add_object(ctx, "o-queued", "d4", now - timedelta(seconds=15), None)
    await add_session(ctx, "r-other-device", "d5", now - timedelta(seconds=5), "completed")
    await add_object(ctx, "o-elsewhere", "d6", now - timedelta(seconds=15), None)
    before = await ctx.database.fetchval("SELECT coalesce(max(id), 0) FROM eeghub_outbox")

    assert await linking.recheck_late_packets(ctx) == 1
    statuses = dict(await ctx.database.fetch("SELECT session_id, link_status FROM sessions WHERE user_id = 'u-re'"))
    assert statuses == {"r-missed": "pending", "r-claimed": "completed", "r-old": "completed",
                        "r-queued": "pending", "r-other-device": "completed"}  # fmt: skip
    jobs = await ctx.database.fetch("SELECT target, body FROM eeghub_outbox WHERE id > $1", before)
    assert [(j["target"], json.loads(bytes(j["body"]))) for j in jobs] == [
        (ctx.settings.broker.queues.data_linker_queue, {"session_id": "r-missed"})
    ]
    assert ctx.outbox.wakes == 1
    # Queued once: the session is pending now, the next check leaves it be.
    assert await linking.recheck_late_packets(ctx) == 0


async def test_a_packet_of_the_next_session_being_recorded_is_not_a_late_packet(ctx: Any) -> None:
    """The device streams on into the next session, which is being recorded
    (not ended, so not linked): its first packet starts where the linked
    session ended, and belongs to the next one by the linker's rule. Check
    after check, it never sends the ended session back to linking (each time
    with its event correction to redo)."""
    end = datetime.now(UTC) - timedelta(seconds=30)
    await add_session(ctx, "r-ended", "d7", end, "completed")
    await ctx.database.execute(
        "INSERT INTO sessions (session_id, user_id, device_id, start_time) VALUES ('r-recording', 'u-re', 'd7', $1)", end
    )
    await add_object(ctx, "o-boundary", "d7", end, None)
    await add_object(ctx, "o-next", "d7", end + timedelta(seconds=1), None)
    assert await linking.recheck_late_packets(ctx) == 0
    assert await linking.recheck_late_packets(ctx) == 0
    # A packet of the ended session (in its padding: 1.5 s before its start,
    # where the linker takes it too): linked again.
    await add_object(ctx, "o-late", "d7", end - timedelta(seconds=21, milliseconds=500), None)
    assert await linking.recheck_late_packets(ctx) == 1
