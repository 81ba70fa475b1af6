"""The stimulus registration job against a real PostgreSQL: a job whose last
attempt fails is marked failed (it used to stay pending for ever)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.config.settings import Settings
from eeghub.core.errors import PermanentFailure
from eeghub.core.ports import Delivery, Message
from eeghub.plugins.stimulus import jobs

pytestmark = pytest.mark.postgres


@pytest.fixture
async def ctx(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=2)
    await database.start()
    objects = FilesystemObjectStore(tmp_path / "objects")
    await objects.start()
    yield SimpleNamespace(database=database, objects=objects, settings=Settings())
    await objects.close()
    await database.close()


async def new_job(ctx: Any, file_name: str) -> tuple[uuid.UUID, Message]:
    experiment_id, job_id = uuid.uuid4(), uuid.uuid4()
    await ctx.database.execute(
        "INSERT INTO experiments (experiment_id, name) VALUES ($1, 'jobs')", experiment_id
    )
    await ctx.database.execute(
        "INSERT INTO stimulus_jobs (job_id, experiment_id, requested_by, total_files) VALUES ($1, $2, 'owner', 1)",
        job_id,
        experiment_id,
    )
    item = jobs.JobItem(file_name=file_name, object_id=f"stimuli/{job_id}/a.png", content_type="image/png",
                        size_bytes=3, sha256="0" * 64, trial_type="target")
    body = msgspec.json.encode(jobs.Job(job_id=job_id, experiment_id=experiment_id, items=[item]))
    return job_id, Message(body=body, content_type="application/json")


async def status(ctx: Any, job_id: uuid.UUID) -> tuple[str, str | None]:
    row = await ctx.database.fetchrow("SELECT status, error_message FROM stimulus_jobs WHERE job_id = $1", job_id)
    return row["status"], row["error_message"]


async def test_a_job_failing_on_its_last_attempt_is_marked_failed(ctx: Any) -> None:
    handle = jobs.make_handler(ctx)
    # Longer than experiment_stimuli.file_name: PostgreSQL refuses the row
    # (as any failure the route's checks did not foresee).
    job_id, message = await new_job(ctx, "x" * 400 + ".png")
    last = ctx.settings.broker.max_attempts
    for attempt in range(1, last):
        with pytest.raises(Exception) as failure:
            await handle(Delivery(message=message, queue="stimulus_asset_queue", attempt=attempt))
        assert not isinstance(failure.value, PermanentFailure)
        assert (await status(ctx, job_id))[0] == "pending", "retried: not failed yet"
    with pytest.raises(Exception):
        await handle(Delivery(message=message, queue="stimulus_asset_queue", attempt=last))
    state, error = await status(ctx, job_id)
    assert state == "failed"
    assert error == f"registration failed: StringDataRightTruncationError (after {last} attempts)"


async def test_a_job_that_succeeds_is_completed(ctx: Any) -> None:
    handle = jobs.make_handler(ctx)
    job_id, message = await new_job(ctx, "a.png")
    await handle(Delivery(message=message, queue="stimulus_asset_queue"))
    assert await status(ctx, job_id) == ("completed", None)
