"""Cost of the live analyzer's kernels, side by side with MNE / mne-connectivity.

Run by hand: `.venv/bin/python benchmarks/analysis_kernels.py [--repeats 7] [--seconds 0.3] [--blas-threads 1]`.

8 EEG channels at 250 Hz (the simulator's 10 Hz alpha plus noise, as volts).
Times, in µs per call (median, min-max over repeats, in the same run on the
same data):

- ``welch_psd`` and MNE's ``psd_array_welch`` with the equivalent parameters;
- ``alpha_coherence`` and mne-connectivity's ``spectral_connectivity_epochs``
  (``mode="fourier"``, the same 1 s / 50 % segments given as epochs), plus the
  predecessor's exact call (one epoch, default multitaper) for reference;
- ``QualityWindow.update`` (per packet, from the decoder's ``PacketStats``) and
  ``QualityWindow.report`` (per analysis cycle);
- one stream's whole analysis cycle for a few window choices, and whether
  1,000 streams every 5 s fit on 2 cores (≤ 10 ms of CPU per stream per cycle).

BLAS threads default to 1 (set before numpy is imported): the analyzer runs
many small problems in parallel, and OpenBLAS threading on a 2-core host made
the coherence 3× slower under load. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="target duration of one repeat")
    parser.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS/OpenMP threads (0: leave the default)")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--cycle-seconds", type=float, default=5.0)
    parser.add_argument("--no-mne", action="store_true", help="skip the MNE comparison")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.blas_threads > 0:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402  (after the thread settings)
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from eeghub.core.packet import decode_payload, warm_up  # noqa: E402
from eeghub.core.simulator import SimulatedDevice  # noqa: E402
from eeghub.plugins.analyzer.dsp import alpha_coherence, welch_psd  # noqa: E402
from eeghub.core.quality import QualityWindow  # noqa: E402

SFREQ = 250.0
CHANNELS = 8
LSB_TO_VOLTS = 0.02235e-6
PACKET_SAMPLES = 128  # what the device firmware sends (spec seed 004)


def time_call(call: Callable[[], object], repeats: int, seconds: float) -> tuple[float, float, float]:
    """(median, min, max) µs per call."""
    call()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds / 4:
        call()
        calls += 1
    number = max(3, int(calls * 4))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            call()
        per_call.append((time.perf_counter_ns() - t0) / number / 1000)
    return statistics.median(per_call), min(per_call), max(per_call)


def fmt(t: tuple[float, float, float] | None) -> str:
    if t is None:
        return "-"
    return f"{t[0]:.0f} ({t[1]:.0f}-{t[2]:.0f})" if t[0] >= 100 else f"{t[0]:.1f} ({t[1]:.1f}-{t[2]:.1f})"


def import_ms(module: str) -> float:
    """Median wall time of a fresh interpreter importing ``module``, minus a bare interpreter (ms)."""

    def run(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return (time.perf_counter() - t0) * 1000

    bare = statistics.median(run("pass") for _ in range(3))
    return statistics.median(run(f"import {module}") for _ in range(3)) - bare


def signals(seconds: float) -> tuple[np.ndarray, list]:
    """int16 (9, samples) from the simulator (8 EEG + TRIG) and the decoded packets."""
    device = SimulatedDevice("u", "bench", channels=CHANNELS, variant="v4", trigger_samples=[40], samples_per_packet=PACKET_SAMPLES)
    per_packet = PACKET_SAMPLES
    n_packets = int(np.ceil(seconds * SFREQ / per_packet))
    decoded = [decode_payload(device.payload(i)) for i in range(n_packets)]
    sig = np.concatenate([d.signals for d in decoded], axis=1)[:, : int(seconds * SFREQ)]
    return sig, decoded


def main() -> None:
    args = ARGS
    warm_up()
    print(f"BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; {os.cpu_count()} CPUs; "
          f"{CHANNELS} channels at {SFREQ:.0f} Hz; µs per call, median (min-max) of {args.repeats} repeats\n")

    have_mne = False
    if not args.no_mne:
        try:
            import mne
            from mne_connectivity import spectral_connectivity_epochs

            mne.set_log_level("ERROR")
            have_mne = True
        except ImportError:
            print("mne / mne-connectivity not installed: no comparison\n")

    windows = {s: signals(s) for s in (2, 10, 60)}
    volts = {s: sig[:CHANNELS].astype(np.float64) * LSB_TO_VOLTS for s, (sig, _) in windows.items()}

    rows: list[tuple[str, tuple | None, tuple | None]] = []
    costs: dict[str, float] = {}

    # ---- PSD
    for s in (2, 10, 60):
        x = volts[s]
        ours = time_call(lambda x=x: welch_psd(x, SFREQ), args.repeats, args.seconds)
        theirs = None
        if have_mne:
            nper = min(500, x.shape[1])
            theirs = time_call(
                lambda x=x, nper=nper: mne.time_frequency.psd_array_welch(
                    x, SFREQ, fmin=1.0, fmax=45.0, n_fft=nper, n_per_seg=nper, n_overlap=nper // 2, window="hann", verbose=False
                ),
                args.repeats,
                args.seconds,
            )
        rows.append((f"welch_psd {s:>2} s (2 s segments, 50 %)", ours, theirs))
        costs[f"psd{s}"] = ours[0]

    # ---- coherence
    for s in (2, 10, 60):
        x = volts[s]
        ours = time_call(lambda x=x: alpha_coherence(x, SFREQ), args.repeats, args.seconds)
        theirs = None
        if have_mne:

            def mne_coh(x: np.ndarray = x) -> object:
                epochs = sliding_window_view(x, 250, axis=-1)[:, ::125].transpose(1, 0, 2)
                return spectral_connectivity_epochs(
                    epochs, method="coh", mode="fourier", sfreq=SFREQ, fmin=8.0, fmax=13.0, faverage=True, verbose=False
                )

            theirs = time_call(mne_coh, args.repeats, args.seconds)
        k = alpha_coherence(x, SFREQ)
        rows.append((f"alpha_coherence {s:>2} s (K={k.n_segments}, floor {k.noise_floor:.3f})", ours, theirs))
        costs[f"coh{s}"] = ours[0]
    if have_mne:
        x = volts[2]
        pred = time_call(
            lambda: spectral_connectivity_epochs(x[np.newaxis], method="coh", sfreq=SFREQ, fmin=8.0, fmax=13.0, faverage=True, verbose=False),
            args.repeats,
            args.seconds,
        )
        rows.append(("predecessor: 1 epoch 2 s, multitaper", None, pred))

    # ---- quality
    sig60, decoded60 = windows[60]
    names = list(decoded60[0].layout.channel_names)
    types = list(decoded60[0].layout.channel_types)
    qw = QualityWindow.for_seconds(names, types, SFREQ, 60)
    for d in decoded60:
        qw.update(d.stats, d.signals.shape[1])
    packet = decoded60[-1]
    upd = time_call(lambda: qw.update(packet.stats, packet.signals.shape[1]), args.repeats, args.seconds)
    rep = time_call(qw.report, args.repeats, args.seconds)
    rows.append((f"QualityWindow.update (1 packet, {len(names)} ch)", upd, None))
    rows.append((f"QualityWindow.report (60 s, {qw.packets} packets)", rep, None))
    costs["update"], costs["report"] = upd[0], rep[0]
    scale = time_call(lambda: sig60[:CHANNELS, -2500:].astype(np.float64) * LSB_TO_VOLTS, args.repeats, args.seconds)
    rows.append(("int16 → volts (10 s window)", scale, None))
    costs["scale"] = scale[0]

    header = f"{'kernel':44} {'eeghub µs':>22} {'mne µs':>24} {'mne/eeghub':>10}"
    print(header)
    print("-" * len(header))
    for label, ours, theirs in rows:
        ratio = f"{theirs[0] / ours[0]:9.1f}x" if ours and theirs else ""
        print(f"{label:44} {fmt(ours):>22} {fmt(theirs):>24} {ratio:>10}")

    # ---- one stream's cycle
    packets_per_cycle = args.cycle_seconds * SFREQ / PACKET_SAMPLES
    budget_us = args.cores * args.cycle_seconds / args.streams * 1e6
    print(f"\nOne stream per {args.cycle_seconds:g} s cycle (+ {packets_per_cycle:.1f} packet updates); "
          f"budget for {args.streams} streams on {args.cores} cores: {budget_us / 1000:.1f} ms")
    plans = [
        ("PSD 2 s + coherence 10 s + quality", costs["psd2"] + costs["coh10"]),
        ("PSD 10 s + coherence 10 s + quality", costs["psd10"] + costs["coh10"]),
        ("PSD 10 s + coherence 60 s + quality", costs["psd10"] + costs["coh60"]),
        ("PSD 60 s + coherence 60 s + quality", costs["psd60"] + costs["coh60"]),
    ]
    for label, spectral in plans:
        total = spectral + costs["scale"] * 2 + costs["report"] + packets_per_cycle * costs["update"]
        load = total * args.streams / (args.cores * args.cycle_seconds * 1e6)
        verdict = "fits" if total <= budget_us else "DOES NOT FIT"
        print(f"  {label:40} {total / 1000:6.2f} ms  -> {load:6.1%} of {args.cores} cores  {verdict}")

    print("\nImport cost in a fresh interpreter (ms, median of 3, minus a bare interpreter):")
    print(f"  numpy alone:                           {import_ms('numpy'):.0f}")
    print(f"  eeghub.plugins.analyzer.dsp + quality: {import_ms('eeghub.plugins.analyzer.dsp, eeghub.core.quality'):.0f}")
    if have_mne:
        print(f"  mne + mne_connectivity:                {import_ms('mne, mne_connectivity'):.0f}")


if __name__ == "__main__":
    main()
