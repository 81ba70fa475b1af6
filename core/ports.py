"""Ports: the small typed interfaces the core and the plugins program against.

Adapters in ``eeghub.adapters`` implement them (PostgreSQL, S3, a filesystem
store, RabbitMQ, an in-process broker); only the composition root
(``eeghub.bootstrap``) knows which adapter stands behind a port. Every port has
one contract test suite (``tests/integration/test_*_contract.py``) that runs against
every adapter of that port, so the embedded and the production adapters cannot
drift apart.

Errors crossing a port are the typed errors of ``eeghub.core.errors``, never a
library's own exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import msgspec

# ======================================================================
# Database
# ======================================================================

Record = Mapping[str, Any]
"""A result row: read columns by name (``row["session_id"]``)."""


@runtime_checkable
class Connection(Protocol):
    """One database connection, possibly inside a transaction.

    Queries use PostgreSQL syntax with ``$1, $2, …`` placeholders.
    """

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement; return the command tag (``"UPDATE 3"``)."""
        ...

    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per argument tuple."""
        ...

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        """Return every row of a query."""
        ...

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        """Return the first row of a query, or None."""
        ...

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Return the first column of the first row, or None."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A (nested: savepoint) transaction on this connection."""
        ...


@runtime_checkable
class Database(Protocol):
    """A pool of connections to one PostgreSQL database."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        """Borrow a connection (autocommit) for several statements."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """Borrow a connection inside a transaction: committed when the block
        exits normally, rolled back when it raises."""
        ...

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Record]: ...

    async def fetchrow(self, query: str, *args: Any) -> Record | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    async def ping(self) -> None:
        """Raise ``DatabaseError`` unless the database answers."""
        ...

    async def close(self) -> None: ...


# ======================================================================
# Object store
# ======================================================================


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the store knows about one object."""

    bucket: str
    key: str
    size: int
    content_type: str | None = None
    etag: str | None = None
    last_modified: datetime | None = None
    metadata: dict[str, str] = {}


@runtime_checkable
class ObjectStream(Protocol):
    """An opened object (or byte range of one), read as an async byte stream.

    ``ObjectStore.open`` raises ``ObjectNotFound`` *before* returning, so an
    HTTP handler can answer 404 before it sends any header of a 200.
    """

    info: ObjectInfo
    """The whole object's info (``info.size`` is the full size)."""
    start: int
    """First byte of the range being read (0 for the whole object)."""
    length: int
    """Number of bytes this stream yields."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Release the underlying connection or file; safe to call twice."""
        ...


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of immutable objects addressed by validated keys.

    Keys are validated by ``eeghub.core.keys.validate_key`` in every adapter:
    no key can escape its bucket (or directory). ``put_*`` replace an existing
    object of the same key atomically: a reader sees the old or the new bytes,
    never a mix.
    """

    async def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist."""
        ...

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo: ...

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store an object of unknown length without holding it in memory
        (S3: a multipart upload, aborted if the stream raises)."""
        ...

    async def open(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = 256 * 1024,
    ) -> ObjectStream:
        """Open ``[start, end]`` (inclusive; ``end=None``: to the last byte)."""
        ...

    async def get_bytes(self, bucket: str, key: str) -> bytes: ...

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist."""
        ...

    async def exists(self, bucket: str, key: str) -> bool: ...

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    async def delete(self, bucket: str, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
        ...

    async def sweep_stale_uploads(self, bucket: str, older_than_seconds: float) -> int:
        """Remove what writes that never finished left in ``bucket`` (S3:
        multipart uploads started more than ``older_than_seconds`` ago;
        filesystem: temporary files as old); return how many."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the store answers."""
        ...

    async def close(self) -> None: ...


# ======================================================================
# Message broker
# ======================================================================

HeaderValue = str | int | float | bool | None


class Message(msgspec.Struct, kw_only=True):
    """A message as published: a byte body and flat headers."""

    body: bytes
    headers: dict[str, HeaderValue] = {}
    content_type: str | None = None
    content_encoding: str | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    """Publish time, UTC (AMQP carries whole seconds)."""


class Delivery(msgspec.Struct, kw_only=True):
    """A message handed to a consumer."""

    message: Message
    queue: str
    attempt: int = 1
    """1 on the first delivery; counts retries after failures."""
    redelivered: bool = False
    """True when the broker delivers it again after a consumer died."""


class DeadLetter(msgspec.Struct, kw_only=True):
    """A message that kept failing, parked in ``<queue>.dlq``."""

    message: Message
    queue: str
    """The queue it failed on (and is replayed to)."""
    error: str
    attempts: int
    failed_at: datetime | None = None


Handler = Callable[[Delivery], Awaitable[None]]
"""A consumer: return to acknowledge; raise ``PermanentFailure`` to dead-letter
at once; raise anything else to retry (up to the consumer's ``max_attempts``,
then dead-letter)."""


@runtime_checkable
class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop taking new deliveries and wait for those in flight."""
        ...


DLQ_SUFFIX = ".dlq"
ATTEMPT_HEADER = "x-eeghub-attempt"
ERROR_HEADER = "x-eeghub-error"
ORIGIN_HEADER = "x-eeghub-origin-queue"
FAILED_AT_HEADER = "x-eeghub-failed-at"


def retry_delay(attempt: int, base: float) -> float:
    """Seconds to wait before delivering a failed message again: ``base``
    doubling per attempt, at most 30 s. A transient outage (database restart)
    then outlasts fewer retries than an immediate requeue would burn."""
    if base <= 0:
        return 0.0
    return float(min(base * 2 ** max(attempt - 1, 0), 30.0))


def dead_letter_queue(queue: str) -> str:
    """Name of the dead-letter queue of ``queue``."""
    return queue + DLQ_SUFFIX


@runtime_checkable
class Broker(Protocol):
    """Durable queues and fanout exchanges with confirmed publishing.

    Delivery is at-least-once: a handler that returns acknowledges the message;
    a consumer that dies before returning gets it again (``redelivered``). A
    handler that raises is retried up to ``max_attempts`` times, then the
    message moves to ``<queue>.dlq`` with the error, where ``dead_letters``
    shows it and ``replay_dead_letters`` puts it back.
    """

    async def declare_exchange(self, name: str) -> None:
        """Declare a durable fanout exchange."""
        ...

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        bind_to: str | None = None,
        exclusive: bool = False,
        max_length: int | None = None,
    ) -> None:
        """Declare a queue (and, when durable, its dead-letter queue).

        ``bind_to`` binds it to a fanout exchange. ``exclusive`` queues belong
        to this process and vanish with it. ``max_length`` drops the oldest
        messages beyond that many (for lossy live feeds only).
        """
        ...

    async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
        """Publish to a queue or to an exchange and wait for the broker's
        confirmation. Raises ``BrokerUnavailable`` when the broker cannot
        confirm in time; the caller must then not claim success."""
        ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 8, max_attempts: int = 5) -> Subscription:
        """Start delivering ``queue``'s messages to ``handler``, at most
        ``prefetch`` at a time."""
        ...

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in the queue (not counting those in flight)."""
        ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Peek at up to ``limit`` dead letters of ``queue`` without removing them."""
        ...

    async def replay_dead_letters(self, queue: str, limit: int | None = None) -> int:
        """Move dead letters back to ``queue`` with a fresh attempt count;
        return how many moved."""
        ...

    async def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the broker answers."""
        ...

    async def close(self) -> None: ...


# ======================================================================
# Clock
# ======================================================================


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        import time

        return time.monotonic()
