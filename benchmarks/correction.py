"""Event ↔ trigger matching: ``match_events`` against the predecessor's greedy
walk (``greedy_baseline``) on generated sessions on the mobile app's timing,
whose answer is known (``tests/correction_sessions.py``), and its runtime on a
long, noisy session.

Run by hand: `.venv/bin/python benchmarks/correction.py [--seeds 10] [--runs 5]`.

1. Runtime: a 2-hour session, 2,000 events (random schedule, 0.6-4 s apart,
   presentation 2 minutes after the start), 10 % of the triggers dropped and
   a noisy trigger channel (``--noise`` spurious pulses, default 20,000), with
   and without trigger codes; the median of ``--runs`` sessions.
2. The validation grid, bigger than the test's: per case (events ×
   dropped/spurious × codes, over the three schedules), ``--seeds`` sessions
   per schedule, each with the presentation a random 0-300 s after the session
   start. For eeghub: the share of sessions corrected (``ok``), ``ambiguous``,
   and of events given a time other than their own trigger's (wrong). For the
   greedy walk (which always answers): the share of events on their own
   trigger and given another time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eeghub.core.correction import CorrectionReport, greedy_baseline, match_events  # noqa: E402
from tests.correction_sessions import SCHEDULES, START_US, Case, Session, make_session  # noqa: E402

CONDITIONS = (("clean", 0.0, 0.0), ("10% dropped", 0.1, 0.0), ("10% spurious", 0.0, 0.1), ("both", 0.1, 0.1))


def long_session(seed: int, events: int, noise: int, coded: bool) -> Session:
    """2 hours, ``events`` events from 2 minutes on, 10 % dropped, ``noise``
    spurious pulses anywhere."""
    session = make_session(Case(120.0, "random", events, drop=0.1, coded=coded), seed)
    rng = np.random.default_rng(seed)
    session.end_us = START_US + 7200 * 10**6
    pulses = rng.integers(START_US, session.end_us, noise)
    times = np.concatenate([session.triggers_us, pulses])
    codes = np.concatenate([session.trigger_codes, rng.integers(1, 4, noise) if coded else np.ones(noise, int)])
    order = np.argsort(times, kind="stable")
    session.triggers_us, session.trigger_codes = times[order], codes[order].tolist()
    return session


def run(session: Session) -> tuple[list[int | None], CorrectionReport]:
    return match_events(
        session.expected_us, session.triggers_us, event_codes=session.codes, trigger_codes=session.trigger_codes,
        offset_range_ms=session.offset_range_ms(), line_has_codes=session.line_has_codes,
    )  # fmt: skip


def explicable(session: Session, corrected: list[int | None], report: CorrectionReport) -> int:
    """Wrong events that timing and codes cannot tell apart: the taken
    pulse carries the event's code (if any) and is nearer to the expected
    time (at the found offset, along the drift when one was fitted) than the
    event's own trigger, or that was lost."""
    if report.offset_ms is None:
        return 0
    count = 0
    first = min(session.expected_us)
    slope = (report.drift_ppm or 0.0) * 1e-6
    for i in session.wrong(corrected):
        logged = session.expected_us[i]
        expected = logged + round((logged - first) * slope) + report.offset_ms * 1000
        own = math.inf if i in session.dropped else abs(session.true_us[i] - expected)
        count += abs(int(corrected[i] or 0) - expected) <= own
    return count


def runtime(args: argparse.Namespace) -> None:
    print(f"runtime: 2-hour session, {args.events} events, 10% dropped, {args.noise} noise pulses; median of {args.runs}")
    for coded in (True, False):
        sessions = [long_session(500 + i, args.events, args.noise, coded) for i in range(args.runs)]
        durations, statuses, wrong, nearer = [], Counter(), 0, 0
        for session in sessions:
            started = time.perf_counter()
            corrected, report = run(session)
            durations.append(time.perf_counter() - started)
            statuses[report.status] += 1
            wrong += len(session.wrong(corrected))
            nearer += explicable(session, corrected, report)
        ms = statistics.median(durations) * 1000
        print(f"  codes {'yes' if coded else 'no ':3s}  {ms:8.1f} ms   statuses {dict(statuses)}; events on a noise pulse "
              f"{wrong} of {args.runs * args.events}, {nearer} of them on one nearer than their own (or lost) trigger")


@dataclass
class Tally:
    sessions: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    events: int = 0
    wrong: int = 0
    greedy_right: int = 0
    greedy_wrong: int = 0

    def add(self, session: Session, corrected: list[int | None], status: str) -> None:
        self.sessions += 1
        self.statuses[status] += 1
        self.events += len(corrected)
        self.wrong += len(session.wrong(corrected))
        greedy = greedy_baseline(session.expected_us, session.triggers_us)
        truth = session.truth()
        self.greedy_right += sum(g == t for g, t in zip(greedy, truth, strict=True))
        self.greedy_wrong += len(session.wrong(greedy))


def sweep(args: argparse.Namespace) -> None:
    print(f"\ngrid: {args.seeds} sessions per schedule ({', '.join(SCHEDULES)}) per case; presentation 0-300 s late")
    header = (f"{'events':>6s} {'condition':13s} {'codes':5s} | {'eeghub ok':>9s} {'ambiguous':>9s} {'wrong ev.':>9s}"
              f" | {'greedy right':>12s} {'greedy wrong':>12s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    seed = 0
    periodic_plain: dict[int, Tally] = {}
    for events in (1, 2, 3, 8, 200):
        for name, drop, spurious in CONDITIONS:
            for coded in (True, False):
                tally = Tally()
                for schedule in SCHEDULES:
                    for _ in range(args.seeds):
                        seed += 1
                        delay = float(np.random.default_rng(seed).uniform(0, 300))
                        session = make_session(Case(delay, schedule, events, drop, spurious, coded), seed)
                        corrected, report = run(session)
                        tally.add(session, corrected, report.status)
                        if schedule == "periodic" and not coded and name == "both":
                            periodic_plain.setdefault(events, Tally()).add(session, corrected, report.status)
                print(
                    f"{events:6d} {name:13s} {'yes' if coded else 'no':5s} | "
                    f"{tally.statuses['ok'] / tally.sessions:9.0%} {tally.statuses['ambiguous'] / tally.sessions:9.0%} "
                    f"{tally.wrong / tally.events:9.1%} | "
                    f"{tally.greedy_right / tally.events:12.0%} {tally.greedy_wrong / tally.events:12.0%}"
                )
    print("\nperiodic schedule, no codes, 10% dropped + 10% spurious (the hardest case):")
    for events, tally in periodic_plain.items():
        print(f"  {events:4d} events: ok {tally.statuses['ok'] / tally.sessions:.0%}, "
              f"ambiguous {tally.statuses['ambiguous'] / tally.sessions:.0%}, wrong events {tally.wrong}")  # fmt: skip


def noisy_line(seed: int, events: int, rate: float, coded: bool, drift_ppm: float = 0.0) -> Session:
    """A jittered session (presentation 0-300 s late), 15 % of triggers
    lost, and noise pulses at ``rate`` per second anywhere — also where a
    lost trigger would have been, unlike the grid's spurious pulses — with
    the trigger times running ``drift_ppm`` fast against the phone's
    stopwatch."""
    rng = np.random.default_rng(seed)
    session = make_session(Case(float(rng.uniform(0, 300)), "jittered", events, coded=coded), seed)
    true = np.asarray(session.true_us, dtype=np.int64)
    true = true + np.rint((true - START_US) * drift_ppm * 1e-6).astype(np.int64)
    session.true_us = true.tolist()
    session.end_us = max(session.end_us, int(true[-1]) + 1_000_000)
    session.dropped = {i for i in range(events) if rng.random() < 0.15}
    kept = [i for i in range(events) if i not in session.dropped]
    noise = rng.integers(START_US, session.end_us, rng.poisson(rate * (session.end_us - START_US) / 1e6))
    times = np.concatenate([true[kept], noise])
    codes = [session.codes[i] or 1 for i in kept] + (rng.integers(1, 4, noise.size) if coded else np.ones(noise.size, int)).tolist()
    order = np.argsort(times, kind="stable")
    session.triggers_us, session.trigger_codes = times[order], [int(codes[k]) for k in order]
    return session


def realistic(args: argparse.Namespace) -> None:
    """Noise anywhere on the trigger line and clock drift (the grid has neither)."""
    print(f"\nnoisy line: jittered schedule, 15% of triggers lost, noise pulses anywhere; {args.seeds * 3} sessions per row")
    print(f"{'events':>6s} {'noise/s':>7s} {'drift':>7s} {'codes':5s} | {'ok':>5s} {'ambig.':>6s} {'matched':>7s} "
          f"{'wrong ev.':>9s} {'of them nearer':>14s}")  # fmt: skip
    seed = 90_000
    rows = [(n, rate, 0.0) for n in (5, 8, 16, 50) for rate in (0.2, 1.0)] + [(700, 0.05, ppm) for ppm in (20.0, 50.0, 100.0)]
    for events, rate, ppm in rows:
        for coded in (True, False):
            ok = ambiguous = matched = wrong = nearer = total = 0
            for _ in range(args.seeds * 3):
                seed += 1
                session = noisy_line(seed, events, rate, coded, ppm)
                corrected, report = run(session)
                ok += report.status == "ok"
                ambiguous += report.status == "ambiguous"
                matched += report.matched
                total += events
                wrong += len(session.wrong(corrected))
                nearer += explicable(session, corrected, report)
            n = args.seeds * 3
            print(f"{events:6d} {rate:7.2f} {f'{ppm:g} ppm':>7s} {'yes' if coded else 'no':5s} | {ok / n:5.0%} "
                  f"{ambiguous / n:6.0%} {matched / total:7.0%} {wrong:9d} {nearer:14d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="grid sessions per schedule and case")
    parser.add_argument("--runs", type=int, default=5, help="sessions timed for the runtime line")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--noise", type=int, default=20_000)
    parser.add_argument("--skip-grid", action="store_true")
    args = parser.parse_args()
    match_events(np.arange(10) * 10**6, np.arange(10) * 10**6)  # warm up imports and caches
    runtime(args)
    if not args.skip_grid:
        sweep(args)
        realistic(args)


if __name__ == "__main__":
    main()
