"""The storage consumer against a real PostgreSQL: group commit, exactly
once, late data relinking, and a bad row that must not fail its batch."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.postgres.database import PostgresDatabase
from eeghub.adapters.postgres.migrate import migrate
from eeghub.config.settings import Settings
from eeghub.core.errors import PermanentFailure
from eeghub.core.packet import PacketError, decode_payload, decompress_frame
from eeghub.core.packet_messages import BATCH_CONTENT_TYPE, RawPacket, batch_message, packets_of
from eeghub.core.ports import Delivery, Message
from eeghub.core.raw_objects import RAW_LOCATION_COLUMNS, RawLocation, RawReader, payload_of, read_raw_payload
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest import store
from eeghub.plugins.ingest.envelope import from_json
from eeghub.plugins.ingest.routes import packet_for, validate_frame
from tests.fakes import FakeOutboxRelay

pytestmark = pytest.mark.postgres

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def ctx(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    await migrate(database_url)
    database = PostgresDatabase(database_url, max_size=4)
    await database.start()
    objects = FilesystemObjectStore(tmp_path / "objects")
    await objects.start()
    settings = Settings()
    await objects.ensure_bucket(settings.object_store.buckets.raw_data)
    yield SimpleNamespace(database=database, objects=objects, settings=settings, outbox=FakeOutboxRelay())
    await objects.close()
    await database.close()


def packets(ctx: Any, device: SimulatedDevice, count: int, *, first: int = 0) -> list[RawPacket]:
    out = []
    for envelope, frame in list(device.packets(START_MS, first + count))[first:]:
        data = SimpleNamespace(**envelope, payload_base64="")
        env = from_json(data)  # type: ignore[arg-type]
        out.append(packet_for(env, frame, validate_frame(ctx, frame), hashlib.sha256(decompress_frame(frame, max_output_size=1 << 24)).hexdigest())[0])
    return out


def deliveries(ctx: Any, device: SimulatedDevice, count: int, *, first: int = 0) -> list[Delivery]:
    """One message per packet, as the route publishes a packet alone."""
    return [
        Delivery(message=batch_message([p]), queue="processing_queue")
        for p in packets(ctx, device, count, first=first)
    ]


async def rows(ctx: Any, user_id: str) -> list[Any]:
    return await ctx.database.fetch(
        "SELECT object_id, num_samples, channel_names, payload_format FROM raw_data_objects WHERE user_id = $1"
        " ORDER BY timestamp_start_ms",
        user_id,
    )


async def test_concurrent_packets_share_statements_and_are_stored_once(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    device = SimulatedDevice("u-batch", "d1")
    batch = deliveries(ctx, device, 40)
    await asyncio.gather(*(handle(d) for d in batch))
    stored = await rows(ctx, "u-batch")
    assert len(stored) == 40
    assert all(r["num_samples"] == 250 and r["channel_names"][-1] == "TRIG" for r in stored)
    assert {r["payload_format"] for r in stored} == {"v4"}
    assert handle.rows.batches < 40, "rows handled together must share statements"
    # Redelivery of everything (a consumer died before its acks): no new row.
    await asyncio.gather(*(handle(d) for d in batch[:10]))
    await handle(batch[0])
    assert len(await rows(ctx, "u-batch")) == 40
    # Handled together, they were written together: fewer objects than
    # packets, and every row points at its own payload's bytes.
    assert handle.segments.objects < 40
    located = await ctx.database.fetch(
        f"SELECT object_id, content_sha256, {RAW_LOCATION_COLUMNS} FROM raw_data_objects WHERE user_id = 'u-batch'"
    )
    assert any(r["segment_key"] is not None for r in located)
    for record in located:
        data = await read_raw_payload(ctx.objects, ctx.settings.object_store.buckets.raw_data, RawLocation.of(record))
        assert hashlib.sha256(data).hexdigest() == record["content_sha256"]


async def test_a_bad_row_fails_alone(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    good = deliveries(ctx, SimulatedDevice("u-good", "d1"), 6)
    bad = deliveries(ctx, SimulatedDevice("u-bad", "d1"), 1)[0]
    # Longer than raw_data_objects.device_id (VARCHAR(255)): PostgreSQL
    # refuses the row, as it would any row a future constraint rejects.
    bad.message.headers["device_id"] = "d" * 300
    results = await asyncio.gather(*(handle(d) for d in [*good[:3], bad, *good[3:]]), return_exceptions=True)
    assert [isinstance(r, Exception) for r in results] == [False, False, False, True, False, False, False]
    assert "too long" in str(results[3])
    assert len(await rows(ctx, "u-good")) == 6
    assert await rows(ctx, "u-bad") == []


async def test_a_late_packet_queues_its_linked_session_again(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    device = SimulatedDevice("u-late", "dev-late")
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status, event_correction_status)
           VALUES ('s-linked', 'u-late', 'dev-late', $1, $2, 'completed', 'completed'),
                  ('s-other-device', 'u-late', 'dev-other', $1, $2, 'completed', 'completed'),
                  ('s-later', 'u-late', NULL, $3, $4, 'completed', 'completed')""",
        start,
        start + timedelta(seconds=60),
        start + timedelta(hours=1),
        start + timedelta(hours=2),
    )
    before = await ctx.database.fetchval("SELECT count(*) FROM eeghub_outbox")
    late = deliveries(ctx, device, 3, first=10)
    await asyncio.gather(*(handle(d) for d in late))
    statuses = dict(await ctx.database.fetch("SELECT session_id, link_status FROM sessions WHERE user_id = 'u-late'"))
    assert statuses == {"s-linked": "pending", "s-other-device": "completed", "s-later": "completed"}
    # Its correction will be redone on the new links: not "completed" meanwhile.
    corrections = dict(
        await ctx.database.fetch("SELECT session_id, event_correction_status FROM sessions WHERE user_id = 'u-late'")
    )
    assert corrections == {"s-linked": "pending", "s-other-device": "completed", "s-later": "completed"}
    jobs = await ctx.database.fetch(
        "SELECT target, body, content_type FROM eeghub_outbox WHERE id > $1 ORDER BY id", before
    )
    assert [(j["target"], json.loads(bytes(j["body"])), j["content_type"]) for j in jobs] == [
        (ctx.settings.broker.queues.data_linker_queue, {"session_id": "s-linked"}, "application/json")
    ]
    assert ctx.outbox.wakes >= 1
    # The same packets again (redelivery) and more late ones while the
    # session is still pending: no second job.
    await asyncio.gather(*(handle(d) for d in [*late, *deliveries(ctx, device, 2, first=20)]))
    assert await ctx.database.fetchval("SELECT count(*) FROM eeghub_outbox WHERE id > $1", before) == 1


async def test_packets_stored_while_their_session_is_being_linked_queue_it_again(ctx: Any) -> None:
    """The linker's query cannot see packets whose rows are not committed yet:
    packets stored while a session is 'processing' (the linker has started),
    or while a linker transaction holds the session and then completes it,
    queue it once more instead of being left unlinked."""
    handle = store.make_handler(ctx)
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status)
           VALUES ('p-running', 'u-race', 'dev-a', $1, $2, 'processing'),
                  ('p-locked', 'u-race', 'dev-b', $1, $2, 'processing'),
                  ('p-queued', 'u-race', 'dev-c', $1, $2, 'pending')""",
        start,
        start + timedelta(seconds=60),
    )
    before = await ctx.database.fetchval("SELECT count(*) FROM eeghub_outbox")
    await asyncio.gather(*(handle(d) for d in deliveries(ctx, SimulatedDevice("u-race", "dev-a"), 2, first=5)))
    # A linker transaction holds 'p-locked' (as link_once does, FOR UPDATE)
    # and marks it completed; the packets' statement waits, then sees it.
    async with ctx.database.transaction() as conn:
        await conn.fetchrow("SELECT * FROM sessions WHERE session_id = 'p-locked' FOR UPDATE")
        stored = asyncio.ensure_future(
            asyncio.gather(*(handle(d) for d in deliveries(ctx, SimulatedDevice("u-race", "dev-b"), 2, first=5)))
        )
        await asyncio.sleep(0.5)
        assert not stored.done()
        await conn.execute("UPDATE sessions SET link_status = 'completed' WHERE session_id = 'p-locked'")
    await stored
    # A session whose job is still queued links them when it runs: no extra job.
    await asyncio.gather(*(handle(d) for d in deliveries(ctx, SimulatedDevice("u-race", "dev-c"), 2, first=5)))
    statuses = dict(await ctx.database.fetch("SELECT session_id, link_status FROM sessions WHERE user_id = 'u-race'"))
    assert statuses == {"p-running": "pending", "p-locked": "pending", "p-queued": "pending"}
    jobs = await ctx.database.fetch("SELECT body FROM eeghub_outbox WHERE id > $1 ORDER BY id", before)
    assert sorted(json.loads(bytes(j["body"]))["session_id"] for j in jobs) == ["p-locked", "p-running"]


async def test_only_sessions_a_new_packet_overlaps_are_relinked(ctx: Any) -> None:
    """A batch holding packets far apart in time relinks the sessions they
    fall into, not a linked session between them."""
    handle = store.make_handler(ctx)
    device = SimulatedDevice("u-gap", "dev-gap")
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status)
           VALUES ('g-first', 'u-gap', 'dev-gap', $1, $2, 'completed'),
                  ('g-between', 'u-gap', 'dev-gap', $3, $4, 'completed'),
                  ('g-last', 'u-gap', 'dev-gap', $5, $6, 'failed')""",
        start, start + timedelta(seconds=10),
        start + timedelta(seconds=100), start + timedelta(seconds=200),
        start + timedelta(seconds=1000), start + timedelta(seconds=1010),
    )  # fmt: skip
    packets = deliveries(ctx, device, 1, first=2) + deliveries(ctx, device, 1, first=1003)
    await asyncio.gather(*(handle(d) for d in packets))
    statuses = dict(await ctx.database.fetch("SELECT session_id, link_status FROM sessions WHERE user_id = 'u-gap'"))
    assert statuses == {"g-first": "pending", "g-between": "completed", "g-last": "pending"}


async def test_an_unreachable_database_fails_the_batch_at_once(ctx: Any) -> None:
    """Not row by row: that would make every message wait for one timeout each."""
    calls = 0
    real = ctx.database

    class Down:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def fetchrow(self, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            raise ConnectionError("database unavailable")

    ctx.database = Down()
    try:
        handle = store.make_handler(ctx)
        results = await asyncio.gather(
            *(handle(d) for d in deliveries(ctx, SimulatedDevice("u-down", "d1"), 8)), return_exceptions=True
        )
    finally:
        ctx.database = real
    assert all(isinstance(r, ConnectionError) for r in results)
    # One statement per group of messages written together (a group per
    # free write slot, then the rest), never one per message.
    assert calls <= 1 + ctx.settings.ingest.segment_writes_in_flight, f"{calls} statements for 8 rows"
    assert await rows(ctx, "u-down") == []


def plain(frame: bytes) -> bytes:
    return decompress_frame(frame, max_output_size=1 << 24)


async def stored_payloads(ctx: Any, user_id: str) -> dict[str, bytes]:
    records = await ctx.database.fetch(
        f"SELECT object_id, {RAW_LOCATION_COLUMNS} FROM raw_data_objects WHERE user_id = $1", user_id
    )
    bucket = ctx.settings.object_store.buckets.raw_data
    return {r["object_id"]: await read_raw_payload(ctx.objects, bucket, RawLocation.of(r)) for r in records}


async def object_keys(ctx: Any) -> list[str]:
    return [info.key async for info in ctx.objects.list(ctx.settings.object_store.buckets.raw_data)]


async def test_a_batch_message_is_one_segment_object_and_each_packet_one_row(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-seg", "d1"), 12) + packets(ctx, SimulatedDevice("u-seg", "d2"), 5)
    message = batch_message(sent)
    assert message.content_type == BATCH_CONTENT_TYPE
    before = set(await object_keys(ctx))
    await handle(Delivery(message=message, queue="processing_queue"))
    new = set(await object_keys(ctx)) - before
    assert len(new) == 1 and next(iter(new)).startswith("segments/date=2026-01-01/")
    records = await ctx.database.fetch(
        "SELECT object_id, segment_key, segment_offset, stored_bytes FROM raw_data_objects WHERE user_id = 'u-seg'"
        " ORDER BY segment_offset"
    )
    assert len(records) == 17 and {r["segment_key"] for r in records} == new
    # Offsets tile the segment exactly, in the message's order.
    assert [r["segment_offset"] for r in records] == [sum(r2["stored_bytes"] for r2 in records[:i]) for i in range(17)]
    # Each packet reads back as its own decompressed payload.
    payloads = await stored_payloads(ctx, "u-seg")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent)
    assert all(hashlib.sha256(data).hexdigest()[:16] in object_id for object_id, data in payloads.items())
    # Redelivered: the same object again, no new row, no new object.
    await handle(Delivery(message=message, queue="processing_queue", redelivered=True))
    assert set(await object_keys(ctx)) - before == new
    assert await ctx.database.fetchval("SELECT count(*) FROM raw_data_objects WHERE user_id = 'u-seg'") == 17


async def test_a_packet_stored_before_keeps_its_place_when_it_comes_again_in_a_batch(ctx: Any) -> None:
    """A client's retry can put a packet already stored alone into a batch:
    one row, still pointing at the first copy."""
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-again", "d1"), 4)
    await handle(Delivery(message=batch_message([sent[0]]), queue="processing_queue"))
    first = await ctx.database.fetchrow(
        "SELECT object_id, segment_key FROM raw_data_objects WHERE user_id = 'u-again'"
    )
    assert first["segment_key"] is None
    await handle(Delivery(message=batch_message(sent), queue="processing_queue"))
    records = dict(await ctx.database.fetch("SELECT object_id, segment_key FROM raw_data_objects WHERE user_id = 'u-again'"))
    assert len(records) == 4 and records[first["object_id"]] is None
    assert sum(key is not None for key in records.values()) == 3
    payloads = await stored_payloads(ctx, "u-again")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent)


async def test_bad_packets_in_a_batch_do_not_cost_the_good_ones(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    good = packets(ctx, SimulatedDevice("u-mixed", "d1"), 5)
    no_user = RawPacket(headers={k: v for k, v in good[0].headers.items() if k != "user_id"}, frame=good[0].frame)
    garbage = RawPacket(headers=good[1].headers, frame=b"\x28\xb5\x2f\xfd not a frame")
    message = batch_message([good[0], no_user, good[1], garbage, *good[2:]])
    with pytest.raises(PermanentFailure) as failure:
        await handle(Delivery(message=message, queue="processing_queue"))
    assert "2 of 7" in str(failure.value) and "packet 1: bad envelope" in str(failure.value)
    assert "packet 3: bad packet" in str(failure.value)
    payloads = await stored_payloads(ctx, "u-mixed")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in good)


async def test_an_undecodable_batch_is_a_permanent_failure(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    for body in (b"\xc1", b"\x90", b"\x91\x92\x80\xc4\x00\x01"):
        message = Message(body=body, content_type=BATCH_CONTENT_TYPE)
        with pytest.raises(PermanentFailure):
            await handle(Delivery(message=message, queue="processing_queue"))


async def test_a_packet_twice_in_one_batch_is_one_row(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-twice", "d1"), 3)
    await handle(Delivery(message=batch_message([sent[0], sent[1], sent[0], sent[2]]), queue="processing_queue"))
    payloads = await stored_payloads(ctx, "u-twice")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent)


@pytest.mark.parametrize(
    "odd",
    [{"timestamp_start_ms": float("inf")}, {"timestamp_end_ms": 2**62}, {"sampling_rate": "fast"},
     {"timestamp_start_ms": -5}, {"user_id": None}],
)
async def test_one_odd_envelope_in_a_batch_does_not_cost_the_others(ctx: Any, odd: dict[str, Any]) -> None:
    """Only another publisher on the exchange can send these: the good
    packets are stored, the message is dead-lettered at once (not retried)."""
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-odd", "d1"), 3)
    bad = RawPacket(headers={**sent[0].headers, **odd}, frame=sent[0].frame)
    with pytest.raises(PermanentFailure, match="packet 0: bad envelope"):
        await handle(Delivery(message=batch_message([bad, sent[1], sent[2]]), queue="processing_queue"))
    payloads = await stored_payloads(ctx, "u-odd")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent[1:])
    await ctx.database.execute("DELETE FROM raw_data_objects WHERE user_id = 'u-odd'")


async def test_messages_handled_together_are_one_segment(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    sent = [packets(ctx, SimulatedDevice("u-across", f"d{i}"), 3) for i in range(6)]
    before = set(await object_keys(ctx))
    await asyncio.gather(*(handle(Delivery(message=batch_message(m), queue="processing_queue")) for m in sent))
    new = set(await object_keys(ctx)) - before
    assert len(new) == 1 and next(iter(new)).startswith("segments/")
    payloads = await stored_payloads(ctx, "u-across")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for m in sent for p in m)


async def test_a_message_that_comes_again_writes_only_the_packets_not_stored_yet(ctx: Any) -> None:
    """Redelivered (the consumer died after the commit but before its
    acknowledgements), retried, or replayed from the dead letters (which
    looks like a first delivery): its stored packets are not written again
    (they would be bytes no row refers to)."""
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-redo", "d1"), 5)
    message = batch_message(sent)
    await handle(Delivery(message=message, queue="processing_queue"))
    keys = set(await object_keys(ctx))
    await handle(Delivery(message=message, queue="processing_queue", redelivered=True))
    await handle(Delivery(message=message, queue="processing_queue", attempt=2))
    await handle(Delivery(message=message, queue="processing_queue"))
    assert set(await object_keys(ctx)) == keys
    # One row lost (the consumer died before that commit): only its packet is written.
    lost = await ctx.database.fetchval(
        "DELETE FROM raw_data_objects WHERE user_id = 'u-redo' AND segment_offset = 0 RETURNING object_id"
    )
    await handle(Delivery(message=message, queue="processing_queue", redelivered=True))
    assert set(await object_keys(ctx)) - keys == {lost}
    payloads = await stored_payloads(ctx, "u-redo")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent)


async def test_the_predecessors_form_writes_every_packet_as_its_own_object(ctx: Any) -> None:
    """``ingest.publish_batch_packets = 1`` and ``store_compressed = false``:
    no segments at all, even for messages handled at once, and each object
    the decompressed payload (a roll-back to the predecessor reads them)."""
    ctx.settings.ingest.publish_batch_packets = 1
    ctx.settings.ingest.store_compressed = False
    handle = store.make_handler(ctx)
    sent = deliveries(ctx, SimulatedDevice("u-alone", "d1"), 12)
    before = set(await object_keys(ctx))
    await asyncio.gather(*(handle(d) for d in sent))
    new = set(await object_keys(ctx)) - before
    assert len(new) == 12 and all(key.startswith("raw/") for key in new)
    records = await ctx.database.fetch("SELECT object_id, segment_key FROM raw_data_objects WHERE user_id = 'u-alone'")
    assert {r["object_id"] for r in records} == new and all(r["segment_key"] is None for r in records)
    bucket = ctx.settings.object_store.buckets.raw_data
    frames = {plain(packets_of(d.message)[0].frame) for d in sent}
    assert {await ctx.objects.get_bytes(bucket, key) for key in new} == frames


async def test_frames_are_stored_as_received_and_read_back_as_payloads(ctx: Any) -> None:
    handle = store.make_handler(ctx)
    sent = packets(ctx, SimulatedDevice("u-zst", "d1"), 6)
    await handle(Delivery(message=batch_message(sent), queue="processing_queue"))
    records = await ctx.database.fetch(
        "SELECT object_id, segment_key, segment_offset, stored_bytes FROM raw_data_objects WHERE user_id = 'u-zst'"
        " ORDER BY segment_offset"
    )
    [segment] = {r["segment_key"] for r in records}
    bucket = ctx.settings.object_store.buckets.raw_data
    # The segment is the frames one after the other, a third of the payloads' bytes.
    assert await ctx.objects.get_bytes(bucket, segment) == b"".join(p.frame for p in sent)
    assert [r["stored_bytes"] for r in records] == [len(p.frame) for p in sent]
    assert sum(len(p.frame) for p in sent) < 0.5 * sum(len(plain(p.frame)) for p in sent)
    payloads = await stored_payloads(ctx, "u-zst")
    assert sorted(payloads.values()) == sorted(plain(p.frame) for p in sent)


async def test_both_stored_forms_read_the_same(ctx: Any) -> None:
    """A predecessor's object (the payload) beside eeghub's (the frame), and
    a damaged frame, through both readers."""
    bucket = ctx.settings.object_store.buckets.raw_data
    [first, second] = packets(ctx, SimulatedDevice("u-mix", "d1"), 2)
    await ctx.objects.put_bytes(bucket, "raw/old.bin", plain(first.frame))
    await ctx.objects.put_bytes(bucket, "raw/new.bin", second.frame)
    damaged = second.frame[:-8] + bytes(8)
    await ctx.objects.put_bytes(bucket, "raw/damaged.bin", damaged)
    where = [RawLocation("raw/old.bin"), RawLocation("raw/new.bin"), RawLocation("raw/damaged.bin")]
    reader = RawReader(ctx.objects, bucket, where)
    try:
        got = [await reader.read(w.object_id) for w in where]
    finally:
        await reader.aclose()
    assert got[:2] == [plain(first.frame), plain(second.frame)]
    assert got[:2] == [await read_raw_payload(ctx.objects, bucket, w) for w in where[:2]]
    with pytest.raises(PacketError):  # a damaged frame is undecodable, not someone else's samples
        decode_payload(got[2])
    # decompress=False: the bytes as stored, for payload_of in a worker thread.
    raw = RawReader(ctx.objects, bucket, where, decompress=False)
    try:
        stored = [await raw.read(w.object_id) for w in where]
    finally:
        await raw.aclose()
    assert stored == [plain(first.frame), second.frame, damaged]
    assert [payload_of(b) for b in stored[:2]] == got[:2]


async def test_a_late_packet_relinks_the_session_the_linker_gives_it_to(ctx: Any) -> None:
    """The relinking asks the linker's rule (``core/ownership.py``): the
    packet at the boundary of a linked session that belongs to the next
    session (being recorded) leaves the linked one alone, and a packet in a
    linked session's padding, which the linker takes, relinks it."""
    handle = store.make_handler(ctx)
    device, other = SimulatedDevice("u-own", "dev-own"), SimulatedDevice("u-own", "dev-two")
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    await ctx.database.execute(
        """INSERT INTO sessions (session_id, user_id, device_id, start_time, end_time, link_status, event_correction_status)
           VALUES ('o-ended', 'u-own', 'dev-own', $1, $2, 'completed', 'completed'),
                  ('o-recording', 'u-own', 'dev-own', $2, NULL, 'pending', 'pending'),
                  ('o-alone', 'u-own', 'dev-two', $3, $4, 'completed', 'completed')""",
        start, start + timedelta(seconds=10), start + timedelta(seconds=100), start + timedelta(seconds=110),
    )  # fmt: skip
    # Packet 10 starts where o-ended ends; packet 111 of another device lies
    # 1 s after o-alone (no session of that device is being recorded).
    await asyncio.gather(*(handle(d) for d in deliveries(ctx, device, 1, first=10) + deliveries(ctx, other, 1, first=111)))
    statuses = dict(await ctx.database.fetch("SELECT session_id, link_status FROM sessions WHERE user_id = 'u-own'"))
    assert statuses == {"o-ended": "completed", "o-recording": "pending", "o-alone": "pending"}


async def test_a_message_this_process_published_is_stored_from_what_the_route_knew(ctx: Any) -> None:
    """``PUBLISHED`` (core/payload_cache.py): the publisher keeps each
    packet's envelope, frame and payload with the message; the storage
    consumer takes them when the delivered body is the published one, and
    stores exactly the rows and bytes the decoding path stores."""
    from eeghub.core.payload_cache import PAYLOADS, PUBLISHED
    from eeghub.plugins.ingest.publisher import PacketPublisher
    from tests.fakes import FakeBroker

    async def publish_and_store(user: str, *, forget: bool = False) -> tuple[list[Any], dict[str, bytes], Any]:
        broker = FakeBroker()
        publisher = PacketPublisher(broker, "raw_data_exchange", max_packets=64, max_bytes=1 << 20)
        device = SimulatedDevice(user, "d1")
        waiting = []
        for envelope, frame in list(device.packets(START_MS, 9)):
            env = from_json(SimpleNamespace(**envelope, payload_base64=""))  # type: ignore[arg-type]
            found = PAYLOADS.get(frame, max_output_size=1 << 24)
            packet, message_id = packet_for(env, frame, found.layout(ctx.settings.ingest.max_channels), found.sha256())
            waiting.append(publisher.publish(packet, message_id=message_id, local=(env, frame, found)))
        await asyncio.gather(*waiting)
        if forget:
            PUBLISHED.clear()  # as for another process's messages: decoded
        handle = store.make_handler(ctx)
        for _, _, message in broker.published:
            await handle(Delivery(message=message, queue="processing_queue"))
        records = await ctx.database.fetch(
            "SELECT object_id, content_sha256, num_samples, num_channels, channel_names, channel_types, payload_format,"
            " stored_bytes, timestamp_start_ms, sampling_rate, lsb_to_volts FROM raw_data_objects WHERE user_id = $1"
            " ORDER BY timestamp_start_ms",
            user,
        )
        return [dict(r) for r in records], await stored_payloads(ctx, user), broker

    hits = PUBLISHED.hits
    local_rows, local_payloads, broker = await publish_and_store("u-local")
    assert PUBLISHED.hits - hits == len(broker.published) >= 2  # every message from what the route knew
    hits = PUBLISHED.hits
    decoded_rows, decoded_payloads, _ = await publish_and_store("u-local-decoded", forget=True)
    assert PUBLISHED.hits == hits
    assert len(local_rows) == len(decoded_rows) == 9
    same = [{k: v for k, v in r.items() if k != "object_id"} for r in local_rows]
    assert same == [{k: v for k, v in r.items() if k != "object_id"} for r in decoded_rows]
    assert sorted(local_payloads.values()) == sorted(decoded_payloads.values())
    # A delivery with the id of a kept message but other bytes is decoded, never given the kept items.
    first = broker.published[0][2]
    PUBLISHED.put(first.message_id, first.body + b"x", ["not these"])
    misses = PUBLISHED.misses
    await store.make_handler(ctx)(Delivery(message=first, queue="processing_queue"))  # stored already: no new row
    assert PUBLISHED.misses == misses + 1
    assert len(await ctx.database.fetch("SELECT 1 FROM raw_data_objects WHERE user_id = 'u-local'")) == 9
