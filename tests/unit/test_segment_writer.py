"""Grouped object writes of the storage consumer (plugins/ingest/store.py,
``SegmentWriter``): which packets share an object, when a group leaves, and
whose message fails when something goes wrong. The object store and the row
writer are fakes here; tests/integration/test_ingest_store.py and
tests/e2e/test_ingest_batched.py run the same code on real servers."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.config.settings import Settings
from eeghub.core.packet import decompress_frame, parse_layout
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest.envelope import from_json
from eeghub.plugins.ingest.store import SegmentWriter, _Prepared

START_MS = 1_767_225_600_000


def prepared(user: str, count: int, *, first: int = 0) -> list[_Prepared]:
    out = []
    for envelope, frame in list(SimulatedDevice(user, "d1").packets(START_MS, first + count))[first:]:
        payload = decompress_frame(frame, max_output_size=1 << 24)
        env = from_json(SimpleNamespace(**envelope, payload_base64=""))  # type: ignore[arg-type]
        out.append(_Prepared(env, payload, parse_layout(payload), hashlib.sha256(payload).hexdigest()))
    return out


class Objects:
    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def put_bytes(self, bucket: str, key: str, data: bytes, **_: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.puts.append((key, data))


class Rows:
    """The row writer and the table it writes (``database.fetch`` of the
    lookup of keys already stored)."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.refuse: set[str] = set()
        self.lookups: list[list[str]] = []
        self.down: BaseException | None = None

    async def write(self, rows: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        if any(r["user_id"] in self.refuse for r in rows):
            raise ValueError("refused")
        self.written.extend(rows)

    async def fetch(self, query: str, keys: list[str]) -> list[dict[str, Any]]:
        assert "raw_data_objects" in query
        if self.down is not None:
            raise self.down
        self.lookups.append(keys)
        stored = {r["object_id"] for r in self.written}
        return [{"object_id": k} for k in keys if k in stored]


def writer(**kwargs: Any) -> tuple[SegmentWriter, Objects, Rows]:
    objects, rows = Objects(), Rows()
    ctx = SimpleNamespace(objects=objects, settings=Settings(), database=rows)
    options = {"max_bytes": 1 << 20, "max_in_flight": 1, "linger": 0.05, "max_waiting": 64} | kwargs
    return SegmentWriter(ctx, rows, **options), objects, rows  # type: ignore[arg-type]


async def within(awaitable: Any, seconds: float = 10) -> Any:
    """Guard against a hang (never a timing assertion)."""
    return await asyncio.wait_for(awaitable, seconds)


def read_back(objects: Objects, row: dict[str, Any]) -> bytes:
    stored = dict(objects.puts)
    if row["segment_key"] is None:
        return stored[row["object_id"]]
    start = row["segment_offset"]
    return stored[row["segment_key"]][start : start + row["stored_bytes"]]


async def test_messages_waiting_together_become_one_segment() -> None:
    segments, objects, rows = writer(linger=0.2)
    messages = [prepared(f"u{i}", 3) for i in range(5)]
    await within(asyncio.gather(*(segments.store(m) for m in messages)))
    assert len(objects.puts) == 1 and segments.objects == 1
    key = objects.puts[0][0]
    assert key.startswith("segments/date=2026-01-01/")
    assert len(rows.written) == 15 and {r["segment_key"] for r in rows.written} == {key}
    packets = {p.key: p for m in messages for p in m}
    for row in rows.written:
        assert read_back(objects, row) == packets[row["object_id"]].stored


async def test_a_message_arriving_later_within_the_linger_joins_the_group() -> None:
    segments, objects, _ = writer(linger=0.5)
    first = asyncio.create_task(segments.store(prepared("a", 1)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(segments.store(prepared("b", 1)))
    await within(asyncio.gather(first, second))
    assert len(objects.puts) == 1 and objects.puts[0][0].startswith("segments/")


async def test_a_lone_packet_is_its_own_object_under_its_own_key() -> None:
    segments, objects, rows = writer(linger=0)
    [only] = prepared("alone", 1)
    await within(segments.store([only]))
    assert objects.puts == [(only.key, only.stored)]
    assert rows.written[0]["segment_key"] is None and rows.written[0]["segment_offset"] is None


async def test_enough_bytes_leave_at_once_without_waiting_for_the_linger() -> None:
    one = prepared("big", 1)[0]
    segments, objects, _ = writer(linger=3600, max_bytes=2 * len(one.stored))
    await within(asyncio.gather(*(segments.store(prepared(f"b{i}", 1)) for i in range(4))))
    assert [len(data) for _, data in objects.puts] == [2 * len(one.stored)] * 2


async def test_a_full_prefetch_leaves_at_once() -> None:
    """No further message can arrive before some are acknowledged."""
    segments, objects, _ = writer(linger=3600, max_waiting=3)
    await within(asyncio.gather(*(segments.store(prepared(f"w{i}", 1)) for i in range(3))))
    assert len(objects.puts) == 1


async def test_a_message_larger_than_max_bytes_is_written_alone() -> None:
    big = prepared("huge", 4)
    segments, objects, rows = writer(linger=0, max_bytes=len(big[0].stored))
    await within(asyncio.gather(segments.store(big), segments.store(prepared("small", 1))))
    assert len(objects.puts) == 2 and len(rows.written) == 5


async def test_groups_wait_for_a_free_write_slot() -> None:
    segments, objects, _ = writer(linger=0, max_in_flight=1)
    objects.gate = asyncio.Event()
    first = asyncio.create_task(segments.store(prepared("s0", 1)))
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(segments.store(prepared(f"s{i}", 1))) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    objects.gate.set()
    await within(asyncio.gather(first, *rest))
    # The first went alone; the five that waited for its slot went together.
    assert len(objects.puts) == 2 and objects.puts[0][0].startswith("raw/")


async def test_a_failed_object_write_fails_every_message_of_its_group_and_no_row_is_written() -> None:
    segments, objects, rows = writer(linger=0.05)
    objects.fail = ConnectionError("S3 down")
    results = await within(
        asyncio.gather(*(segments.store(prepared(f"f{i}", 2)) for i in range(3)), return_exceptions=True)
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert rows.written == []
    # The next group (the broker's retry) is written as usual.
    objects.fail = None
    await within(segments.store(prepared("f0", 2)))
    assert len(rows.written) == 2


async def test_a_refused_row_fails_only_its_own_message() -> None:
    segments, objects, rows = writer(linger=0.05)
    rows.refuse = {"bad"}
    results = await within(
        asyncio.gather(
            segments.store(prepared("good1", 2)),
            segments.store(prepared("bad", 2)),
            segments.store(prepared("good2", 2)),
            return_exceptions=True,
        )
    )
    assert results[0] is None and results[2] is None and isinstance(results[1], ValueError)
    assert sorted({r["user_id"] for r in rows.written}) == ["good1", "good2"]
    assert len(objects.puts) == 1


async def test_a_packet_twice_in_a_group_is_written_once_and_both_rows_point_at_it() -> None:
    segments, objects, rows = writer(linger=0.05)
    same = prepared("twice", 2)
    await within(asyncio.gather(segments.store(same), segments.store(prepared("twice", 1))))
    data = objects.puts[0][1]
    assert len(data) == sum(len(p.stored) for p in same)
    assert len(rows.written) == 3
    assert {read_back(objects, r) for r in rows.written} == {p.stored for p in same}


async def test_packets_with_rows_already_are_not_written_again() -> None:
    """A redelivered or replayed message, or a packet the client sent twice."""
    segments, objects, rows = writer(linger=0)
    sent = prepared("again", 4)
    await within(segments.store(sent[:3]))
    assert len(objects.puts) == 1
    # The whole message again: only the packet without a row is written,
    # alone, as its own object; nothing else is written or inserted.
    await within(segments.store(sent))
    assert len(objects.puts) == 2 and objects.puts[1] == (sent[3].key, sent[3].stored)
    assert sorted(r["object_id"] for r in rows.written) == sorted(p.key for p in sent)
    # Everything stored: no write at all, and the handler succeeds.
    await within(segments.store(sent))
    assert len(objects.puts) == 2 and len(rows.written) == 4
    # One lookup per group, not per message.
    assert all(len(keys) <= 4 for keys in rows.lookups) and len(rows.lookups) == 3


async def test_a_lone_packet_whose_row_points_into_a_segment_is_not_written_again() -> None:
    """The client's retry of a packet that went into a segment, arriving
    alone at a quiet moment: nothing to write (an object of its own would
    be bytes no row refers to)."""
    segments, objects, rows = writer(linger=0)
    sent = prepared("retry", 3)
    await within(segments.store(sent))
    assert len(objects.puts) == 1 and objects.puts[0][0].startswith("segments/")
    await within(segments.store([sent[1]]))
    assert len(objects.puts) == 1 and len(rows.written) == 3
    assert rows.lookups[-1] == [sent[1].key]


async def test_the_predecessors_form_writes_a_lone_packet_without_a_lookup() -> None:
    segments, objects, rows = writer(linger=0, max_bytes=1, max_in_flight=64, look_up_lone=False)
    [only] = prepared("pred", 1)
    await within(segments.store([only]))
    await within(segments.store([only]))  # a redelivery: the same bytes under the same key
    assert objects.puts == [(only.key, only.stored)] * 2 and rows.lookups == []


async def test_an_unreachable_database_fails_the_group_before_any_write() -> None:
    segments, objects, rows = writer(linger=0.05)
    rows.down = ConnectionError("database down")
    results = await within(
        asyncio.gather(*(segments.store(prepared(f"d{i}", 2)) for i in range(3)), return_exceptions=True)
    )
    assert all(isinstance(r, ConnectionError) for r in results) and objects.puts == []


async def test_segment_keys_are_new_for_every_write() -> None:
    """A segment no row refers to can never be written again (and referred
    to) under the same key: the sweep can delete it without a race."""
    segments, objects, rows = writer(linger=0.05)
    sent = prepared("fresh", 3)
    await within(segments.store(sent))
    rows.written.clear()  # as if the rows had never committed
    await within(segments.store(sent))
    assert len(objects.puts) == 2 and objects.puts[0][0] != objects.puts[1][0]
    assert objects.puts[0][1] == objects.puts[1][1]


async def test_messages_being_written_count_against_the_prefetch() -> None:
    """Messages in a running write hold prefetch slots too: once those and
    the waiting ones fill the prefetch, the waiting ones leave at once."""
    segments, objects, _ = writer(linger=3600, max_waiting=3, max_in_flight=2)
    objects.gate = asyncio.Event()
    full = [asyncio.create_task(segments.store(prepared(f"p{i}", 1))) for i in range(3)]
    await asyncio.sleep(0.01)  # the three leave together and wait in the object store
    last = asyncio.create_task(segments.store(prepared("p3", 1)))
    await asyncio.sleep(0.01)
    objects.gate.set()
    await within(asyncio.gather(*full, last), 5)  # not the hour-long linger
    assert [len(data) > 0 for _, data in objects.puts] == [True, True]


async def test_a_cancelled_handler_does_not_stop_the_others() -> None:
    segments, objects, rows = writer(linger=0.1)
    gone = asyncio.create_task(segments.store(prepared("gone", 1)))
    kept = asyncio.create_task(segments.store(prepared("kept", 1)))
    await asyncio.sleep(0.01)
    gone.cancel()
    await within(kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert "kept" in {r["user_id"] for r in rows.written}


async def test_only_cancelled_handlers_waiting_write_nothing() -> None:
    segments, objects, rows = writer(linger=0.05)
    gone = asyncio.create_task(segments.store(prepared("gone", 1)))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.1)
    assert objects.puts == [] and rows.written == []


def test_bad_limits_are_refused() -> None:
    for options in ({"max_bytes": 0}, {"max_in_flight": 0}, {"max_waiting": 0}, {"linger": -1}):
        with pytest.raises(ValueError):
            writer(**options)
