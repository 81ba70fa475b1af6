"""Several eeghub processes on one PostgreSQL: migrations and job claims."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import available_migrations, migrate
from eeghub.core.cluster import ClaimBusy, job_claim, try_claim
from eeghub.plugins.analyzer.partitions import PartitionLeases, partition_of, rendezvous_owner

pytestmark = pytest.mark.postgres


async def test_two_processes_migrating_at_once_apply_each_migration_once(database_url: str) -> None:
    # Two connections stand for two starting processes: the advisory lock
    # makes one wait; the other applies everything.
    results = await asyncio.gather(migrate(database_url), migrate(database_url), migrate(database_url))
    everything = [f"{m.version:04d}_{m.name}" for m in available_migrations()]
    assert sorted(results, key=len) == [[], [], everything]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT version FROM eeghub_schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == [m.version for m in available_migrations()]


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[PostgresDatabase]:
    await migrate(database_url)
    db = PostgresDatabase(database_url, max_size=6)
    await db.start()
    yield db
    await db.close()


async def test_a_job_runs_in_one_process_at_a_time(database: PostgresDatabase) -> None:
    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    order: list[str] = []

    async def job(name: str) -> None:
        async with job_claim(database, "link", "session-1", poll=0.02):
            running.append(name)
            if len(running) > 1:
                overlaps.append(tuple(running))
            order.append(name)
            await asyncio.sleep(0.1)
            running.remove(name)

    await asyncio.gather(*(job(f"run-{i}") for i in range(4)))
    assert overlaps == []
    assert sorted(order) == ["run-0", "run-1", "run-2", "run-3"]  # each waited, then ran
    assert await database.fetchval("SELECT count(*) FROM eeghub_job_claims") == 0  # released


async def test_other_keys_and_kinds_do_not_wait(database: PostgresDatabase) -> None:
    async with job_claim(database, "link", "session-1"):
        async with job_claim(database, "link", "session-2", wait=False):
            async with job_claim(database, "correct", "session-1", wait=False):
                pass
        with pytest.raises(ClaimBusy):
            async with job_claim(database, "link", "session-1", wait=False):
                pass


async def test_a_stopped_process_claim_expires(database: PostgresDatabase) -> None:
    assert await try_claim(database, "export", "task-1", "dead-process")
    assert not await try_claim(database, "export", "task-1", "live-process", ttl=30)
    await database.execute("UPDATE eeghub_job_claims SET heartbeat_at = NOW() - interval '31 seconds'")
    assert await try_claim(database, "export", "task-1", "live-process", ttl=30)
    assert await database.fetchval("SELECT owner FROM eeghub_job_claims") == "live-process"


async def test_a_claim_is_kept_alive_while_the_job_runs(database: PostgresDatabase) -> None:
    async with job_claim(database, "export", "task-2", ttl=0.3):
        first = await database.fetchval("SELECT heartbeat_at FROM eeghub_job_claims")
        await asyncio.sleep(0.5)
        later = await database.fetchval("SELECT heartbeat_at FROM eeghub_job_claims")
        assert later > first
        assert not await try_claim(database, "export", "task-2", "another", ttl=0.3)


# ---------------------------------------------------------------- analysis partitions
def _overlap(*leases: PartitionLeases) -> set[int]:
    seen: set[int] = set()
    both: set[int] = set()
    for lease in leases:
        mine = {p for p in range(lease.partitions) if lease.owns(p)}
        both |= seen & mine
        seen |= mine
    return both


async def test_partitions_move_when_a_process_joins_and_leaves(database: PostgresDatabase) -> None:
    a = PartitionLeases(database, "a", partitions=32, lease_seconds=1.0)
    b = PartitionLeases(database, "b", partitions=32, lease_seconds=1.0)
    assert await a.refresh() == frozenset(range(32))  # alone: everything
    await b.refresh()  # joins: a still holds the leases
    assert not b.owned and _overlap(a, b) == set()
    await a.refresh()  # a sees b and gives back b's share
    assert 0 < len(a.owned) < 32 and _overlap(a, b) == set()
    await b.refresh()
    assert a.owned | b.owned == frozenset(range(32)) and _overlap(a, b) == set()
    expected_b = {p for p in range(32) if rendezvous_owner(p, ["a", "b"]) == "b"}
    assert b.owned == expected_b
    await b.leave()  # clean stop: a takes everything at its next refresh
    assert await a.refresh() == frozenset(range(32))


async def test_a_killed_process_loses_its_partitions_when_the_lease_expires(database: PostgresDatabase) -> None:
    lost: list[set[int]] = []
    a = PartitionLeases(database, "a", partitions=16, lease_seconds=0.6)
    b = PartitionLeases(database, "b", partitions=16, lease_seconds=0.6, on_lost=lost.append)
    await a.refresh(), await b.refresh(), await a.refresh(), await b.refresh()
    assert a.owned and b.owned and _overlap(a, b) == set()
    held_by_b = set(b.owned)
    # b stops refreshing (killed): it stops claiming ownership by itself once
    # its lease time is over, and a cannot take over before that.
    await a.refresh()
    assert not (a.owned & held_by_b)
    await asyncio.sleep(0.7)
    assert not any(b.owns(p) for p in held_by_b)
    await a.refresh()  # b's heartbeat is stale and its leases expired
    assert a.owned == frozenset(range(16))
    await b.refresh()  # b comes back: it noticed the loss and claims nothing a holds
    assert held_by_b in lost and _overlap(a, b) == set()


def test_partition_of_is_stable_and_spread() -> None:
    assert partition_of("user-1", "dev-1", 64) == partition_of("user-1", "dev-1", 64)
    counts = [0] * 8
    for i in range(800):
        counts[partition_of(f"user-{i}", "dev", 8)] += 1
    assert min(counts) > 60  # roughly even (100 each)
