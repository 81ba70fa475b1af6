"""Timeline arithmetic for packets of one device stream (pure, no I/O).

A packet carries no per-sample timestamps (spec §1.4): sample ``i`` of a
packet starting at ``timestamp_start_ms`` is at
``timestamp_start_ms·1000 + round(i·1e6/sampling_rate)`` µs. Phones stamp
packets with their arrival time, so consecutive packets jitter by a few
milliseconds. ``plan_stream`` decides, for a list of packets, which to keep
(exact duplicates dropped), where each goes, and where the stream has gaps or
overlaps; the completeness report and the BIDS exporter share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Packet:
    object_id: str
    start_ms: int
    end_ms: int
    num_samples: int
    sampling_rate: float
    sha256: str | None = None


@dataclass(frozen=True)
class Gap:
    after_object: str
    start_ms: float
    """Where the stream should have continued."""
    missing_ms: float
    missing_samples: int


@dataclass
class StreamPlan:
    kept: list[Packet] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    overlaps: list[tuple[str, float]] = field(default_factory=list)
    """(object id, overlap in ms) of packets that start before the previous one ends."""

    @property
    def samples(self) -> int:
        return sum(p.num_samples for p in self.kept)


def packet_duration_ms(packet: Packet) -> float:
    return packet.num_samples * 1000.0 / packet.sampling_rate


def sample_time_us(packet: Packet, index: int) -> int:
    """Absolute time of sample ``index`` of ``packet`` (the predecessor's rule)."""
    return packet.start_ms * 1000 + round(index * 1e6 / packet.sampling_rate)


def plan_stream(packets: Sequence[Packet], *, tolerance_ms: float | None = None) -> StreamPlan:
    """Order packets by start time, drop exact duplicates (same content hash,
    or same start and sample count when no hash is known), and record gaps
    and overlaps larger than ``tolerance_ms`` (default: a quarter of a
    packet's duration, at least 20 ms)."""
    plan = StreamPlan()
    seen: set[tuple[object, ...]] = set()
    previous: Packet | None = None
    for packet in sorted(packets, key=lambda p: (p.start_ms, p.object_id)):
        identity: tuple[object, ...] = (packet.sha256,) if packet.sha256 else (packet.start_ms, packet.num_samples)
        if identity in seen:
            plan.duplicates.append(packet.object_id)
            continue
        seen.add(identity)
        if previous is not None:
            expected = previous.start_ms + packet_duration_ms(previous)
            tolerance = tolerance_ms if tolerance_ms is not None else max(20.0, packet_duration_ms(previous) / 4)
            delta = packet.start_ms - expected
            if delta > tolerance:
                plan.gaps.append(
                    Gap(
                        after_object=previous.object_id,
                        start_ms=expected,
                        missing_ms=delta,
                        missing_samples=round(delta * packet.sampling_rate / 1000.0),
                    )
                )
            elif delta < -tolerance:
                plan.overlaps.append((packet.object_id, -delta))
        plan.kept.append(packet)
        previous = packet
    return plan


def edge_gaps(
    plan: StreamPlan, start_ms: float, end_ms: float, *, tolerance_ms: float | None = None
) -> tuple[Gap | None, Gap | None]:
    """The spans of the session ``[start_ms, end_ms]`` before the first kept
    packet and after the last one, as gaps (``after_object`` ``""`` for the
    one before the first packet), when longer than the tolerance (as in
    :func:`plan_stream`); completeness counts them as missing samples."""
    if not plan.kept:
        return None, None
    first, last = plan.kept[0], plan.kept[-1]

    def tolerance(packet: Packet) -> float:
        return tolerance_ms if tolerance_ms is not None else max(20.0, packet_duration_ms(packet) / 4)

    leading = trailing = None
    before = first.start_ms - start_ms
    if before > tolerance(first):
        leading = Gap("", float(start_ms), before, round(before * first.sampling_rate / 1000.0))
    last_end = last.start_ms + packet_duration_ms(last)
    after = end_ms - last_end
    if after > tolerance(last):
        trailing = Gap(last.object_id, last_end, after, round(after * last.sampling_rate / 1000.0))
    return leading, trailing
