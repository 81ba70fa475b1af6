"""The storage consumer (``processing_queue``): every raw packet stored exactly once.

Object key: ``raw/{user}/{device}/start_ms={start}/end_ms={end}_{sha256[:16]}.bin``
(user and device made safe with ``key_segment``); the hash is of the
decompressed payload. The same packet delivered twice therefore maps to the
same ``raw_data_objects.object_id`` and the same row (``ON CONFLICT DO
NOTHING``); before writing, a group looks up which of its packets already
have rows and leaves them out (a redelivered or replayed message, a packet
the client sent twice).

The packets of the messages handled at once are written together
(``SegmentWriter``): a group of one packet (a quiet server) is the object of
its own key, in the predecessor's form; a larger group is one *segment*
object, ``segments/date={day}/{random}.seg``, the payloads one after
another. Each packet keeps its own ``object_id`` as the row's identity; its
row adds ``segment_key`` and ``segment_offset`` (``core.raw_objects`` reads
either form). An object store's cost per request, not per byte, dominated
the cost of a stored packet.

Order: the object is written first, then the rows; a handler returns (and
its message is acknowledged) only after its rows committed. A row never
points at a missing object. A crash between the two leaves an object without
rows: the redelivery writes the packets again, into a new segment, and the
first one is bytes no row refers to, which ``eeghub raw sweep`` (``sweep.py``)
removes.

What is stored is the zstd frame as the device sent it (``ingest.
store_compressed``, the default): a third of the decompressed v4 payload the
predecessor stored (object storage for 8 channels at 250 Hz: about 12 MB per
hour instead of 35 MB, see docs/measurements.md), and the object store is
bound by bytes. ``core.raw_objects`` reads both forms (a stored packet that
starts with the zstd magic number is a frame; a v4 payload never does), so
objects of an adopted predecessor deployment still read. The object id, and
``content_sha256``, stay those of the decompressed payload whichever form is
stored: a packet stored once in each form is still one packet.

Rows are written in batches (``RowWriter``: group commit); a packet that
arrives after its session was linked (late data) and that the linker would
link to it marks that session for linking again in the same statement
(``INSERT_BATCH``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import deque
from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure
from eeghub.core.keys import key_segment
from eeghub.core.metrics import metrics_of
from eeghub.core.ownership import PAD_MS, owned_by
from eeghub.core.packet import PacketError, decompress_frame, parse_layout
from eeghub.core.packet_messages import BadBatch, RawPacket, packets_of
from eeghub.core.payload_cache import PAYLOADS, PUBLISHED
from eeghub.core.ports import Delivery

from .envelope import Envelope, from_amqp_headers

log = logging.getLogger("eeghub.ingest")

INLINE_DECOMPRESS_BYTES = 256 * 1024
"""Frames up to this size are decompressed on the event loop, larger ones in a thread."""

INSERT_BATCH = f"""
WITH batch AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS b(
        object_id text, user_id text, device_id text, timestamp_start_ms bigint, timestamp_end_ms bigint,
        sampling_rate float8, lsb_to_volts float8, content_sha256 text, num_samples int, num_channels int,
        channel_names text[], channel_types text[], payload_format text, stored_bytes bigint,
        envelope_session_id text, segment_key text, segment_offset bigint)
), inserted AS (
    INSERT INTO raw_data_objects (object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms,
        sampling_rate, lsb_to_volts, content_sha256, num_samples, num_channels, channel_names, channel_types,
        payload_format, stored_bytes, envelope_session_id, segment_key, segment_offset)
    SELECT object_id, user_id, device_id, timestamp_start_ms, timestamp_end_ms, sampling_rate, lsb_to_volts,
        content_sha256, num_samples, num_channels, channel_names, channel_types, payload_format, stored_bytes,
        envelope_session_id, segment_key, segment_offset
    FROM batch
    ORDER BY object_id  -- the same lock order in every process: no deadlocks between batches
    ON CONFLICT (object_id) DO NOTHING
    RETURNING user_id, device_id, timestamp_start_ms, timestamp_end_ms
), streams AS (
    -- One index probe per stream of the batch, not per packet.
    SELECT user_id, device_id, min(timestamp_start_ms) AS first_ms, max(timestamp_end_ms) AS last_ms
    FROM inserted GROUP BY user_id, device_id
), relinked AS (
    -- Late data: an ended session that was already linked goes back to
    -- pending when a new packet belongs to it, by the linker's own rule
    -- (core/ownership.py: within its reach, and not a neighbouring
    -- session's). A packet already stored (a redelivery, a duplicate) is
    -- not new; a packet at the boundary with the next session, or in a
    -- session's time while another one claims it better, does not move it.
    -- Only a status that moves gets a job, so a burst of late packets
    -- costs one. The LATERAL probe (OFFSET 0 keeps it from being flattened
    -- into a join) uses the index on sessions(user_id, start_time) instead
    -- of scanning every linked session.
    -- Its correction goes back to pending too: it will be redone on the
    -- new links, and a client must not take the old result as final.
    -- A session being linked right now ('processing') counts too: the
    -- linker's query cannot see these rows before this statement commits,
    -- so it may finish without them. The status is tested in the UPDATE's
    -- own WHERE, which PostgreSQL re-checks on the latest row version after
    -- waiting for a linker transaction that holds the row: a probe that
    -- filtered on it would judge by this statement's older snapshot.
    UPDATE sessions s SET link_status = 'pending', event_correction_status = 'pending'
    FROM (
        SELECT DISTINCT hit.session_id
        FROM streams g
        CROSS JOIN LATERAL (
            SELECT c.session_id, c.user_id, c.device_id, c.start_time, c.end_time FROM sessions c
            WHERE c.user_id = g.user_id AND (c.device_id IS NULL OR c.device_id = g.device_id)
              AND c.end_time IS NOT NULL
              AND c.start_time <= to_timestamp((g.last_ms + {PAD_MS}) / 1000.0)
              AND c.end_time >= to_timestamp((g.first_ms - {PAD_MS}) / 1000.0)
            OFFSET 0
        ) hit
        WHERE EXISTS (
            SELECT 1 FROM inserted i
            WHERE i.user_id = g.user_id AND i.device_id = g.device_id AND {owned_by("hit", "i")})
    ) h
    WHERE s.session_id = h.session_id AND s.end_time IS NOT NULL
      AND s.link_status IN ('completed', 'failed', 'processing')
    RETURNING s.session_id
), queued AS (
    INSERT INTO eeghub_outbox (target_kind, target, body, content_type)
    SELECT 'queue', $2, convert_to(json_build_object('session_id', session_id)::text, 'UTF8'), 'application/json'
    FROM relinked
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM queued) AS relinked
"""
"""One statement, hence one transaction, for a whole batch of packets: the
rows, the late-data relinking and its outbox jobs."""

def object_key(envelope: Envelope, sha256: str) -> str:
    return (
        f"raw/{key_segment(envelope.user_id)}/{key_segment(envelope.device_id)}/"
        f"start_ms={envelope.timestamp_start_ms}/end_ms={envelope.timestamp_end_ms}_{sha256[:16]}.bin"
    )


class RowWriter:
    """Group commit for ``raw_data_objects``.

    Every storage handler writes its object, then hands its row here and
    waits. The rows of all packets that reach this point while a statement
    is running go to PostgreSQL together in the next one (``INSERT_BATCH``),
    so under load a packet costs a fraction of a round trip instead of a
    transaction of its own; alone, a packet is written at once. If a batch
    fails, its rows are written one by one, so a bad row fails only its own
    message (which the broker retries or dead-letters) and never the others.
    """

    def __init__(self, ctx: AppContext, *, max_batch: int = 256) -> None:
        self._ctx = ctx
        self._max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Statements sent (a figure for tests and benchmarks)."""

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Return once every row is committed; raise the first error of any
        (the others may be committed: the caller's retry finds them)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for row in rows:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((row, future))
            futures.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="eeghub-ingest-rows")
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _drain(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                try:
                    relinked = await self._insert([row for row, _ in batch])
                except Exception as exc:  # noqa: BLE001 - each row's own fate below
                    if len(batch) == 1 or not _row_error(exc):
                        # The database is unreachable or timed out: every
                        # message of the batch fails now, together (the
                        # broker retries them), rather than one by one.
                        for _, future in batch:
                            _settle(future, exc)
                        continue
                    log.warning("a batch of %d packet rows failed (%s); writing them one by one", len(batch), exc)
                    for row, future in batch:
                        try:
                            relinked = await self._insert([row])
                        except Exception as row_exc:  # noqa: BLE001
                            _settle(future, row_exc)
                        else:
                            _settle(future, None)
                            self._woke(relinked)
                    continue
                for _, future in batch:
                    _settle(future, None)
                self._woke(relinked)
        except asyncio.CancelledError:
            # Shut-down: whoever waits is told, nothing hangs; their
            # messages stay unacknowledged and come again.
            for _, future in batch + self._pending:
                if not future.done():
                    future.cancel()
            self._pending = []
            raise

    async def _insert(self, rows: list[dict[str, Any]]) -> int:
        self.batches += 1
        record = await self._ctx.database.fetchrow(
            INSERT_BATCH, rows, self._ctx.settings.broker.queues.data_linker_queue
        )
        assert record is not None
        return int(record["relinked"])

    def _woke(self, relinked: int) -> None:
        if not relinked:
            return
        log.info("late packets: %d session(s) queued for linking again", relinked)
        try:
            # Only after a commit that enqueued something (see OutboxRelay): a
            # wake per stored packet would cost the relay a transaction each.
            self._ctx.outbox.wake()
        except Exception as exc:  # noqa: BLE001 - the relay's poll picks the jobs up anyway
            log.warning("cannot wake the outbox relay: %s", exc)


def _row_error(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the data (SQLSTATE class 22 data exception
    or 23 integrity constraint), i.e. a row of the batch is at fault and
    writing the rows one by one isolates it."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its handler was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _Prepared:
    __slots__ = ("envelope", "stored", "layout", "sha256", "key")

    def __init__(self, envelope: Envelope, stored: bytes, layout: Any, sha256: str) -> None:
        self.envelope = envelope
        self.stored = stored
        """What is written: the zstd frame as received, or the payload."""
        self.layout = layout
        self.sha256 = sha256
        self.key = object_key(envelope, sha256)

    def row(self, segment_key: str | None = None, segment_offset: int | None = None) -> dict[str, Any]:
        envelope, layout = self.envelope, self.layout
        return {
            "object_id": self.key,
            "user_id": envelope.user_id,
            "device_id": envelope.device_id,
            "timestamp_start_ms": envelope.timestamp_start_ms,
            "timestamp_end_ms": envelope.timestamp_end_ms,
            "sampling_rate": envelope.sampling_rate,
            "lsb_to_volts": envelope.lsb_to_volts,
            "content_sha256": self.sha256,
            "num_samples": layout.num_samples,
            "num_channels": len(layout.channel_names),
            "channel_names": list(layout.channel_names),
            "channel_types": list(layout.channel_types),
            "payload_format": "v4-trigger" if layout.has_trigger_block else "v4",
            "stored_bytes": len(self.stored),
            "envelope_session_id": envelope.session_id,
            "segment_key": segment_key,
            "segment_offset": segment_offset,
        }


def segment_key(packets: list[_Prepared]) -> str:
    """A new segment's key: a fresh name for every write. Packets written
    again (their rows never committed) go to a new segment, so a segment no
    row refers to can never come to be referred to later, and ``eeghub raw
    sweep`` may delete it without a race. The packets' own keys
    (``object_id``) stay deterministic: exactly-once is the rows' business."""
    day = time.strftime("%Y-%m-%d", time.gmtime(min(p.envelope.timestamp_start_ms for p in packets) / 1000))
    return f"segments/date={day}/{uuid.uuid4().hex}.seg"


class SegmentWriter:
    """Group writes of packets to the object store, across messages.

    Every storage handler prepares its message's packets and hands them here.
    They wait (at most ``linger`` seconds) for the packets of the messages
    that follow and are written together, as one *segment* object, as soon as
    ``max_bytes`` are waiting, or ``max_waiting`` messages (the consumer's
    prefetch: no more can come before some are acknowledged), or the oldest
    has waited ``linger``. A group of one packet is its own object, under its
    own key (the predecessor's form: what a quiet server writes). Then the
    rows of the group go to ``RowWriter``, and each handler learns its own
    message's outcome: a failed object write fails every message of the
    group (the broker retries them), a refused row only its own message.

    Why: SeaweedFS spends about 0.6 ms of CPU per PUT and 7 µs per KiB (a
    6 kB packet alone costs it 0.64 ms, in a 1 MiB segment 0.04 ms), the
    object store client about 0.2 ms per request, and PostgreSQL less per row
    in a larger statement. The wait delays storing, never the 202 (given when
    the broker confirmed the message).
    """

    def __init__(
        self,
        ctx: AppContext,
        rows: RowWriter,
        *,
        max_bytes: int,
        max_in_flight: int,
        linger: float = 0.0,
        max_waiting: int = 64,
        look_up_lone: bool = True,
    ) -> None:
        """``look_up_lone``: a group of one packet too asks whether its packet
        has a row (else only larger groups do; see ``_write_group``)."""
        if max_bytes < 1 or max_in_flight < 1 or max_waiting < 1 or linger < 0:
            raise ValueError("max_bytes, max_in_flight and max_waiting must be positive, linger not negative")
        self._ctx = ctx
        self._rows = rows
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._linger = linger
        self._max_waiting = max_waiting
        self._look_up_lone = look_up_lone
        self._bucket = ctx.settings.object_store.buckets.raw_data
        self._pending: deque[tuple[list[_Prepared], int, asyncio.Future[None], float]] = deque()
        self._pending_bytes = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._writing = 0
        """Messages whose group is being written (they hold prefetch slots too)."""
        self._timer: asyncio.TimerHandle | None = None
        self.objects = 0
        """Objects written (a figure for tests and benchmarks)."""

    async def store(self, packets: list[_Prepared]) -> None:
        """Return once every packet's object and row are written; raise the
        error that stopped them otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        size = sum(len(p.stored) for p in packets)
        self._pending.append((packets, size, future, loop.time()))
        self._pending_bytes += size
        self._schedule()
        await future

    def _schedule(self) -> None:
        if not self._pending or len(self._in_flight) >= self._max_in_flight:
            return  # a finishing write calls again
        loop = asyncio.get_running_loop()
        due = self._pending[0][3] + self._linger
        full = len(self._pending) + self._writing >= self._max_waiting  # no further message can come
        if self._pending_bytes >= self._max_bytes or full or loop.time() >= due:
            self._start()
        elif self._timer is None:
            self._timer = loop.call_at(due, self._due)

    def _due(self) -> None:
        self._timer = None
        self._schedule()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and len(self._in_flight) < self._max_in_flight:
            group = [self._pending.popleft()]
            size = group[0][1]
            while self._pending and size + self._pending[0][1] <= self._max_bytes:
                entry = self._pending.popleft()
                size += entry[1]
                group.append(entry)
            self._pending_bytes -= size
            if all(entry[2].done() for entry in group):  # every handler was cancelled
                continue
            task = asyncio.create_task(self._write(group), name="eeghub-ingest-segment")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
            if self._pending and self._pending_bytes < self._max_bytes:
                break  # the rest waits for more, or for its time
        self._schedule()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._schedule()

    async def _write(self, group: list[tuple[list[_Prepared], int, asyncio.Future[None], float]]) -> None:
        self._writing += len(group)
        try:
            await self._write_group(group)
        finally:
            self._writing -= len(group)
            # Cancelled (shut-down) or failed in an unforeseen way: no
            # handler may wait for ever; their messages come again.
            for _, _, future, _ in group:
                if not future.done():
                    future.cancel()

    async def _write_group(self, group: list[tuple[list[_Prepared], int, asyncio.Future[None], float]]) -> None:
        try:
            # Packets that already have rows are stored: a redelivered or
            # replayed message, a packet the client sent twice. Writing them
            # into a new segment would only leave bytes no row refers to.
            # One indexed query per group, whatever its number of messages.
            # A lone packet is looked up too (what a quiet server writes, so
            # the query costs nothing that matters): the client's second
            # copy of a packet whose row points into a segment would
            # otherwise become an object of its own that nothing refers to.
            # In the predecessor's form (``look_up_lone`` off) every packet
            # is alone and has no other place than its own key: writing it
            # again stores the same bytes there, and the query would cost
            # every packet a round trip.
            keys = list({p.key for packets, *_ in group for p in packets})
            stored: set[str] = set()
            if len(keys) > 1 or self._look_up_lone:
                stored = {r["object_id"] for r in await self._ctx.database.fetch(STORED_KEYS, keys)}
            fresh = [p for packets, *_ in group for p in packets if p.key not in stored]
            placed = await self._put(fresh) if fresh else {}
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every message of the group is retried
            for _, _, future, _ in group:
                _settle(future, exc)
            return
        # Object first, rows second: a row never points at a missing object.
        outcomes = await asyncio.gather(
            *(self._rows.write([p.row(*placed[p.key]) for p in packets if p.key in placed]) for packets, *_ in group),
            return_exceptions=True,
        )
        stored_now = metrics_of(self._ctx).packets_stored
        for (packets, _, future, _), outcome in zip(group, outcomes, strict=True):
            failed = isinstance(outcome, BaseException)
            _settle(future, outcome if failed else None)
            if not failed:
                stored_now.inc(len(packets))

    async def _put(self, packets: list[_Prepared]) -> dict[str, tuple[str | None, int | None]]:
        """Write the packets' object; where each packet's bytes are, by key:
        ``(None, None)`` for a packet that is its own object."""
        unique: dict[str, _Prepared] = {}
        for prepared in packets:  # a packet sent twice and handled together: its bytes once
            unique.setdefault(prepared.key, prepared)
        if len(unique) == 1:
            # Alone: its own object under its own key, as the predecessor
            # stored every packet. No HEAD first: the key is
            # content-addressed, so writing it again on a redelivery stores
            # the same bytes.
            only = next(iter(unique.values()))
            await self._ctx.objects.put_bytes(
                self._bucket,
                only.key,
                only.stored,
                content_type="application/octet-stream",
                metadata={
                    "x-user-id": key_segment(only.envelope.user_id),
                    "x-device-id": key_segment(only.envelope.device_id),
                    "x-sampling-rate": repr(only.envelope.sampling_rate),
                    "x-lsb-to-volts": repr(only.envelope.lsb_to_volts),
                },
            )
            self.objects += 1
            return {only.key: (None, None)}
        ordered = list(unique.values())
        key = segment_key(ordered)
        placed: dict[str, tuple[str | None, int | None]] = {}
        position = 0
        for prepared in ordered:
            placed[prepared.key] = (key, position)
            position += len(prepared.stored)
        await self._ctx.objects.put_bytes(
            self._bucket,
            key,
            b"".join(p.stored for p in ordered),
            content_type="application/octet-stream",
            metadata={"x-packets": str(len(ordered))},
        )
        self.objects += 1
        return placed


STORED_KEYS = """
SELECT k AS object_id FROM unnest($1::text[]) AS k
WHERE EXISTS (SELECT 1 FROM raw_data_objects r WHERE r.object_id = k OFFSET 0)
"""
"""Which of these keys have rows: one primary-key probe per key (``OFFSET 0``
keeps the subquery correlated). ``object_id = ANY($1)`` let the planner scan
the whole table while its statistics were young (a new deployment, the
benchmark): 2 ms per lookup at 20,000 rows, against 0.45 ms."""


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    limits = ctx.settings.ingest
    rows = RowWriter(ctx)
    if limits.publish_batch_packets == 1:
        # The predecessor's form throughout: every message written as it
        # comes, a packet alone as its own object, messages never grouped.
        segments = SegmentWriter(
            ctx, rows, max_bytes=1, max_in_flight=limits.storage_concurrency, look_up_lone=False
        )
    else:
        segments = SegmentWriter(
            ctx,
            rows,
            max_bytes=limits.segment_max_bytes,
            max_in_flight=limits.segment_writes_in_flight,
            linger=limits.segment_linger_ms / 1000,
            max_waiting=limits.storage_concurrency,
        )

    compressed = limits.store_compressed

    async def prepare(packet: RawPacket) -> _Prepared:
        envelope = from_amqp_headers(packet.headers)
        if packet.content_encoding != "identity" and len(packet.frame) <= INLINE_DECOMPRESS_BYTES:
            # A usual packet (a few KiB) decompresses in microseconds: a
            # thread hop would cost more than the work. The ingest route
            # of this process decompressed, checked and hashed it already,
            # most of the time (core/payload_cache.py).
            found = PAYLOADS.get(packet.frame, max_output_size=limits.max_decompressed_bytes)
            payload, layout, sha256 = found.payload, found.layout(limits.max_channels), found.sha256()
        else:
            if packet.content_encoding == "identity":
                payload = packet.frame
            else:
                payload = await asyncio.to_thread(
                    decompress_frame, packet.frame, max_output_size=limits.max_decompressed_bytes
                )
            layout = parse_layout(payload, max_channels=limits.max_channels)
            sha256 = hashlib.sha256(payload).hexdigest()
        stored = packet.frame if compressed and packet.content_encoding != "identity" else payload
        return _Prepared(envelope, bytes(stored), layout, sha256)

    async def handle(delivery: Delivery) -> None:
        message = delivery.message
        local = PUBLISHED.take(message.message_id, message.body)
        if local is not None:
            # Published by this process's ingest route a moment ago, exactly
            # these bytes: its envelopes, frames and payloads (checked there)
            # rather than decoding the message again.
            await segments.store(
                [
                    _Prepared(envelope, bytes(frame) if compressed else found.payload, found.layout(limits.max_channels), found.sha256())
                    for envelope, frame, found in local
                ]
            )
            return
        try:
            packets = packets_of(message)
        except BadBatch as exc:
            raise PermanentFailure(str(exc)) from None
        good: list[_Prepared] = []
        bad: list[str] = []
        for index, packet in enumerate(packets):
            try:
                good.append(await prepare(packet))
            except PacketError as exc:
                bad.append(f"packet {index}: bad packet: {exc}")
            except ValueError as exc:  # from_amqp_headers
                bad.append(f"packet {index}: bad envelope: {exc}")
        if good:
            await segments.store(good)
        if bad:
            # The good packets are stored; the message goes to the dead
            # letters with every packet (replaying it stores nothing twice).
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise PermanentFailure(f"{len(bad)} of {len(packets)} packet(s) cannot be stored: {'; '.join(bad[:3])}{more}")

    handle.segments = segments  # type: ignore[attr-defined] # for tests and benchmarks
    handle.rows = rows  # type: ignore[attr-defined]
    return handle
