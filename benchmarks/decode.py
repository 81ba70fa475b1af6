"""Packet decoding cost: the numba kernel against the numpy reference, and zstd.

Run by hand: `.venv/bin/python benchmarks/decode.py [--repeats 7] [--seconds 0.2]`.
Builds realistic packets (the simulator's alpha rhythm plus noise, a few
trigger pulses), warms the kernel up, then times each decoder in the same run
on the same bytes and prints µs per packet: the median over repeats, with
min and max. Each repeat runs enough calls to last about ``--seconds``.
Not a test: timings depend on the machine, so nothing here asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from eeghub.core.packet import decode_payload, decode_payload_reference, decompress_frame, warm_up
from eeghub.core.simulator import SimulatedDevice


@dataclass
class Case:
    label: str
    payload: bytes
    frame: bytes


def cases() -> list[Case]:
    specs = [
        ("9 ch x 250, v4 (8 EEG + TRIG)", SimulatedDevice("u", "board", channels=8, variant="v4", trigger_samples=[40, 200])),
        ("8 ch x 250, app variant (+TRIG)", SimulatedDevice("u", "app", channels=8, variant="app", trigger_samples=[40, 200])),
        ("64 ch x 250, v4 (63 EEG + TRIG)", SimulatedDevice("u", "cap", channels=63, variant="v4", trigger_samples=[40, 200])),
    ]
    out = []
    for label, device in specs:
        _, frame = next(device.packets(0, 1))
        out.append(Case(label, device.payload(0), frame))
    return out


def time_call(call: Callable[[], object], repeats: int, seconds: float) -> tuple[float, float, float]:
    """(median, min, max) µs per call."""
    call()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds / 4:
        call()
        calls += 1
    number = max(10, int(calls * 4))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            call()
        per_call.append((time.perf_counter_ns() - t0) / number / 1000)
    return statistics.median(per_call), min(per_call), max(per_call)


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.1f} ({t[1]:.1f}-{t[2]:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2, help="target duration of one repeat")
    args = parser.parse_args()

    t0 = time.perf_counter()
    warm_up()
    print(f"warm_up: {(time.perf_counter() - t0) * 1000:.0f} ms (includes numba compile or cache load)")
    print(f"µs per packet, median (min-max) of {args.repeats} repeats\n")
    header = f"{'packet':34} {'bytes':>6} {'numba':>22} {'numpy ref':>22} {'ratio':>6} {'zstd frame':>10} {'zstd decompress':>22}"
    print(header)
    print("-" * len(header))
    for case in cases():
        numba_t = time_call(lambda c=case: decode_payload(c.payload), args.repeats, args.seconds)
        ref_t = time_call(lambda c=case: decode_payload_reference(c.payload), args.repeats, args.seconds)
        zstd_t = time_call(
            lambda c=case: decompress_frame(c.frame, max_output_size=16 * 1024 * 1024), args.repeats, args.seconds
        )
        print(
            f"{case.label:34} {len(case.payload):6d} {fmt(numba_t):>22} {fmt(ref_t):>22} "
            f"{ref_t[0] / numba_t[0]:5.1f}x {len(case.frame):10d} {fmt(zstd_t):>22}"
        )


if __name__ == "__main__":
    main()
