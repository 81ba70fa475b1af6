"""Event correction that is overtaken by a new link of its session writes
nothing: the session stays pending for the newer job instead of showing
"completed" with a result computed on the old links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.config import Settings
from eeghub.plugins.linker import correction

pytestmark = pytest.mark.postgres


@pytest.fixture
async def ctx(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=4)
    await database.start()
    objects = FilesystemObjectStore(tmp_path / "objects")
    await objects.start()
    yield SimpleNamespace(database=database, objects=objects, settings=Settings())
    await objects.close()
    await database.close()


async def session_with_events(ctx: Any, session_id: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status, event_correction_status)
           VALUES ($1, 'u-sup', 'd', $2::timestamptz, $2::timestamptz + interval '1 minute', 'completed', 'pending')""",
        session_id,
        start,
    )
    await ctx.database.execute(
        "INSERT INTO session_events (session_id, onset, duration, trial_type) VALUES ($1, 1.0, 0, 't'), ($1, 3.0, 0, 't')",
        session_id,
    )


async def test_a_correction_overtaken_by_a_new_link_writes_nothing(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await session_with_events(ctx, "s-sup")

    async def edges_while_relinked(
        ctx_: Any, objects: list[Any]
    ) -> tuple[np.ndarray, np.ndarray, list[Any], int, bool | None]:
        # What link_once does meanwhile: new links, correction back to pending.
        await ctx.database.execute("UPDATE sessions SET event_correction_status = 'pending' WHERE session_id = 's-sup'")
        # trigger_edges' result: edges, their codes, skipped objects, objects with a trigger, coded line
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), [], 0, None

    monkeypatch.setattr(correction, "trigger_edges", edges_while_relinked)
    details = await correction.correct_session(ctx, "s-sup")
    assert details["status"] == "superseded"
    assert await ctx.database.fetchval("SELECT event_correction_status FROM sessions WHERE session_id = 's-sup'") == "pending"
    assert await ctx.database.fetchval("SELECT count(*) FROM session_correction_reports WHERE session_id = 's-sup'") == 0


async def test_an_undisturbed_correction_completes(ctx: Any) -> None:
    await session_with_events(ctx, "s-calm")
    details = await correction.correct_session(ctx, "s-calm")
    assert details["status"] == "no_data"
    assert await ctx.database.fetchval("SELECT event_correction_status FROM sessions WHERE session_id = 's-calm'") == "completed"
    assert await ctx.database.fetchval("SELECT count(*) FROM session_correction_reports WHERE session_id = 's-calm'") == 1


async def test_matching_runs_off_the_event_loop(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``match_events`` takes up to hundreds of milliseconds for a long
    session (docs/measurements.md): it runs in a worker thread, never on the
    event loop that serves ingest and the API."""
    import threading

    await session_with_events(ctx, "s-thread")
    real, threads = correction.match_events, []

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(correction, "match_events", recording)
    details = await correction.correct_session(ctx, "s-thread")
    assert details["status"] == "no_data"
    assert len(threads) == 1 and threads[0] is not threading.current_thread()
