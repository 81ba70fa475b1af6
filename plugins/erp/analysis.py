"""The ERP neuro-marketing analysis: which products drew a participant's attention.

Per participant:

1. **Epochs** only around events whose onset came from the trigger; events
   left at their logged time are counted and left out. EEG channels only,
   band-pass (zero-phase Butterworth, each gap-free run of data filtered
   alone), baseline (mean of the pre-stimulus interval), rejection of bad
   channels (flat, or far noisier than the others) and of epochs whose
   peak-to-peak amplitude exceeds a limit or that touch a gap; every step
   counted.
2. **Detector**: shrinkage LDA (Ledoit-Wolf) on the epochs' mean amplitude in
   consecutive time bins of every good channel, trained on calibration
   (target vs non-target). This is the standard P300 detector of the BCI
   literature (Blankertz et al. 2011, "Single-trial analysis and
   classification of ERP components"): it works with a few dozen targets,
   has no hyper-parameter to tune (the shrinkage is analytic), is fast
   enough for permutation tests, and needs nothing beyond scikit-learn.
   xDAWN + Riemannian tangent space is as good on long calibrations but
   needs more trials for its covariances and another dependency.
3. **Is it better than chance?** Stratified k-fold cross-validated ROC AUC,
   against the AUCs of the same procedure on permuted labels. A participant
   whose detector is not better than chance (permutation p > alpha)
   contributes no product scores, and the result says so.
4. **Products**: the detector's target probability of every trial of a
   product (the mean of the cross-validation's fold models), averaged
   (bootstrap CI), beside the participant's non-target level: the same
   models' probabilities of calibration non-targets held out of training
   and of the AUC (``reference_fraction``, 30 %). Out-of-fold scores of the
   trained-on non-targets would not do: a detector is used because its AUC
   beat chance, which it does more easily when those scores happened to be
   low, and every product would then look above them.
   A product is "above" when a one-sided permutation test of its trials
   against the non-target trials is significant after Holm's correction
   over the products. The non-target level comes from another session: a
   main session recorded with another gain, more noise or a channel gone
   bad moves every product's score away from it together. So a product is
   recommended only when it is also above the *other products of the same
   main sessions* (a second one-sided permutation test, Holm-corrected),
   which no difference between sessions can produce: under it, the
   products' trials are exchangeable. The group combines the participants
   with equal weight (stratified permutation tests and bootstrap).
5. **Classic ERP**: mean amplitude in the P300/LPP window at parietal sites,
   per class and per product, and grand-average waveforms per class.

Recommendations are the products reliably above both the group's
non-target level and the session's other products; none when nothing is. If every product is "above", the finding is a
difference between sessions, not between products: nothing is recommended
and the result says so (never every product).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal as sps

from eeghub.core.experiment_analysis import Participant, Recording

TARGET_TYPES = frozenset({"target"})
NONTARGET_TYPES = frozenset({"nontarget", "non-target", "non_target", "standard", "distractor"})
CALIBRATION_TYPES = frozenset({"calibration"})
MAIN_TYPES = frozenset({"main", "main_integrated", "main_external", "main_task"})
PARIETAL_SITE = re.compile(r"(?:EEG[\s_-]*)?((?:P|CP|PO)(?:Z|\d{1,2}))(?:[\s_-]*(?:REF|A\d|M\d|LE|AVG|CAR))?", re.IGNORECASE)
"""A parietal site of the 10-20/10-10 system (P…, CP…, PO…), bare or as an
EDF-style label (``EEG Pz-Ref``, ``EEG P3-A1``)."""


def is_parietal(name: str) -> bool:
    return PARIETAL_SITE.fullmatch(name.strip()) is not None


@dataclass(frozen=True)
class ErpParameters:
    l_freq: float = 0.5
    h_freq: float = 30.0
    filter_order: int = 4
    tmin: float = -0.2
    tmax: float = 0.8
    baseline: tuple[float, float] = (-0.2, 0.0)
    reject_ptp_uv: float = 150.0
    """Epochs whose peak-to-peak amplitude on a good channel exceeds this are rejected."""
    flat_uv: float = 0.5
    """A channel whose (filtered) standard deviation is below this is bad (flat)."""
    noisy_z: float = 5.0
    """A channel whose log standard deviation lies this many robust SDs above the channels' median is bad."""
    feature_window: tuple[float, float] = (0.1, 0.7)
    feature_bin: float = 0.1
    erp_window: tuple[float, float] = (0.3, 0.6)
    """The P300/LPP window of the classic measure (and the shaded window of the figure)."""
    cv_folds: int = 5
    permutations: int = 100
    """Label permutations for the detector's chance level."""
    product_permutations: int = 2000
    bootstrap: int = 1000
    alpha: float = 0.05
    min_trials_per_class: int = 10
    min_product_trials: int = 5
    reference_fraction: float = 0.3
    """Share of the calibration non-targets held out of training and of the
    AUC: scored like the products, they give the non-target level."""
    min_reference_trials: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        # A permutation p-value is at least 1/(n+1): fewer permutations than
        # that cannot ever call anything significant, for no reason in the data.
        for name in ("permutations", "product_permutations"):
            n = getattr(self, name)
            if 1 / (n + 1) > self.alpha:
                raise ValueError(
                    f"{name} = {n} cannot reach alpha = {self.alpha} (its smallest p-value is 1/{n + 1});"
                    f" use at least {math.ceil(1 / self.alpha) - 1}"
                )

    @classmethod
    def from_settings(cls, table: dict[str, Any]) -> ErpParameters:
        """From a ``[plugin.erp]`` table; ValueError naming an unknown key or a
        value of the wrong type."""
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown key {key!r} in [plugin.erp] (the fields of ErpParameters)")
            default = getattr(cls, key)
            value = tuple(value) if isinstance(value, list) else value
            if isinstance(default, tuple):
                ok = isinstance(value, tuple) and len(value) == len(default) and all(isinstance(v, int | float) for v in value)
            else:
                ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
            if not ok or isinstance(value, bool) != isinstance(default, bool):
                raise ValueError(f"[plugin.erp] {key} must be like {default!r}, got {value!r}")
            values[key] = value
        return cls(**values)


def _class_of(trial_type: str | None) -> str | None:
    t = (trial_type or "").strip().lower()
    if t in TARGET_TYPES:
        return "target"
    if t in NONTARGET_TYPES:
        return "nontarget"
    return None


def _basename(name: str | None) -> str | None:
    if not name or name == "n/a":
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------- preprocessing
def bandpass(data: np.ndarray, sfreq: float, p: ErpParameters) -> np.ndarray:
    """Zero-phase band-pass of each gap-free run (NaN columns stay NaN; runs
    too short to filter become NaN)."""
    sos = sps.butter(p.filter_order, [p.l_freq, min(p.h_freq, 0.45 * sfreq)], btype="bandpass", fs=sfreq, output="sos")
    out = np.full(data.shape, np.nan, dtype=np.float64)
    finite = np.isfinite(data).all(axis=0)
    if not finite.any():
        return out
    edges = np.flatnonzero(np.diff(np.concatenate([[0], finite.astype(np.int8), [0]])))
    padlen = 3 * (2 * len(sos) + 1)
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start > padlen:
            out[:, start:stop] = sps.sosfiltfilt(sos, data[:, start:stop].astype(np.float64), axis=1)
    return out


def bad_channels(stds_uv: np.ndarray, p: ErpParameters) -> list[tuple[int, str]]:
    """(index, reason) of flat or far too noisy channels, from each channel's
    standard deviation (µV) of the filtered data."""
    bad: list[tuple[int, str]] = []
    finite = np.isfinite(stds_uv)
    for i in np.flatnonzero(~finite):
        bad.append((int(i), "no data"))
    for i in np.flatnonzero(finite & (stds_uv < p.flat_uv)):
        bad.append((int(i), f"flat (SD {stds_uv[i]:.2f} µV)"))
    live = finite & (stds_uv >= p.flat_uv)
    if live.sum() >= 3:
        logs = np.log(stds_uv[live])
        median = np.median(logs)
        mad = 1.4826 * np.median(np.abs(logs - median))
        spread = max(mad, 0.1)
        for i in np.flatnonzero(live):
            z = (math.log(stds_uv[i]) - median) / spread
            if z > p.noisy_z:
                bad.append((int(i), f"noisy (SD {stds_uv[i]:.1f} µV, {z:.1f} robust SDs above the median)"))
    return sorted(bad)


@dataclass
class EpochSet:
    data: np.ndarray  # trials × channels × times, µV, baseline-corrected
    classes: list[str]  # "target" / "nontarget" / "product"
    stim_files: list[str | None]
    counts: dict[str, int] = field(default_factory=dict)


LEFT_OUT = (
    ("logged_onset_excluded", "without a trigger-corrected onset"),
    ("other_trial_type", "of another trial type"),
    ("outside_data", "outside the data"),
    ("touching_gap", "touching a gap"),
    ("rejected_amplitude", "above {reject:g} µV peak-to-peak"),
)
"""Why ``epochs_of`` left events out, as ``none_kept`` names them."""


def none_kept(counts: dict[str, int], what: str, where: str, p: ErpParameters) -> str:
    """Why no ``what`` epoch was kept, from the counts of ``epochs_of``: the
    old sentence when no event had a trigger-corrected onset, else each cause
    with its count (events on triggers rejected for amplitude are not events
    without triggers)."""
    if counts["events"] == counts["logged_onset_excluded"]:
        return f"no {what} with a trigger-corrected onset{where}"
    causes = ", ".join(f"{counts[key]} {text.format(reject=p.reject_ptp_uv)}" for key, text in LEFT_OUT if counts[key])
    return f"no {what} kept{where} (of {counts['events']} events: {causes})"


def epochs_of(
    recordings: Sequence[tuple[Recording, np.ndarray]],
    keep: np.ndarray,
    p: ErpParameters,
    kind: str,
    product_files: set[str],
) -> EpochSet:
    """Epochs of ``kind`` ('calibration' or 'main') events of the filtered
    recordings, on the channels ``keep``; with counts of what was left out."""
    counts = dict.fromkeys(
        ("events", "logged_onset_excluded", "other_trial_type", "outside_data", "touching_gap", "rejected_amplitude", "kept"), 0
    )
    trials: list[np.ndarray] = []
    classes: list[str] = []
    files: list[str | None] = []
    for recording, filtered in recordings:
        sfreq = recording.sampling_rate
        i0, i1 = round(p.tmin * sfreq), round(p.tmax * sfreq)
        b0, b1 = round(p.baseline[0] * sfreq) - i0, round(p.baseline[1] * sfreq) - i0
        length = filtered.shape[1]
        for event in recording.events:
            if kind == "calibration":
                label = _class_of(event.trial_type)
                stim = _basename(event.stim_file)
            else:
                stim = _basename(event.stim_file)
                label = "product" if stim is not None and stim in product_files else None
            counts["events"] += 1
            if label is None:
                counts["other_trial_type"] += 1
                continue
            if event.source != "trigger":
                counts["logged_onset_excluded"] += 1
                continue
            if event.sample is None or event.sample + i0 < 0 or event.sample + i1 > length:
                counts["outside_data"] += 1
                continue
            window = filtered[keep, event.sample + i0 : event.sample + i1]
            if not np.isfinite(window).all():
                counts["touching_gap"] += 1
                continue
            window = (window - window[:, b0:b1].mean(axis=1, keepdims=True)) * 1e6
            if np.ptp(window, axis=1).max() > p.reject_ptp_uv:
                counts["rejected_amplitude"] += 1
                continue
            trials.append(window.astype(np.float32))
            classes.append(label)
            files.append(stim)
    counts["kept"] = len(trials)
    n_ch = int(keep.sum())
    data = np.stack(trials) if trials else np.zeros((0, n_ch, 0), dtype=np.float32)
    return EpochSet(data, classes, files, counts)


def features(epochs: np.ndarray, sfreq: float, p: ErpParameters) -> np.ndarray:
    """Mean amplitude per channel in consecutive bins of the feature window."""
    start = round((p.feature_window[0] - p.tmin) * sfreq)
    width = max(1, round(p.feature_bin * sfreq))
    bins = max(1, round((p.feature_window[1] - p.feature_window[0]) / p.feature_bin))
    stop = min(epochs.shape[2], start + bins * width)
    bins = (stop - start) // width
    cut = epochs[:, :, start : start + bins * width]
    binned = cut.reshape(epochs.shape[0], epochs.shape[1], bins, width).mean(axis=3)
    return binned.reshape(epochs.shape[0], -1).astype(np.float64)


# ---------------------------------------------------------------- detector
def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance of centred data ``x`` (samples x
    features): the formula of ``sklearn.covariance.ledoit_wolf`` (checked
    against it in the tests) without its input validation."""
    n, p = x.shape
    emp = x.T @ x / n
    trace = np.einsum("ij,ij->j", x, x) / n
    mu = trace.sum() / p
    x2 = x * x
    beta_ = float(np.sum(x2.T @ x2))
    delta_ = float(np.sum(emp * emp))
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    shrunk = (1.0 - shrinkage) * emp
    shrunk.flat[:: p + 1] += shrinkage * mu
    return shrunk


class ShrinkageLDA:
    """Two-class LDA with a Ledoit-Wolf shrunk pooled covariance (features
    standardized first), as scikit-learn's ``solver="lsqr", shrinkage="auto"``
    computes it, in a few lines of numpy: the permutation tests fit it
    thousands of times."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> ShrinkageLDA:
        x1, x0 = x[y == 1], x[y == 0]
        mu1, mu0 = x1.mean(axis=0), x0.mean(axis=0)
        centered = np.concatenate([x1 - mu1, x0 - mu0])
        scale = centered.std(axis=0)
        scale[scale == 0] = 1.0
        shrunk = ledoit_wolf(centered / scale)
        cov = shrunk * np.outer(scale, scale)
        self.coef_ = np.linalg.solve(cov, mu1 - mu0)
        prior1 = len(x1) / len(x)
        self.intercept_ = float(-0.5 * self.coef_ @ (mu1 + mu0) + np.log(prior1 / (1 - prior1)))
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p1 = 1.0 / (1.0 + np.exp(-np.clip(self.decision_function(x), -50, 50)))
        return np.column_stack([1 - p1, p1])


def _lda() -> ShrinkageLDA:
    return ShrinkageLDA()


def _folds(y: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified fold assignment: each class dealt round-robin after shuffling."""
    fold = np.empty(len(y), dtype=np.int64)
    for value in (0, 1):
        idx = np.flatnonzero(y == value)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


class FoldEnsemble:
    """The cross-validation's fold models; a new trial's target probability
    is their mean. Each calibration non-target's out-of-fold probability
    comes from one of these same models on a trial it was not trained on,
    so a product trial scored this way is compared with the non-target
    level on equal terms (a model refitted on all calibration epochs is
    another model, with other scores)."""

    def __init__(self, models: list[ShrinkageLDA]) -> None:
        self.models = models

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p1 = np.mean([m.predict_proba(x)[:, 1] for m in self.models], axis=0)
        return np.column_stack([1 - p1, p1])


def _oof_scores(
    x: np.ndarray, y: np.ndarray, folds: list[np.ndarray], models: list[ShrinkageLDA] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold decision values and target probabilities (the fold models
    appended to ``models`` when given)."""
    decision = np.empty(len(y))
    proba = np.empty(len(y))
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
        model = _lda().fit(x[train], y[train])
        decision[test] = model.decision_function(x[test])
        proba[test] = model.predict_proba(x[test])[:, 1]
        if models is not None:
            models.append(model)
    return decision, proba


def roc_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_interval(auc: float, n_targets: int, n_nontargets: int) -> tuple[float, float]:
    """95 % interval of an AUC from its Hanley-McNeil (1982) standard error."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_targets - 1) * (q1 - auc**2) + (n_nontargets - 1) * (q2 - auc**2)) / (n_targets * n_nontargets)
    se = math.sqrt(max(variance, 0.0))
    return max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)


@dataclass
class Detector:
    auc: float
    chance_auc: float
    chance_auc_95: float
    p_value: float
    usable: bool
    folds: int
    target_oof: np.ndarray
    model: Any


def train_detector(x: np.ndarray, y: np.ndarray, p: ErpParameters, rng: np.random.Generator) -> Detector:
    k = int(min(p.cv_folds, y.sum(), (1 - y).sum()))
    folds = _folds(y, k, rng)
    fold_models: list[ShrinkageLDA] = []
    decision, proba = _oof_scores(x, y, folds, fold_models)
    auc = roc_auc(decision, y)
    null = np.empty(p.permutations)
    for i in range(p.permutations):
        shuffled = rng.permutation(y)
        null[i] = roc_auc(_oof_scores(x, shuffled, _folds(shuffled, k, rng))[0], shuffled)
    p_value = float((1 + np.sum(null >= auc)) / (1 + p.permutations))
    model = FoldEnsemble(fold_models)
    return Detector(
        auc=auc,
        chance_auc=float(null.mean()),
        chance_auc_95=float(np.quantile(null, 0.95)),
        p_value=p_value,
        usable=p_value <= p.alpha and auc > float(null.mean()),
        folds=k,
        target_oof=proba[y == 1],
        model=model,
    )


# ---------------------------------------------------------------- statistics
def expanded_quantiles(trials: int, level: float = 0.95) -> tuple[float, float]:
    """The quantiles of the *expanded* percentile bootstrap interval
    (Hesterberg 2015, "What teachers should know about the bootstrap"): the
    plain percentile interval of a mean is too narrow for a few trials (with
    8 skewed probabilities it covered the true mean 84-87 % of the time);
    widening it by sqrt(n/(n-1)) and a t quantile brings it near its level."""
    from scipy.stats import norm, t

    if trials < 2:
        return (0.0, 1.0)
    alpha = 2 * float(norm.cdf(-math.sqrt(trials / (trials - 1)) * float(t.ppf(0.5 + level / 2, trials - 1))))
    return alpha / 2, 1 - alpha / 2


def bootstrap_ci(values: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % expanded percentile bootstrap interval of the mean."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, expanded_quantiles(len(values)))
    return float(lo), float(hi)


def permuted_differences(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of mean(a*) - mean(b*) with a and b's labels permuted."""
    pool = np.concatenate([a, b])
    out = np.empty(n)
    step = max(1, 2_000_000 // max(1, len(pool)))
    for first in range(0, n, step):
        count = min(step, n - first)
        perms = rng.permuted(np.broadcast_to(pool, (count, len(pool))), axis=1)
        out[first : first + count] = perms[:, : len(a)].mean(axis=1) - perms[:, len(a) :].mean(axis=1)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _p_above(observed: float, null: np.ndarray, p: ErpParameters) -> float:
    """One-sided permutation p-value of ``observed`` against ``null``."""
    if not math.isfinite(observed):
        return 1.0
    return float((1 + np.sum(null >= observed)) / (1 + p.product_permutations))


def _above(p_holm: float | None, difference: float | None, p: ErpParameters) -> bool:
    return bool(p_holm is not None and difference is not None and p_holm <= p.alpha and difference > 0)


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# ---------------------------------------------------------------- per participant
@dataclass
class ParticipantOutcome:
    report: dict[str, Any]
    usable: bool = False
    product_probs: dict[str, np.ndarray] = field(default_factory=dict)
    nontarget_probs: np.ndarray | None = None
    waveform_sums: dict[str, np.ndarray] = field(default_factory=dict)
    waveform_counts: dict[str, int] = field(default_factory=dict)
    parietal_names: list[str] = field(default_factory=list)
    parietal_sites: bool = False
    """Whether ``parietal_names`` are parietal sites by name (else: every good channel)."""
    product_amplitudes: dict[str, float] = field(default_factory=dict)
    session_probs: np.ndarray | None = None
    """Target probability of every product trial of the main sessions."""
    session_files: np.ndarray | None = None
    """The product (stim file) of each of ``session_probs``."""
    class_amplitudes: dict[str, float] = field(default_factory=dict)
    sfreq: float | None = None


def analyze_participant(
    participant: Participant, product_files: Sequence[str], p: ErpParameters, rng: np.random.Generator
) -> ParticipantOutcome:
    report: dict[str, Any] = {"user_id": participant.user_id}
    out = ParticipantOutcome(report=report)
    report["sessions"] = [
        {"session_id": r.session_id, "session_type": r.session_type,
         "seconds": round(r.data.shape[1] / r.sampling_rate, 3) if r.sampling_rate else 0.0, **r.report}
        for r in participant.recordings
    ]
    empty = [r.session_id for r in participant.recordings if r.data.size == 0]
    if empty:
        report["sessions_without_data"] = empty
    recordings = [r for r in participant.recordings if r.data.size]
    calibration = [r for r in recordings if r.session_type in CALIBRATION_TYPES]
    main = [r for r in recordings if r.session_type in MAIN_TYPES]
    report["calibration_sessions"] = [r.session_id for r in calibration]
    report["main_sessions"] = [r.session_id for r in main]
    if not calibration or not main:
        report["status"] = "insufficient_data"
        which = "calibration" if not calibration else "main"
        report["reason"] = f"no {which} session with data"
        return out
    used = calibration + main
    rates = {r.sampling_rate for r in used}
    layouts = {tuple(zip(r.channel_names, r.channel_types, strict=True)) for r in used}
    if len(rates) != 1 or len(layouts) != 1:
        report["status"] = "insufficient_data"
        report["reason"] = "the sessions differ in sampling rate or channels"
        return out
    sfreq = rates.pop()
    out.sfreq = sfreq
    names, types = used[0].channel_names, used[0].channel_types
    eeg = np.array([t == "eeg" for t in types])
    if not eeg.any():
        report["status"] = "insufficient_data"
        report["reason"] = "no EEG channel"
        return out
    filtered = [(r, bandpass(r.data[eeg], sfreq, p)) for r in used]
    eeg_names = [n for n, is_eeg in zip(names, eeg, strict=True) if is_eeg]
    # Channel SD over everything the participant recorded (robust: MAD).
    concatenated = np.concatenate([f for _, f in filtered], axis=1)
    finite = np.isfinite(concatenated).all(axis=0)
    if finite.sum() < sfreq:
        report["status"] = "insufficient_data"
        report["reason"] = "less than one second of usable data"
        return out
    stds = 1.4826 * np.median(np.abs(concatenated[:, finite] - np.median(concatenated[:, finite], axis=1, keepdims=True)), axis=1) * 1e6
    del concatenated
    bad = bad_channels(stds, p)
    keep = np.ones(len(eeg_names), dtype=bool)
    for i, _ in bad:
        keep[i] = False
    report["bad_channels"] = [{"channel": eeg_names[i], "reason": why} for i, why in bad]
    report["channels_used"] = [n for n, k in zip(eeg_names, keep, strict=True) if k]
    if not keep.any():
        report["status"] = "insufficient_data"
        report["reason"] = "every EEG channel is bad"
        return out
    kept_names = report["channels_used"]
    parietal = np.array([is_parietal(n) for n in kept_names])
    out.parietal_sites = bool(parietal.any())
    if not parietal.any():
        parietal = np.ones(len(kept_names), dtype=bool)
    out.parietal_names = [n for n, is_p in zip(kept_names, parietal, strict=True) if is_p]
    report["erp_sites"] = {"parietal": out.parietal_sites, "channels": out.parietal_names}
    if not out.parietal_sites:
        report["erp_sites"]["note"] = (
            "no channel is named as a parietal site (P…, CP…, PO…): the classic measure averages every good channel"
        )

    calib_set = [(r, f) for r, f in filtered if r.session_type in CALIBRATION_TYPES]
    main_set = [(r, f) for r, f in filtered if r.session_type in MAIN_TYPES]
    cal = epochs_of(calib_set, keep, p, "calibration", set(product_files))
    prod = epochs_of(main_set, keep, p, "main", set(product_files))
    del filtered, calib_set, main_set
    report["calibration_epochs"] = cal.counts
    report["main_epochs"] = prod.counts
    y = np.array([c == "target" for c in cal.classes], dtype=np.int64)
    report["calibration_targets"] = int(y.sum())
    report["calibration_nontargets"] = int(len(y) - y.sum())

    # Classic ERP: waveforms at parietal sites, mean amplitude in the window.
    w0 = round((p.erp_window[0] - p.tmin) * sfreq)
    w1 = round((p.erp_window[1] - p.tmin) * sfreq)
    for label, epochs in (("target", cal.data[y == 1]), ("nontarget", cal.data[y == 0]), ("product", prod.data)):
        if len(epochs):
            wave = epochs[:, parietal, :].mean(axis=1)  # trials × times
            out.waveform_sums[label] = wave.sum(axis=0).astype(np.float64)
            out.waveform_counts[label] = len(epochs)
            out.class_amplitudes[label] = float(wave[:, w0:w1].mean())
    stim_files = np.array([f or "" for f in prod.stim_files])
    for name in product_files:
        mask = stim_files == name
        if mask.any():
            out.product_amplitudes[name] = float(prod.data[mask][:, parietal, w0:w1].mean())
    report["erp_mean_amplitude_uv"] = {k: _clean(v) for k, v in out.class_amplitudes.items()}

    missing = []
    if cal.counts["kept"] == 0:
        missing.append(none_kept(cal.counts, "calibration epoch", "", p))
    elif y.sum() == 0 or y.sum() == len(y):
        missing.append("calibration has a single class (" + ("only targets" if y.sum() else "only non-targets") + ")")
    elif min(y.sum(), len(y) - y.sum()) < p.min_trials_per_class:
        missing.append(
            f"too few calibration epochs: {int(y.sum())} targets and {int(len(y) - y.sum())} non-targets"
            f" (at least {p.min_trials_per_class} of each are needed)"
        )
    else:
        n_nontargets = int(len(y) - y.sum())
        n_reference = min(max(p.min_reference_trials, round(p.reference_fraction * n_nontargets)), n_nontargets - p.min_trials_per_class)
        if n_reference < p.min_reference_trials:
            missing.append(
                f"too few calibration non-targets to hold out a reference level: {n_nontargets}"
                f" (at least {p.min_trials_per_class + p.min_reference_trials} are needed)"
            )
    if prod.counts["kept"] == 0:
        missing.append(none_kept(prod.counts, "product epoch", " in the main sessions", p))
    if missing:
        report["status"] = "insufficient_data"
        report["reason"] = "; ".join(missing)
        return out

    x = features(cal.data, sfreq, p)
    # The non-target reference: held out of training and of the AUC (see
    # ErpParameters.reference_fraction), so choosing detectors that beat
    # chance cannot bias it, and scored by the same models as the products.
    reference = np.zeros(len(y), dtype=bool)
    reference[rng.choice(np.flatnonzero(y == 0), n_reference, replace=False)] = True
    x, x_reference, y = x[~reference], x[reference], y[~reference]
    report["calibration_nontargets_reference"] = n_reference
    detector = train_detector(x, y, p, rng)
    report["detector"] = {
        "method": "shrinkage LDA (Ledoit-Wolf) on binned mean amplitudes",
        "features": int(x.shape[1]),
        "training_targets": int(y.sum()),
        "training_nontargets": int(len(y) - y.sum()),
        "cv_folds": detector.folds,
        "auc": _clean(detector.auc),
        "auc_ci": [_clean(v) for v in auc_interval(detector.auc, int(y.sum()), int(len(y) - y.sum()))],
        "chance_auc": _clean(detector.chance_auc),
        "chance_auc_95": _clean(detector.chance_auc_95),
        "permutations": p.permutations,
        "p_value": _clean(detector.p_value),
        "better_than_chance": detector.usable,
    }
    if not detector.usable:
        report["status"] = "detector_not_above_chance"
        report["reason"] = (
            f"the detector's cross-validated AUC {detector.auc:.2f} is not above chance"
            f" (permutation p = {detector.p_value:.3f}); this participant contributes no product scores"
        )
        return out
    out.usable = True
    probs = detector.model.predict_proba(features(prod.data, sfreq, p))[:, 1]
    reference_probs = detector.model.predict_proba(x_reference)[:, 1]
    out.nontarget_probs = reference_probs
    out.session_probs, out.session_files = probs, stim_files
    nt_level = float(reference_probs.mean())
    products: list[dict[str, Any]] = []
    p_values: list[float] = []
    p_others: list[float] = []
    for name in product_files:
        trials = probs[stim_files == name]
        if len(trials) < p.min_product_trials:
            products.append({"file_name": name, "trials": int(len(trials)), "score": None, "note": "too few trials"})
            continue
        out.product_probs[name] = trials
        diff = float(trials.mean() - nt_level)
        pv = _p_above(diff, permuted_differences(trials, reference_probs, p.product_permutations, rng), p)
        others = probs[stim_files != name]
        diff_others = float(trials.mean() - others.mean()) if len(others) else float("nan")
        pv_others = _p_above(diff_others, permuted_differences(trials, others, p.product_permutations, rng), p) if len(others) else 1.0
        lo, hi = bootstrap_ci(trials, p.bootstrap, rng)
        products.append({"file_name": name, "trials": int(len(trials)), "score": _clean(float(trials.mean())),
                         "ci": [_clean(lo), _clean(hi)], "difference": _clean(diff), "p_value": _clean(pv),
                         "difference_to_other_products": _clean(diff_others), "p_value_other_products": _clean(pv_others)})
        p_values.append(pv)
        p_others.append(pv_others)
    adjusted, adjusted_others = iter(holm(p_values)), iter(holm(p_others))
    for entry in products:
        if entry.get("score") is not None:
            entry["p_holm"] = _clean(next(adjusted))
            entry["above_nontarget"] = bool(entry["p_holm"] <= p.alpha and entry["difference"] > 0)
            entry["p_holm_other_products"] = _clean(next(adjusted_others))
            entry["above_other_products"] = _above(entry["p_holm_other_products"], entry["difference_to_other_products"], p)
            entry["erp_mean_amplitude_uv"] = _clean(out.product_amplitudes.get(entry["file_name"], float("nan")))
    report["nontarget_level"] = _clean(nt_level)
    report["nontarget_level_ci"] = [_clean(v) for v in bootstrap_ci(reference_probs, p.bootstrap, rng)]
    report["target_level"] = _clean(float(detector.target_oof.mean()))
    report["products"] = products
    report["status"] = "ok"
    return out


# ---------------------------------------------------------------- group
def group_products(
    outcomes: Sequence[ParticipantOutcome], product_files: Sequence[str], p: ErpParameters, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], float | None, list[float | None]]:
    """Per product: the group score (mean over usable participants of their
    mean probability) with a stratified bootstrap CI, and stratified
    permutation tests of (product - non-target) and of (product - the other
    products of the same sessions) against 0, each Holm-corrected."""
    usable = [o for o in outcomes if o.usable and o.nontarget_probs is not None]
    if not usable:
        return [], None, [None, None]
    nt_level = float(np.mean([o.nontarget_probs.mean() for o in usable]))  # type: ignore[union-attr]
    boot_nt = np.mean(
        [o.nontarget_probs[rng.integers(0, len(o.nontarget_probs), (p.bootstrap, len(o.nontarget_probs)))].mean(axis=1)  # type: ignore[index,arg-type]
         for o in usable], axis=0,
    )
    # Expanded as for one participant, by the smallest stratum (conservative).
    nt_ci = [_clean(v) for v in np.quantile(boot_nt, expanded_quantiles(min(len(o.nontarget_probs) for o in usable)))]  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    p_values: list[float] = []
    p_others: list[float] = []
    for name in product_files:
        having = [o for o in usable if name in o.product_probs]
        if not having:
            rows.append({"file_name": name, "participants": 0, "score": None})
            continue
        diffs = np.array([o.product_probs[name].mean() - o.nontarget_probs.mean() for o in having])  # type: ignore[union-attr]
        observed = float(diffs.mean())
        null = np.mean(
            [permuted_differences(o.product_probs[name], o.nontarget_probs, p.product_permutations, rng) for o in having],  # type: ignore[arg-type]
            axis=0,
        )
        pv = _p_above(observed, null, p)
        # Against the other products of the same sessions (immune to a difference between sessions).
        others = [o.session_probs[o.session_files != name] for o in having]  # type: ignore[index]
        if all(len(rest) for rest in others):
            observed_others = float(np.mean([o.product_probs[name].mean() - rest.mean() for o, rest in zip(having, others, strict=True)]))
            null_others = np.mean(
                [permuted_differences(o.product_probs[name], rest, p.product_permutations, rng) for o, rest in zip(having, others, strict=True)],
                axis=0,
            )
            pv_others = _p_above(observed_others, null_others, p)
        else:
            observed_others, pv_others = float("nan"), 1.0
        score = float(np.mean([o.product_probs[name].mean() for o in having]))
        boot = np.mean(
            [o.product_probs[name][rng.integers(0, len(o.product_probs[name]), (p.bootstrap, len(o.product_probs[name])))].mean(axis=1)
             for o in having], axis=0,
        )
        lo, hi = np.quantile(boot, expanded_quantiles(min(len(o.product_probs[name]) for o in having)))
        amplitudes = [o.product_amplitudes[name] for o in having if name in o.product_amplitudes]
        rows.append({
            "file_name": name,
            "participants": len(having),
            # How many of them show it on their own (both tests, Holm within the participant):
            # a group finding carried by one participant out of many reads differently.
            "participants_above": sum(
                any(e["file_name"] == name and e.get("above_nontarget") and e.get("above_other_products") for e in o.report.get("products", []))
                for o in having
            ),
            "trials": int(sum(len(o.product_probs[name]) for o in having)),
            "score": _clean(score),
            "ci": [_clean(lo), _clean(hi)],
            "difference": _clean(observed),
            "p_value": _clean(pv),
            "difference_to_other_products": _clean(observed_others),
            "p_value_other_products": _clean(pv_others),
            "erp_mean_amplitude_uv": _clean(float(np.mean(amplitudes))) if amplitudes else None,
        })
        p_values.append(pv)
        p_others.append(pv_others)
    adjusted, adjusted_others = iter(holm(p_values)), iter(holm(p_others))
    for row in rows:
        if row.get("score") is not None:
            row["p_holm"] = _clean(next(adjusted))
            row["above_nontarget"] = _above(row["p_holm"], row["difference"], p)
            row["p_holm_other_products"] = _clean(next(adjusted_others))
            row["above_other_products"] = _above(row["p_holm_other_products"], row["difference_to_other_products"], p)
    return rows, _clean(nt_level), nt_ci


def grand_averages(outcomes: Iterable[ParticipantOutcome], p: ErpParameters) -> dict[str, Any] | None:
    """Grand-average parietal waveforms per class (mean of participants'
    means); ``sites`` says where participants had no parietal channel by name."""
    per_class: dict[str, list[np.ndarray]] = {}
    sfreq = None
    parietal = contributing = 0
    for o in outcomes:
        if o.sfreq is None:
            continue
        if sfreq is None:
            sfreq = o.sfreq
        if o.sfreq != sfreq or not o.waveform_sums:
            continue
        contributing += 1
        parietal += o.parietal_sites
        for label, total in o.waveform_sums.items():
            per_class.setdefault(label, []).append(total / o.waveform_counts[label])
    if sfreq is None or not per_class:
        return None
    length = min(len(w) for waves in per_class.values() for w in waves)
    times = (np.arange(length) + round(p.tmin * sfreq)) / sfreq
    return {
        "times_s": [round(float(t), 5) for t in times],
        "window_s": list(p.erp_window),
        "participants": contributing,
        "parietal_participants": parietal,
        "sites": "parietal sites" if parietal == contributing else (
            "every good channel" if parietal == 0 else f"parietal sites ({parietal} of {contributing} participants; every good channel for the others)"
        ),
        "classes": {
            label: {"participants": len(waves), "uv": [round(float(v), 4) for v in np.mean([w[:length] for w in waves], axis=0)]}
            for label, waves in per_class.items()
        },
    }
