"""Placing a session's packets on one sample grid: duplicates, gaps, overlaps, bounds, time → sample."""

from __future__ import annotations

import numpy as np
import pytest

from eeghub.core.timeline import Packet, sample_time_us
from eeghub.plugins.exporter.placement import (
    ZERO_BLOCK_SAMPLES,
    GapFill,
    NoSamplesError,
    Segment,
    iter_recording,
    plan_recording,
)

RATE = 100.0
N = 100  # 1 s packets


def packet(name: str, start_ms: int, n: int = N, sha: str | None = None) -> Packet:
    return Packet(name, start_ms, start_ms + 990, n, RATE, sha)


def steps(layout: object) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for step in layout.steps:  # type: ignore[attr-defined]
        if isinstance(step, Segment):
            out.append((step.object_id, step.first, step.stop, step.offset))
        else:
            assert isinstance(step, GapFill)
            out.append(("gap", step.offset, step.samples))
    return out


def test_contiguous_packets_with_jitter_are_back_to_back() -> None:
    packets = [packet("a", 0), packet("b", 1003), packet("c", 1998)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    assert steps(layout) == [("a", 0, N, 0), ("b", 0, N, 100), ("c", 0, N, 200)]
    assert layout.total_samples == 300 and layout.start_us == 0


def test_gap_is_zero_filled_from_the_timestamps() -> None:
    packets = [packet("a", 0), packet("b", 1000), packet("c", 4500)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    assert steps(layout) == [("a", 0, N, 0), ("b", 0, N, 100), ("gap", 200, 250), ("c", 0, N, 450)]


def test_duplicates_are_dropped_and_reported() -> None:
    packets = [packet("a", 0, sha="x"), packet("a2", 0, sha="x"), packet("b", 1000, sha="y")]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    assert layout.duplicates == ["a2"] and layout.total_samples == 200


def test_overlap_first_writer_wins_and_swallowed_packets_vanish() -> None:
    packets = [packet("a", 0, n=300), packet("inside", 1000), packet("b", 3000)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    assert steps(layout) == [("a", 0, 300, 0), ("b", 0, N, 300)]
    assert layout.overlaps == [("inside", N)]


def test_bounds_trim_by_sample_time_and_stop_at_the_end() -> None:
    packets = [packet("a", 0), packet("b", 1000), packet("c", 2000), packet("d", 3000)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=1250, end_ms=2500)
    assert steps(layout) == [("b", 25, N, 0), ("c", 0, 51, 75)]
    assert layout.start_us == 1_250_000
    assert layout.outside_bounds == ["a", "d"]
    assert layout.trimmed_samples == 100 + 25 + 49 + 100


def test_jitter_at_the_start_bound_does_not_punch_a_hole() -> None:
    # b is stamped 8 ms early (within tolerance): by its own clock its first
    # sample is before the start, but the recording has already started.
    packets = [packet("a", 0), packet("b", 992)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=985, end_ms=None)
    assert steps(layout) == [("a", 99, N, 0), ("b", 0, N, 1)]
    assert layout.gaps == []


def test_end_inside_a_gap() -> None:
    packets = [packet("a", 0), packet("b", 5000)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=0, end_ms=3000)
    assert steps(layout) == [("a", 0, N, 0)]
    assert layout.outside_bounds == ["b"]


def test_no_sample_in_bounds_raises() -> None:
    with pytest.raises(NoSamplesError):
        plan_recording([packet("a", 0)], sampling_rate=RATE, start_ms=5000, end_ms=6000)
    with pytest.raises(NoSamplesError):
        plan_recording([], sampling_rate=RATE, start_ms=None, end_ms=None)


def test_mixed_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="sampling rate"):
        plan_recording([packet("a", 0), Packet("b", 1000, 1990, N, 250.0)], sampling_rate=RATE, start_ms=None, end_ms=None)


def test_sample_at_is_exact_for_packet_samples() -> None:
    rate = 256.0
    packets = [Packet(f"p{i}", 1_000 * i + (3 if i % 2 else 0), 0, 256, rate) for i in range(5)]
    packets.append(Packet("late", 9_000, 0, 256, rate))
    layout = plan_recording(packets, sampling_rate=rate, start_ms=None, end_ms=None)
    for seg in layout.segments:
        for i in (0, 1, 77, 255):
            assert layout.sample_at(sample_time_us(seg.packet, i)) == seg.offset + i - seg.first
    assert layout.seconds_at(sample_time_us(packets[0], 7)) == 7 / rate
    # Before the start and inside the gap: extrapolated from the nearest packet.
    assert layout.sample_at(-1_000_000) == -256
    # p4 starts at 4000 ms, recording sample 1024; 6000 ms is 512 samples later (in the gap).
    assert layout.sample_at(6_000_000) == 1024 + 512
    assert [gap.offset for gap in layout.gaps] == [1280]


def test_iter_recording_streams_blocks_and_checks_shapes() -> None:
    packets = [packet("a", 0), packet("b", 100_000)]
    layout = plan_recording(packets, sampling_rate=RATE, start_ms=None, end_ms=None)
    signals = {"a": np.ones((2, N), np.int16), "b": np.full((2, N), 2, np.int16)}
    blocks = list(iter_recording(layout, signals.__getitem__, 2))
    assert all(block.shape[1] <= max(N, ZERO_BLOCK_SAMPLES) for block in blocks)
    data = np.concatenate(blocks, axis=1)
    assert data.shape == (2, layout.total_samples) == (2, 100 + 9_900 + 100)
    assert (data[:, :100] == 1).all() and (data[:, 100:-100] == 0).all() and (data[:, -100:] == 2).all()
    with pytest.raises(ValueError, match="shape"):
        list(iter_recording(layout, lambda oid: np.ones((3, N), np.int16), 2))
    with pytest.raises(ValueError, match="int16"):
        list(iter_recording(layout, lambda oid: np.ones((2, N), np.int32), 2))


@pytest.mark.parametrize("seed", range(20))
def test_bounds_from_first_and_last_sample_equal_every_sample_time(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """plan_recording computes a packet's sample times only when its first or
    last sample is outside the bounds; computing them for every packet (as
    it did before) gives the same layout. Odd rates, float and jittered
    start times, duplicates, gaps, overlaps and bounds anywhere."""
    rng = np.random.default_rng(seed)
    rate = float(rng.choice([100.0, 250.0, 256.0, 333.3, 1000.0 / 3]))
    packets, t = [], 1_700_000_000_000.0 if seed % 2 else 1_700_000_000_000
    for i in range(int(rng.integers(5, 60))):
        n = int(rng.choice([1, 3, 64, 250]))
        start = t + (float(rng.integers(-3, 4)) if seed % 2 else int(rng.integers(-3, 4)))
        packets.append(Packet(f"p{i}", start, 0, n, rate))
        if rng.random() < 0.1:
            packets.append(Packet(f"p{i}-again", start, 0, n, rate))
        t += n * 1000 / rate + float(rng.choice([0, 0, 0, 700, -40])) if seed % 2 else round(n * 1000 / rate) + int(
            rng.choice([0, 0, 0, 700, -40])
        )
    ordered = sorted(packets, key=lambda p: p.start_ms)

    def bound(packets: list[Packet]) -> float:
        """On a sample time of one of the packets (first, second, last but one, last or any), or 1 µs off."""
        packet = packets[int(rng.integers(len(packets)))]
        n = packet.num_samples
        index = int(rng.choice([0, min(1, n - 1), max(0, n - 2), n - 1, int(rng.integers(n))]))
        return (sample_time_us(packet, index) + int(rng.integers(-1, 2))) / 1000  # type: ignore[arg-type]

    start_ms = bound(ordered[: max(1, len(ordered) // 4)])
    end_ms = bound(ordered[-max(1, len(ordered) // 4) :])

    def plan() -> object:
        try:
            layout = plan_recording(packets, sampling_rate=rate, start_ms=start_ms, end_ms=end_ms)
        except NoSamplesError:
            return "no samples"
        return (steps(layout), layout.start_us, layout.total_samples, layout.overlaps, layout.outside_bounds,
                layout.trimmed_samples, layout.duplicates)

    fast = plan()
    from eeghub.plugins.exporter import placement

    monkeypatch.setattr(placement, "_starts_before", lambda packet, lower: True)
    monkeypatch.setattr(placement, "_ends_after", lambda packet, upper: True)
    assert plan() == fast
