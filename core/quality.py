"""Channel quality over a recent window (the rules of spec §5.4, not cumulative).

The predecessor accumulated its counters from the first packet of a profile
and never forgot them, and its flatline flag was sticky (spec §8 item 19): a
channel that recovered stayed "bad". Here the same rules are applied to the
*last* ``window_samples`` samples only, so a recovered channel shows as good
once its bad stretch has left the window.

Rules, per channel, over the window (thresholds in :class:`QualityThresholds`,
the predecessor's defaults; field names match
``eeghub.config.settings.ChannelQualitySettings``):

- analysis channels are those of type eeg, emg or eog;
- ``zero_ratio`` = samples equal to 0 / samples; ``≥ 0.98`` → ``bad``,
  reason ``"zero-fill NN%"``;
- ``bad_impedance_ratio`` = samples with impedance ≥ 200 and ≠ 255 / samples;
  ``≥ 0.5`` → ``bad``, reason ``"impedance high NN%"``;
- otherwise (not bad), ``unknown_impedance_ratio`` (impedance 255) ``≥ 0.75``
  adds the reason ``"impedance unknown NN%"``;
- ``flatline``: max − min of the window ≤ 5 ADC counts adds the reason
  ``"flatline amplitude"`` without making the channel bad. (The predecessor
  tested each batch separately and kept the flag forever; here it is the
  whole recent window, so a briefly flat packet inside a live signal does not
  flag the channel.)
- ``has_warning`` = not bad and some reason; percentages are ``f"{r:.0%}"``
  (rounded to an integer);
- non-analysis channels (stim, misc) are always good, ratios 0, no flatline.

Two ways to compute it, same result for the same samples:

- :class:`QualityWindow`, the live path: it consumes the per-packet counters
  the decoder already produces (:class:`eeghub.core.packet.PacketStats`: zero
  count, minimum, maximum, impedance unknown/high counts per channel), keeps a
  bounded ring of the last packets' counters and running sums. ``update`` is
  O(channels), no rescan of samples; ``report`` adds one vectorised min/max
  over the (packets × channels) ring for the flatline (≈120 × 9 values for a
  60 s window of 128-sample packets), and is called once per analysis cycle.
  The decoder's ``impedance_threshold`` (default 200) decides what counts as
  "high" in its counters; keep it equal to ``bad_impedance_threshold``.
- :func:`channel_quality`, from the raw int16 window and a per-sample
  impedance array: the oracle of the tests, and usable by the exporter.

Only numpy and the standard library are imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

import numpy as np

ANALYSIS_TYPES = ("eeg", "emg", "eog")

__all__ = [
    "ANALYSIS_TYPES",
    "ChannelQuality",
    "PacketCounters",
    "QualityReport",
    "QualityThresholds",
    "QualityWindow",
    "channel_quality",
    "packet_counters",
]

IMPEDANCE_UNKNOWN = 255

_NEUTRAL_MIN = np.iinfo(np.int64).max
_NEUTRAL_MAX = np.iinfo(np.int64).min


@dataclass(frozen=True)
class QualityThresholds:
    """The predecessor's thresholds (spec §7.3, ``CHANNEL_*``)."""

    zero_ratio_threshold: float = 0.98
    flatline_ptp_threshold: int = 5
    bad_impedance_threshold: int = 200
    bad_impedance_ratio: float = 0.5
    unknown_impedance_ratio: float = 0.75

    @classmethod
    def from_settings(cls, section: object) -> QualityThresholds:
        """From any object with these attribute names (e.g. ``settings.analyzer.channel_quality``)."""
        return cls(**{f.name: getattr(section, f.name) for f in fields(cls) if hasattr(section, f.name)})


@dataclass
class ChannelQuality:
    """One channel's entry of the report (the predecessor's keys)."""

    status: Literal["good", "bad"]
    reasons: list[str]
    zero_ratio: float
    bad_impedance_ratio: float
    unknown_impedance_ratio: float
    flatline: bool
    type: str
    has_warning: bool


@dataclass
class QualityReport:
    """Per-channel quality (in channel order) and the sorted bad channel names.

    ``samples`` is how many samples the window covered. Dataclasses encode
    directly with msgspec; :meth:`as_dict` gives plain dicts.
    """

    channels: dict[str, ChannelQuality]
    bad_channels: list[str]
    samples: int = 0

    def channel_report(self) -> dict[str, dict[str, Any]]:
        """``{name: {status, reasons, zero_ratio, ...}}``, the predecessor's ``channel_report``."""
        # What ``dataclasses.asdict`` gives (the only mutable field is the
        # list of reasons, copied), at a twentieth of its cost: the analyzer
        # builds one report per analysis window.
        return {name: {**vars(entry), "reasons": list(entry.reasons)} for name, entry in self.channels.items()}

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channel_report(), "bad_channels": list(self.bad_channels), "samples": self.samples}


class PacketCounters(Protocol):
    """What :class:`QualityWindow` reads from a packet: ``PacketStats`` fits."""

    zero_count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    impedance_unknown: np.ndarray
    impedance_high: np.ndarray


@dataclass(frozen=True)
class _Counters:
    zero_count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    impedance_unknown: np.ndarray
    impedance_high: np.ndarray


# ---------------------------------------------------------------- the rules
def _pct(ratio: float) -> str:
    return f"{ratio:.0%}"


def _classify(
    names: Sequence[str],
    types: Sequence[str],
    analysed: np.ndarray,
    zeros: np.ndarray,
    unknown: np.ndarray,
    high: np.ndarray,
    ptp: np.ndarray | None,
    total: int,
    thresholds: QualityThresholds,
) -> QualityReport:
    """The §5.4 rules on window sums; every path ends here."""
    channels: dict[str, ChannelQuality] = {}
    bad: list[str] = []
    if total > 0:
        zero_r = np.where(analysed, zeros / total, 0.0)
        high_r = np.where(analysed, high / total, 0.0)
        unk_r = np.where(analysed, unknown / total, 0.0)
    else:
        zero_r = high_r = unk_r = np.zeros(len(names))
    if ptp is not None and total > 0:
        flat = analysed & (ptp <= thresholds.flatline_ptp_threshold)
    else:
        flat = np.zeros(len(names), dtype=bool)
    for i, (name, kind) in enumerate(zip(names, types)):
        if not analysed[i]:
            channels[name] = ChannelQuality("good", [], 0.0, 0.0, 0.0, False, kind, False)
            continue
        z, h, u, fl = float(zero_r[i]), float(high_r[i]), float(unk_r[i]), bool(flat[i])
        reasons: list[str] = []
        status: Literal["good", "bad"] = "good"
        if z >= thresholds.zero_ratio_threshold:
            status = "bad"
            reasons.append(f"zero-fill {_pct(z)}")
        if h >= thresholds.bad_impedance_ratio:
            status = "bad"
            reasons.append(f"impedance high {_pct(h)}")
        if status != "bad" and u >= thresholds.unknown_impedance_ratio:
            reasons.append(f"impedance unknown {_pct(u)}")
        if fl:
            reasons.append("flatline amplitude")
        has_warning = status != "bad" and bool(reasons)
        channels[name] = ChannelQuality(status, reasons, z, h, u, fl, kind, has_warning)
        if status == "bad":
            bad.append(name)
    return QualityReport(channels, sorted(bad), int(total))


def _check_channels(names: Sequence[str], types: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    names, types = tuple(names), tuple(types)
    if len(names) != len(types):
        raise ValueError(f"{len(names)} channel names but {len(types)} channel types")
    if len(set(names)) != len(names):
        raise ValueError("channel names must be unique")
    return names, types, np.array([t in ANALYSIS_TYPES for t in types], dtype=bool)


# ---------------------------------------------------------------- raw arrays
def packet_counters(signals: np.ndarray, impedance: np.ndarray | None, *, bad_impedance_threshold: int = 200) -> PacketCounters:
    """The per-channel counters of a block of samples, as the decoder computes them.

    ``signals`` int (channels, samples); ``impedance`` (channels, samples) of
    0–255, or None when the source has no impedance (every sample then counts
    as unknown). Impedance rows beyond ``impedance.shape[0]`` (a synthesized
    trigger channel) count as neither unknown nor high.
    """
    sig = np.asarray(signals)
    if sig.ndim != 2:
        raise ValueError(f"signals must be (channels, samples), got {sig.shape}")
    c, n = sig.shape
    unknown = np.zeros(c, dtype=np.int64)
    high = np.zeros(c, dtype=np.int64)
    if impedance is None:
        unknown[:] = n
    else:
        imp = np.asarray(impedance)
        if imp.ndim != 2 or imp.shape[1] != n or imp.shape[0] > c:
            raise ValueError(f"impedance must be (≤{c}, {n}), got {imp.shape}")
        rows = imp.shape[0]
        unknown[:rows] = np.count_nonzero(imp == IMPEDANCE_UNKNOWN, axis=1)
        high[:rows] = np.count_nonzero((imp >= bad_impedance_threshold) & (imp != IMPEDANCE_UNKNOWN), axis=1)
    if n == 0:
        mn = np.full(c, _NEUTRAL_MIN, dtype=np.int64)
        mx = np.full(c, _NEUTRAL_MAX, dtype=np.int64)
    else:
        mn = sig.min(axis=1).astype(np.int64)
        mx = sig.max(axis=1).astype(np.int64)
    return _Counters(np.count_nonzero(sig == 0, axis=1).astype(np.int64), mn, mx, unknown, high)


def channel_quality(
    signals: np.ndarray,
    impedance: np.ndarray | None,
    names: Sequence[str],
    types: Sequence[str],
    thresholds: QualityThresholds = QualityThresholds(),
) -> QualityReport:
    """The report for one window of raw samples (int16 (channels, samples)).

    ``impedance`` as in :func:`packet_counters`. This is what
    :class:`QualityWindow` reports when its window holds exactly these samples.
    """
    names, types, analysed = _check_channels(names, types)
    sig = np.asarray(signals)
    if sig.ndim != 2 or sig.shape[0] != len(names):
        raise ValueError(f"signals must be ({len(names)}, samples), got {sig.shape}")
    cnt = packet_counters(sig, impedance, bad_impedance_threshold=thresholds.bad_impedance_threshold)
    ptp = cnt.maximum - cnt.minimum if sig.shape[1] else None
    return _classify(names, types, analysed, cnt.zero_count, cnt.impedance_unknown, cnt.impedance_high, ptp, sig.shape[1], thresholds)


# ---------------------------------------------------------------- live window
class QualityWindow:
    """Channel quality over the most recent ``window_samples`` samples of one stream.

    Feed it every decoded packet's counters with :meth:`update` (O(channels));
    ask :meth:`report` when analysing. Whole packets are kept: after an
    update the oldest packets are dropped while the rest still cover
    ``window_samples``, so the window spans between ``window_samples`` and
    ``window_samples + one packet − 1`` samples once enough data arrived.
    Memory is bounded: at most ``window_samples + 1`` packets (each packet has
    at least one sample); the ring starts small and doubles when needed.
    Not thread-safe: one owner per stream.
    """

    def __init__(
        self,
        names: Sequence[str],
        types: Sequence[str],
        *,
        window_samples: int,
        thresholds: QualityThresholds = QualityThresholds(),
        expected_packet_samples: int = 128,
    ) -> None:
        self.names, self.types, self._analysed = _check_channels(names, types)
        if window_samples < 1:
            raise ValueError(f"window_samples must be at least 1, got {window_samples}")
        self.window_samples = int(window_samples)
        self.thresholds = thresholds
        c = len(self.names)
        self._max_capacity = self.window_samples + 1
        cap = min(self._max_capacity, math.ceil(self.window_samples / max(1, expected_packet_samples)) + 2)
        self._alloc(cap)
        self._sums = np.zeros((3, c), dtype=np.int64)  # zeros, unknown, high over the ring
        self._total = 0

    @classmethod
    def for_seconds(
        cls,
        names: Sequence[str],
        types: Sequence[str],
        sfreq: float,
        seconds: float,
        thresholds: QualityThresholds = QualityThresholds(),
    ) -> QualityWindow:
        return cls(names, types, window_samples=max(1, int(round(sfreq * seconds))), thresholds=thresholds)

    def _alloc(self, cap: int) -> None:
        c = len(self.names)
        self._counts = np.zeros((cap, 3, c), dtype=np.int64)
        self._min = np.full((cap, c), _NEUTRAL_MIN, dtype=np.int64)
        self._max = np.full((cap, c), _NEUTRAL_MAX, dtype=np.int64)
        self._n = np.zeros(cap, dtype=np.int64)
        self._head = 0  # index of the oldest packet
        self._count = 0

    def _grow(self) -> None:
        cap = self._n.size
        order = (self._head + np.arange(self._count)) % cap
        counts, mins, maxs, ns = self._counts[order], self._min[order], self._max[order], self._n[order]
        kept = self._count
        self._alloc(min(self._max_capacity, cap * 2))
        self._counts[:kept], self._min[:kept], self._max[:kept], self._n[:kept] = counts, mins, maxs, ns
        self._count = kept

    @property
    def samples(self) -> int:
        """Samples currently covered."""
        return self._total

    @property
    def packets(self) -> int:
        return self._count

    def reset(self) -> None:
        self._alloc(self._n.size)
        self._sums[:] = 0
        self._total = 0

    def update(self, stats: PacketCounters, n_samples: int) -> None:
        """Add one packet's counters (``DecodedPacket.stats`` and its sample count)."""
        n = int(n_samples)
        if n <= 0:
            return
        c = len(self.names)
        zero = np.asarray(stats.zero_count)
        if zero.shape != (c,):
            raise ValueError(f"the packet has counters for {zero.shape[0] if zero.ndim else 0} channels, the window {c}")
        cap = self._n.size
        if self._count == cap:
            if cap < self._max_capacity:
                self._grow()
                cap = self._n.size
            else:
                self._evict()
        slot = (self._head + self._count) % cap
        row = self._counts[slot]
        row[0] = zero
        row[1] = stats.impedance_unknown
        row[2] = stats.impedance_high
        self._min[slot] = stats.minimum
        self._max[slot] = stats.maximum
        self._n[slot] = n
        self._sums += row
        self._total += n
        self._count += 1
        while self._count > 1 and self._total - int(self._n[self._head]) >= self.window_samples:
            self._evict()

    def update_arrays(self, signals: np.ndarray, impedance: np.ndarray | None) -> None:
        """Add a block of raw samples (computes its counters, then :meth:`update`)."""
        sig = np.asarray(signals)
        self.update(packet_counters(sig, impedance, bad_impedance_threshold=self.thresholds.bad_impedance_threshold), sig.shape[1])

    def _evict(self) -> None:
        h = self._head
        self._sums -= self._counts[h]
        self._total -= int(self._n[h])
        self._counts[h] = 0
        self._min[h] = _NEUTRAL_MIN
        self._max[h] = _NEUTRAL_MAX
        self._n[h] = 0
        self._head = (h + 1) % self._n.size
        self._count -= 1

    def report(self) -> QualityReport:
        """The §5.4 report over the current window."""
        ptp = None
        if self._total:
            # Empty ring slots hold neutral values (int64 max/min), so no index juggling.
            ptp = self._max.max(axis=0) - self._min.min(axis=0)
        return _classify(
            self.names, self.types, self._analysed, self._sums[0], self._sums[1], self._sums[2], ptp, self._total, self.thresholds
        )
