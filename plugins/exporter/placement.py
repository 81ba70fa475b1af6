"""Where each packet's samples go in a session's recording (pure: numpy, no I/O).

The predecessor concatenated every linked packet back to back, so duplicates
(redeliveries), gaps, overlaps and samples outside the session all shifted
the EEG against its events (spec §8 item 15). :func:`plan_recording` decides,
from packet metadata alone (no signal is read), which samples of which
packet go where, and :func:`iter_recording` then streams the blocks, one
decoded packet at a time, or :func:`iter_multiplexed` streams the multiplexed
blocks a BrainVision ``.eeg`` file holds, a source (``runner.SessionSignals``)
decoding each block's packets straight into it. The rules:

- **Order and duplicates**: :func:`eeghub.core.timeline.plan_stream` orders
  packets by start time and drops exact duplicates.
- **Placement**: phones stamp packets on arrival, so timestamps jitter by a
  few ms. A packet that follows its predecessor within plan_stream's
  tolerance is placed right after it (the device's sample clock is the
  truth within a continuous stream). After a gap or an overlap beyond the
  tolerance, the packet is re-anchored by its timestamp relative to the
  previous packet: ``offset = previous offset + round((start − previous
  start)·rate)`` samples.
- **Gaps** between written samples are filled with zeros (int16 0 on every
  channel, so no trigger edge appears) and reported as :class:`GapFill`;
  the dataset layer annotates them as ``BAD_ACQ_SKIP`` events. Zero-filling
  keeps one continuous recording whose sample index stays tied to time.
- **Overlaps**: the first writer wins. Samples of a later packet that land
  on positions already written are dropped (its head), and a packet that
  lies entirely inside written data is dropped; both are reported in
  :attr:`RecordingLayout.overlaps` as (object id, dropped samples).
- **Session bounds**: sample ``i`` of a packet is at ``start_ms·1000 +
  round(i·1e6/rate)`` µs (``core.timeline.sample_time_us``). The recording
  starts at the first sample, in placement order, at or after the session
  start, and stops before the first later sample that is after the session
  end. Applying the bounds at the two edges only (not to every sample)
  keeps timestamp jitter from punching holes in the middle.

The recording start is the time of its first sample: that is ``meas_date``,
and :meth:`RecordingLayout.sample_at` maps any absolute µs time to a
recording sample through the packet that holds it, so an onset computed
from a packet's sample (a corrected event) lands on exactly that sample.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from eeghub.core.timeline import Packet, plan_stream, sample_time_us

ZERO_BLOCK_SAMPLES = 4096
"""Largest zero block yielded for a gap, so a long gap needs no large array."""

BLOCK_SAMPLES = 32768
"""Samples per multiplexed block of :func:`iter_multiplexed` (unless one packet
is longer). Larger blocks mean fewer hand-overs between the writer thread and
the event loop fetching its payloads (``benchmarks/export.py``'s eeghub
child, 7 alternating runs: median 0.75 s with 16384, 0.72 s with 32768;
65536 let the peak reach 2x one session's samples); the block (32768 ×
channels int16) and up to two blocks' payloads are in memory at once."""

BLOCK_PACKETS = 256
"""Packets per multiplexed block at most (one ``place`` call each)."""


class NoSamplesError(ValueError):
    """No sample of the session's packets lies within the session bounds."""


@dataclass(frozen=True)
class Segment:
    """Samples ``[first, stop)`` of packet ``object_id`` go to recording sample ``offset``."""

    object_id: str
    first: int
    stop: int
    offset: int
    packet: Packet

    @property
    def samples(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class GapFill:
    """``samples`` zeros written at recording sample ``offset``."""

    offset: int
    samples: int
    after_object: str


@dataclass
class RecordingLayout:
    sampling_rate: float
    start_us: int
    """Absolute time of the recording's first sample (µs since the epoch)."""
    total_samples: int
    steps: list[Segment | GapFill] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    overlaps: list[tuple[str, int]] = field(default_factory=list)
    outside_bounds: list[str] = field(default_factory=list)
    """Packets with no sample inside the session bounds."""
    trimmed_samples: int = 0
    """Samples outside the session bounds (whole or partial packets), not written."""
    _lookup: tuple[list[Segment], list[int]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def segments(self) -> list[Segment]:
        return [step for step in self.steps if isinstance(step, Segment)]

    @property
    def gaps(self) -> list[GapFill]:
        return [step for step in self.steps if isinstance(step, GapFill)]

    @property
    def duration_s(self) -> float:
        return self.total_samples / self.sampling_rate

    def sample_at(self, time_us: int) -> int:
        """The recording sample of absolute time ``time_us``.

        Exact for the time of any written packet sample (``sample_time_us``
        of that packet); other times go to the nearest sample of the packet
        that covers them, or are extrapolated from the nearest packet (times
        in a gap, before the start or after the end; the result may then be
        negative or ≥ ``total_samples``).
        """
        segments, starts = self._index()
        if not segments:
            raise NoSamplesError("the recording has no samples")
        j = bisect.bisect_right(starts, time_us) - 1
        # Overlap clipping and jitter can put the right packet one step off the bisection.
        for k in (j, j - 1, j + 1):
            if 0 <= k < len(segments):
                seg = segments[k]
                index = _index_at(seg.packet, time_us)
                if seg.first <= index < seg.stop:
                    return seg.offset + index - seg.first
        seg = segments[max(j, 0)]
        return seg.offset + _index_at(seg.packet, time_us) - seg.first

    def seconds_at(self, time_us: int) -> float:
        """Seconds from the recording start of :meth:`sample_at`, i.e. ``sample / rate``."""
        return self.sample_at(time_us) / self.sampling_rate

    def _index(self) -> tuple[list[Segment], list[int]]:
        if self._lookup is None:
            segments = self.segments
            self._lookup = (segments, [sample_time_us(seg.packet, seg.first) for seg in segments])
        return self._lookup


def _times_us(packet: Packet) -> np.ndarray:
    # np.rint rounds half to even like Python's round(): the same times as sample_time_us.
    return packet.start_ms * 1000 + np.rint(np.arange(packet.num_samples) * 1e6 / packet.sampling_rate).astype(np.int64)


def _time_us(packet: Packet, index: int) -> int | float:
    """``_times_us(packet)[index]`` without the array (Python's round() rounds half to even, as np.rint)."""
    return packet.start_ms * 1000 + round(index * 1e6 / packet.sampling_rate)


def _starts_before(packet: Packet, lower: int) -> bool:
    """Whether a sample of ``packet`` is before ``lower`` (its first one is: times never decrease)."""
    return _time_us(packet, 0) < lower


def _ends_after(packet: Packet, upper: int) -> bool:
    """Whether a sample of ``packet`` is after ``upper`` (its last one is)."""
    return _time_us(packet, packet.num_samples - 1) > upper


def _index_at(packet: Packet, time_us: int) -> int:
    return round((time_us - packet.start_ms * 1000) * packet.sampling_rate / 1e6)


def plan_recording(
    packets: Sequence[Packet],
    *,
    sampling_rate: float,
    start_ms: int | float | None,
    end_ms: int | float | None,
    tolerance_ms: float | None = None,
) -> RecordingLayout:
    """Lay out a session's packets as one recording (see the module docstring).

    Every packet must have ``sampling_rate`` (ValueError otherwise: mixing
    rates in one recording is the caller's decision to refuse). Raises
    :class:`NoSamplesError` when no sample lies within the bounds.
    """
    for packet in packets:
        if abs(packet.sampling_rate - sampling_rate) > 1e-9 * sampling_rate:
            raise ValueError(
                f"packet {packet.object_id} has sampling rate {packet.sampling_rate}, the session {sampling_rate}"
            )
        if packet.num_samples <= 0:
            raise ValueError(f"packet {packet.object_id} has no samples")
    plan = plan_stream(packets, tolerance_ms=tolerance_ms)
    following = {a.object_id: b.object_id for a, b in zip(plan.kept, plan.kept[1:])}
    reanchored = {following[gap.after_object] for gap in plan.gaps} | {oid for oid, _ in plan.overlaps}
    lower = None if start_ms is None else round(start_ms * 1000)
    upper = None if end_ms is None else round(end_ms * 1000)

    steps: list[Segment | GapFill] = []
    overlaps: list[tuple[str, int]] = []
    outside: list[str] = []
    trimmed = 0
    first_virtual: int | None = None  # virtual index of the recording's first sample
    write_pos = 0  # virtual index after the last written sample
    start_us = 0
    ended = False
    offset = 0  # virtual index of the current packet's sample 0
    previous: Packet | None = None
    last_written = ""
    for packet in plan.kept:
        if previous is not None:
            if packet.object_id in reanchored:
                offset += round((packet.start_ms - previous.start_ms) * sampling_rate / 1000.0)
            else:
                offset += previous.num_samples
        previous = packet
        n = packet.num_samples
        if ended:
            outside.append(packet.object_id)
            trimmed += n
            continue
        # Sample times (never decreasing) are only needed for a packet that straddles a bound;
        # whether it does follows from its first and last sample's time, computed as _times_us does.
        times: np.ndarray | None = None
        head = 0  # samples before the session start (only before the first written sample)
        if first_virtual is None and lower is not None and _starts_before(packet, lower):
            times = _times_us(packet)
            head = int(np.searchsorted(times, lower, side="left"))
        first = head
        if first_virtual is not None and offset + first < write_pos:
            dropped = min(write_pos - (offset + first), n - first)
            overlaps.append((packet.object_id, dropped))
            first += dropped
        stop = n
        if upper is not None and first < n and _ends_after(packet, upper):
            if times is None:
                times = _times_us(packet)
            stop = first + int(np.searchsorted(times[first:], upper, side="right"))
            ended = stop < n
        trimmed += head + (n - stop)
        if stop <= first:
            if first == head:
                outside.append(packet.object_id)
            continue
        if first_virtual is None:
            first_virtual = write_pos = offset + first
            start_us = int(times[first]) if times is not None else int(_time_us(packet, first))
        elif offset + first > write_pos:
            steps.append(GapFill(write_pos - first_virtual, offset + first - write_pos, last_written))
        steps.append(Segment(packet.object_id, first, stop, offset + first - first_virtual, packet))
        write_pos = offset + stop
        last_written = packet.object_id
    if first_virtual is None:
        raise NoSamplesError("no sample of the session's packets lies within the session bounds")
    return RecordingLayout(
        sampling_rate=float(sampling_rate),
        start_us=start_us,
        total_samples=write_pos - first_virtual,
        steps=steps,
        duplicates=list(plan.duplicates),
        overlaps=overlaps,
        outside_bounds=outside,
        trimmed_samples=trimmed,
    )


def iter_recording(
    layout: RecordingLayout, get_signals: Callable[[str], np.ndarray], num_channels: int
) -> Iterator[np.ndarray]:
    """Yield the recording as int16 (channels × n) blocks, in order.

    ``get_signals(object_id)`` returns one packet's decoded int16 signals
    (channels × samples); it is called once per written packet, in time
    order, so only one packet is in memory at a time. Gaps come as zero
    blocks of at most :data:`ZERO_BLOCK_SAMPLES`. Raises ValueError when a
    packet's signals do not have the shape its metadata promises.
    """
    for step in layout.steps:
        if isinstance(step, GapFill):
            left = step.samples
            while left > 0:
                size = min(left, ZERO_BLOCK_SAMPLES)
                yield np.zeros((num_channels, size), dtype=np.int16)
                left -= size
            continue
        signals = get_signals(step.object_id)
        _check_signals(step, signals, num_channels)
        yield signals[:, step.first : step.stop]


class SegmentSource(Protocol):
    """Puts packets' samples into a multiplexed block (what :func:`iter_multiplexed` reads from)."""

    def place(self, segments: Sequence[Segment], block: np.ndarray, rows: Sequence[int]) -> None:
        """Write samples ``[seg.first, seg.stop)`` of each segment's packet
        to rows ``rows[i] … rows[i] + seg.samples`` of ``block`` (int16,
        samples × channels), in the order given (time order)."""
        ...


class CallableSource:
    """A :class:`SegmentSource` over ``get_signals(object_id)`` → int16
    (channels × samples), one packet at a time, with :func:`iter_recording`'s
    shape checks (ValueError)."""

    def __init__(self, get_signals: Callable[[str], np.ndarray], num_channels: int) -> None:
        self._get, self._channels = get_signals, num_channels

    def place(self, segments: Sequence[Segment], block: np.ndarray, rows: Sequence[int]) -> None:
        for step, row in zip(segments, rows, strict=True):
            signals = self._get(step.object_id)
            _check_signals(step, signals, self._channels)
            block[row : row + step.samples] = signals[:, step.first : step.stop].T


def iter_multiplexed(
    layout: RecordingLayout,
    source: SegmentSource,
    num_channels: int,
    *,
    block_samples: int = BLOCK_SAMPLES,
    block_packets: int = BLOCK_PACKETS,
) -> Iterator[np.ndarray]:
    """Yield the recording as multiplexed int16 (n × channels, C-contiguous)
    blocks, in order: what a BrainVision ``.eeg`` file holds, byte for byte.

    Each block holds up to ``block_samples`` samples (more only when one
    packet is longer) of up to ``block_packets`` packets, which ``source``
    places with one :meth:`SegmentSource.place` call; gaps are zeros. The
    values are those :func:`iter_recording` yields, transposed. The same
    buffer is reused for every block: use (write) each one before asking
    for the next.
    """
    if block_samples < 1 or block_packets < 1:
        raise ValueError("block_samples and block_packets must be positive")
    longest = max((step.stop - step.first for step in layout.steps if isinstance(step, Segment)), default=0)
    capacity = min(max(block_samples, longest), max(layout.total_samples, 1))
    block = np.empty((capacity, num_channels), dtype=np.int16)
    segments: list[Segment] = []
    rows: list[int] = []
    filled = 0
    for step in layout.steps:
        if isinstance(step, GapFill):
            left = step.samples
            while left > 0:
                if filled == capacity:
                    if segments:
                        source.place(segments, block, rows)
                        segments, rows = [], []
                    yield block
                    filled = 0
                size = min(left, capacity - filled)
                block[filled : filled + size] = 0
                filled += size
                left -= size
            continue
        size = step.stop - step.first
        if filled + size > capacity or len(segments) == block_packets:
            if segments:
                source.place(segments, block, rows)
                segments, rows = [], []
            yield block[:filled]
            filled = 0
        segments.append(step)
        rows.append(filled)
        filled += size
    if segments:
        source.place(segments, block, rows)
    if filled:
        yield block[:filled]


def _check_signals(step: Segment, signals: np.ndarray, num_channels: int) -> None:
    expected = (num_channels, step.packet.num_samples)
    if signals.shape != expected:
        raise ValueError(f"packet {step.object_id} decodes to shape {signals.shape}, expected {expected}")
    if signals.dtype != np.int16:
        raise ValueError(f"packet {step.object_id} decodes to {signals.dtype}, expected int16")
