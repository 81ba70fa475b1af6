"""Event ↔ trigger matching: ``match_events`` against the predecessor's greedy
walk (``greedy_baseline``) on synthetic sessions whose answer is known.

Run by hand: `.venv/bin/python benchmarks/correction.py [--seeds 100]`.

Each session: events with random inter-stimulus intervals, triggers at a
constant offset (uniform in 0–1.5 s) plus Gaussian jitter (2 ms), a fraction
of the triggers dropped and spurious pulses added uniformly over the session.
An event is right when it gets its own trigger, or nothing when its trigger
was dropped; "wrong" counts events given another trigger (or, for the greedy
walk, a made-up last+1 µs time), "missed" events left unmatched although
their trigger was there. Runtimes are medians per session on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eeghub.core.correction import greedy_baseline, match_events

START_US = 1_760_000_000_000_000
Matcher = Callable[[np.ndarray, np.ndarray], list[int | None]]
MATCHERS: dict[str, Matcher] = {
    "match_events": lambda expected, triggers: match_events(expected, triggers)[0],
    "greedy_baseline": greedy_baseline,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    drop: float = 0.0
    extra: float = 0.0
    isi_ms: tuple[float, float] = (500.0, 1500.0)


SCENARIOS = [
    Scenario("jitter only"),
    Scenario("10% dropped", drop=0.1),
    Scenario("10% extra", extra=0.1),
    Scenario("10% dropped + 10% extra", drop=0.1, extra=0.1),
    Scenario("same, fast (ISI 100-150 ms)", drop=0.1, extra=0.1, isi_ms=(100.0, 150.0)),
]


@dataclass(frozen=True)
class Session:
    expected: np.ndarray
    triggers: np.ndarray
    truth: list[int | None]
    """Per event, its trigger's time, or None when dropped."""


def make_session(rng: np.random.Generator, scenario: Scenario, events: int) -> Session:
    expected = START_US + np.cumsum(rng.uniform(*scenario.isi_ms, events) * 1000).astype(np.int64)
    offset_us = int(rng.uniform(0, 1.5e6))
    true = expected + offset_us + np.rint(rng.normal(0, 2000, events)).astype(np.int64)
    kept = rng.random(events) >= scenario.drop
    spurious = rng.integers(int(true[0]), int(true[-1]), int(scenario.extra * events))
    triggers = np.sort(np.concatenate([true[kept], spurious]))
    truth = [int(t) if k else None for t, k in zip(true, kept, strict=True)]
    return Session(expected, triggers, truth)


@dataclass
class Tally:
    events: int = 0
    right: int = 0
    wrong: int = 0
    missed: int = 0

    def add(self, result: list[int | None], truth: list[int | None]) -> None:
        for got, want in zip(result, truth, strict=True):
            self.events += 1
            if got == want:
                self.right += 1
            elif got is None:
                self.missed += 1
            else:
                self.wrong += 1


def run_scenario(scenario: Scenario, seeds: int, events: int) -> dict[str, tuple[Tally, float]]:
    tallies = {name: Tally() for name in MATCHERS}
    times: dict[str, list[float]] = {name: [] for name in MATCHERS}
    for seed in range(seeds):
        session = make_session(np.random.default_rng(seed), scenario, events)
        for name, matcher in MATCHERS.items():
            started = time.perf_counter()
            result = matcher(session.expected, session.triggers)
            times[name].append(time.perf_counter() - started)
            tallies[name].add(result, session.truth)
    return {name: (tallies[name], statistics.median(times[name]) * 1000) for name in MATCHERS}


def median_runtime_ms(matcher: Matcher, events: int, runs: int) -> float:
    scenario = SCENARIOS[3]
    sessions = [make_session(np.random.default_rng(1000 + i), scenario, events) for i in range(runs)]
    durations = []
    for session in sessions:
        started = time.perf_counter()
        matcher(session.expected, session.triggers)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000, help="events per session for the runtime line")
    args = parser.parse_args()
    match_events(np.arange(10) * 10**6, np.arange(10) * 10**6)  # warm up imports and caches

    print(f"{args.seeds} sessions of {args.events} events per scenario; offset 0-1.5 s, jitter 2 ms (sd)\n")
    header = f"{'scenario':30s} {'method':16s} {'accuracy':>9s} {'wrong':>8s} {'missed':>8s} {'median ms':>10s}"
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        for name, (tally, ms) in run_scenario(scenario, args.seeds, args.events).items():
            print(
                f"{scenario.name:30s} {name:16s} {tally.right / tally.events:9.4f} "
                f"{tally.wrong / tally.events:8.4f} {tally.missed / tally.events:8.4f} {ms:10.2f}"
            )
    print(f"\nmedian runtime, {args.large} events (10% dropped + 10% extra, 21 sessions):")
    for name, matcher in MATCHERS.items():
        print(f"  {name:16s} {median_runtime_ms(matcher, args.large, 21):8.1f} ms")


if __name__ == "__main__":
    main()
