"""Generated sessions on the mobile app's timing, with known truth, for the
event correction's validation grid (``tests/unit/test_correction_grid.py``)
and its benchmark (``benchmarks/correction.py``).

The app (``lib/screens/stimulus_presentation_screen.dart``) starts a
stopwatch when the participant presses "start presentation", seconds to
minutes after the session start; each event's ``onset`` is that stopwatch in
whole milliseconds, and at the same moment it sends the stimulus class's code
(target 1, non-target 2, neutral 3) to the device, which writes it on the
trigger line after a Bluetooth latency of a few tens of ms. The device samples
at 250 Hz, so trigger times fall on a 4 ms grid. Stimuli follow one another
every 1 s + 1.5 s + a few ms of frame time (periodic), or a schedule with
jitter, or a random one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eeghub.core.correction import MatchParameters, session_offset_range_ms

START_US = 1_760_000_000_000_000
PERIOD_S = 2.504
SAMPLE_US = 4000
SCHEDULES = ("periodic", "jittered", "random")


@dataclass(frozen=True)
class Case:
    delay_s: float
    """When the presentation started, after the session start."""
    schedule: str
    events: int
    drop: float = 0.0
    spurious: float = 0.0
    coded: bool = True


@dataclass
class Session:
    onsets_s: list[float]
    """What the app logs: the stopwatch in whole ms."""
    codes: list[int | None]
    """The events' codes (None when the log has none)."""
    true_us: list[int]
    """Each event's own trigger time (dropped or not)."""
    dropped: set[int]
    triggers_us: np.ndarray
    trigger_codes: list[int]
    end_us: int

    @property
    def expected_us(self) -> list[int]:
        return [START_US + round(o * 1e6) for o in self.onsets_s]

    @property
    def line_has_codes(self) -> bool | None:
        """A coded session's line is the app's trigger block, which the job
        takes to carry codes when some pulse is not 1 (``trigger_edges``); a
        log without codes faces a plain 0/1 line."""
        coded = any(c is not None for c in self.codes) and any(c != 1 for c in self.trigger_codes)
        return True if coded else None

    def offset_range_ms(self, params: MatchParameters = MatchParameters()) -> tuple[float, float]:
        return session_offset_range_ms(START_US, self.end_us, self.onsets_s, params.max_offset_ms)

    def truth(self) -> list[int | None]:
        """Per event the only acceptable corrected time: its own trigger, or
        None when that was dropped."""
        return [None if i in self.dropped else t for i, t in enumerate(self.true_us)]

    def wrong(self, corrected: list[int | None]) -> list[int]:
        """Events given a time other than their own trigger's."""
        truth = self.truth()
        return [i for i, got in enumerate(corrected) if got is not None and got != truth[i]]


def make_session(case: Case, seed: int, tolerance_ms: float = 50.0, null: bool = False) -> Session:
    """One session of ``case``. ``drop``/``spurious`` are fractions of the
    events (at least one pulse when non-zero). Spurious pulses fall anywhere
    in the session, but never within the tolerance (+10 ms) of a dropped
    trigger's place nor within 25 ms of a kept one: there a pulse can be
    nearer to the expected time than the event's own trigger (whose
    latency varies by ±8 ms, plus the 4 ms sample grid), and no method could
    tell them apart. ``null``: the trigger channel carries
    only random pulses (0.3 per second), none of them the events'."""
    rng = np.random.default_rng(seed)
    n = case.events
    if case.schedule == "periodic":
        gaps = np.full(n - 1, PERIOD_S)
    elif case.schedule == "jittered":
        gaps = PERIOD_S + rng.uniform(-0.15, 0.15, n - 1)
    else:
        gaps = rng.uniform(0.6, 4.0, n - 1)
    stopwatch = np.concatenate(([rng.uniform(0.0, 0.02)], gaps)).cumsum()
    onsets = [float(np.floor(t * 1000.0) / 1000.0) for t in stopwatch]
    latency = 0.020 + rng.uniform(-0.008, 0.008, n)
    phase = int(rng.integers(0, SAMPLE_US))  # the device's first sample, relative to the session start
    raw = START_US + np.rint((case.delay_s + stopwatch + latency) * 1e6).astype(np.int64)
    true = (raw - phase + SAMPLE_US - 1) // SAMPLE_US * SAMPLE_US + phase  # the next sample
    codes = rng.choice([1, 2, 3], n).tolist() if case.coded else [None] * n
    end_us = int(true[-1]) + int(rng.uniform(1.0, 5.0) * 1e6)
    line_codes = [c if c is not None else 1 for c in codes]
    dropped = {int(i) for i in rng.choice(n, _count(case.drop, n), replace=False)} if case.drop else set()
    kept = [int(t) for i, t in enumerate(true) if i not in dropped]
    kept_codes = [line_codes[i] for i in range(n) if i not in dropped]
    pulses: list[int] = []
    pulse_codes: list[int] = []
    wanted = _count(case.spurious, n) if case.spurious else 0
    if null:
        kept, kept_codes, dropped = [], [], set(range(n))
        wanted = max(n + 2, int(0.3 * (end_us - START_US) / 1e6))
    while len(pulses) < wanted:
        pulse = int(rng.integers(START_US, end_us))
        near_dropped = not null and any(abs(pulse - int(true[i])) <= (tolerance_ms + 10) * 1000 for i in dropped)
        near_kept = bool(kept) and min(abs(pulse - k) for k in kept) < 25_000
        if not near_dropped and not near_kept:
            pulses.append(pulse)
            pulse_codes.append(int(rng.integers(1, 4)) if case.coded else 1)
    times = np.array(kept + pulses, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    all_codes = kept_codes + pulse_codes
    return Session(onsets, codes, [int(t) for t in true], dropped, times[order], [all_codes[k] for k in order], end_us)


def _count(fraction: float, n: int) -> int:
    return max(1, round(fraction * n))


def grid(delays: tuple[float, ...], sizes: tuple[int, ...]) -> list[Case]:
    """Every combination of delay, schedule, size, 10 % dropped or not,
    10 % spurious or not, codes or not."""
    return [
        Case(delay, schedule, n, drop, spurious, coded)
        for delay in delays
        for schedule in SCHEDULES
        for n in sizes
        for drop in (0.0, 0.1)
        for spurious in (0.0, 0.1)
        for coded in (True, False)
    ]
