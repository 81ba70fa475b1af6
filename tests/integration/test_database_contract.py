"""Contract of the ``Database`` port and the migrations, run against a
PostgreSQL server and against the embedded PostgreSQL of the zero-setup mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import available_migrations, migrate
from eeghub.core.errors import DatabaseError
from tests.fixtures.services import create_scratch_database, drop_scratch_database, unavailable

pytestmark = pytest.mark.postgres

PREDECESSOR_TABLES = {
    "experiments",
    "experiment_participants",
    "experiment_stimuli",
    "calibration_items",
    "sessions",
    "session_events",
    "raw_data_objects",
    "session_object_links",
    "images",
    "audio_clips",
    "export_tasks",
    "erp_analysis_results",
}


@pytest.fixture(scope="session")
def embedded_server():  # type: ignore[no-untyped-def]
    import shutil
    import tempfile

    from eeghub.adapters.postgres.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="eeghub-contract-pg-"))
    root.chmod(0o711)  # traversable by the unprivileged server user when tests run as root
    server = EmbeddedPostgres(root)
    try:
        dsn = server.start()
    except Exception as exc:  # noqa: BLE001
        unavailable("embedded PostgreSQL", exc)
    yield dsn
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["postgresql", "embedded"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The maintenance-database URL of each kind of server."""
    return request.getfixturevalue("postgres_server_url" if request.param == "postgresql" else "embedded_server")


@pytest.fixture
async def dsn(server_url: str) -> AsyncIterator[str]:
    """A fresh empty database on each kind of server."""
    name = await create_scratch_database(server_url)
    base = server_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await drop_scratch_database(server_url, name)


@pytest.fixture
async def database(dsn: str) -> AsyncIterator[PostgresDatabase]:
    await migrate(dsn)
    db = PostgresDatabase(dsn, min_size=1, max_size=4)
    await db.start()
    yield db
    await db.close()


async def test_migrations_create_the_predecessor_schema(database: PostgresDatabase) -> None:
    rows = await database.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    tables = {r["table_name"] for r in rows}
    assert PREDECESSOR_TABLES <= tables
    assert {"eeghub_schema_migrations", "eeghub_outbox"} <= tables
    columns = await database.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'raw_data_objects'"
    )
    assert {"object_id", "timestamp_start_ms", "sampling_rate", "lsb_to_volts", "session_id"} <= {
        c["column_name"] for c in columns
    }


async def test_migrations_are_idempotent_and_recorded(dsn: str, database: PostgresDatabase) -> None:
    assert await migrate(dsn) == []
    versions = await database.fetch("SELECT version FROM eeghub_schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [m.version for m in available_migrations()]


async def test_concurrent_migrations_do_not_collide(dsn: str) -> None:
    results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in available_migrations())


async def test_changed_migration_is_refused(dsn: str, database: PostgresDatabase) -> None:
    await database.execute("UPDATE eeghub_schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(DatabaseError, match="changed after it was applied"):
        await migrate(dsn)


async def test_status_columns_are_checked(database: PostgresDatabase) -> None:
    await database.execute(
        "INSERT INTO sessions (session_id, user_id, start_time, session_type) VALUES ('s1', 'u1', now(), 'calibration')"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await database.execute("UPDATE sessions SET link_status = 'done' WHERE session_id = 's1'")
    with pytest.raises(asyncpg.CheckViolationError):
        await database.execute(
            "INSERT INTO sessions (session_id, user_id, start_time, session_type) VALUES ('s2', 'u1', now(), 'nap')"
        )


async def test_transaction_commits_and_rolls_back(database: PostgresDatabase) -> None:
    async with database.transaction() as conn:
        await conn.execute("INSERT INTO experiments (name) VALUES ('kept')")
    with pytest.raises(RuntimeError):
        async with database.transaction() as conn:
            await conn.execute("INSERT INTO experiments (name) VALUES ('rolled back')")
            raise RuntimeError("abort")
    names = [r["name"] for r in await database.fetch("SELECT name FROM experiments ORDER BY name")]
    assert names == ["kept"]


async def test_nested_transaction_is_a_savepoint(database: PostgresDatabase) -> None:
    async with database.transaction() as conn:
        await conn.execute("INSERT INTO experiments (name) VALUES ('outer')")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("INSERT INTO calibration_items (file_name, item_type) VALUES ('a.png', 't')")
                await conn.execute("INSERT INTO calibration_items (file_name, item_type) VALUES ('a.png', 't')")
    assert await database.fetchval("SELECT count(*) FROM experiments") == 1
    assert await database.fetchval("SELECT count(*) FROM calibration_items") == 0


async def test_fetch_helpers_and_json(database: PostgresDatabase) -> None:
    experiment_id = await database.fetchval("INSERT INTO experiments (name) VALUES ('e') RETURNING experiment_id")
    row = await database.fetchrow("SELECT name, presentation_order FROM experiments WHERE experiment_id = $1", experiment_id)
    assert row is not None and row["name"] == "e" and row["presentation_order"] == "random"
    assert await database.fetchrow("SELECT 1 WHERE false") is None
    await database.execute(
        "INSERT INTO sessions (session_id, user_id, start_time, clock_offset_info) VALUES ('s', 'u', now(), $1)",
        {"offset_ms": 12},
    )
    assert await database.fetchval("SELECT clock_offset_info FROM sessions") == {"offset_ms": 12}


async def test_ping_and_unreachable_server() -> None:
    db = PostgresDatabase("postgresql://nobody:hunter2@127.0.0.1:1/none")
    with pytest.raises(DatabaseError) as info:
        await db.start()
    assert "hunter2" not in str(info.value)


async def test_ping(database: PostgresDatabase) -> None:
    await database.ping()
    await database.close()
    with pytest.raises(DatabaseError):
        await database.ping()


async def test_adopts_an_existing_predecessor_database(dsn: str) -> None:
    """A database created by the predecessor's init.sql (here: its tables
    with a row in them) is migrated in place without losing data."""
    conn = await asyncpg.connect(dsn)
    try:
        first = available_migrations()[0]
        await conn.execute(first.sql)  # the predecessor's schema, as if created by init.sql
        await conn.execute("INSERT INTO experiments (name) VALUES ('from the predecessor')")
    finally:
        await conn.close()
    applied = await migrate(dsn)
    assert applied and applied[0].startswith("0001")
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT name FROM experiments") == "from the predecessor"
    finally:
        await conn.close()


def test_migration_files_are_numbered(tmp_path: Path) -> None:
    # Parallel branches take numbers from assigned ranges (0070, ...):
    # gaps are fine, duplicates and disorder are not.
    versions = [m.version for m in available_migrations()]
    assert versions[0] == 1 and versions == sorted(set(versions))
