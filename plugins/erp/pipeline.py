"""The ERP analysis over a whole experiment: checks what is missing, runs
``analysis.analyze_participant`` one participant at a time (only one
participant's recordings in memory), combines the group, recommends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eeghub.core.experiment_analysis import ExperimentAnalysisResult, ExperimentData, SessionInfo, Stimulus

from .analysis import CALIBRATION_TYPES, MAIN_TYPES, ErpParameters, _class_of, analyze_participant, grand_averages, group_products
from .summary import summarize


def missing_inputs(data: ExperimentData) -> list[str]:
    return missing_inputs_of(data.stimuli, data.sessions)


def missing_inputs_of(stimuli: Sequence[Stimulus], sessions: Sequence[SessionInfo]) -> list[str]:
    """What the experiment lacks for this analysis, from the database alone
    (one sentence each; empty: nothing)."""
    missing = missing_structure_of(stimuli, sessions)
    calibration = [s for s in sessions if s.session_type in CALIBRATION_TYPES]
    main = [s for s in sessions if s.session_type in MAIN_TYPES]
    if calibration and main:
        corrected = [s for s in calibration + main if s.event_correction_status == "completed"]
        if not corrected:
            missing.append("no session has completed event correction")
            missing += not_ready(calibration + main)
        elif not any(s.events_on_trigger for s in corrected if s.session_type in CALIBRATION_TYPES):
            # A calibration session still being linked or corrected is the
            # reason then, not its events: they may well be on triggers.
            missing += not_ready(calibration) or ["no calibration event has a trigger-corrected onset"]
        elif not any(s.events_on_trigger for s in corrected if s.session_type in MAIN_TYPES):
            missing += not_ready(main) or ["no main-session event has a trigger-corrected onset"]
    return missing


def not_ready(sessions: Sequence[SessionInfo]) -> list[str]:
    """One sentence per session whose event correction is still to come:
    one being recorded, or one being linked (again, after a late packet) or
    corrected. A session whose linking or correction failed is not waited
    for."""
    out = []
    for s in sessions:
        if s.event_correction_status not in ("pending", "processing") or s.link_status == "failed":
            continue
        if not s.ended:
            out.append(f"session {s.session_id} ({s.session_type}) has not ended yet")
        else:
            out.append(
                f"session {s.session_id} ({s.session_type}) is being linked or corrected (link_status {s.link_status}, "
                f"event_correction_status {s.event_correction_status}): ask again when it is done"
            )
    return out


def missing_structure_of(stimuli: Sequence[Stimulus], sessions: Sequence[SessionInfo]) -> list[str]:
    """What the predecessor answered 404 for: no sessions, no calibration or
    main session, no stimuli. What the recordings lack (no completed or no
    matching event correction) is a result instead (``insufficient_data``)."""
    missing: list[str] = []
    calibration = [s for s in sessions if s.session_type in CALIBRATION_TYPES]
    main = [s for s in sessions if s.session_type in MAIN_TYPES]
    if not sessions:
        missing.append("the experiment has no sessions")
    else:
        if not calibration:
            missing.append("no calibration session")
        if not main:
            missing.append("no main session")
    if not stimuli:
        missing.append("no stimuli (upload the stimulus CSV and files)")
    return missing


def run_erp(data: ExperimentData, params: ErpParameters, language: str = "en") -> ExperimentAnalysisResult:
    stimuli = {s.file_name: {"item_name": s.item_name, "brand_name": s.brand_name} for s in data.stimuli}
    # Products: every stimulus that is not a calibration class (in any spelling the calibration accepts).
    products = [s.file_name for s in data.stimuli if _class_of(s.trial_type) is None]
    products = products or [s.file_name for s in data.stimuli]
    result: dict[str, Any] = {
        "method": {
            "epochs": "trigger-corrected onsets only",
            "bandpass_hz": [params.l_freq, params.h_freq],
            "epoch_s": [params.tmin, params.tmax],
            "baseline_s": list(params.baseline),
            "reject_ptp_uv": params.reject_ptp_uv,
            "detector": "shrinkage LDA (Ledoit-Wolf) on mean amplitudes in "
            f"{params.feature_bin * 1000:.0f} ms bins, {params.feature_window[0]}-{params.feature_window[1]} s",
            "chance": f"{params.permutations} label permutations of the cross-validation",
            "nontarget_reference": f"{params.reference_fraction:.0%} of the calibration non-targets (at least {params.min_reference_trials}),"
            " held out of training and of the AUC, scored like the products by the fold models",
            "product_test": f"one-sided permutation tests ({params.product_permutations}) against the non-target level of calibration"
            " and against the other products of the same main sessions, each Holm over products; recommended: above both",
            "alpha": params.alpha,
            "erp_window_s": list(params.erp_window),
        },
        "participants_total": len(data.participant_ids),
        "products_total": len(products),
    }
    missing = missing_inputs(data)
    if missing:
        result.update(status="insufficient_data", missing=missing, participants=[], participants_usable=0)
        return _finish(result, stimuli, language, missing)
    rng = np.random.default_rng(params.seed)
    outcomes = []
    for index, participant in enumerate(data.participants()):
        data.progress(0.05 + 0.85 * index / max(1, len(data.participant_ids)), f"participant {index + 1} of {len(data.participant_ids)}")
        outcome = analyze_participant(participant, products, params, rng)
        del participant
        outcomes.append(outcome)
    data.progress(0.92, "combining the group")
    result["participants"] = [o.report for o in outcomes]
    result["participants_usable"] = sum(o.usable for o in outcomes)
    rows, nt_level, nt_ci = group_products(outcomes, products, params, rng)
    ranked = sorted((r for r in rows if r.get("score") is not None), key=lambda r: -r["score"])
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    result["group"] = {"nontarget_level": nt_level, "nontarget_level_ci": nt_ci, "products": ranked + [r for r in rows if r.get("score") is None]}
    result["grand_average"] = grand_averages(outcomes, params)
    above = [r["file_name"] for r in ranked if r.get("above_nontarget")]
    # Recommended: above the non-target level of calibration AND above the
    # other products of the same sessions (a session difference moves all).
    recommended = [r["file_name"] for r in ranked if r.get("above_nontarget") and r.get("above_other_products")]
    if not any(o.usable for o in outcomes):
        reasons = sorted({o.report.get("reason", "") for o in outcomes if o.report.get("status") == "insufficient_data"})
        if all(o.report.get("status") == "insufficient_data" for o in outcomes):
            result.update(status="insufficient_data", missing=reasons)
            return _finish(result, stimuli, language, reasons)
        result["status"] = "no_usable_participants"
        result["recommended_files"] = []
    elif not ranked:
        # Usable detectors, but no product with enough trials to be scored.
        missing = [f"too few trials: no product has {params.min_product_trials} scored trials in a participant"
                   " whose detector is better than chance"]
        result.update(status="insufficient_data", missing=missing)
        return _finish(result, stimuli, language, missing)
    elif above and len(above) == len(ranked):
        # Every product (even a single one) above calibration's non-target
        # level: a difference between sessions cannot be told apart.
        result["status"] = "ambiguous"
        result["recommended_files"] = []
    else:
        result["status"] = "ok"
        result["recommended_files"] = recommended
    return _finish(result, stimuli, language, [])


def _finish(result: dict[str, Any], stimuli: dict[str, dict[str, Any]], language: str, missing: list[str]) -> ExperimentAnalysisResult:
    result.setdefault("recommended_files", [])
    result.setdefault("missing", missing)
    summary = summarize(result, stimuli, language)
    return ExperimentAnalysisResult(
        status=result["status"], summary=summary, result=result, recommendations=list(result["recommended_files"]), missing=missing
    )
