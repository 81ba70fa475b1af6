"""Transactional outbox: publish a message if and only if a transaction commits.

A plugin that changes the database and must announce it (a session ended →
link it; linked → correct its events) writes the message with ``enqueue`` on
the *same connection, inside the same transaction*. The ``OutboxRelay``
publishes committed rows afterwards and marks them published. So:

- nothing is published for a transaction that rolled back;
- nothing is published before the change is visible to consumers (the
  predecessor's linker published before COMMIT, spec §8 item 11);
- a message is published even when the process dies between COMMIT and
  publishing: the row stays pending and the next relay (this process after a
  restart, or another process) publishes it.

Delivery is at-least-once (a crash after publishing but before marking the
row repeats it), so consumers are idempotent, as every eeghub consumer is.
Several relays may run at once: ``FOR UPDATE SKIP LOCKED`` hands each row to
one of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from .errors import BrokerError, DatabaseError
from .ports import Broker, Connection, Database, HeaderValue, Message

log = logging.getLogger("eeghub.outbox")


async def enqueue(
    conn: Connection,
    body: bytes,
    *,
    queue: str | None = None,
    exchange: str | None = None,
    headers: Mapping[str, HeaderValue] | None = None,
    content_type: str | None = None,
) -> int:
    """Add a message to the outbox on ``conn`` (inside the caller's
    transaction); return its outbox id."""
    if (queue is None) == (exchange is None):
        raise ValueError("give exactly one of queue and exchange")
    return int(
        await conn.fetchval(
            """INSERT INTO eeghub_outbox (target_kind, target, body, headers, content_type)
               VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id""",
            "queue" if queue else "exchange",
            queue or exchange,
            body,
            dict(headers or {}),
            content_type,
        )
    )


async def enqueue_json(conn: Connection, payload: Any, *, queue: str | None = None, exchange: str | None = None) -> int:
    """``enqueue`` a JSON body (the predecessor's job messages are JSON)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return await enqueue(conn, body, queue=queue, exchange=exchange, content_type="application/json")


class OutboxRelay:
    """Publishes committed outbox rows; run ``run()`` as a background task and
    call ``wake()`` after a commit that enqueued something (polling every
    ``poll_interval`` seconds catches anything else, e.g. rows left by a
    process that died)."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retention_hours: float = 24.0,
    ) -> None:
        self._database = database
        self._broker = broker
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention_hours = retention_hours
        self._wake = asyncio.Event()
        self._stopping = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in progress. Cancelling it
        mid-batch instead could publish messages without marking them, so they
        would be published twice."""
        self._stopping = True
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish up to one batch of pending rows; return how many were published."""
        async with self._database.transaction() as conn:
            rows = await conn.fetch(
                """SELECT id, target_kind, target, body, headers, content_type
                   FROM eeghub_outbox WHERE published_at IS NULL
                   ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_size,
            )
            done: list[int] = []
            for row in rows:
                headers = row["headers"] or {}
                message = Message(
                    body=bytes(row["body"]),
                    headers=headers,
                    content_type=row["content_type"],
                    message_id=f"outbox-{row['id']}",
                )
                target = {"queue": row["target"]} if row["target_kind"] == "queue" else {"exchange": row["target"]}
                try:
                    await self._broker.publish(message, **target)
                except BrokerError as exc:
                    # Keep order: stop at the first failure and retry later.
                    await conn.execute(
                        "UPDATE eeghub_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                        row["id"],
                        f"{type(exc).__name__}: {exc}"[:1000],
                    )
                    log.warning("outbox: publishing message %s failed, will retry: %s", row["id"], exc)
                    break
                done.append(row["id"])
            if done:
                await conn.execute("UPDATE eeghub_outbox SET published_at = NOW() WHERE id = ANY($1::bigint[])", done)
        self.published += len(done)
        return len(done)

    async def purge_published(self) -> int:
        tag = await self._database.execute(
            "DELETE FROM eeghub_outbox WHERE published_at < NOW() - make_interval(secs => $1)",
            self._retention_hours * 3600.0,
        )
        return int(tag.split()[-1]) if tag else 0

    async def run(self) -> None:
        delay = self._poll_interval
        cycles = 0
        while not self._stopping:
            self._wake.clear()
            try:
                while await self.publish_pending() == self._batch_size and not self._stopping:
                    pass
                cycles += 1
                if cycles % 3600 == 0:
                    await self.purge_published()
                delay = self._poll_interval
            except (DatabaseError, BrokerError, OSError) as exc:
                log.warning("outbox relay: %s; retrying in %.1f s", exc, delay)
                delay = min(delay * 2, 30.0)
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    async def pending(self) -> int:
        return int(await self._database.fetchval("SELECT count(*) FROM eeghub_outbox WHERE published_at IS NULL"))
