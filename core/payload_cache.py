"""Decompress each received packet once per process.

The ingest route decompresses a frame to check it, and in the same process
the storage consumer and the live analyzer need the payload of the same
frame a moment later (each from its own delivery of the message). ``PAYLOADS``
keeps the most recent payloads by their frame, bounded in bytes; a frame not
found (evicted, or received by another process) is simply decompressed.

How, and why so:

- **Digest, then verify.** An entry is found by a cheap digest of the
  frame, and a hit is only a hit when the stored frame equals the given one
  (``==`` on bytes, a memcmp). So a hit is always exactly the same bytes
  and their payload; a different frame with the same digest is a miss,
  decompressed and stored in place of the other one, never answered with
  the other's payload. The digest only decides how often different frames
  displace each other, never what is returned.
- **The default digest is Python's own hash of the whole frame** (SipHash
  -1-3 on 3.11, cached on the bytes object: free for the object that was
  inserted, ~0.5-1 µs for a new 3.3 KB object). Measured alternatives did
  not pay (benchmarks/payload_cache.py times them on the same frames):
  ``zlib.crc32`` of the whole frame is slower (~1.4 µs), and hashing only
  the length and first and last 64 bytes (~0.2 µs) saved at most ~0.3 µs a
  hit on this machine, within noise, since the verifying memcmp reads the
  whole frame anyway, while making frames alike at both ends displace each
  other. ``hash`` is salted per process, so nobody outside can aim at a
  digest (nor gain more than misses by hitting one).
- **Oldest first, in O(1).** Entries live in an ``OrderedDict`` in insertion
  order and are evicted with ``popitem(last=False)`` until the frames and
  payloads held fit in ``max_bytes`` (each frame is used a few times, soon
  after it arrives). A plain dict's ``next(iter(...))`` after deletions
  from its front scans the deleted slots each time.
- **What else the process needs of the frame, worked out once.** An entry
  also keeps the payload's layout (``parse_layout``, for a given
  ``max_channels``) and its SHA-256 (the object key and
  ``content_sha256``), each computed by whoever first asks: the ingest
  route checks the layout and hashes the payload for the message id, and
  the storage consumer takes both instead of doing it again (2 µs and 6 µs
  a packet on this machine).
- Worker threads may call too: every change of the table happens under a
  lock; a lookup reads one entry, which is replaced whole. The two lazy
  facts are the only thing written in place: each is a pure function of
  the payload, so two threads computing one write the same value.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from .packet import PacketError, PacketLayout, decompress_frame, parse_layout


class Decompressed:
    """One frame's payload, with its layout and SHA-256 once asked for."""

    __slots__ = ("payload", "_layout", "_max_channels", "_sha256")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._layout: PacketLayout | None = None
        self._max_channels = -1
        self._sha256: str | None = None

    def layout(self, max_channels: int) -> PacketLayout:
        """``parse_layout(self.payload, max_channels=max_channels)``, once
        per ``max_channels`` (raises ``PacketError`` as it does)."""
        if self._max_channels != max_channels:
            self._layout = parse_layout(self.payload, max_channels=max_channels)
            self._max_channels = max_channels
        return self._layout  # type: ignore[return-value]

    def sha256(self) -> str:
        """The payload's SHA-256, hex."""
        digest = self._sha256
        if digest is None:
            digest = self._sha256 = hashlib.sha256(self.payload).hexdigest()
        return digest


class PayloadCache:
    def __init__(self, max_bytes: int = 16 * 1024 * 1024, *, digest: Callable[[bytes], Hashable] = hash) -> None:
        self.max_bytes = max_bytes
        self._digest = digest
        self._entries: OrderedDict[Hashable, tuple[bytes, Decompressed]] = OrderedDict()
        """digest -> (frame, what it holds), oldest first."""
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def decompress(self, frame: bytes | bytearray | memoryview, *, max_output_size: int) -> bytes:
        """``decompress_frame(frame, max_output_size=...)``, from the cache when it can."""
        return self.get(frame, max_output_size=max_output_size).payload

    def get(self, frame: bytes | bytearray | memoryview, *, max_output_size: int) -> Decompressed:
        """The frame's payload (``decompress_frame``, bounded by
        ``max_output_size``) with its layout and digest, from the cache
        when it can."""
        data = frame if type(frame) is bytes else bytes(frame)  # (bytes(frame) costs ~0.1 µs even then)
        key = self._digest(data)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == data:  # verified: the very same bytes
            found = entry[1]
            if len(found.payload) > max_output_size:
                raise PacketError(
                    "too_large", f"the frame holds {len(found.payload)} bytes, more than {max_output_size} allowed"
                )
            self.hits += 1
            return found
        found = Decompressed(decompress_frame(data, max_output_size=max_output_size))
        self.misses += 1
        size = len(data) + len(found.payload)
        if size <= self.max_bytes // 8:
            entries = self._entries
            with self._lock:
                old = entries.pop(key, None)  # another frame with this digest, or this one from another thread
                if old is not None:
                    self._bytes -= len(old[0]) + len(old[1].payload)
                entries[key] = (data, found)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (old_frame, old_found) = entries.popitem(last=False)
                    self._bytes -= len(old_frame) + len(old_found.payload)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


PAYLOADS = PayloadCache()


class PublishedMessages:
    """Messages this process published, with what its ingest route already
    knew of each packet, for this process's storage consumer.

    The storage consumer reads every message back from the durable queue
    (that is what makes a 202 safe), usually a few milliseconds after this
    process published it. Rather than decoding the body again (the batch,
    each packet's envelope from its headers, each frame's cache lookup), it
    asks here by the message's id: the entry is taken only when the
    delivered body equals, byte for byte, the body that was published with
    it, so what is stored is exactly what the queue carried; anything else
    (another process's message, a redelivery, an evicted entry) is decoded
    as before. Bounded in bytes, oldest first; an entry is used once.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, list[Any]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, message_id: str, body: bytes, items: list[Any]) -> None:
        """Keep ``items`` (one per packet of the message, in order) for the
        message ``message_id`` with ``body``, before it is published."""
        if len(body) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(message_id, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[message_id] = (body, items)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, (old_body, _) = self._entries.popitem(last=False)
                self._bytes -= len(old_body)

    def take(self, message_id: str | None, body: bytes) -> list[Any] | None:
        """The items kept for this message, if it is the very one published
        here (same id, same bytes); else None."""
        if not message_id:
            return None
        with self._lock:
            entry = self._entries.pop(message_id, None)
            if entry is not None:
                self._bytes -= len(entry[0])
        if entry is None or entry[0] != body:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


PUBLISHED = PublishedMessages()
