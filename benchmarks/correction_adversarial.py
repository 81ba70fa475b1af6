"""Adversarial scenarios for the event correction (``match_events``), on the
mobile app's timing, each with known truth; prints per scenario the
sessions per status and the events put on a pulse other than their own
trigger ("wrong"), split into those timing and codes cannot tell apart
("nearer": the taken pulse is nearer to the expected time, along any fitted
drift, than the event's own trigger, or sits in a lost trigger's place) and
the rest ("FAR"); "ANOTHER": on another stimulus's own trigger (the
worst case). Both must stay 0.

Run by hand: `.venv/bin/python benchmarks/correction_adversarial.py [--reps 3]
[--random SECONDS --seed N]` (a few seconds per repetition; ``--random``
then generates random sessions for that long and lists the seeds of any
that put an event on another stimulus's trigger).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eeghub.core.correction import CorrectionReport, match_events, session_offset_range_ms  # noqa: E402

START = 1_760_000_000_000_000
GRID_US = 4000  # 250 Hz


def session(rng: np.random.Generator, n: int, delay: float, sched: str = "periodic", period: float = 2.504,
            codes: bool = True, lost: frozenset[int] = frozenset(), spurious: int = 0, bounce: int = 0,
            drift_ppm: float = 0.0, extra_rows: int = 0, next_session_s: float | None = None,
            latency: tuple[float, float] = (0.012, 0.028), step_at: int | None = None, step_us: int = 0) -> dict[str, Any]:
    """Stopwatch onsets in whole ms, triggers ``delay`` s after the session
    start plus a Bluetooth latency, on the 250 Hz sample grid."""
    if sched == "periodic":
        gaps = np.full(n - 1, period)
    elif sched == "jittered":
        gaps = period + rng.uniform(-0.15, 0.15, n - 1)
    else:
        gaps = rng.uniform(0.6, 4.0, n - 1)
    stopwatch = np.concatenate(([rng.uniform(0, 0.02)], gaps)).cumsum()
    onsets = list(np.floor(stopwatch * 1000) / 1000)
    t = START + np.rint((delay + stopwatch + rng.uniform(*latency, n)) * 1e6).astype(np.int64)
    t = t + np.rint((t - START) * drift_ppm * 1e-6).astype(np.int64)
    if step_at is not None:
        t[step_at:] += step_us
    phase = int(rng.integers(0, GRID_US))
    t = (t - phase + GRID_US - 1) // GRID_US * GRID_US + phase
    c = rng.choice([1, 2, 3], n)
    truth = {i: int(t[i]) for i in range(n) if i not in lost}
    pulses = [int(t[i]) for i in range(n) if i not in lost]
    pulse_codes = [int(c[i]) for i in range(n) if i not in lost]
    end = int(t[-1]) + int(rng.uniform(1, 5) * 1e6)
    for i in truth:
        for b in range(bounce):
            pulses.append(int(t[i]) + (b + 1) * 2 * GRID_US)
            pulse_codes.append(int(c[i]))
    for _ in range(spurious):
        pulses.append(int(rng.integers(START, end)))
        pulse_codes.append(int(rng.integers(1, 4)))
    if next_session_s is not None:  # the next session's triggers, same schedule
        for k in range(n):
            pulses.append(end + int(next_session_s * 1e6) + int(round(stopwatch[k] * 1e6)) + 20_000)
            pulse_codes.append(int(rng.integers(1, 4)))
    event_codes: list[int | None] = [int(x) for x in c] if codes else [None] * n
    for _ in range(extra_rows):  # instructions, breaks: no trigger, no code
        onsets.append(float(np.floor(rng.uniform(0, stopwatch[-1] + 2) * 1000) / 1000))
        event_codes.append(None)
    order = np.argsort(pulses, kind="stable")
    return {"onsets": onsets, "codes": event_codes, "truth": truth, "pulses": np.asarray(pulses, dtype=np.int64)[order],
            "pulse_codes": [pulse_codes[k] for k in order], "end": end, "coded_line": codes}  # fmt: skip


def correct(s: dict[str, Any]) -> tuple[list[int | None], CorrectionReport]:
    """As the job calls it: the app's block carries codes when some pulse is not 1."""
    expected = [START + round(o * 1e6) for o in s["onsets"]]
    coded = s["coded_line"]
    return match_events(
        expected, s["pulses"], event_codes=s["codes"] if coded else None,
        trigger_codes=s["pulse_codes"] if coded else None,
        offset_range_ms=session_offset_range_ms(START, s["end"], s["onsets"], 2000.0),
        line_has_codes=True if coded and any(c != 1 for c in s["pulse_codes"]) else None,
    )  # fmt: skip


def classify(s: dict[str, Any], corrected: list[int | None], report: CorrectionReport, slack_us: int = 0) -> Counter[str]:
    out: Counter[str] = Counter()
    if report.offset_ms is None:
        return out
    expected = [START + round(o * 1e6) for o in s["onsets"]]
    first, slope = min(expected), (report.drift_ppm or 0.0) * 1e-6
    stimuli = set(s["truth"].values())
    for i, got in enumerate(corrected):
        own = s["truth"].get(i)
        if got is None or (own is not None and 0 <= got - own <= slack_us):
            continue
        if got in stimuli:
            out["ANOTHER"] += 1  # another stimulus's trigger
            continue
        at = expected[i] + round((expected[i] - first) * slope) + report.offset_ms * 1000
        out["nearer" if own is None or abs(got - at) <= abs(own - at) else "FAR"] += 1
    return out


def random_sweep(seconds: float, first_seed: int) -> None:
    """Random sessions for ``seconds``: 3-900 events; periodic (2.504, 1 or
    0.6 s), jittered or random schedules; 0-150 ppm drift; 0-30 % lost;
    0-20 % noise pulses; latency 12-28, 12-60 or 12-100 ms; codes or not."""
    counts: Counter[str] = Counter()
    bad = []
    seed, started = first_seed, time.perf_counter()
    while time.perf_counter() - started < seconds:
        seed += 1
        r = np.random.default_rng(seed)
        n = int(r.choice([3, 5, 8, 12, 20, 50, 150, 400, 900]))
        lost = frozenset(r.choice(n, int(n * r.choice([0, 0.05, 0.15, 0.3])), replace=False).tolist())
        s = session(r, n, float(r.choice([0.0, r.uniform(0, 300)])), sched=str(r.choice(["periodic", "jittered", "random"])),
                    period=float(r.choice([2.504, 1.0, 0.6])), codes=bool(r.random() < 0.5), lost=lost,
                    spurious=int(n * r.choice([0, 0.05, 0.2])), drift_ppm=float(r.choice([0, 0, 10, 40, 80, 150])),
                    latency=(0.012, float(r.choice([0.028, 0.06, 0.1]))))  # fmt: skip
        corrected, report = correct(s)
        found = classify(s, corrected, report)
        counts[report.status] += 1
        counts.update(found)
        if found["ANOTHER"] or found["FAR"]:
            bad.append(seed)
    print(f"random sweep, seeds {first_seed + 1}-{seed}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print(f"sessions with an event on another stimulus's trigger or a distinguishable noise pulse: {bad}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--random", type=float, default=0.0, help="then random sessions for this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the random sweep")
    args = parser.parse_args()
    results: dict[str, Counter[str]] = defaultdict(Counter)
    seed = 0

    def rng() -> np.random.Generator:
        nonlocal seed
        seed += 1
        return np.random.default_rng(seed)

    def record(name: str, s: dict[str, Any], slack_us: int = 0) -> None:
        corrected, report = correct(s)
        results[name][report.status] += 1
        results[name].update(classify(s, corrected, report, slack_us))

    for _ in range(args.reps):
        for n in (3, 8, 20):
            for k in (1, 2, 5):
                for lost in ((), (0,), (n - 1,), (0, n - 1)):
                    for codes in (True, False):
                        r = rng()
                        s = session(r, n, k * 2.504 + r.uniform(-0.02, 0.02), codes=codes, lost=frozenset(lost))
                        record(f"delay near a multiple of the period, n={n}, ends lost={bool(lost)}, codes={codes}", s)
        for n in (8, 50):
            r = rng()
            s = session(r, n, r.uniform(0, 300), sched="random")
            s["pulse_codes"] = [c if r.random() < 0.5 else 1 for c in s["pulse_codes"]]
            record(f"codes on half the pulses (others 1), n={n}", s)
        for n in (2, 8, 50):
            for sched in ("periodic", "random"):
                for codes in (True, False):
                    r = rng()
                    s = session(r, n, r.uniform(0, 300), sched=sched, extra_rows=max(1, n // 5), codes=codes)
                    record(f"extra rows without trigger, n={n}, {sched}, codes={codes}", s)
        for n in (1, 2, 8, 50):
            for own_lost in (False, True):
                r = rng()
                s = session(r, n, r.uniform(0, 60), sched="random", codes=False, next_session_s=r.uniform(0.0, 1.9),
                            lost=frozenset(range(n)) if own_lost else frozenset())  # fmt: skip
                record(f"next session's triggers <2 s after the end, n={n}, all own lost={own_lost}", s)
        for ppm in (20, 50, 100):
            for n, sched in ((700, "periodic"), (700, "random"), (1400, "random")):
                for codes in (True, False):
                    r = rng()
                    s = session(r, n, r.uniform(0, 300), sched=sched, drift_ppm=ppm, codes=codes, spurious=n // 10)
                    record(f"drift {ppm} ppm, n={n}, {sched}, 10% noise pulses, codes={codes}", s)
        for n in (1, 2, 8):
            for b in (1, 2):
                r = rng()
                record(f"bouncing edges (+{b} edge{'s' if b > 1 else ''} 8 ms apart), n={n}",
                       session(r, n, r.uniform(0, 300), bounce=b), slack_us=b * 8000)  # fmt: skip
        for n in (1, 2):
            for extra in (1, 2):
                for own_lost in (False, True):
                    for codes in (True, False):
                        r = rng()
                        s = session(r, n, r.uniform(0, 300), sched="random", spurious=extra, codes=codes,
                                    lost=frozenset({0}) if own_lost else frozenset())  # fmt: skip
                        record(f"few events: n={n}, {extra} extra pulse(s), first trigger lost={own_lost}, codes={codes}", s)
        for step in (100_000, 1_000_000, 2_504_000):
            r = rng()
            s = session(r, 200, r.uniform(0, 300), step_at=100, step_us=step, codes=False)
            record(f"clock step of {step // 1000} ms mid-session, periodic, no codes", s)
        for n in (1, 3, 8):
            r = rng()
            s = session(r, n, r.uniform(0, 300), sched="random")
            s["end"] = int(s["pulses"][-1]) + 1000
            record(f"session ends right after the last trigger, n={n}", s)
        for n in (30, 200):
            for period in (0.25, 0.5, 1.0):
                r = rng()
                s = session(r, n, r.uniform(0, 300), period=period, codes=False, spurious=n // 10,
                            lost=frozenset(r.choice(n, n // 10, replace=False).tolist()))  # fmt: skip
                record(f"fast periodic {period} s, n={n}, 10% lost + 10% noise, no codes", s)
        for n in (8, 50):
            for codes in (True, False):
                r = rng()
                s = session(r, n, r.uniform(0, 300), latency=(0.02, 0.12), codes=codes, sched="jittered")
                record(f"Bluetooth latency 20-120 ms, n={n}, codes={codes}", s)
    far = another = 0
    for name in sorted(results):
        counts = results[name]
        far += counts["FAR"]
        another += counts["ANOTHER"]
        print(f"{name:78s} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    sessions = sum(sum(v for k, v in c.items() if k not in ("nearer", "FAR", "ANOTHER")) for c in results.values())
    print(f"\n{sessions} sessions; events on another stimulus's trigger (ANOTHER): {another}; "
          f"on a noise pulse that timing and codes could tell apart (FAR): {far}")
    if args.random > 0:
        random_sweep(args.random, args.seed)


if __name__ == "__main__":
    main()
