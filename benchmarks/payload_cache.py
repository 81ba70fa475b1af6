"""Per-packet cost of the payload cache and of ``header_bytes``.

Run by hand: `.venv/bin/python benchmarks/payload_cache.py [--frames 6000] [--repeats 7]`.
Builds simulated frames (SimulatedDevice, seed 1; about 3.3 KB of zstd for
9.8 KB of payload each) and prints µs per packet, median (min-max) over the
repeats, for:

- ``decompress_frame`` alone (what a miss cannot avoid);
- a miss and its insert, through a default cache (16 MiB: it fills and
  evicts oldest-first after about 1,600 frames);
- the same with decompression stubbed out (a constant 9.8 KB payload), which
  leaves the cache's own cost of a miss: digest, insert, eviction;
- a hit with a new bytes object equal to the stored frame (what the storage
  consumer and the analyzer bring: msgpack decoding makes new objects, so
  nothing hashed earlier is reused);
- a hit with the very object inserted (the best case);
- a hit with a new object again, with other digests passed as ``digest=``:
  ``zlib.crc32`` of the whole frame, and a sample (Python's hash of the
  length and the first and last 64 bytes);
- ``header_bytes`` on the headers the ingest route publishes.

Each repeat gets fresh copies of the frames, made outside the timed loop.
Not a test: timings depend on the machine, so nothing here asserts.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

from eeghub.core import payload_cache
from eeghub.core.packet import compress_frame, decompress_frame
from eeghub.core.packet_messages import header_bytes
from eeghub.core.payload_cache import PayloadCache
from eeghub.core.simulator import SimulatedDevice

LIMIT = 1 << 24


def sampled(frame: bytes) -> int:
    return hash((len(frame), frame[:64], frame[-64:]))


def copies(frames: list[bytes]) -> list[bytes]:
    return [bytes(bytearray(f)) for f in frames]


def per_frame(setup: Callable[[], Callable[[], int]], repeats: int) -> tuple[float, float, float]:
    """(median, min, max) µs per frame; ``setup()`` runs untimed and returns
    the timed call, which returns how many frames it handled."""
    out = []
    for _ in range(repeats):
        run = setup()
        t0 = time.perf_counter_ns()
        n = run()
        out.append((time.perf_counter_ns() - t0) / n / 1000)
    return statistics.median(out), min(out), max(out)


def fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:7.2f} ({t[1]:.2f}-{t[2]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    device = SimulatedDevice(user_id="u1", device_id="d1", seed=1)
    frames = [compress_frame(device.payload(k)) for k in range(args.frames)]
    hit_frames = frames[:1000]  # all held by a cache large enough
    print(f"{len(frames)} frames of {statistics.mean(map(len, frames)):.0f} bytes (mean); µs per frame, median (min-max) of {args.repeats} repeats\n")

    def plain() -> Callable[[], int]:
        fresh = copies(frames)

        def run() -> int:
            for f in fresh:
                decompress_frame(f, max_output_size=LIMIT)
            return len(fresh)

        return run

    def miss() -> Callable[[], int]:
        fresh = copies(frames)
        cache = PayloadCache()

        def run() -> int:
            for f in fresh:
                cache.decompress(f, max_output_size=LIMIT)
            return len(fresh)

        return run

    def stubbed() -> Callable[[], int]:
        fresh = copies(frames)
        cache = PayloadCache()
        payload = bytes(9844)

        def run() -> int:
            real = payload_cache.decompress_frame
            payload_cache.decompress_frame = lambda frame, max_output_size: payload  # type: ignore[assignment]
            try:
                for f in fresh:
                    cache.decompress(f, max_output_size=LIMIT)
            finally:
                payload_cache.decompress_frame = real
            return len(fresh)

        return run

    def warmed(fresh_objects: bool, **options: Any) -> Callable[[], Callable[[], int]]:
        def setup() -> Callable[[], int]:
            cache = PayloadCache(max_bytes=1 << 30, **options)
            for f in hit_frames:
                cache.decompress(f, max_output_size=LIMIT)
            given = copies(hit_frames) if fresh_objects else hit_frames

            def run() -> int:
                for f in given:
                    cache.decompress(f, max_output_size=LIMIT)
                return len(given)

            return run

        return setup

    envelope_headers = {
        "user_id": "u1",
        "device_id": "d1",
        "timestamp_start_ms": 1_700_000_000_000,
        "timestamp_end_ms": 1_700_000_001_000,
        "sampling_rate": 250,
        "lsb_to_volts": 2.2351741790771484e-08,
        "lsb_to_volts_str": repr(2.2351741790771484e-08),
        "session_id": "s-0001",
        "num_samples": 250,
        "num_channels": 9,
    }

    def headers() -> Callable[[], int]:
        n = 100_000

        def run() -> int:
            for _ in range(n):
                header_bytes(envelope_headers)
            return n

        return run

    rows = [
        ("decompress_frame alone", plain),
        ("cache miss + insert (16 MiB, evicting)", miss),
        ("  the cache's own part (decompress stubbed)", stubbed),
        ("cache hit, new equal bytes object", warmed(True)),
        ("cache hit, same object", warmed(False)),
    ]
    if "digest" in inspect.signature(PayloadCache).parameters:
        rows += [
            ("cache hit, new object, digest=zlib.crc32", warmed(True, digest=zlib.crc32)),
            ("cache hit, new object, digest=sampled", warmed(True, digest=sampled)),
        ]
    rows.append((f"header_bytes ({len(envelope_headers)} headers)", headers))
    for label, setup in rows:
        print(f"{label:44} {fmt(per_frame(setup, args.repeats))}")
    print(f"\nheader_bytes of those headers: {header_bytes(envelope_headers)}")


if __name__ == "__main__":
    main()
