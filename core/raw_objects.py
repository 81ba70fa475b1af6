"""Reading a stored raw packet, wherever its bytes are.

A ``raw_data_objects`` row names its packet by ``object_id``. The payload is
that object itself (every packet the predecessor stored, and every packet
eeghub stored alone), or ``stored_bytes`` bytes at ``segment_offset`` of the
object ``segment_key``, when it arrived in a batch with others (see
``plugins/ingest/store.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ObjectNotFound
from .ports import ObjectStore

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


async def read_raw_payload(objects: ObjectStore, bucket: str, where: RawLocation) -> bytes:
    """The stored payload. ``ObjectNotFound`` when the object is missing or
    a segment is too short to hold the packet (a damaged segment reads as a
    missing packet, not as someone else's bytes)."""
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
