"""The ERP neuro-marketing analysis at full size, and its validation sweep.

Run by hand: `.venv/bin/python benchmarks/erp.py [--participants 20]
[--calibration-min 5] [--main-min 20] [--sweep]`.

Size run: an experiment of generated participants (``plugins/erp/synthetic.py``:
8 EEG channels at 250 Hz, 1/f background plus alpha, a P300 of 6 µV on
calibration targets and on products at strengths 0-1), analysed by
``run_erp`` with the default parameters (100 permutations per detector).
Participants are generated when the analysis asks for them, one at a time,
as the loader reads them from storage in the server; the time spent
generating them is measured and subtracted. Reading packets from storage is
not part of this figure. Peak memory is the process's maximum resident set
size (``ru_maxrss``, interpreter and libraries included).

``--sweep``: repeated small experiments (3 participants x (3 min + 6 min))
at several response amplitudes: the product ranking's Spearman correlation
with the truth, the detectors' AUC, the share of participants better than
chance; and null experiments (no product effect), counting runs that
recommend anything.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
from scipy.stats import spearmanr

from eeghub.core.experiment_analysis import ExperimentData
from eeghub.plugins.erp import synthetic
from eeghub.plugins.erp.analysis import ErpParameters
from eeghub.plugins.erp.pipeline import run_erp


def experiment(design: synthetic.Design, participants: int, seed: int, generation: list[float]) -> ExperimentData:
    users = [f"p{i:02d}" for i in range(participants)]

    def load(user: str) -> synthetic.Participant:
        started = time.perf_counter()
        participant = synthetic.participant(user, design, seed * 1000 + users.index(user))
        generation.append(time.perf_counter() - started)
        return participant

    return ExperimentData("benchmark", synthetic.stimuli(design), synthetic.sessions(users, design), users, load)


def size_run(participants: int, calibration_min: float, main_min: float) -> None:
    design = synthetic.Design(calibration_s=calibration_min * 60, main_s=main_min * 60)
    generation: list[float] = []
    started = time.perf_counter()
    outcome = run_erp(experiment(design, participants, 0, generation), ErpParameters())
    wall = time.perf_counter() - started
    analysis = wall - sum(generation)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = {r["file_name"]: r["score"] for r in outcome.result["group"]["products"]}
    rho = spearmanr([scores[f] for f in synthetic.product_files(design)], design.product_strengths).statistic
    aucs = [p["detector"]["auc"] for p in outcome.result["participants"] if "detector" in p]
    print(f"{participants} participants x ({calibration_min:g} min calibration + {main_min:g} min main), 8 ch at 250 Hz")
    print(f"  analysis wall time     {analysis:7.1f} s  (generation {sum(generation):.1f} s excluded)")
    print(f"  per participant        {analysis / participants:7.2f} s")
    print(f"  peak memory (maxrss)   {peak_mb:7.0f} MB")
    print(f"  status {outcome.status}; usable participants {outcome.result['participants_usable']}/{participants};"
          f" median AUC {statistics.median(aucs):.3f}; ranking Spearman {rho:.3f};"
          f" recommended {outcome.recommendations}")


def sweep(repeats: int, null_runs: int) -> None:
    params = ErpParameters(permutations=50, product_permutations=1000, bootstrap=300)
    print("response amplitude sweep: 3 participants x (3 min + 6 min), products at strengths 0, .2, .4, .6, .8, 1")
    print(f"{'P300 µV':>8} {'runs':>5} {'Spearman median':>16} {'Spearman >= 0.9':>16} {'AUC median':>11} {'usable':>7}")
    for amplitude in (2.0, 4.0, 6.0, 8.0):
        design = synthetic.Design(calibration_s=180, main_s=360, p300_uv=amplitude)
        rhos, aucs, usable, total = [], [], 0, 0
        for seed in range(repeats):
            outcome = run_erp(experiment(design, 3, 100 + seed, []), params)
            total += 3
            usable += outcome.result.get("participants_usable", 0)
            aucs += [p["detector"]["auc"] for p in outcome.result["participants"] if "detector" in p]
            rows = {r["file_name"]: r["score"] for r in outcome.result.get("group", {}).get("products", []) if r.get("score") is not None}
            files = synthetic.product_files(design)
            if len(rows) == len(files):
                rhos.append(spearmanr([rows[f] for f in files], design.product_strengths).statistic)
        share = sum(r >= 0.9 for r in rhos) / repeats
        median_rho = statistics.median(rhos) if rhos else float("nan")
        print(f"{amplitude:8.0f} {repeats:5d} {median_rho:16.3f} {share:16.0%} {statistics.median(aucs):11.3f} {usable / total:7.0%}")
    design = synthetic.Design(calibration_s=120, main_s=240, product_strengths=(0.0, 0.0, 0.0, 0.0), p300_uv=10.0)
    recommending = usable = 0
    for seed in range(null_runs):
        outcome = run_erp(experiment(design, 1, 5000 + seed, []), ErpParameters(
            permutations=50, product_permutations=500, bootstrap=200, seed=seed))
        recommending += bool(outcome.recommendations)
        usable += outcome.result.get("participants_usable", 0)
    print(f"null experiments (1 participant, 4 products without effect): {recommending}/{null_runs} runs recommend"
          f" something ({recommending / null_runs:.1%}); {usable} runs had a detector better than chance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--calibration-min", type=float, default=5.0)
    parser.add_argument("--main-min", type=float, default=20.0)
    parser.add_argument("--sweep", action="store_true", help="the validation sweep instead of the size run")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--null-runs", type=int, default=200)
    args = parser.parse_args()
    if args.sweep:
        sweep(args.repeats, args.null_runs)
    else:
        size_run(args.participants, args.calibration_min, args.main_min)


if __name__ == "__main__":
    main()
