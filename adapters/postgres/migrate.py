"""Versioned SQL migrations, applied in order, each in its own transaction.

Files are ``migrations/NNNN_name.sql``. Applied versions are recorded with a
checksum in ``eeghub_schema_migrations``; an applied file whose text changed
stops the run (write a new migration instead). A PostgreSQL advisory lock
makes concurrent starts of several eeghub processes safe.

The first migration recreates the predecessor's schema with
``IF NOT EXISTS``, so eeghub can also adopt an existing predecessor database.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from eeghub.core.errors import DatabaseError

log = logging.getLogger("eeghub.migrate")

_LOCK_ID = 0x6565_6768_7562  # "eeghub"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    folder = resources.files("eeghub.adapters.postgres") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"duplicate migration versions: {versions}")
    return found


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    rows = await conn.fetch("SELECT version, checksum FROM eeghub_schema_migrations ORDER BY version")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(dsn_or_conn: str | asyncpg.Connection) -> list[str]:
    """Apply every pending migration; return the names applied."""
    if isinstance(dsn_or_conn, str):
        from .database import UNAVAILABLE, unreachable

        try:
            conn = await asyncpg.connect(dsn_or_conn, timeout=10)
        except UNAVAILABLE + (asyncpg.PostgresError, TimeoutError) as exc:
            raise unreachable(dsn_or_conn, exc) from None
    else:
        conn = dsn_or_conn
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS eeghub_schema_migrations (
                       version INTEGER PRIMARY KEY,
                       name TEXT NOT NULL,
                       checksum TEXT NOT NULL,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"""
            )
            done = await applied_versions(conn)
            applied: list[str] = []
            for migration in available_migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise DatabaseError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO eeghub_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                label = f"{migration.version:04d}_{migration.name}"
                log.info("applied migration %s", label)
                applied.append(label)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        if isinstance(dsn_or_conn, str):
            await conn.close()
