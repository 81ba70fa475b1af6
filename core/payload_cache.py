"""Decompress each received packet once per process.

The ingest route decompresses a frame to check it, and in the same process
the storage consumer and the live analyzer need the payload of the same
frame a moment later (each from its own delivery of the message). ``PAYLOADS``
keeps the most recent payloads by their frame, bounded in bytes; a frame not
found (evicted, or received by another process) is simply decompressed.
The key is the frame itself, so a hit is exactly the same bytes.
"""

from __future__ import annotations

import threading

from .packet import PacketError, decompress_frame


class PayloadCache:
    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[bytes, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def decompress(self, frame: bytes, *, max_output_size: int) -> bytes:
        """``decompress_frame(frame, max_output_size=...)``, from the cache when it can."""
        key = bytes(frame)
        payload = self._entries.get(key)
        if payload is not None:
            if len(payload) > max_output_size:
                raise PacketError("too_large", f"the frame holds {len(payload)} bytes, more than {max_output_size} allowed")
            self.hits += 1
            return payload
        payload = decompress_frame(key, max_output_size=max_output_size)
        self.misses += 1
        size = len(key) + len(payload)
        if size <= self.max_bytes // 8:
            with self._lock:  # worker threads may call too
                if key not in self._entries:
                    self._entries[key] = payload
                    self._bytes += size
                    while self._bytes > self.max_bytes:  # oldest first (each frame is used a few times, soon)
                        old = next(iter(self._entries))
                        self._bytes -= len(old) + len(self._entries.pop(old))
        return payload

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


PAYLOADS = PayloadCache()
