"""The event correction's reads (``plugins/linker/correction.py``,
``trigger_edges``): bounded requests under way, neighbours in a segment read
together, trigger edges found across packets, and the same outcome per
packet as before (missing, undecodable, storage errors retried)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.config.settings import Settings
from eeghub.core.errors import StorageError
from eeghub.core.packet import decompress_frame
from eeghub.core.simulator import SimulatedDevice
from eeghub.core import raw_objects
from eeghub.plugins.linker import correction

START_MS = 1_767_225_600_000


class Tracking:
    """Counts reads under way at once; can fail them."""

    def __init__(self, inner: FilesystemObjectStore) -> None:
        self.inner = inner
        self.now = self.most = 0
        self.fail: BaseException | None = None

    async def _track(self, call: Any) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.001)
            if self.fail is not None:
                raise self.fail
            return await call()
        finally:
            self.now -= 1

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return await self._track(lambda: self.inner.get_bytes(bucket, key))

    async def open(self, bucket: str, key: str, **kwargs: Any) -> Any:
        return await self._track(lambda: self.inner.open(bucket, key, **kwargs))


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    settings = Settings()
    inner = FilesystemObjectStore(tmp_path / "objects")
    await inner.start()
    bucket = settings.object_store.buckets.raw_data
    await inner.ensure_bucket(bucket)
    yield SimpleNamespace(objects=Tracking(inner), settings=settings), inner, bucket
    await inner.close()


def session_packets(count: int) -> tuple[SimulatedDevice, list[tuple[dict[str, Any], bytes]]]:
    device = SimulatedDevice("u1", "d1", trigger_samples=[250 * k + 40 for k in range(0, count, 3)])
    return device, [(env, decompress_frame(frame, max_output_size=1 << 24)) for env, frame in device.packets(START_MS, count)]


def row(i: int, envelope: dict[str, Any], payload: bytes, segment: str | None = None, offset: int | None = None) -> dict[str, Any]:
    """A ``raw_data_objects`` row as the correction selects it."""
    return {"object_id": f"raw/u1/d1/{i:04d}.bin", "timestamp_start_ms": envelope["timestamp_start_ms"],
            "sampling_rate": 250.0, "segment_key": segment, "segment_offset": offset, "stored_bytes": len(payload)}


async def test_packets_of_their_own_are_read_a_few_at_a_time(setup: Any) -> None:
    ctx, inner, bucket = setup
    device, packets = session_packets(100)
    rows = [row(i, env, payload) for i, (env, payload) in enumerate(packets)]
    for r, (_, payload) in zip(rows, packets, strict=True):
        await inner.put_bytes(bucket, r["object_id"], payload)
    edges, codes, skipped, with_trigger, coded_line = await correction.trigger_edges(ctx, rows)
    assert skipped == [] and with_trigger == 100 and coded_line is None  # a v4 stim channel: inferred from its values
    assert len(edges) == 34  # a pulse every third packet, each a rising edge
    assert 1 < ctx.objects.most <= raw_objects.READS_AT_ONCE


async def test_a_session_in_one_segment_is_read_with_few_requests_and_the_same_edges(setup: Any) -> None:
    ctx, inner, bucket = setup
    _, packets = session_packets(100)
    rows, offset = [], 0
    for i, (env, payload) in enumerate(packets):
        rows.append(row(i, env, payload, "segments/date=2026-01-01/s.seg", offset))
        offset += len(payload)
    await inner.put_bytes(bucket, "segments/date=2026-01-01/s.seg", b"".join(p for _, p in packets))
    edges, codes, skipped, with_trigger, _ = await correction.trigger_edges(ctx, rows)
    assert skipped == [] and with_trigger == 100 and len(edges) == 34
    starts = {START_MS * 1000 + 40 * 4000 + k * 1_000_000 for k in range(0, 100, 3)}
    assert set(edges.tolist()) == starts
    assert codes.tolist() == [1] * 34  # the line's value at each edge


async def test_missing_and_undecodable_packets_are_skipped_and_a_storage_error_is_raised(setup: Any) -> None:
    ctx, inner, bucket = setup
    _, packets = session_packets(6)
    rows = [row(i, env, payload) for i, (env, payload) in enumerate(packets)]
    for i, (r, (_, payload)) in enumerate(zip(rows, packets, strict=True)):
        if i != 2:  # missing
            await inner.put_bytes(bucket, r["object_id"], payload if i != 4 else b"\x09garbage")
    _, _, skipped, with_trigger, _ = await correction.trigger_edges(ctx, rows)
    assert [s["object_id"] for s in skipped] == [rows[2]["object_id"], rows[4]["object_id"]]
    assert "missing" in skipped[0]["reason"] and "undecodable" in skipped[1]["reason"]
    assert with_trigger == 4
    ctx.objects.fail = StorageError("S3 read failed: SlowDown")
    with pytest.raises(StorageError):
        await correction.trigger_edges(ctx, rows)


async def test_the_app_trigger_block_gives_each_edge_its_code(setup: Any) -> None:
    """The app writes the stimulus class's code (1-3) on the trigger block;
    a pulse spanning two packets is one edge with one code."""
    ctx, inner, bucket = setup
    samples = [250 * k + 40 for k in range(0, 10, 2)] + [250 * 5 - 2]  # the last pulse crosses into packet 5
    device = SimulatedDevice("u1", "d1", variant="app", trigger_samples=sorted(samples), trigger_codes=[1, 2, 3, 2, 3, 1])
    packets = [(env, decompress_frame(frame, max_output_size=1 << 24)) for env, frame in device.packets(START_MS, 10)]
    rows = [row(i, env, payload) for i, (env, payload) in enumerate(packets)]
    for r, (_, payload) in zip(rows, packets, strict=True):
        await inner.put_bytes(bucket, r["object_id"], payload)
    edges, codes, skipped, with_trigger, coded_line = await correction.trigger_edges(ctx, rows)
    assert skipped == [] and with_trigger == 10 and coded_line is True  # the app's block carries codes
    assert edges.tolist() == [START_MS * 1000 + s * 4000 for s in sorted(samples)]
    assert codes.tolist() == [1, 2, 3, 2, 3, 1]


async def test_a_line_already_high_when_the_data_begins_is_not_an_edge(setup: Any) -> None:
    """A trigger line high from the first linked sample (stuck high, or a
    pulse that began before the data) and a pulse running on from a missing
    packet: no rising edge was seen, so there is no trigger time. Taken as
    an edge at the first sample, a stuck line gave a one-event session a
    one-to-one "correction" onto the start of the recording."""
    ctx, inner, bucket = setup
    stuck = SimulatedDevice("u1", "d1", variant="app", trigger_samples=[0], pulse_samples=10**6, trigger_codes=[1])
    packets = [(env, decompress_frame(frame, max_output_size=1 << 24)) for env, frame in stuck.packets(START_MS, 4)]
    rows = [row(i, env, payload) for i, (env, payload) in enumerate(packets)]
    for r, (_, payload) in zip(rows, packets, strict=True):
        await inner.put_bytes(bucket, r["object_id"], payload)
    edges, codes, skipped, with_trigger, _ = await correction.trigger_edges(ctx, rows)
    assert with_trigger == 4 and edges.tolist() == [] and codes.tolist() == []
    from eeghub.core.correction import match_events  # the single event must not be "corrected" onto it

    corrected, report = match_events([START_MS * 1000 + 4000], edges)
    assert corrected == [None] and report.status != "ok"
    # A pulse from packet 2's last samples into packet 3, packet 2 missing:
    # its edge is unseen; the pulse in packet 5 is seen.
    device = SimulatedDevice("u1", "d1", variant="app", trigger_samples=[3 * 250 - 2, 5 * 250 + 40], trigger_codes=[2, 3])
    packets = [(env, decompress_frame(frame, max_output_size=1 << 24)) for env, frame in device.packets(START_MS, 6)]
    rows = [{**row(i, env, payload), "object_id": f"raw/u1/d1/gap{i:04d}.bin"} for i, (env, payload) in enumerate(packets)]
    for i, (r, (_, payload)) in enumerate(zip(rows, packets, strict=True)):
        if i != 2:
            await inner.put_bytes(bucket, r["object_id"], payload)
    edges, codes, skipped, _, _ = await correction.trigger_edges(ctx, rows)
    assert len(skipped) == 1 and edges.tolist() == [START_MS * 1000 + (5 * 250 + 40) * 4000] and codes.tolist() == [3]


async def test_the_app_block_carries_codes_unless_every_pulse_is_one(setup: Any) -> None:
    """One pulse of code 3 on the app's block is a code; a block whose
    pulses are all 1 may be a device writing 1 for every pulse: inferred."""
    ctx, inner, bucket = setup
    for codes, expected in (([3], True), ([1, 1], None)):
        samples = [250 * k + 40 for k in range(len(codes))]
        device = SimulatedDevice("u1", "d1", variant="app", trigger_samples=samples, trigger_codes=codes)
        packets = [(env, decompress_frame(frame, max_output_size=1 << 24)) for env, frame in device.packets(START_MS, 3)]
        rows = [{**row(i, env, payload), "object_id": f"raw/u1/d1/c{len(codes)}-{i}.bin"} for i, (env, payload) in enumerate(packets)]
        for r, (_, payload) in zip(rows, packets, strict=True):
            await inner.put_bytes(bucket, r["object_id"], payload)
        edges, found, _, _, coded_line = await correction.trigger_edges(ctx, rows)
        assert found.tolist() == codes and coded_line is expected


async def test_a_pulse_high_at_the_first_sample_after_a_gap_in_the_data_is_not_an_edge(setup: Any) -> None:
    """Packets never received (a Bluetooth drop) leave a gap in time: a pulse
    high at the first sample after it may have begun in the gap, so its
    edge was not seen. Contiguous packets keep the level across."""
    ctx, inner, bucket = setup
    device = SimulatedDevice("u1", "d1", variant="app", trigger_samples=[250, 750, 1000], trigger_codes=[1, 2, 3])
    frames = dict(enumerate(device.packets(START_MS, 5)))
    rows = []
    for i in (0, 1, 3, 4):  # packet 2 never arrived: packet 3's first sample follows a 1 s gap
        envelope, frame = frames[i]
        payload = decompress_frame(frame, max_output_size=1 << 24)
        rows.append({**row(i, envelope, payload), "timestamp_end_ms": envelope["timestamp_end_ms"],
                     "object_id": f"raw/u1/d1/g{i}.bin"})  # fmt: skip
        await inner.put_bytes(bucket, rows[-1]["object_id"], payload)
    edges, codes, skipped, _, _ = await correction.trigger_edges(ctx, rows)
    assert skipped == []
    assert edges.tolist() == [START_MS * 1000 + s * 4000 for s in (250, 1000)] and codes.tolist() == [1, 3]
