"""``RawReader``: neighbours in one segment are read by one request, every
packet gets exactly its own bytes, and errors stay per packet. Runs on the
filesystem object store (a real adapter, no server), wrapped to count and
fail requests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.core.errors import ObjectNotFound, StorageError
from eeghub.core.raw_objects import RawLocation, RawReader, read_raw_payload

BUCKET = "raw-data"


class Counting:
    """An object store that counts ranged reads and can fail or stall them."""

    def __init__(self, inner: FilesystemObjectStore) -> None:
        self.inner = inner
        self.opens: list[tuple[str, int, int | None]] = []
        self.gets: list[str] = []
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def open(self, bucket: str, key: str, *, start: int = 0, end: int | None = None) -> Any:
        self.opens.append((key, start, end))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await self.inner.open(bucket, key, start=start, end=end)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        self.gets.append(key)
        if self.fail is not None:
            raise self.fail
        return await self.inner.get_bytes(bucket, key)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    inner = FilesystemObjectStore(tmp_path / "objects")
    await inner.start()
    await inner.ensure_bucket(BUCKET)
    yield Counting(inner)
    await inner.close()


async def segment(store: Counting, key: str, packets: list[tuple[str, bytes]]) -> dict[str, RawLocation]:
    """Store ``packets`` back to back as segment ``key``; their locations."""
    out, offset = {}, 0
    for object_id, payload in packets:
        out[object_id] = RawLocation(object_id, key, offset, len(payload))
        offset += len(payload)
    await store.inner.put_bytes(BUCKET, key, b"".join(p for _, p in packets))
    return out


def payloads(prefix: str, n: int, size: int = 1000) -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i}", os.urandom(size)) for i in range(n)]


async def test_a_run_of_packets_in_one_segment_is_one_read(store: Counting) -> None:
    mine = payloads("a", 20)
    where = await segment(store, "segments/s1.seg", mine)
    reader = RawReader(store, BUCKET, list(where.values()))
    got = await asyncio.gather(*(reader.read(object_id) for object_id, _ in mine))
    assert got == [p for _, p in mine]
    assert len(store.opens) == 1 and reader.reads == 1
    await reader.aclose()


async def test_packets_read_one_after_another_share_the_span_too(store: Counting) -> None:
    mine = payloads("a", 10)
    where = await segment(store, "segments/s1.seg", mine)
    reader = RawReader(store, BUCKET, list(where.values()))
    for object_id, payload in mine:
        assert await reader.read(object_id) == payload
    assert len(store.opens) == 1
    # Every packet was read once: the span is no longer kept. Reading one
    # again is a read of that packet alone.
    assert await reader.read("a3") == mine[3][1]
    assert store.opens[-1] == ("segments/s1.seg", 3000, 3999)


async def test_other_devices_packets_between_are_read_only_when_few(store: Counting) -> None:
    # Mine and another device's interleaved one to one: the span is twice
    # what I want, which is allowed.
    mine, theirs = payloads("m", 8), payloads("t", 8)
    interleaved = [x for pair in zip(mine, theirs, strict=True) for x in pair]
    where = await segment(store, "segments/mixed.seg", interleaved)
    reader = RawReader(store, BUCKET, [where[object_id] for object_id, _ in mine], overread=2, slack=0)
    assert [await reader.read(object_id) for object_id, _ in mine] == [p for _, p in mine]
    assert len(store.opens) == 1
    # One of mine among three of theirs each time: four times the wanted
    # bytes, too many for an overread of 2 (read one by one), not for the
    # default of 16.
    crowd = []
    for i, packet in enumerate(payloads("x", 6)):
        crowd += [packet, *payloads(f"y{i}-", 3)]
    where = await segment(store, "segments/crowded.seg", crowd)
    wanted = [p for p in crowd if p[0].startswith("x")]
    locations = [where[object_id] for object_id, _ in wanted]
    reader = RawReader(store, BUCKET, locations, overread=2, slack=0)
    store.opens.clear()
    assert [await reader.read(object_id) for object_id, _ in wanted] == [p for _, p in wanted]
    assert len(store.opens) == 6
    reader = RawReader(store, BUCKET, locations, slack=0)
    store.opens.clear()
    assert [await reader.read(object_id) for object_id, _ in wanted] == [p for _, p in wanted]
    assert len(store.opens) == 1


async def test_a_span_never_exceeds_max_span(store: Counting) -> None:
    mine = payloads("a", 10, size=1000)
    where = await segment(store, "segments/s1.seg", mine)
    reader = RawReader(store, BUCKET, list(where.values()), max_span=3000)
    assert [await reader.read(object_id) for object_id, _ in mine] == [p for _, p in mine]
    assert [end - start + 1 for _, start, end in store.opens] == [3000, 3000, 3000, 1000]


async def test_packets_of_objects_of_their_own_and_of_other_segments(store: Counting) -> None:
    alone = os.urandom(500)
    await store.inner.put_bytes(BUCKET, "raw/alone", alone)
    first = await segment(store, "segments/1.seg", payloads("p", 3))
    second = await segment(store, "segments/2.seg", payloads("q", 3))
    order = [*first.values(), RawLocation("raw/alone"), *second.values()]
    reader = RawReader(store, BUCKET, order)
    got = [await reader.read(w.object_id) for w in order]
    expected = [await read_raw_payload(store.inner, BUCKET, w) for w in order]
    assert got == expected and got[3] == alone
    assert store.gets == ["raw/alone"]
    assert [key for key, _, _ in store.opens] == ["segments/1.seg", "segments/2.seg"]


async def test_a_short_segment_makes_only_the_packets_beyond_its_end_missing(store: Counting) -> None:
    mine = payloads("a", 6)
    where = await segment(store, "segments/s1.seg", mine)
    data = await store.inner.get_bytes(BUCKET, "segments/s1.seg")
    await store.inner.put_bytes(BUCKET, "segments/s1.seg", data[:3500])  # a damaged copy
    reader = RawReader(store, BUCKET, list(where.values()))
    got = await asyncio.gather(*(reader.read(object_id) for object_id, _ in mine), return_exceptions=True)
    assert got[:3] == [p for _, p in mine[:3]]
    assert all(isinstance(g, ObjectNotFound) for g in got[3:])
    # A span starting beyond the end (range not satisfiable): missing too.
    beyond = RawLocation("z1", "segments/s1.seg", 10_000, 100), RawLocation("z2", "segments/s1.seg", 10_100, 100)
    reader = RawReader(store, BUCKET, list(beyond))
    with pytest.raises(ObjectNotFound):
        await reader.read("z1")


async def test_a_missing_segment_makes_its_packets_missing(store: Counting) -> None:
    where = [RawLocation(f"g{i}", "segments/gone.seg", 100 * i, 100) for i in range(4)]
    reader = RawReader(store, BUCKET, where)
    got = await asyncio.gather(*(reader.read(w.object_id) for w in where), return_exceptions=True)
    assert all(isinstance(g, ObjectNotFound) for g in got)
    assert len(store.opens) == 1


async def test_a_storage_error_reaches_each_reader_and_the_next_read_tries_again(store: Counting) -> None:
    mine = payloads("a", 4)
    where = await segment(store, "segments/s1.seg", mine)
    reader = RawReader(store, BUCKET, list(where.values()))
    store.fail = StorageError("S3 read failed: SlowDown")
    got = await asyncio.gather(*(reader.read(object_id) for object_id, _ in mine), return_exceptions=True)
    assert all(isinstance(g, StorageError) for g in got)
    assert len(store.opens) == 1
    store.fail = None
    assert await reader.read("a2") == mine[2][1]
    assert len(store.opens) == 2


async def test_a_cancelled_reader_does_not_cancel_the_others(store: Counting) -> None:
    mine = payloads("a", 3)
    where = await segment(store, "segments/s1.seg", mine)
    reader = RawReader(store, BUCKET, list(where.values()))
    store.gate = asyncio.Event()
    first = asyncio.create_task(reader.read("a0"))
    second = asyncio.create_task(reader.read("a1"))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    store.gate.set()
    assert await second == mine[1][1]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await reader.read("a2") == mine[2][1]
    assert len(store.opens) == 1


async def test_kept_spans_stay_within_the_budget(store: Counting) -> None:
    # Two spans of 5,000 bytes, both read only in part, with room for one:
    # the older leaves, and is read again for its next packet.
    first = await segment(store, "segments/1.seg", payloads("p", 5))
    second = await segment(store, "segments/2.seg", payloads("q", 5))
    reader = RawReader(store, BUCKET, [*first.values(), *second.values()], cache_bytes=6000)
    await reader.read("p0")
    await reader.read("q0")
    assert reader._cached_bytes <= 6000
    assert await reader.read("p1") == await read_raw_payload(store.inner, BUCKET, first["p1"])
    assert store.opens[-1][0] == "segments/1.seg" and len(store.opens) == 3


async def test_aclose_cancels_reads_under_way(store: Counting) -> None:
    where = await segment(store, "segments/s1.seg", payloads("a", 3))
    reader = RawReader(store, BUCKET, list(where.values()))
    store.gate = asyncio.Event()
    waiting = asyncio.create_task(reader.read("a0"))
    await asyncio.sleep(0.01)
    await reader.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_packets_alternating_between_two_segments_are_two_reads(store: Counting) -> None:
    # Two groups written at the same time: a device's packets alternate
    # between them (odd ones in one segment, even ones in the other).
    mine = payloads("a", 20)
    odd = await segment(store, "segments/odd.seg", mine[1::2])
    even = await segment(store, "segments/even.seg", mine[0::2])
    order = [(even | odd)[object_id] for object_id, _ in mine]
    reader = RawReader(store, BUCKET, order)
    assert [await reader.read(object_id) for object_id, _ in mine] == [p for _, p in mine]
    assert sorted(key for key, _, _ in store.opens) == ["segments/even.seg", "segments/odd.seg"]
    # Beyond the window, the same segment is a span of its own again.
    reader = RawReader(store, BUCKET, order, window=1)
    store.opens.clear()
    assert [await reader.read(object_id) for object_id, _ in mine] == [p for _, p in mine]
    assert len(store.opens) == 20


async def test_a_closed_reader_reads_nothing(store: Counting) -> None:
    where = await segment(store, "segments/s1.seg", payloads("a", 3))
    reader = RawReader(store, BUCKET, list(where.values()))
    await reader.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await reader.read("a0")
    assert store.opens == []
