"""Link and correction jobs that come again for a session already linked and
corrected since they were queued change nothing (real PostgreSQL).

Several jobs for one session are the rule, not the exception: the linker
queues a correction each round, packets stored while a session is being
linked queue the link again, RabbitMQ redelivers after a consumer restart.
A job that finds its work done by a later run must not send the session
back to ``processing``/``pending``: meanwhile its events count as not
corrected, and an ERP analysis asked for then finds the main session
missing ("no main-session event has a trigger-corrected onset")."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.config import Settings
from eeghub.core.experiment_analysis import Stimulus
from eeghub.core.ports import SystemClock
from eeghub.plugins.erp import loader, pipeline
from eeghub.plugins.linker import correction, linking
from tests.fakes import FakeOutboxRelay

pytestmark = pytest.mark.postgres

START = datetime(2026, 1, 1, tzinfo=UTC)
EXPERIMENT = uuid.UUID("6f0c1f3e-0000-4000-8000-000000000001")
STIMULI = [Stimulus("product_01.png")]


@pytest.fixture
async def ctx(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=4)
    await database.start()
    await database.execute("INSERT INTO experiments (experiment_id, name) VALUES ($1, 'idempotence')", EXPERIMENT)
    objects = FilesystemObjectStore(tmp_path / "objects")
    await objects.start()
    yield SimpleNamespace(database=database, objects=objects, settings=Settings(), outbox=FakeOutboxRelay(), clock=SystemClock())
    await objects.close()
    await database.close()


async def add_session(ctx: Any, sid: str, kind: str, start: datetime, seconds: int, *, device: str = "dev") -> None:
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, experiment_id, session_type, start_time, end_time)
           VALUES ($1, 'u-idem', $2, $3, $4, $5, $6)""",
        sid, device, EXPERIMENT, kind, start, start + timedelta(seconds=seconds),
    )  # fmt: skip
    await ctx.database.execute(
        "INSERT INTO session_events (session_id, onset, duration, trial_type) VALUES ($1, 1.0, 0, 'target'), ($1, 3.0, 0, 'nontarget')",
        sid,
    )


async def add_packets(ctx: Any, start: datetime, first: int, count: int, *, device: str = "dev") -> None:
    """``count`` one-second packets from second ``first`` (rows only)."""
    base = int(start.timestamp() * 1000)
    for k in range(first, first + count):
        await ctx.database.execute(
            """INSERT INTO raw_data_objects (object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms,
                                             sampling_rate, lsb_to_volts)
               VALUES ($1, 'u-idem', $2, $3, $4, 250, 1e-6)""",
            f"{device}-{k}", device, base + 1000 * k, base + 1000 * k + 996,
        )  # fmt: skip


async def statuses(ctx: Any, sid: str) -> tuple[str, str, datetime | None]:
    row = await ctx.database.fetchrow(
        "SELECT link_status, event_correction_status, linked_at FROM sessions WHERE session_id = $1", sid
    )
    return row["link_status"], row["event_correction_status"], row["linked_at"]


async def jobs_after(ctx: Any, last_id: int) -> list[tuple[str, str]]:
    rows = await ctx.database.fetch("SELECT target, body FROM eeghub_outbox WHERE id > $1 ORDER BY id", last_id)
    return [(r["target"], json.loads(bytes(r["body"]))["session_id"]) for r in rows]


async def last_job(ctx: Any) -> int:
    return int(await ctx.database.fetchval("SELECT coalesce(max(id), 0) FROM eeghub_outbox"))


async def corrected_on_triggers(ctx: Any, sid: str) -> None:
    """What a correction run writes (its own logic is tested elsewhere)."""
    await ctx.database.execute("UPDATE session_events SET onset_corrected_us = 1 WHERE session_id = $1", sid)
    await ctx.database.execute("UPDATE sessions SET event_correction_status = 'completed' WHERE session_id = $1", sid)


async def test_a_link_job_queued_for_packets_a_later_round_linked_changes_nothing(ctx: Any) -> None:
    """A packet stored while the session was being linked queues the link
    again; the running job's next round links it. The queued job then finds
    the session ``completed`` and leaves it, and its correction, alone."""
    await add_session(ctx, "s-main", "main_integrated", START, 10)
    await add_packets(ctx, START, 0, 9)
    await linking.link_claimed(ctx, "s-main")
    # A late packet: what the storage consumer's statement does for it while
    # the link runs (status back to pending, a job in the outbox) ...
    await add_packets(ctx, START, 9, 1)
    await ctx.database.execute(
        "UPDATE sessions SET link_status = 'pending', event_correction_status = 'pending' WHERE session_id = 's-main'"
    )
    # ... and the running job's next round, which sees the packet.
    await linking.link_once(ctx, "s-main")
    await corrected_on_triggers(ctx, "s-main")
    before, last = await statuses(ctx, "s-main"), await last_job(ctx)
    assert before[:2] == ("completed", "completed")

    await linking.link_claimed(ctx, "s-main")  # the queued job
    assert await statuses(ctx, "s-main") == before
    assert await jobs_after(ctx, last) == []
    assert await ctx.database.fetchval("SELECT count(*) FROM session_object_links WHERE session_id = 's-main'") == 10


async def test_a_redelivered_link_job_changes_nothing_and_a_pending_one_links(ctx: Any) -> None:
    await add_session(ctx, "s-once", "main_integrated", START, 10)
    await add_packets(ctx, START, 0, 10)
    await linking.link_claimed(ctx, "s-once")
    await corrected_on_triggers(ctx, "s-once")
    before, last = await statuses(ctx, "s-once"), await last_job(ctx)
    await linking.link_claimed(ctx, "s-once")
    assert await statuses(ctx, "s-once") == before and await jobs_after(ctx, last) == []
    # The session ended again (its end re-sent): pending, so linked again.
    await ctx.database.execute(
        "UPDATE sessions SET link_status = 'pending', event_correction_status = 'pending' WHERE session_id = 's-once'"
    )
    await linking.link_claimed(ctx, "s-once")
    assert (await statuses(ctx, "s-once"))[:2] == ("completed", "pending")
    assert await jobs_after(ctx, last) == [(ctx.settings.broker.queues.event_correction_queue, "s-once")]


async def test_a_second_correction_job_leaves_a_corrected_session_alone(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two correction jobs queued by two rounds of one link: the first ran
    after the second round and corrected the session on all its packets.
    An ERP analysis asked for while the second job runs must still find the
    main session corrected: the second job does nothing."""
    await add_session(ctx, "s-cal", "calibration", START, 10)
    await add_session(ctx, "s-main", "main_integrated", START + timedelta(minutes=10), 10)
    for sid in ("s-cal", "s-main"):
        await ctx.database.execute("UPDATE sessions SET link_status = 'completed' WHERE session_id = $1", sid)
        await corrected_on_triggers(ctx, sid)
    seen: list[list[str]] = []

    async def edges_while_an_analysis_reads(ctx_: Any, objects: list[Any]) -> Any:
        _, sessions = await loader.experiment_inputs(ctx, EXPERIMENT)
        seen.append(pipeline.missing_inputs_of(STIMULI, sessions))
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), [], 0, None

    monkeypatch.setattr(correction, "trigger_edges", edges_while_an_analysis_reads)
    details = await correction.correct_session(ctx, "s-main")
    assert seen == []  # not run again: nothing read, the session never "processing"
    assert details["status"] == "up_to_date"
    assert (await statuses(ctx, "s-main"))[:2] == ("completed", "completed")
    assert await ctx.database.fetchval(
        "SELECT count(*) FROM session_events WHERE session_id = 's-main' AND onset_corrected_us IS NOT NULL"
    ) == 2
    _, sessions = await loader.experiment_inputs(ctx, EXPERIMENT)
    assert pipeline.missing_inputs_of(STIMULI, sessions) == []


async def test_a_correction_job_for_a_session_that_lost_packets_to_a_neighbour_runs(ctx: Any) -> None:
    """A session linked later takes over packets an earlier one held through
    its padding: the earlier session's correction goes back to pending, so
    its queued job is not taken for a duplicate."""
    await add_session(ctx, "s-first", "calibration", START, 10)
    await add_packets(ctx, START, 0, 12)  # seconds 10 and 11 lie in s-first's padding
    await linking.link_claimed(ctx, "s-first")
    await corrected_on_triggers(ctx, "s-first")
    assert await ctx.database.fetchval("SELECT count(*) FROM session_object_links WHERE session_id = 's-first'") == 12
    await add_session(ctx, "s-next", "main_integrated", START + timedelta(seconds=11), 10)
    last = await last_job(ctx)
    await linking.link_claimed(ctx, "s-next")
    assert await ctx.database.fetchval("SELECT count(*) FROM session_object_links WHERE session_id = 's-first'") == 11
    assert (await statuses(ctx, "s-first"))[:2] == ("completed", "pending")
    queue = ctx.settings.broker.queues.event_correction_queue
    assert sorted(await jobs_after(ctx, last)) == [(queue, "s-first"), (queue, "s-next")]
    assert (await correction.correct_session(ctx, "s-first"))["status"] != "up_to_date"
    assert (await statuses(ctx, "s-first"))[:2] == ("completed", "completed")



async def test_an_analysis_reads_the_sessions_it_counted_on_even_if_one_is_sent_back_to_linking(ctx: Any) -> None:
    """The sessions corrected when the analysis read the experiment are the
    ones it loads, even if a late packet sends one back to linking before
    its participant is read: its corrected onsets stay until its new
    correction replaces them, and the participant keeps the session."""
    await add_session(ctx, "s-cal", "calibration", START, 10)
    await add_session(ctx, "s-main", "main_integrated", START + timedelta(minutes=10), 10)
    for sid in ("s-cal", "s-main"):
        await ctx.database.execute("UPDATE sessions SET link_status = 'completed' WHERE session_id = $1", sid)
        await corrected_on_triggers(ctx, sid)
    _, sessions = await loader.experiment_inputs(ctx, EXPERIMENT)
    ids = [s.session_id for s in sessions if loader.analysed(s)]
    await ctx.database.execute(
        "UPDATE sessions SET link_status = 'pending', event_correction_status = 'pending' WHERE session_id = 's-main'"
    )
    participant = await loader.load_participant(ctx, EXPERIMENT, "u-idem", ids)
    assert [r.session_id for r in participant.recordings] == ["s-cal", "s-main"]
