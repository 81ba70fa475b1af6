"""The ERP neuro-marketing analysis at full size, and its validation sweep.

Run by hand: `.venv/bin/python benchmarks/erp.py [--participants 20]
[--calibration-min 5] [--main-min 20] [--sweep]`.

Size run: an experiment of generated participants (``plugins/erp/synthetic.py``:
8 EEG channels at 250 Hz, 1/f background plus alpha, a P300 of 6 µV on
calibration targets and on products at strengths 0-1), analysed by
``run_erp`` with the default parameters (100 permutations per detector).
Participants are generated when the analysis asks for them, one at a time,
as the loader reads them from storage in the server; the time spent
generating them is measured and subtracted. With ``--packets`` each recording
is first encoded as the app's packets (one a second, excluded from the
time) and the analysis gets it back through the loader's decoding and
placement (``plugins/erp/loader.py``, included): everything the server does
but the object store's reads (``benchmarks/raw_reads.py`` measures those).
Peak memory is the process's maximum resident set
size (``ru_maxrss``, interpreter and libraries included).

``--sweep``: repeated small experiments (3 participants x (3 min + 6 min))
at several response amplitudes: the product ranking's Spearman correlation
with the truth, the detectors' AUC, the share of participants better than
chance; and null experiments (no product effect), counting runs that
recommend anything: plain, with weak detectors, with a main session
recorded at another gain or with more noise than calibration, and with 30
products.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from eeghub.core.experiment_analysis import ExperimentData, Participant, Recording
from eeghub.core.packet import encode_payload
from eeghub.plugins.erp import synthetic
from eeghub.plugins.erp.loader import _assemble, _decode_chunk
from eeghub.plugins.erp.analysis import ErpParameters
from eeghub.plugins.erp.pipeline import run_erp


LSB = 5.7220458984375e-6 / 32
START_MS = 1_760_000_000_000


def as_packets(recording: Recording) -> tuple[list[dict[str, Any]], list[bytes], list[dict[str, Any]]]:
    """The recording as the app sends it (250-sample packets, trigger block),
    with its rows and its events as the database holds them (onsets corrected)."""
    fs, n = recording.sampling_rate, 250
    counts = np.clip(np.rint(recording.data / LSB), -32768, 32767).astype(np.int16)
    trigger = np.zeros(counts.shape[1], dtype=np.int16)
    for e in recording.events:
        trigger[e.sample : e.sample + 5] = 1
    rows, payloads = [], []
    for first in range(0, counts.shape[1] - n + 1, n):
        rows.append({"timestamp_start_ms": START_MS + round(first * 1000 / fs), "sampling_rate": fs, "lsb_to_volts": LSB})
        payloads.append(encode_payload(counts[:, first : first + n], recording.channel_names, recording.channel_types,
                                       trigger=trigger[first : first + n], variant="app"))
    events = [{"event_id": e.event_id, "onset": e.sample / fs, "trial_type": e.trial_type, "file_name": e.stim_file,
               "onset_corrected_us": (START_MS * 1000 + round(e.sample * 1e6 / fs)) if e.source == "trigger" else None}
              for e in recording.events]
    return rows, payloads, events


def experiment(design: synthetic.Design, participants: int, seed: int, generation: list[float],
               packets: bool = False) -> ExperimentData:
    users = [f"p{i:02d}" for i in range(participants)]
    start = datetime.fromtimestamp(START_MS / 1000, UTC)

    def load(user: str) -> Participant:
        started = time.perf_counter()
        participant = synthetic.participant(user, design, seed * 1000 + users.index(user))
        if packets:
            encoded = [(r, *as_packets(r)) for r in participant.recordings]
            del participant
            generation.append(time.perf_counter() - started)
            recordings = []
            for recording, rows, payloads, events in encoded:
                decoded = list(zip(rows, _decode_chunk(payloads, 128), strict=True))  # type: ignore[arg-type]
                recordings.append(_assemble(recording.session_id, recording.session_type, start, decoded, events, {
                    "missing_objects": 0, "undecodable_objects": 0, "inconsistent_objects": 0, "overlapping_objects": 0,
                    "gaps": 0, "gap_seconds": 0.0}))
            return Participant(user, recordings)
        generation.append(time.perf_counter() - started)
        return participant

    return ExperimentData("benchmark", synthetic.stimuli(design), synthetic.sessions(users, design), users, load)


def size_run(participants: int, calibration_min: float, main_min: float, packets: bool) -> None:
    design = synthetic.Design(calibration_s=calibration_min * 60, main_s=main_min * 60)
    generation: list[float] = []
    started = time.perf_counter()
    outcome = run_erp(experiment(design, participants, 0, generation, packets), ErpParameters())
    wall = time.perf_counter() - started
    analysis = wall - sum(generation)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = {r["file_name"]: r["score"] for r in outcome.result["group"]["products"]}
    rho = spearmanr([scores[f] for f in synthetic.product_files(design)], design.product_strengths).statistic
    aucs = [p["detector"]["auc"] for p in outcome.result["participants"] if "detector" in p]
    source = "decoded from the app's packets" if packets else "arrays in memory"
    print(f"{participants} participants x ({calibration_min:g} min calibration + {main_min:g} min main), 8 ch at 250 Hz, {source}")
    print(f"  analysis wall time     {analysis:7.1f} s  (generation {sum(generation):.1f} s excluded)")
    print(f"  per participant        {analysis / participants:7.2f} s")
    print(f"  peak memory (maxrss)   {peak_mb:7.0f} MB")
    print(f"  status {outcome.status}; usable participants {outcome.result['participants_usable']}/{participants};"
          f" median AUC {statistics.median(aucs):.3f}; ranking Spearman {rho:.3f};"
          f" recommended {outcome.recommendations}")


def sweep(repeats: int, null_runs: int) -> None:
    params = ErpParameters(permutations=50, product_permutations=1000, bootstrap=300)
    print("response amplitude sweep: 3 participants x (3 min + 6 min), products at strengths 0, .2, .4, .6, .8, 1")
    print(f"{'P300 µV':>8} {'runs':>5} {'Spearman median':>16} {'Spearman >= 0.9':>16} {'AUC median':>11} {'usable':>7}"
          f" {'strongest recommended':>22}")
    for amplitude in (2.0, 4.0, 6.0, 8.0):
        design = synthetic.Design(calibration_s=180, main_s=360, p300_uv=amplitude)
        rhos, aucs, usable, total, strongest = [], [], 0, 0, 0
        for seed in range(repeats):
            outcome = run_erp(experiment(design, 3, 100 + seed, []), params)
            total += 3
            usable += outcome.result.get("participants_usable", 0)
            aucs += [p["detector"]["auc"] for p in outcome.result["participants"] if "detector" in p]
            rows = {r["file_name"]: r["score"] for r in outcome.result.get("group", {}).get("products", []) if r.get("score") is not None}
            files = synthetic.product_files(design)
            strongest += files[-1] in outcome.recommendations
            if len(rows) == len(files):
                rhos.append(spearmanr([rows[f] for f in files], design.product_strengths).statistic)
        share = sum(r >= 0.9 for r in rhos) / repeats
        median_rho = statistics.median(rhos) if rhos else float("nan")
        print(f"{amplitude:8.0f} {repeats:5d} {median_rho:16.3f} {share:16.0%} {statistics.median(aucs):11.3f} {usable / total:7.0%} {strongest / repeats:22.0%}")
    null = synthetic.Design(calibration_s=120, main_s=240, product_strengths=(0.0, 0.0, 0.0, 0.0), p300_uv=10.0)
    print("null experiments (no product effect): runs that recommend anything; runs whose status is ambiguous")
    cases = [
        ("1 participant, 4 products", null, 1, null_runs),
        ("1 participant, 4 products, weak detectors (4 µV)", dataclasses.replace(null, p300_uv=4.0), 1, null_runs),
        ("1 participant, 4 products, main session gain x1.5", dataclasses.replace(null, main_gain=1.5), 1, null_runs),
        ("1 participant, 4 products, main session +8 µV noise", dataclasses.replace(null, main_extra_noise_uv=8.0), 1, null_runs),
        ("3 participants, 30 products", dataclasses.replace(null, main_s=432, product_strengths=(0.0,) * 30), 3, max(1, null_runs // 4)),
    ]
    for name, design, participants, runs in cases:
        recommending = ambiguous = usable = 0
        for seed in range(runs):
            outcome = run_erp(experiment(design, participants, 5000 + seed, []), ErpParameters(
                permutations=50, product_permutations=500, bootstrap=200, seed=seed))
            recommending += bool(outcome.recommendations)
            ambiguous += outcome.status == "ambiguous"
            usable += outcome.result.get("participants_usable", 0)
        print(f"  {name}: {recommending}/{runs} recommend ({recommending / runs:.1%}), {ambiguous} ambiguous;"
              f" {usable}/{runs * participants} detectors better than chance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--calibration-min", type=float, default=5.0)
    parser.add_argument("--main-min", type=float, default=20.0)
    parser.add_argument("--sweep", action="store_true", help="the validation sweep instead of the size run")
    parser.add_argument("--packets", action="store_true", help="decode and place the recordings from packets")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--null-runs", type=int, default=200)
    args = parser.parse_args()
    if args.sweep:
        sweep(args.repeats, args.null_runs)
    else:
        size_run(args.participants, args.calibration_min, args.main_min, args.packets)


if __name__ == "__main__":
    main()
