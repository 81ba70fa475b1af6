"""Reading a stored raw packet, wherever its bytes are.

A ``raw_data_objects`` row names its packet by ``object_id``. The payload is
that object itself (every packet the predecessor stored, and every packet
eeghub stored alone), or ``stored_bytes`` bytes at ``segment_offset`` of the
object ``segment_key``, when it arrived in a batch with others (see
``plugins/ingest/store.py``).

The stored bytes are the zstd frame as received or the decompressed v4
payload (the predecessor's form, and ``ingest.store_compressed = false``).
The readers here tell them apart by the zstd magic number, which no valid
v4 payload starts with (its second byte, the channel count, would be 181),
and return the payload.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from .errors import ObjectNotFound
from .packet import ZSTD_MAGIC, PacketError, decompress_frame
from .ports import ObjectStore


MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Decompression bound of a stored frame (``ingest.max_decompressed_bytes``'s default)."""


def payload_of(stored: bytes, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The v4 payload of stored bytes in either form. A frame that does not
    decompress is returned as it is: no decoder accepts it as a payload, so
    it is reported as undecodable wherever it is read."""
    if stored[:4] == ZSTD_MAGIC:
        try:
            return decompress_frame(stored, max_output_size=max_payload_bytes)
        except PacketError:
            return stored
    return stored

RAW_LOCATION_COLUMNS = "segment_key, segment_offset, stored_bytes"
"""What a query must select, beside ``object_id``, for ``read_raw_payload``."""


class RawLocation:
    """Where the payload of ``object_id`` is."""

    __slots__ = ("object_id", "segment_key", "segment_offset", "length")

    def __init__(self, object_id: str, segment_key: str | None = None, segment_offset: int | None = None, length: int | None = None) -> None:
        self.object_id = object_id
        self.segment_key = segment_key
        self.segment_offset = segment_offset
        self.length = length

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RawLocation:
        """From a row with ``object_id`` and ``RAW_LOCATION_COLUMNS``."""
        return cls(row["object_id"], row.get("segment_key"), row.get("segment_offset"), row.get("stored_bytes"))


async def read_raw_payload(
    objects: ObjectStore, bucket: str, where: RawLocation, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> bytes:
    """The packet's payload (decompressed when stored as a frame).
    ``ObjectNotFound`` when the object is missing or a segment is too short
    to hold the packet (a damaged segment reads as a missing packet, not as
    someone else's bytes)."""
    return payload_of(await read_stored(objects, bucket, where), max_payload_bytes)


async def read_stored(objects: ObjectStore, bucket: str, where: RawLocation) -> bytes:
    """The packet's stored bytes, as they are (see ``read_raw_payload``)."""
    if where.segment_key is None:
        return await objects.get_bytes(bucket, where.object_id)
    start, length = where.segment_offset, where.length
    if start is None or start < 0 or not length or length < 0:
        # The schema's check forbids it; a row edited by hand reads as missing.
        raise ObjectNotFound(bucket, where.segment_key)
    try:
        stream = await objects.open(bucket, where.segment_key, start=start, end=start + length - 1)
    except ValueError:  # range not satisfiable: the segment is shorter
        raise ObjectNotFound(bucket, where.segment_key) from None
    try:
        data = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    if len(data) != length:
        raise ObjectNotFound(bucket, where.segment_key)
    return data


class RawReader:
    """Reads the payloads of a known sequence of packets, the way an export
    or an event correction reads a session: neighbours in the sequence that
    lie in the same segment are fetched together, by one ranged read of the
    span that holds them, instead of one read each.

    A segment holds the packets a storage consumer wrote together
    (``plugins/ingest/store.py``): with a few devices streaming, most of a
    segment's packets are one device's consecutive packets, so a session's
    packets come in runs of dozens per segment. One request per run instead
    of per packet is what makes segments cheap to read, on S3 above all
    (each request costs the client about a millisecond of CPU).

    ``locations`` is the expected order of reads; any order works. A span
    gathers packets of one segment that lie within ``window`` positions of
    each other in that order (a device's packets may alternate between
    segments written at the same time). A span is
    read (in a task of its own) when the first of its packets is asked for;
    concurrent reads of its packets share that read, and a reader that is
    cancelled does not cancel it. The span is kept until each of its packets
    was read once, within ``cache_bytes`` (least recently used spans leave
    first; a span that left is read again for its next packet). A span holds
    at most ``max_span`` bytes, and at most ``overread`` times the bytes of
    its packets plus ``slack``: the packets of other devices lying between
    them are read too (on S3 a ranged read of 940 KiB costs the client
    about 2.2 ms of CPU, one of 10 kB about 1 ms: ``benchmarks/raw_reads.py``),
    as long as they are not far more than what is wanted.

    Errors are per packet, as with :func:`read_raw_payload`: a missing
    segment makes its packets ``ObjectNotFound``, and so does a segment too
    short to hold a packet (only the packets beyond its end); a storage
    error is raised to each packet's reader, and the next read of the span
    tries again. Call :meth:`aclose` when done (it cancels reads under way).
    """

    def __init__(
        self,
        objects: ObjectStore,
        bucket: str,
        locations: Sequence[RawLocation],
        *,
        max_span: int = 1024 * 1024,
        overread: float = 16.0,
        slack: int = 64 * 1024,
        cache_bytes: int = 8 * 1024 * 1024,
        window: int = 64,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        decompress: bool = True,
    ) -> None:
        self._objects, self._bucket = objects, bucket
        self._max_payload = max_payload_bytes
        self._decompress = decompress
        """False: ``read`` returns the stored bytes, for a caller that turns
        them into payloads (``payload_of``) in a worker thread."""
        self._cache_bytes = cache_bytes
        self._where: dict[str, RawLocation] = {}
        self._span_of: dict[str, _Span] = {}
        self._cached: OrderedDict[_Span, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._reading: dict[_Span, asyncio.Task[bytes]] = {}
        self._closed = False
        self.reads = 0
        """Requests sent to the object store (a figure for tests and benchmarks)."""
        # Spans still open to more packets, by segment, with the position of
        # their last packet: a device's packets may alternate between
        # segments written at the same time (two writes in flight, several
        # consumers), so a span stays open for ``window`` positions.
        open_spans: dict[str, tuple[_Span, int]] = {}
        for position, where in enumerate(locations):
            self._where[where.object_id] = where
            if not _in_segment(where):
                continue
            key = where.segment_key
            start, end = where.segment_offset, where.segment_offset + where.length  # type: ignore[operator]
            current = open_spans.get(key)  # type: ignore[arg-type]
            if current is not None and position - current[1] <= window:
                span = current[0]
                low, high = min(span.start, start), max(span.end, end)  # type: ignore[type-var]
                useful = span.useful + where.length  # type: ignore[operator]
                if high - low <= max_span and high - low <= overread * useful + slack:
                    span.start, span.end, span.useful = low, high, useful
                    span.unread.add(where.object_id)
                    self._span_of[where.object_id] = span
                    open_spans[key] = (span, position)  # type: ignore[index]
                    continue
            span = _Span(key, start, end)  # type: ignore[arg-type]
            span.unread.add(where.object_id)
            self._span_of[where.object_id] = span
            open_spans[key] = (span, position)  # type: ignore[index]
            if len(open_spans) > 4 * window:  # forget spans left behind
                open_spans = {k: v for k, v in open_spans.items() if position - v[1] <= window}
        for span in set(self._span_of.values()):
            span.size = len(span.unread)

    async def read(self, object_id: str) -> bytes:
        """The payload of ``object_id``, one of ``locations`` (``KeyError``
        for another; ``RuntimeError`` once closed), decompressed when it was
        stored as a frame."""
        if self._closed:
            raise RuntimeError("the raw packet reader is closed")
        where = self._where[object_id]
        span = self._span_of.get(object_id)
        if span is None or span.size == 1 or (
            object_id not in span.unread and span not in self._cached and span not in self._reading
        ):
            # Alone, or read before and its span is gone: a read of its own.
            self.reads += 1
            stored = await read_stored(self._objects, self._bucket, where)
            return payload_of(stored, self._max_payload) if self._decompress else stored
        data = self._cached.get(span)
        if data is not None:
            self._cached.move_to_end(span)
        else:
            task = self._reading.get(span)
            if task is None:
                task = self._reading[span] = asyncio.create_task(self._fetch(span), name="eeghub-raw-span")
                task.add_done_callback(lambda done, span=span: self._fetched(span, done))  # type: ignore[misc]
            data = await asyncio.shield(task)
        span.unread.discard(object_id)
        if not span.unread:
            self._drop(span)
        first = where.segment_offset - span.start  # type: ignore[operator]
        payload = data[first : first + where.length]  # type: ignore[operator]
        if len(payload) != where.length:  # the segment ends before this packet
            raise ObjectNotFound(self._bucket, span.key)
        return payload_of(payload, self._max_payload) if self._decompress else payload

    async def _fetch(self, span: _Span) -> bytes:
        self.reads += 1
        try:
            stream = await self._objects.open(self._bucket, span.key, start=span.start, end=span.end - 1)
        except ValueError:  # range not satisfiable: the segment ends before the span
            return b""
        try:
            return b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()

    def _fetched(self, span: _Span, task: asyncio.Task[bytes]) -> None:
        # Runs before any reader waiting for the task resumes.
        self._reading.pop(span, None)
        if task.cancelled() or task.exception() is not None or not span.unread:
            return
        data = task.result()
        self._cached[span] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > self._cache_bytes and len(self._cached) > 1:
            _, old = self._cached.popitem(last=False)
            self._cached_bytes -= len(old)

    def _drop(self, span: _Span) -> None:
        data = self._cached.pop(span, None)
        if data is not None:
            self._cached_bytes -= len(data)

    async def aclose(self) -> None:
        """Cancel the reads under way, forget what is kept, read no more."""
        self._closed = True
        tasks = list(self._reading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cached.clear()
        self._cached_bytes = 0


READ_CHUNK = 64
"""Packets read (neighbours in one segment by one request) and then decoded
(in one worker-thread call) at a time: a session is never all in memory,
whatever its length."""

READS_AT_ONCE = 8
"""Requests under way per job (packets stored one object each, the
predecessor's form, are one request each: the object store's connection
pool and rate limits are shared with everything else)."""


async def read_in_chunks(
    reader: RawReader, object_ids: Sequence[str], *, chunk: int = READ_CHUNK, at_once: int = READS_AT_ONCE
) -> AsyncIterator[tuple[int, list[Any]]]:
    """Read ``object_ids`` ``chunk`` at a time, at most ``at_once`` requests
    under way; yield ``(index of the chunk's first id, outcomes)``, each
    outcome the stored bytes or, for a missing object, its ``ObjectNotFound``.
    Any other storage error is raised (the job is retried)."""
    limit = asyncio.Semaphore(at_once)

    async def read(object_id: str) -> bytes:
        async with limit:
            return await reader.read(object_id)

    for first in range(0, len(object_ids), chunk):
        outcomes = await asyncio.gather(*(read(o) for o in object_ids[first : first + chunk]), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ObjectNotFound):
                raise outcome
        yield first, outcomes


class _Span:
    """Bytes ``start``..``end`` (exclusive) of segment ``key``; ``unread``:
    its packets not read yet, out of ``size``."""

    __slots__ = ("key", "start", "end", "useful", "unread", "size")

    def __init__(self, key: str, start: int, end: int) -> None:
        self.key, self.start, self.end, self.useful = key, start, end, end - start
        self.unread: set[str] = set()
        self.size = 0


def _in_segment(where: RawLocation) -> bool:
    """A valid location inside a segment (others are read by ``read_raw_payload``)."""
    return (
        where.segment_key is not None
        and where.segment_offset is not None
        and where.segment_offset >= 0
        and where.length is not None
        and where.length > 0
    )
