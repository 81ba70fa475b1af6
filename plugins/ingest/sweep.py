"""Segments no row refers to, found and removed (``eeghub raw sweep``).

The storage consumer writes a segment object, then the rows that point into
it (``store.py``). When something stops it between the two (the process
dies, PostgreSQL is unreachable), the broker delivers the messages again and
their packets are written again, into a new segment (every segment write has
a new name). The first segment then holds bytes that no row refers to: no
data is lost or wrong, but the space is. The same holds for segments whose
rows were deleted.

Because a segment's name is never written twice, a segment no row refers to
stays that way, except one whose rows are still on their way: a sweep only
judges segments older than ``min_age``. It lists them, then reads which
segments the rows refer to (after listing: rows that committed meanwhile
count), and deletes (with ``delete=True``) or only reports the others.
Single-packet objects (``raw/…``) are never touched: their key is their
row's ``object_id``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from eeghub.core.ports import Database, ObjectStore

SEGMENT_PREFIX = "segments/"


class SweepReport(msgspec.Struct, kw_only=True):
    segments: int = 0
    """Segments old enough to be judged."""
    too_young: int = 0
    unreferenced: list[str] = []
    unreferenced_bytes: int = 0
    deleted: int = 0


REFERENCED = "SELECT DISTINCT segment_key FROM raw_data_objects WHERE segment_key IS NOT NULL"
"""One pass over the table (a maintenance command, not a request path: no
index on segment_key is kept for it, which every stored row would pay)."""


async def sweep_segments(
    database: Database,
    objects: ObjectStore,
    bucket: str,
    *,
    min_age: timedelta = timedelta(hours=1),
    delete: bool = False,
    now: datetime | None = None,
) -> SweepReport:
    now = now or datetime.now(UTC)
    report = SweepReport()
    candidates: dict[str, int] = {}
    async for info in objects.list(bucket, SEGMENT_PREFIX):
        if info.last_modified is None or now - info.last_modified < min_age:
            report.too_young += 1
            continue
        candidates[info.key] = info.size
    report.segments = len(candidates)
    # Read after listing: a segment whose rows committed meanwhile is kept.
    for record in await database.fetch(REFERENCED):
        candidates.pop(record["segment_key"], None)
    report.unreferenced = sorted(candidates)
    report.unreferenced_bytes = sum(candidates.values())
    if delete:
        for key in report.unreferenced:
            await objects.delete(bucket, key)
            report.deleted += 1
    return report
