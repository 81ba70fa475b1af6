"""The exporter's batch path against the plain numpy one, on random sessions.

The production path decodes a block's packets with one numba call
(``core.packet_batch.MultiplexedDecoder``) straight into the multiplexed
block the ``.eeg`` file receives (``placement.iter_multiplexed`` +
``runner.SessionSignals.place``). The oracle is the path it replaced, in
plain numpy: ``decode_payload_reference`` per packet, ``iter_recording``'s
channels × samples blocks, concatenated and transposed, and the channel
quality fed one packet at a time. Random sessions have duplicates
(redeliveries), gaps, overlaps, jitter, out-of-order delivery, packets of
varying length and packets straddling (or wholly outside) the session
bounds; both payload variants; random impedances.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from eeghub.core.errors import ObjectNotFound
from eeghub.core.packet import PacketStats, decode_payload, decode_payload_reference
from eeghub.core.timeline import Packet
from eeghub.plugins.exporter.brainvision import BrainVisionWriter
from eeghub.plugins.exporter.placement import (
    CallableSource,
    NoSamplesError,
    iter_multiplexed,
    iter_recording,
    plan_recording,
)
from eeghub.plugins.exporter.runner import PacketPrefetcher, SessionSignals, _SessionQuality
from tests.random_packets import STATS, random_payload

RATE = 250.0


class Session:
    """Random packets of one stream, their payloads, and bounds."""

    def __init__(self, seed: int, variant: str) -> None:
        rng = np.random.default_rng(seed)
        self.channels = int(rng.integers(1, 12)) + (1 if variant == "v4" else 0)
        wire_channels = self.channels if variant == "v4" else self.channels - 1
        if variant == "app":
            self.channels = wire_channels + 1
        self.payloads: dict[str, bytes] = {}
        self.packets: list[Packet] = []
        t = 1_700_000_000_000
        count = int(rng.integers(20, 400))
        for i in range(count):
            n = int(rng.choice([1, 7, 100, 250, 250, 250, 333]))
            oid = f"p{i:04d}"
            payload = random_payload(rng, max(1, wire_channels), n, variant)
            self.payloads[oid] = payload
            sha = hashlib.sha256(payload).hexdigest()
            start = t + int(rng.integers(-3, 4))  # jitter
            self.packets.append(Packet(oid, start, start + round(n * 1000 / RATE), n, RATE, sha))
            roll = rng.random()
            if roll < 0.05:  # a redelivery: same bytes, same start
                self.packets.append(Packet(oid + "-again", start, start + 1, n, RATE, sha))
                self.payloads[oid + "-again"] = payload
            step = n * 1000 / RATE
            if roll > 0.93:
                step += float(rng.integers(100, 5000))  # a gap
            elif roll > 0.88:
                step -= float(rng.integers(30, 600))  # an overlap
            t += int(round(step))
        order = rng.permutation(len(self.packets))  # delivered out of order
        self.packets = [self.packets[i] for i in order]
        first, last = min(p.start_ms for p in self.packets), max(p.end_ms for p in self.packets)
        span = last - first
        self.start_ms = int(first + rng.uniform(-0.05, 0.2) * span)  # may cut into (or skip) the first packets
        self.end_ms = int(last - rng.uniform(-0.05, 0.2) * span)

    def layout(self):  # type: ignore[no-untyped-def]
        return plan_recording(self.packets, sampling_rate=RATE, start_ms=self.start_ms, end_ms=self.end_ms)


class MemoryFetch:
    """A prefetcher stand-in: payloads from a dict, some objects missing."""

    def __init__(self, payloads: dict[str, bytes], missing: Sequence[str] = ()) -> None:
        self.payloads, self.missing = payloads, set(missing)

    def get(self, object_id: str) -> bytes:
        if object_id in self.missing:
            raise ObjectNotFound("raw", object_id)
        return self.payloads[object_id]

    def get_many(self, object_ids: Sequence[str]) -> list[bytes | Exception]:
        return [ObjectNotFound("raw", o) if o in self.missing else self.payloads[o] for o in object_ids]


def reference_recording(
    session: Session, layout, missing: set[str], undecodable: set[str]  # type: ignore[no-untyped-def]
) -> tuple[np.ndarray, _SessionQuality]:
    """The plain-numpy oracle: decode_payload_reference, iter_recording, transpose;
    quality fed one packet at a time."""
    total = sum(p.num_samples for p in session.packets)
    quality = _SessionQuality([f"c{i}" for i in range(session.channels)], ["eeg"] * session.channels, total, 250)
    sizes = {p.object_id: p.num_samples for p in session.packets}

    def get(object_id: str) -> np.ndarray:
        if object_id in missing or object_id in undecodable:
            return np.zeros((session.channels, sizes[object_id]), np.int16)
        packet = decode_payload_reference(session.payloads[object_id])
        quality.add(packet.stats, packet.signals.shape[1])
        return packet.signals

    blocks = list(iter_recording(layout, get, session.channels))
    return np.concatenate(blocks, axis=1).T, quality


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("variant", ["v4", "app"])
def test_batch_path_equals_numpy_path_on_random_sessions(seed: int, variant: str) -> None:
    session = Session(seed, variant)
    try:
        layout = session.layout()
    except NoSamplesError:
        pytest.skip("the random bounds left no sample")
    rng = np.random.default_rng(1000 + seed)
    written = [seg.object_id for seg in layout.segments]
    missing = set(rng.choice(written, size=min(2, len(written)), replace=False)) if seed % 3 == 0 else set()
    undecodable: set[str] = set()
    payloads = dict(session.payloads)
    if seed % 4 == 1:
        broken = str(rng.choice(written))
        payloads[broken] = payloads[broken][:-1]  # not a whole number of samples
        undecodable.add(broken)
    session.payloads = payloads
    expected, expected_quality = reference_recording(session, layout, missing, undecodable)

    total = sum(p.num_samples for p in session.packets)
    quality = _SessionQuality([f"c{i}" for i in range(session.channels)], ["eeg"] * session.channels, total, 250)
    signals = SessionSignals(MemoryFetch(payloads, missing), session.packets, session.channels, quality)  # type: ignore[arg-type]
    block_samples = int(rng.choice([1, 64, 1000, 16384]))
    parts = [
        block.copy()
        for block in iter_multiplexed(
            layout, signals, session.channels, block_samples=block_samples, block_packets=int(rng.integers(1, 50))
        )
    ]
    got = np.concatenate(parts, axis=0)
    assert got.dtype == np.int16 and got.shape == (layout.total_samples, session.channels)
    np.testing.assert_array_equal(got, expected)
    assert sorted(signals.missing) == sorted(missing)
    assert signals.undecodable == sorted(undecodable)
    assert dict(quality) == dict(expected_quality)
    assert quality.window.samples == expected_quality.window.samples


def test_random_sessions_have_every_placement_case() -> None:
    """The sessions above are not all easy: across the seeds there are
    duplicates, gaps, overlaps, packets cut at either bound and packets
    wholly outside them."""
    seen: dict[str, int] = dict.fromkeys(["duplicates", "gaps", "overlaps", "outside", "cut at start", "cut at end"], 0)
    for seed in range(12):
        for variant in ("v4", "app"):
            session = Session(seed, variant)
            layout = session.layout()
            segments = layout.segments
            seen["duplicates"] += len(layout.duplicates)
            seen["gaps"] += len(layout.gaps)
            seen["overlaps"] += len(layout.overlaps)
            seen["outside"] += len(layout.outside_bounds)
            seen["cut at start"] += segments[0].first > 0
            seen["cut at end"] += segments[-1].stop < segments[-1].packet.num_samples
    assert all(seen.values()), seen


def test_shape_mismatch_fails_the_session_like_iter_recording() -> None:
    rng = np.random.default_rng(3)
    payload = random_payload(rng, 4, 10, "v4")
    packets = [Packet("a", 0, 40, 10, RATE), Packet("b", 40, 80, 11, RATE)]  # b's payload holds 10, not 11
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    signals = SessionSignals(MemoryFetch({"a": payload, "b": payload}), packets, 4, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"packet b decodes to shape \(4, 10\), expected \(4, 11\)"):
        list(iter_multiplexed(layout, signals, 4))
    with pytest.raises(ValueError, match=r"packet b decodes to shape \(4, 10\), expected \(4, 11\)"):
        list(iter_multiplexed(layout, CallableSource(lambda o: decode_payload(payload).signals, 4), 4))


def test_quality_batches_equal_packet_by_packet_even_when_the_window_is_short() -> None:
    rng = np.random.default_rng(11)
    payloads = [random_payload(rng, 5, int(rng.integers(1, 300)), "v4") for _ in range(40)]
    decoded = [decode_payload(p) for p in payloads]
    total = sum(d.signals.shape[1] for d in decoded)
    names, types = [f"c{i}" for i in range(5)], ["eeg", "emg", "eog", "misc", "stim"]
    for window in (total, total // 3):  # the second one evicts: add_batch must fall back to one by one
        one, many = _SessionQuality(names, types, window, 100), _SessionQuality(names, types, window, 100)
        for d in decoded:
            one.add(d.stats, d.signals.shape[1])
        for start in range(0, 40, 7):
            chunk = decoded[start : start + 7]
            stats = np.stack([np.stack([getattr(d.stats, name) for name in STATS]) for d in chunk])
            many.add_batch(stats, [d.signals.shape[1] for d in chunk])
        assert dict(many) == dict(one)
        assert many.window.report() == one.window.report()
        assert isinstance(decoded[0].stats, PacketStats)


def test_write_multiplexed_writes_the_same_file_as_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    data = rng.integers(-32768, 32768, (3, 1000)).astype(np.int16)
    args = (["A", "B", "T"], ["V", "V", "n/a"], 250.0, [1e-7, 1e-7, 1.0], None)
    with BrainVisionWriter(tmp_path / "one", *args) as one:
        one.write(data[:, :400])
        one.write(data[:, 400:])
    with BrainVisionWriter(tmp_path / "two", *args) as two:
        two.write_multiplexed(np.ascontiguousarray(data[:, :999].T))
        two.write_multiplexed(data[:, 999:].T)  # not contiguous: copied
        with pytest.raises(ValueError):
            two.write_multiplexed(data)
    assert (tmp_path / "one.eeg").read_bytes() == (tmp_path / "two.eeg").read_bytes()
    assert (tmp_path / "one.vhdr").read_text().replace("one.", "two.") == (tmp_path / "two.vhdr").read_text()


def test_prefetcher_get_many_in_and_out_of_order() -> None:
    """get_many returns every object's outcome in the order asked, whether it
    was ahead in the predicted order (one wait), skipped, asked again or
    never predicted (fetched alone); failures are outcomes, not raised."""
    order = [f"o{i}" for i in range(200)]
    fetched: list[str] = []

    async def fetch(object_id: str) -> bytes:
        fetched.append(object_id)
        if object_id in ("o7", "extra-missing"):
            raise ObjectNotFound("raw", object_id)
        if object_id[1:].isdigit() and int(object_id[1:]) % 5 == 0:
            await asyncio.sleep(0.001)  # some fetches wait: several workers run
        return object_id.encode()

    async def main() -> list[list[bytes | Exception]]:
        prefetcher = PacketPrefetcher(asyncio.get_running_loop(), fetch, order, depth=4)
        prefetcher.start(10)

        def writer() -> list[list[bytes | Exception]]:
            return [
                prefetcher.get_many(order[0:30]),
                prefetcher.get_many(order[31:33] + order[40:41]),  # o30, o33..o39 skipped
                prefetcher.get_many(["o3", "extra", "extra-missing", "o41"]),  # behind, unknown, unknown, ahead
                prefetcher.get_many(order[42:200]),
            ]

        try:
            return await asyncio.to_thread(writer)
        finally:
            await prefetcher.aclose()

    first, second, third, fourth = asyncio.run(main())
    assert [o if isinstance(o, bytes) else type(o) for o in first] == [
        ObjectNotFound if i == 7 else f"o{i}".encode() for i in range(30)
    ]
    assert second == [b"o31", b"o32", b"o40"]
    assert third[0] == b"o3" and third[1] == b"extra" and isinstance(third[2], ObjectNotFound) and third[3] == b"o41"
    assert fourth == [f"o{i}".encode() for i in range(42, 200)]
    assert fetched.count("o3") == 2  # asked again after it was consumed: fetched again
    assert fetched.count("o100") == 1
