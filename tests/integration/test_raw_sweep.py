"""Segments no row refers to (plugins/ingest/sweep.py, ``eeghub raw sweep``),
against real PostgreSQL and both object stores (SeaweedFS for S3)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.adapters.s3_store import S3ObjectStore
from eeghub.config.settings import Settings
from eeghub.core.packet_messages import batch_message
from eeghub.core.ports import Delivery
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest import store
from eeghub.plugins.ingest.sweep import sweep_segments
from tests.integration.test_cli import ENV
from tests.integration.test_ingest_store import packets
from tests.integration.test_object_store_contract import drop_bucket

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
async def ctx(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=4)
    await database.start()
    settings = Settings()
    settings.object_store.buckets.raw_data = f"sweep-{uuid.uuid4().hex[:12]}"
    endpoint: dict[str, str] | None = None
    objects: Any
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        objects = S3ObjectStore(
            endpoint_url=endpoint["endpoint_url"], access_key=endpoint["access_key"], secret_key=endpoint["secret_key"]
        )
    else:
        objects = FilesystemObjectStore(tmp_path / "objects")
    await objects.start()
    await objects.ensure_bucket(settings.object_store.buckets.raw_data)
    try:
        yield SimpleNamespace(database=database, objects=objects, settings=settings, outbox=SimpleNamespace(wake=lambda: None))
    finally:
        await objects.close()
        await database.close()
        if endpoint is not None:
            await drop_bucket(endpoint, settings.object_store.buckets.raw_data)


async def keys(ctx: Any) -> set[str]:
    return {info.key async for info in ctx.objects.list(ctx.settings.object_store.buckets.raw_data)}


async def test_only_old_segments_without_rows_are_swept(ctx: Any) -> None:
    bucket = ctx.settings.object_store.buckets.raw_data
    user = f"u-sweep-{uuid.uuid4().hex[:8]}"
    handle = store.make_handler(ctx)
    # A stored segment, a packet stored alone, and the segment left behind
    # when the consumer died after writing it but before its rows.
    await handle(Delivery(message=batch_message(packets(ctx, SimulatedDevice(user, "d1"), 4)), queue="q"))
    await handle(Delivery(message=batch_message(packets(ctx, SimulatedDevice(user, "d2"), 1)), queue="q"))
    await ctx.objects.put_bytes(bucket, "segments/date=2026-01-01/orphan.seg", b"x" * 100)
    before = await keys(ctx)
    assert len(before) == 3
    later = datetime.now(UTC) + timedelta(hours=2)

    young = await sweep_segments(ctx.database, ctx.objects, bucket, delete=True)
    assert young.too_young == 2 and young.segments == 0 and young.unreferenced == []

    listed = await sweep_segments(ctx.database, ctx.objects, bucket, now=later)
    assert listed.segments == 2 and listed.unreferenced == ["segments/date=2026-01-01/orphan.seg"]
    assert listed.unreferenced_bytes == 100 and listed.deleted == 0
    assert await keys(ctx) == before

    swept = await sweep_segments(ctx.database, ctx.objects, bucket, delete=True, now=later)
    assert swept.deleted == 1
    assert await keys(ctx) == before - {"segments/date=2026-01-01/orphan.seg"}
    # Every stored packet still reads back.
    assert await ctx.database.fetchval("SELECT count(*) FROM raw_data_objects WHERE user_id = $1", user) == 5

    # Rows deleted (a retention job, a removed participant): their segment goes too.
    await ctx.database.execute("DELETE FROM raw_data_objects WHERE user_id = $1", user)
    gone = await sweep_segments(ctx.database, ctx.objects, bucket, delete=True, now=later)
    assert gone.deleted == 1 and all(not k.startswith("segments/") for k in await keys(ctx))


def test_the_command_lists_then_deletes(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "objects"
    bucket = Settings().object_store.buckets.raw_data

    async def on_store(action: str) -> bool:
        objects = FilesystemObjectStore(root)
        await objects.start()
        try:
            if action == "put":
                await objects.put_bytes(bucket, "segments/date=2026-01-01/lost.seg", b"y" * 10)
            return await objects.exists(bucket, "segments/date=2026-01-01/lost.seg")
        finally:
            await objects.close()

    env = {
        **ENV,
        "EEGHUB_DATABASE__URL": database_url,
        "EEGHUB_OBJECT_STORE__BACKEND": "filesystem",
        "EEGHUB_OBJECT_STORE__PATH": str(root),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eeghub", "raw", "sweep", *args], env=env, capture_output=True, text=True, timeout=120
        )

    first = run("--min-age-hours", "0")  # creates the store's buckets
    assert first.returncode == 0, first.stderr
    assert asyncio.run(on_store("put"))
    listed = run("--min-age-hours", "0")
    assert listed.returncode == 0 and listed.stdout.split() == ["segments/date=2026-01-01/lost.seg"]
    assert "1 (10 bytes) unreferenced" in listed.stderr and asyncio.run(on_store("exists"))
    kept = run("--delete")  # younger than the default hour
    assert kept.returncode == 0 and asyncio.run(on_store("exists"))
    deleted = run("--min-age-hours", "0", "--delete")
    assert deleted.returncode == 0 and "deleted" in deleted.stderr and not asyncio.run(on_store("exists"))
    assert run("--min-age-hours", "-1").returncode == 2
