"""How many live streams one eeghub process keeps analysed, and what each costs.

Run by hand (not a test: nothing asserts; about 4 minutes with the defaults):

    .venv/bin/python benchmarks/analyzer.py [--streams 250,500,1000,1500,2000] [--cycles 3]
                                            [--modes burst,spread] [--blas-threads 1] [--no-memory]

Streams are the simulator's (``SimulatedDevice``): 8 EEG channels + TRIG at
250 Hz, one 250-sample packet per second. A pool of 256 payloads is made once
and each is decoded once with ``decode_payload``; streams are fed through
``AnalysisHost.add_packet`` directly (the broker hop is not measured here).
The host is the analyzer's own: the built-in analyses
(``builtin_analyses(Settings().analyzer)``: psd on 4 s, coherence on 20 s,
channel quality; every 5 s), the default buffer (60 s), 2 threads per plugin,
the analyzer's quality window factory, and the analyzer's real scheduler (the
``analysis-scheduler`` background task: ``run_due`` every 0.25 s).

For each stream count N and mode, in one event loop (uvloop, as ``eeghub serve``):

- every stream is prefilled with 60 s of data; in mode ``burst`` every
  analysis is then due at once (the synchronised worst case, as after a
  restart: the host keeps such streams in step), in mode ``spread`` stream i
  is first due i/N of a cycle later (streams that started at different
  times);
- for ``(cycles + 1) × 5 s`` ingest goes on: 1 packet per second per stream
  (N ``add_packet`` calls a second, in 20 slices a second) on the same event
  loop, while the scheduler runs the analyses.

Reported per N: sweeps on time (sweep k = every stream's k-th run of every
plugin; on time when each result was visible at most one interval after it
was due), the lag from due to visible (p50 / max), the share of the cycles
with analyses pending ("busy", and for bursts the longest sweep / 5 s),
process CPU and the event-loop thread's share, the longest and the median
delay of an ingest slice (how long the loop was held), the most runs in
flight per plugin, the RSS added during the run, and per-run analysis times
(median wall ms per plugin run from a thin timing wrapper around
``analyze``, median thread CPU, and ``host.stats()``'s mean: it has no
median). "Kept analysed" = every sweep on time and ingest keeping pace
(median slice delay < 100 ms). Also:

- each plugin's cost on one stream with nothing else running;
- the consumer handler path per packet (``decompress_frame``,
  ``decode_payload``, ``add_packet``, and the analyzer's real handler from
  ``make_handler`` on a ``Delivery``), µs, median of 5 passes;
- memory per stream: ring buffer and quality window bytes, and the process's
  RSS growth per stream (``/proc/self/status`` VmRSS before/after creating N
  full streams; after one analysis sweep; after gc + ``malloc_trim``), each N
  in a fresh interpreter so that earlier frees do not hide growth.

BLAS/OpenMP threads are set to 1 (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``... before numpy is imported;
``--blas-threads 0`` leaves the default): the analyzer runs many small
problems in parallel threads, and BLAS's own threads would only fight them
for the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
from collections import defaultdict
from collections.abc import Callable
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", default="250,500,1000,1500,2000", help="comma-separated stream counts")
    parser.add_argument("--cycles", type=int, default=3, help="analysis cycles measured per stream count")
    parser.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS/OpenMP/MKL threads (0: leave the default)")
    parser.add_argument("--modes", default="burst,spread", help="burst (all due at once), spread (due times spread over the cycle)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-N RSS subprocesses")
    parser.add_argument("--rss-only", type=int, default=0, help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args()


ARGS = parse_args()
if ARGS.blas_threads > 0:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        os.environ[_var] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402  (after the thread settings)

from eeghub.config.settings import Settings  # noqa: E402
from eeghub.core.packet import DecodedPacket, decode_payload, decompress_frame, warm_up  # noqa: E402
from eeghub.core.ports import Delivery, Message  # noqa: E402
from eeghub.core.simulator import SimulatedDevice  # noqa: E402
from eeghub.plugins import analyzer  # noqa: E402
from eeghub.plugins.analyzer.builtin import builtin_analyses  # noqa: E402
from eeghub.plugins.analyzer.host import AnalysisHost  # noqa: E402

USER = "bench-user"
SFREQ = 250.0
START_MS = 1_760_000_000_000
SETTINGS = Settings()
CFG = SETTINGS.analyzer
CORES = os.cpu_count() or 1


def status_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- payloads
class Pool:
    """Simulated packets: zstd frames, payloads, each decoded once, and their AMQP headers."""

    def __init__(self, devices: int = 8, packets: int = 32) -> None:
        self.frames: list[bytes] = []
        self.payloads: list[bytes] = []
        self.decoded: list[DecodedPacket] = []
        self.headers: list[dict[str, Any]] = []
        for d in range(devices):
            device = SimulatedDevice(user_id=USER, device_id=f"pool-{d}", seed=d)
            for i, (envelope, frame) in enumerate(device.packets(START_MS, packets)):
                payload = decompress_frame(frame, max_output_size=SETTINGS.ingest.max_decompressed_bytes)
                self.frames.append(frame)
                self.payloads.append(payload)
                self.decoded.append(
                    decode_payload(
                        payload,
                        impedance_threshold=CFG.channel_quality.bad_impedance_threshold,
                        max_channels=SETTINGS.ingest.max_channels,
                    )
                )
                self.headers.append({**envelope, "lsb_to_volts_str": repr(device.lsb_to_volts)})
        self.lsb_to_volts = SimulatedDevice(USER, "x").lsb_to_volts
        first = self.decoded[0]
        self.names, self.types = first.layout.channel_names, first.layout.channel_types

    def __len__(self) -> int:
        return len(self.decoded)


# ---------------------------------------------------------------- measured host
class Timed:
    """An analysis plugin wrapped to record each run's wall and thread-CPU time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        for name in ("id", "display_name", "description", "window_seconds", "channel_types", "interval_seconds"):
            setattr(self, name, getattr(inner, name))
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def analyze(self, window: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        value = self.inner.analyze(window)
        self.cpu.append(time.thread_time() - c0)  # list.append is atomic under the GIL
        self.wall.append(time.perf_counter() - t0)
        return value


class Recorder:
    """Stands in for a server-sent-events listener queue: notes when each result becomes visible."""

    def __init__(self) -> None:
        self.done: dict[tuple[str, str], list[float]] = defaultdict(list)

    def full(self) -> bool:
        return False

    def put_nowait(self, result: Any) -> None:
        self.done[(result.device_id, result.plugin_id)].append(time.perf_counter())


class MeasuredHost(AnalysisHost):
    """The analyzer's host, noting when each analysis is submitted and how long ``run_due`` holds the loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.run_due_seconds: list[float] = []
        self.recorder = Recorder()
        self.listeners[USER] = {self.recorder}  # type: ignore[arg-type]

    def window_for(self, stream: Any, plugin: Any) -> Any:
        window = super().window_for(stream, plugin)
        if window is not None:  # run_due submits it right away
            self.submitted[(stream.device_id, plugin.id)].append(time.perf_counter())
        return window

    async def run_due(self) -> int:
        t0 = time.perf_counter()
        started = await super().run_due()  # synchronous inside: this is how long the loop is held
        self.run_due_seconds.append(time.perf_counter() - t0)
        return started


def make_host() -> MeasuredHost:
    ctx = types.SimpleNamespace(settings=SETTINGS)
    return MeasuredHost(
        [Timed(p) for p in builtin_analyses(CFG)],
        buffer_seconds=CFG.buffer_seconds,
        idle_eviction_seconds=CFG.idle_eviction_seconds,
        max_streams=CFG.max_streams,
        threads_per_plugin=CFG.workers,
        quality_factory=analyzer._quality_factory(ctx),  # noqa: SLF001 - the analyzer's own factory
        plugin_timeout=CFG.plugin_timeout_seconds,
    )


class Feeder:
    """Stream i's packet j: a pool packet, stamped j seconds after the stream's start."""

    def __init__(self, host: AnalysisHost, pool: Pool, n: int) -> None:
        self.host, self.pool, self.n = host, pool, n
        self.devices = [f"dev-{i:05d}" for i in range(n)]
        self.next_index = [0] * n
        self.base_us = (START_MS - 3_600_000) * 1000

    def feed(self, i: int) -> None:
        j = self.next_index[i]
        packet = self.pool.decoded[(i * 7 + j) % len(self.pool)]
        self.host.add_packet(
            user_id=USER,
            device_id=self.devices[i],
            session_id=None,
            sampling_rate=SFREQ,
            lsb_to_volts=self.pool.lsb_to_volts,
            channel_names=self.pool.names,
            channel_types=self.pool.types,
            signals=packet.signals,
            start_us=self.base_us + j * 1_000_000,
            stats=packet.stats,
        )
        self.next_index[i] = j + 1

    def prefill(self, seconds: int) -> None:
        for i in range(self.n):
            for _ in range(seconds):
                self.feed(i)


def quality_bytes(quality: Any) -> int:
    return sum(v.nbytes for v in vars(quality).values() if isinstance(v, np.ndarray))


# ---------------------------------------------------------------- handler path
def time_per_call(call: Callable[[int], object], count: int, repeats: int = 5) -> float:
    """Median µs per call over ``repeats`` passes of ``call(0..count-1)``."""
    for i in range(min(count, 200)):
        call(i)
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for i in range(count):
            call(i)
        per.append((time.perf_counter_ns() - t0) / count / 1000)
    return statistics.median(per)


async def handler_path(pool: Pool, streams: int = 1000) -> dict[str, float]:
    host = make_host()
    feeder = Feeder(host, pool, streams)
    feeder.prefill(2)
    limits = SETTINGS.ingest
    threshold = CFG.channel_quality.bad_impedance_threshold
    frames = [pool.frames[i % len(pool)] for i in range(streams)]
    payloads = [pool.payloads[i % len(pool)] for i in range(streams)]
    out = {
        "decompress_frame": time_per_call(lambda i: decompress_frame(frames[i], max_output_size=limits.max_decompressed_bytes), streams),
        "decode_payload": time_per_call(
            lambda i: decode_payload(payloads[i], impedance_threshold=threshold, max_channels=limits.max_channels), streams
        ),
        "add_packet": time_per_call(lambda i: feeder.feed(i), streams),
    }
    out["sum of the three"] = out["decompress_frame"] + out["decode_payload"] + out["add_packet"]

    ctx = types.SimpleNamespace(settings=SETTINGS, services={"analyzer": host})
    handle = analyzer.make_handler(ctx)
    deliveries = []
    for i in range(streams):
        headers = {**pool.headers[i % len(pool)], "device_id": feeder.devices[i], "timestamp_start_ms": START_MS + 5000}
        headers.pop("session_id", None)
        deliveries.append(Delivery(message=Message(body=frames[i], headers=headers), queue="bench"))
    for d in deliveries[:200]:
        await handle(d)
    per = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for d in deliveries:
            await handle(d)
        per.append((time.perf_counter_ns() - t0) / streams / 1000)
    out["analyzer consumer handler (whole)"] = statistics.median(per)
    host.close()
    return out


# ---------------------------------------------------------------- memory (fresh interpreter)
def rss_only(n: int) -> None:
    """Print one JSON line: RSS growth for n full streams, then after their first results."""
    warm_up()
    pool = Pool()
    host = make_host()
    feeder = Feeder(host, pool, n)
    before = status_kb()
    feeder.prefill(int(CFG.buffer_seconds))
    after = status_kb()

    async def one_sweep() -> None:
        await host.run_due()
        while any(s.in_flight for s in host.plugins.values()):
            await asyncio.sleep(0.02)

    asyncio.run(one_sweep())
    results = status_kb()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    trimmed = status_kb()
    stream = next(iter(host.streams.values()))
    print(json.dumps({
        "n": n,
        "before_kb": before,
        "after_kb": after,
        "results_kb": results,
        "trimmed_kb": trimmed,
        "buffer_bytes": stream.buffer.nbytes,
        "quality_bytes": quality_bytes(stream.quality),
        "buffer_channels": stream.buffer.data.shape[0],
        "buffer_samples": stream.buffer.capacity,
    }))
    host.close()


def memory_table(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--rss-only", str(n), "--blas-threads", str(ARGS.blas_threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------- capacity run
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def busy_fraction(intervals: list[tuple[float, float]], begin: float, end: float) -> float:
    """Share of [begin, end] covered by the union of the (start, stop) intervals."""
    covered, reach = 0.0, begin
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, end)
        if b > a:
            covered += b - a
            reach = b
    return covered / (end - begin)


async def capacity(pool: Pool, n: int, cycles: int, mode: str) -> dict[str, Any]:
    """One measurement: n streams, ``cycles`` analysis cycles, ingest going on.

    ``mode`` "burst": every stream is due at the same moment (full buffers at
    start, as after a restart: the host then keeps them in step); "spread":
    stream i is first due i/n of a cycle later (streams that started at
    different times, the steady state of a live server).
    """
    host = make_host()
    interval = CFG.interval_seconds
    feeder = Feeder(host, pool, n)
    feeder.prefill(int(CFG.buffer_seconds))
    rss_before = status_kb()

    slices = 20
    per_slice = math.ceil(n / slices)
    duration = (cycles + 1) * interval  # the last measured sweep has one more interval to finish
    lateness: list[float] = []
    in_flight_max = {pid: 0 for pid in host.plugins}
    rss_peak = rss_before
    fed = 0
    add_seconds = 0.0

    ctx = types.SimpleNamespace(settings=SETTINGS, services={"analyzer": host})
    (scheduler,) = analyzer.eeghub_background_tasks(ctx)  # the analyzer's real scheduler loop

    cpu0, loop_cpu0 = os.times(), time.thread_time()
    t0 = time.perf_counter()
    offsets = [interval * i / n if mode == "spread" else 0.0 for i in range(n)]
    if mode == "spread":
        now = host.clock()
        for i, stream in enumerate(host.streams.values()):
            for pid in host.plugins:
                stream.last_run[pid] = now + offsets[i] - interval
    task = asyncio.create_task(scheduler.run())
    k = 0
    while True:
        due = t0 + k / slices
        now = time.perf_counter()
        await asyncio.sleep(due - now if due > now else 0)
        now = time.perf_counter()
        if k >= duration * slices:
            break  # every slice due within the measurement was fed (late ones too)
        lateness.append(now - due)
        lo = (k % slices) * per_slice
        hi = min(n, lo + per_slice)
        a0 = time.perf_counter()
        for i in range(lo, hi):
            feeder.feed(i)
        add_seconds += time.perf_counter() - a0
        fed += max(0, hi - lo)
        for pid, state in host.plugins.items():
            in_flight_max[pid] = max(in_flight_max[pid], state.in_flight)
        if k % slices == 0:
            rss_peak = max(rss_peak, status_kb())
        k += 1
    wall = time.perf_counter() - t0
    cpu1, loop_cpu1 = os.times(), time.thread_time()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    t_end = time.perf_counter()

    # ---- sweeps: due_0 = t0 + offset, due_k = submitted_{k-1} + interval (when due() first sees it)
    lags: list[float] = []
    on_time = 0
    sweep_fraction: list[float] = []
    busy: list[tuple[float, float]] = []
    for sweep in range(cycles):
        ok = True
        first_due, last_done = math.inf, -math.inf
        for i, device in enumerate(feeder.devices):
            for pid in host.plugins:
                sub = host.submitted.get((device, pid), [])
                done = host.recorder.done.get((device, pid), [])
                if sweep == 0:
                    due = t0 + offsets[i]
                elif len(sub) >= sweep:
                    due = sub[sweep - 1] + interval
                else:
                    ok = False  # the previous run never even started
                    continue
                if sweep < len(done):
                    lag = done[sweep] - due
                    lags.append(lag)
                    ok &= lag <= interval
                    first_due, last_done = min(first_due, due), max(last_done, done[sweep])
                    busy.append((sub[sweep], done[sweep]))
                else:
                    ok = False
                    lags.append(t_end - due)  # not finished by the end: at least this late
        on_time += ok
        if math.isfinite(first_due) and math.isfinite(last_done):
            sweep_fraction.append((last_done - first_due) / interval)

    stats = host.stats()["plugins"]
    plugins = {}
    for pid, state in host.plugins.items():
        timed: Timed = state.plugin
        plugins[pid] = {
            "median_ms": 1000 * statistics.median(timed.wall) if timed.wall else float("nan"),
            "median_cpu_ms": 1000 * statistics.median(timed.cpu) if timed.cpu else float("nan"),
            "mean_ms_host_stats": stats[pid]["mean_ms"],
            "runs": stats[pid]["runs"],
            "failures": stats[pid]["failures"],
            "timeouts": stats[pid]["timeouts"],
            "in_flight_max": in_flight_max[pid],
        }
    submissions = sum(len(v) for v in host.submitted.values())
    measured_end = t0 + cycles * interval
    result = {
        "n": n,
        "mode": mode,
        "cycles": cycles,
        "on_time": on_time,
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags) if lags else float("nan"),
        "sweep_max": max(sweep_fraction) if sweep_fraction else float("nan"),
        "busy": busy_fraction(busy, t0, measured_end),
        "cpu_cores": ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall,
        "loop_cores": (loop_cpu1 - loop_cpu0) / wall,
        "stall_max": max(lateness) if lateness else float("nan"),
        "fed_rate": fed / duration,
        "late_p50": percentile(lateness, 50),
        "add_packet_us": 1e6 * add_seconds / max(1, fed),
        "run_due_max": max(host.run_due_seconds) if host.run_due_seconds else 0.0,
        "run_due_us_per_submission": 1e6 * sum(host.run_due_seconds) / max(1, submissions),
        "rss_before_mb": rss_before / 1024,
        "rss_peak_mb": rss_peak / 1024,
        "plugins": plugins,
        "wall": wall,
    }
    host.close()
    return result


def quiet_costs(pool: Pool) -> dict[str, float]:
    """Median ms per run of each plugin on one stream, nothing else running."""
    host = make_host()
    feeder = Feeder(host, pool, 1)
    feeder.prefill(int(CFG.buffer_seconds))
    stream = next(iter(host.streams.values()))
    out = {}
    for pid, state in host.plugins.items():
        window = host.window_for(stream, state.plugin)
        runs = []
        for _ in range(60):
            t0 = time.perf_counter()
            state.plugin.inner.analyze(window)
            runs.append(time.perf_counter() - t0)
        out[pid] = 1000 * statistics.median(runs[10:])
        w0 = time.perf_counter()
        for _ in range(50):
            host.window_for(stream, state.plugin)
        out[pid + " window"] = 1000 * (time.perf_counter() - w0) / 50
    host.close()
    return out


# ---------------------------------------------------------------- main
def main() -> None:
    if ARGS.rss_only:
        rss_only(ARGS.rss_only)
        return
    sizes = [int(s) for s in ARGS.streams.split(",") if s.strip()]
    started = time.perf_counter()
    warm_up()
    pool = Pool()
    try:
        import uvloop

        run = uvloop.run
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover
        run = asyncio.run
        loop_name = "asyncio"

    print(
        f"{CORES} CPUs; BLAS/OpenMP threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')} "
        f"(OPENBLAS/OMP/MKL_NUM_THREADS set before numpy is imported); event loop: {loop_name}"
    )
    print(
        f"streams: {len(pool.names)} channels ({sum(t == 'eeg' for t in pool.types)} EEG + TRIG) at {SFREQ:g} Hz, "
        f"1 packet of 250 samples per second; analyses every {CFG.interval_seconds:g} s: psd ({CFG.window_seconds:g} s), "
        f"coherence ({CFG.coherence_window_seconds:g} s), channel_quality; {CFG.workers} threads per plugin; "
        f"buffer {CFG.buffer_seconds:g} s\n"
    )

    # ---- quiet per-run costs
    quiet = quiet_costs(pool)
    print("One stream, nothing else running (ms per run, median; window = building the AnalysisWindow on the event loop):")
    for pid in ("psd", "coherence", "channel_quality"):
        print(f"  {pid:16} analyze {quiet[pid]:6.3f}   window {quiet[pid + ' window']:6.3f}")
    per_stream = sum(quiet[p] for p in ("psd", "coherence", "channel_quality"))
    per_stream_window = sum(quiet[p + " window"] for p in ("psd", "coherence", "channel_quality"))
    print(f"  per stream per cycle: {per_stream:.2f} ms in worker threads + {per_stream_window:.2f} ms on the event loop\n")

    # ---- handler path
    path = run(handler_path(pool))
    print("Consumer handler path per packet (µs, median of 5 passes over 1000 streams):")
    for label, us in path.items():
        print(f"  {label:36} {us:7.1f}")
    whole = path["analyzer consumer handler (whole)"]
    print(f"  -> at 1 packet/s per stream, 1000 streams cost {1000 * whole / 1e4:.1f} % of one core "
          f"(the firmware's 128-sample packets are ~2/s: twice that)\n")

    # ---- memory
    memory_rows: list[dict[str, Any]] = []
    if not ARGS.no_memory:
        memory_rows = memory_table(sizes)
        print("Memory per stream (each N in a fresh interpreter; VmRSS from /proc/self/status; kB = 1000 bytes):")
        print(f"  {'streams':>7} {'buffer kB':>9} {'quality kB':>10} {'sum kB':>7} {'RSS growth kB':>13} "
              f"{'+ results kB':>12} {'after trim kB':>13} {'RSS MB':>7}")
        for r in memory_rows:
            n = r["n"]
            kb = 1.024 / n  # KiB totals → kB per stream
            print(
                f"  {n:>7} {r['buffer_bytes'] / 1000:>9.1f} {r['quality_bytes'] / 1000:>10.1f} "
                f"{(r['buffer_bytes'] + r['quality_bytes']) / 1000:>7.1f} {(r['after_kb'] - r['before_kb']) * kb:>13.1f} "
                f"{(r['results_kb'] - r['before_kb']) * kb:>12.1f} {(r['trimmed_kb'] - r['before_kb']) * kb:>13.1f} "
                f"{r['results_kb'] / 1024:>7.0f}"
            )
        r0 = memory_rows[0]
        print(
            f"  buffer: {r0['buffer_channels']} channels (TRIG included) × {r0['buffer_samples']} samples × 2 bytes. RSS growth:\n"
            "  creating N streams with full 60 s buffers; + results: after one analysis sweep (includes the high-water\n"
            "  mark of every stream's analysis windows, all submitted at once); after trim: gc + malloc_trim(0), i.e.\n"
            "  what stays live with the latest results kept\n"
        )

    # ---- capacity
    modes = [m.strip() for m in ARGS.modes.split(",") if m.strip()]
    results = []
    for mode in modes:
        for n in sizes:
            res = run(capacity(pool, n, ARGS.cycles, mode))
            results.append(res)
            print(f"  measured {n} streams, {mode} ({res['wall']:.0f} s)", flush=True)

    print(f"\nCapacity: {ARGS.cycles} cycles of {CFG.interval_seconds:g} s per stream count, ingest going on "
          f"(1 packet/s per stream, same event loop). burst: all streams due at once (full buffers at start, as after a "
          f"restart); spread: first due times spread over the cycle (streams that started at different times).")
    header = (f"{'mode':>6} {'streams':>7} {'on time':>7} {'lag p50':>7} {'lag max':>7} {'busy':>5} {'sweep':>5} "
              f"{'CPU cores':>9} {'CPU %':>6} {'loop %':>6} {'stall max':>9} {'late p50':>8} {'in flight max':>15} {'RSS +MB':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        flight = "/".join(str(p["in_flight_max"]) for p in r["plugins"].values())
        sweep = f"{r['sweep_max']:.0%}" if r["mode"] == "burst" else "-"
        print(
            f"{r['mode']:>6} {r['n']:>7} {r['on_time']:>3}/{r['cycles']:<3} {r['lag_p50']:>6.2f}s {r['lag_max']:>6.2f}s "
            f"{r['busy']:>5.0%} {sweep:>5} {r['cpu_cores']:>9.2f} {r['cpu_cores'] / CORES:>6.0%} "
            f"{r['loop_cores'] / CORES:>6.0%} {1000 * r['stall_max']:>7.0f}ms {1000 * r['late_p50']:>6.1f}ms "
            f"{flight:>15} {r['rss_peak_mb'] - r['rss_before_mb']:>7.0f}"
        )
    print(
        "  on time: sweeps (every stream's k-th psd, coherence and quality run) whose every result was visible ≤ 5 s after\n"
        "    it was due; lag: due → result visible (p50, max); busy: share of the measured cycles with some analysis\n"
        "    submitted and not yet visible; sweep: (burst) longest first-due → last-result of a sweep / 5 s;\n"
        f"  CPU %: process CPU / (wall × {CORES} CPUs); loop %: the event-loop thread alone (ingest, scheduling, results);\n"
        "  stall max / late p50: longest / median delay of an ingest slice (20 a second, each feeding 1/20 of the streams;\n"
        "    every packet is fed, late ones on catching up); in flight max: psd/coherence/quality runs submitted and not\n"
        f"    finished (the host's comment says it bounds this at threads × 4 = {CFG.workers * 4});\n"
        "  RSS +MB: peak VmRSS during the run (sampled each second) minus VmRSS once the streams were full."
    )

    print("\nAnalysis time per run under that load (ms): median wall (timing wrapper around analyze), median thread CPU, "
          "host.stats() mean_ms (it has no median):")
    print(f"{'mode':>6} {'streams':>7} {'plugin':>16} {'median':>7} {'cpu':>7} {'mean':>7} {'runs':>6} {'fail':>5} {'timeout':>7}")
    for r in results:
        for pid, p in r["plugins"].items():
            print(f"{r['mode']:>6} {r['n']:>7} {pid:>16} {p['median_ms']:>7.3f} {p['median_cpu_ms']:>7.3f} "
                  f"{p['mean_ms_host_stats'] or float('nan'):>7.3f} {p['runs']:>6} {p['failures']:>5} {p['timeouts']:>7}")
    print(f"  event loop: add_packet {statistics.median(r['add_packet_us'] for r in results):.1f} µs per packet (median of runs); "
          f"run_due holds the loop {statistics.median(r['run_due_us_per_submission'] for r in results):.0f} µs per analysis "
          f"it submits; longest run_due {1000 * max(r['run_due_max'] for r in results):.0f} ms")

    print()
    for mode in modes:
        rows_m = [r for r in results if r["mode"] == mode]
        kept = [r for r in rows_m if r["on_time"] == r["cycles"] and r["late_p50"] < 0.1]
        best = max((r["n"] for r in kept), default=0)
        print(f"{mode}: kept analysed (every sweep on time, ingest keeping pace) up to {best} streams of those tested"
              + (f" (event loop held up to {1000 * max(r['stall_max'] for r in kept):.0f} ms at a time)" if kept else ""))
    at_target = [r for r in results if r["n"] >= 1000]
    if at_target:
        n_t = min(r["n"] for r in at_target)
        rows_t = [r for r in at_target if r["n"] == n_t]
        met = all(r["on_time"] == r["cycles"] and r["late_p50"] < 0.1 for r in rows_t)
        detail = "; ".join(
            f"{r['mode']}: busy {r['busy']:.0%} of the cycle, CPU {r['cpu_cores'] / CORES:.0%} of {CORES} CPUs, "
            f"stall up to {1000 * r['stall_max']:.0f} ms"
            for r in rows_t
        )
        print(f"Target ≥ 1,000 streams in the 5 s cycle: {'met' if met else 'NOT met'} at {n_t} ({detail}).")
    if memory_rows:
        r0 = memory_rows[0]
        total = (r0["buffer_bytes"] + r0["quality_bytes"]) / 1000
        print(f"Target < 400 kB of buffer per stream: {'met' if total < 400 else 'NOT met'} ({total:.0f} kB: ring buffer + quality window).")
    print(f"\nTotal run time {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
