"""The ``Database`` port on PostgreSQL through an asyncpg pool."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec

from eeghub.core.errors import DatabaseError
from eeghub.core.ports import Connection, Record

log = logging.getLogger("eeghub.database")

# Errors that mean "the database is not reachable", as opposed to a bad query.
UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def where(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never the DSN itself,
    which carries the password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the configured database"
    return f"{host}:{port}{parts.path or ''}"


def unreachable(dsn: str, exc: BaseException) -> DatabaseError:
    """The start-up error when PostgreSQL cannot be reached, saying it was
    the database, where, and which setting names it."""
    return DatabaseError(
        f"cannot connect to the database (PostgreSQL at {where(dsn)}, database.url): {type(exc).__name__}: {exc}"
    )


def _json_text(value: object) -> str:
    # msgspec: several times faster than json.dumps on the storage consumer's
    # batches of packet rows. What it does not know (numpy scalars, say)
    # goes through json.dumps as before. One difference: a NaN or infinite
    # float becomes null where json.dumps wrote NaN, which PostgreSQL refused.
    try:
        return msgspec.json.encode(value).decode()
    except TypeError:
        return json.dumps(value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON/JSONB columns come back as Python objects, not strings.
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=_json_text, decoder=json.loads, schema="pg_catalog")


class PostgresDatabase:
    """A pool of asyncpg connections. Start with ``await start()``."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, command_timeout: float = 60.0) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._command_timeout,
                init=_init_connection,
                timeout=10,
            )
        except UNAVAILABLE + (asyncpg.PostgresError, TimeoutError) as exc:
            raise unreachable(self._dsn, exc) from None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseError("database pool is not started")
        return self._pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        try:
            async with self.pool.acquire() as conn:
                yield conn  # type: ignore[misc]
        except UNAVAILABLE as exc:
            raise DatabaseError(f"database unavailable: {type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.acquire() as conn:
            async with conn.transaction():
                yield conn

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return await conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def ping(self) -> None:
        try:
            value = await self.fetchval("SELECT 1")
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DatabaseError(f"database ping failed: {type(exc).__name__}: {exc}") from exc
        if value != 1:
            raise DatabaseError("database ping returned an unexpected value")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except Exception:  # noqa: BLE001
                log.warning("closing the database pool failed", exc_info=True)
                pool.terminate()
