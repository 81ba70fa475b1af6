"""Matching logged events to trigger rising edges (pure: numpy only, no I/O).

The phone logs each event with an onset in seconds from the session start on
its own stopwatch, so the expected absolute time of event ``i`` is
``session_start_us + round(onset_s·1e6)``. The trigger channel of the EEG
stream gives the true stimulus times. Between the two clocks there is an
unknown, roughly constant offset (tens to hundreds of ms, up to a couple of
seconds) plus a few ms of jitter; some triggers are missing, some pulses are
spurious, some events have no trigger at all.

The predecessor (spec §5.2 step 9, weakness §8 item 14) walked both lists
greedily: for each event it took the trigger closest to the *uncorrected*
expected time, stopping at the first worse candidate, and never skipped an
event. One missing trigger therefore shifts every later event onto its
neighbour's trigger, and an offset larger than the event spacing, or a
spurious pulse nearer the uncorrected time than the true one, sends events to
the wrong trigger. It never says which events it could not match.

This module does it in two steps, each chosen for a reason:

1. **Offset by voting.** Every (event, trigger) pair whose difference lies
   within ``max_offset ± tolerance`` is a vote for that difference. The true
   offset is where most votes agree within the tolerance: a sliding window of
   width ``2·tolerance`` over the sorted differences finds it in
   O(P log P) for P pairs, whatever the drops and extra pulses, which only add
   scattered votes. Pairs come from a ``searchsorted`` range per event, so P
   is about E × (triggers within ``max_offset`` of an event), not E × T; when
   P would exceed ``max_pairs`` an evenly spaced subset of events votes (the
   offset is constant, so a subset estimates it as well). Periodic stimuli
   make aliases (offset ± one inter-stimulus interval) that collect almost as
   many votes, and pair counts double-count an event with two nearby
   triggers, so the vote only proposes a few well separated candidate
   offsets; each is then judged by the real objective below.
2. **Optimal monotone one-to-one assignment.** With the offset removed, each
   event may take any trigger within ``tolerance``. A sparse dynamic
   programme (sequence alignment restricted to those candidates) finds the
   matching that maximises the number of matches and, among equals,
   minimises the sum of |residual|; order is preserved and no trigger is
   used twice, by construction. Because the candidate ranges of successive
   events only move forward, the programme keeps just the chains ending in
   the current window of triggers: O(E·k) for k candidates per event, no
   E × T matrix. The offset is then refined to the median of the matched
   differences (robust to the odd spurious match) and the assignment redone,
   until it no longer changes.

Candidates are tried in order of an upper bound on their matching size (how
many events and triggers have a partner within tolerance); the best is the one
with most matches, then least total |residual|, then smallest |offset| (the
clocks are meant to agree, so a smaller offset is the likelier one when the
data cannot tell).

An offset is only trusted when its matches stand out from chance. With many
events, any offset in a ±2 s range lines up some events with some triggers
within ±50 ms (about 10 % of them at a 1 s spacing), so a count threshold alone
would accept a wrong offset whenever the true one is out of range or the
trigger channel carries only noise. The chance count is estimated from the
vote itself: the P pairs spread over a ``2·(max_offset + tolerance)`` range,
so a ``2·tolerance`` window expects λ = (P − m)·tolerance/(max_offset +
tolerance) of them by chance (the m matched pairs left out). The best
alignment must have at least ``min_matches_for_offset`` matches and more than
λ + z·√λ (a Poisson z-score, ``chance_z``). Otherwise the status is
``no_match`` and every event is unmatched.

Trigger indices in the report refer to the caller's ``triggers_us``; exact
duplicate timestamps are collapsed first and represented by their first
occurrence, so ``matched + len(extra_triggers) + duplicate_triggers ==
triggers_total``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
TimesLike = Sequence[int] | npt.NDArray[Any]

METHOD = "offset-vote+monotone-dp"


@dataclass(frozen=True)
class MatchParameters:
    """How far apart the two clocks may be, and how close a match must be."""

    tolerance_ms: float = 50.0
    """Largest |trigger − (expected + offset)| accepted as a match."""
    max_offset_ms: float = 2000.0
    """The constant offset (trigger − expected) is searched in ±this range."""
    min_matches_for_offset: int = 2
    """Matches needed to trust an offset (so one event alone never is)."""
    chance_z: float = 4.0
    """How many Poisson standard deviations the match count must exceed the
    count a random offset would give (see the module docstring)."""
    offset_candidates: int = 5
    """Well separated vote peaks judged by the full matching (aliases of
    periodic stimuli are the reason for more than one)."""
    max_pairs: int = 2_000_000
    """Bound on the (event, trigger) differences used for the vote, which
    bounds memory and time on pathological inputs (a noisy trigger channel)."""
    refine_iterations: int = 3
    """Median refinements of the offset per candidate (it settles in one or
    two on real data)."""

    def __post_init__(self) -> None:
        if not (self.tolerance_ms > 0 and math.isfinite(self.tolerance_ms)):
            raise ValueError("tolerance_ms must be a positive number")
        if not (self.max_offset_ms >= 0 and math.isfinite(self.max_offset_ms)):
            raise ValueError("max_offset_ms must be a non-negative number")
        if not (self.chance_z >= 0 and math.isfinite(self.chance_z)):
            raise ValueError("chance_z must be a non-negative number")
        for name in ("min_matches_for_offset", "offset_candidates", "max_pairs", "refine_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class CorrectionReport:
    """What the matching did, as plain data (``to_dict`` is JSON-ready).

    ``matches`` are (event index, trigger index) into the caller's inputs,
    in time order; ``residuals_ms`` follows the same order and is
    trigger − (expected + offset). ``status`` is ``ok``, ``no_events``,
    ``no_triggers`` or ``no_match`` (no offset with enough matches)."""

    events_total: int
    triggers_total: int
    matched: int
    unmatched_events: list[int]
    extra_triggers: list[int]
    offset_ms: float | None
    residuals_ms: list[float]
    residual_stats: dict[str, float | None]
    tolerance_ms: float
    method: str
    status: str
    matches: list[tuple[int, int]] = field(default_factory=list)
    duplicate_triggers: int = 0
    """Input triggers dropped because an earlier one had the same timestamp."""
    chance_matches: float | None = None
    """Matches a random offset would give (λ); the best offset had to beat it."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["matches"] = [list(pair) for pair in self.matches]
        return data


@dataclass(frozen=True)
class _Alignment:
    """One assignment at one offset, in sorted-event / distinct-trigger indices."""

    offset_us: int
    pairs: list[tuple[int, int]]
    cost_us: int

    def key(self) -> tuple[int, int, int]:
        """Larger is better: more matches, less |residual|, smaller |offset|."""
        return (len(self.pairs), -self.cost_us, -abs(self.offset_us))


# ---------------------------------------------------------------- public API


def match_events(
    expected_us: TimesLike,
    triggers_us: TimesLike,
    params: MatchParameters = MatchParameters(),
) -> tuple[list[int | None], CorrectionReport]:
    """Corrected time (µs, the matched trigger's) per event in input order,
    or None when unmatched, and the report."""
    expected = _as_int64(expected_us, "expected_us")
    raw_triggers = _as_int64(triggers_us, "triggers_us")
    triggers, first_index = np.unique(raw_triggers, return_index=True)
    if expected.size == 0:
        return [], _report(expected, raw_triggers, first_index, None, params, "no_events")
    if triggers.size == 0:
        return [None] * expected.size, _report(expected, raw_triggers, first_index, None, params, "no_triggers")

    order = np.argsort(expected, kind="stable")
    events = expected[order]
    best, total_pairs = _best_alignment(events, triggers, params)
    matched = 0 if best is None else len(best.pairs)
    chance = (total_pairs - matched) * params.tolerance_ms / (params.max_offset_ms + params.tolerance_ms)
    if best is None or not _trustworthy(matched, chance, params):
        report = _report(expected, raw_triggers, first_index, None, params, "no_match")
        report.chance_matches = chance
        return [None] * expected.size, report

    corrected: list[int | None] = [None] * expected.size
    mapped = _Alignment(best.offset_us, [(int(order[i]), j) for i, j in best.pairs], best.cost_us)
    for event, trigger in mapped.pairs:
        corrected[event] = int(triggers[trigger])
    report = _report(expected, raw_triggers, first_index, mapped, params, "ok", triggers)
    report.chance_matches = chance
    return corrected, report


def _trustworthy(matched: int, chance: float, params: MatchParameters) -> bool:
    """Enough matches, and more than a random offset would plausibly give."""
    return matched >= params.min_matches_for_offset and matched > chance + params.chance_z * math.sqrt(chance)


def greedy_baseline(expected_us: Sequence[int | None] | npt.NDArray[Any], triggers_us: TimesLike) -> list[int | None]:
    """The predecessor's greedy walk (spec §5.2 steps 5, 7–9), for comparison.

    Events in expected-time order (None, i.e. no expected time, sorts last as
    a NaN onset does in PostgreSQL); K = min(#events, #triggers); for event i
    the walk starts at the current trigger index and advances while
    |trigger − expected| does not increase (ties advance), up to
    max(index, #triggers − (K − i)) inclusive; a non-increasing result becomes
    last + 1 µs; events beyond K stay None. Returned in input order."""
    values = [None if v is None else int(v) for v in expected_us]
    triggers = np.unique(_as_int64(triggers_us, "triggers_us")).tolist()
    order = sorted(range(len(values)), key=lambda i: (values[i] is None, values[i] or 0))
    result: list[int | None] = [None] * len(values)
    count = min(len(values), len(triggers))
    index = 0
    last: int | None = None
    for i in range(count):
        target = values[order[i]]
        if target is not None:
            index = _greedy_walk(triggers, target, index, max(index, len(triggers) - (count - i)))
        chosen = triggers[index]
        index = min(index + 1, len(triggers))
        if last is not None and chosen <= last:
            chosen = last + 1
        result[order[i]] = last = chosen
    return result


def _greedy_walk(triggers: list[int], target: int, start: int, stop: int) -> int:
    best, best_diff = start, abs(triggers[start] - target)
    for cursor in range(start + 1, stop + 1):
        diff = abs(triggers[cursor] - target)
        if diff > best_diff:
            break
        best, best_diff = cursor, diff
    return best


# ------------------------------------------------------------ offset search


def _best_alignment(
    events: Int64Array, triggers: Int64Array, params: MatchParameters
) -> tuple[_Alignment | None, int]:
    """The best refined alignment over the vote's candidate offsets, and the
    number of (event, trigger) pairs within reach of the offset search."""
    tolerance_us = params.tolerance_ms * 1000.0
    candidates, total_pairs = _vote_offsets(events, triggers, params)
    bounded = sorted(((_coverage_bound(events, triggers, c, tolerance_us), c) for c in candidates), key=lambda x: -x[0])
    best: _Alignment | None = None
    for bound, offset in bounded:
        if best is not None and bound < len(best.pairs):
            break  # sorted by bound: no later candidate can match more
        alignment = _refined_alignment(events, triggers, offset, tolerance_us, params.refine_iterations)
        if best is None or alignment.key() > best.key():
            best = alignment
    return best, total_pairs


def _vote_offsets(events: Int64Array, triggers: Int64Array, params: MatchParameters) -> tuple[list[int], int]:
    """Up to ``offset_candidates`` offsets (µs) where most pairwise
    differences agree within the tolerance, strongest first, separated by
    more than two tolerances; and how many pairs are within reach."""
    tolerance_us = params.tolerance_ms * 1000.0
    limit_us = params.max_offset_ms * 1000.0
    reach_us = limit_us + tolerance_us
    lo = np.searchsorted(triggers, events - reach_us, side="left")
    hi = np.searchsorted(triggers, events + reach_us, side="right")
    diffs = np.sort(_pair_differences(events, triggers, lo, hi, params.max_pairs))
    if diffs.size == 0:
        return [], 0
    starts = np.minimum(diffs, limit_us - tolerance_us).astype(np.float64)
    first = np.searchsorted(diffs, starts, side="left")
    last = np.searchsorted(diffs, starts + 2.0 * tolerance_us, side="right")
    votes = (last - first).astype(np.int64)
    centres = starts + tolerance_us
    chosen: list[int] = []
    for _ in range(params.offset_candidates):
        peak = int(np.argmax(votes))
        if votes[peak] <= 0:
            break
        window = diffs[first[peak] : last[peak]]
        chosen.append(int(np.rint(np.median(window))))
        votes[np.abs(centres - chosen[-1]) <= 2.0 * tolerance_us] = -1
    return chosen, int((hi - lo).sum())


def _pair_differences(
    events: Int64Array, triggers: Int64Array, lo: Int64Array, hi: Int64Array, max_pairs: int
) -> Int64Array:
    """trigger − event for every pair in the per-event trigger ranges
    [lo, hi), over an evenly spaced subset of events when all of them would
    give more than ``max_pairs`` (bounded by max(max_pairs, pairs of one
    event))."""
    stride = 1
    while stride < events.size and int((hi[::stride] - lo[::stride]).sum()) > max_pairs:
        stride *= 2
    lo, hi, subset = lo[::stride], hi[::stride], events[::stride]
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # Trigger index of every pair: each event's range lo..hi-1, concatenated.
    starts_in_output = np.cumsum(counts) - counts
    trigger_index = np.arange(total) - np.repeat(starts_in_output - lo, counts)
    return triggers[trigger_index] - np.repeat(subset, counts)


def _coverage_bound(events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float) -> int:
    """An upper bound on the matching size at ``offset_us``: no more events
    than have a trigger within tolerance, and no more triggers than have an
    event within tolerance, can be matched."""
    lo, hi = _candidate_ranges(events, triggers, offset_us, tolerance_us)
    shifted = events + offset_us
    elo = np.searchsorted(shifted, np.ceil(triggers - tolerance_us), side="left")
    ehi = np.searchsorted(shifted, np.floor(triggers + tolerance_us), side="right")
    return int(min(np.count_nonzero(hi > lo), np.count_nonzero(ehi > elo)))


# --------------------------------------------------------------- assignment


def _refined_alignment(
    events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float, iterations: int
) -> _Alignment:
    """Align at ``offset_us``, move the offset to the median matched
    difference and align again, until the offset stops moving."""
    alignment = _align(events, triggers, offset_us, tolerance_us)
    for _ in range(iterations):
        if not alignment.pairs:
            break
        ev, tr = (np.fromiter(side, dtype=np.int64) for side in zip(*alignment.pairs, strict=True))
        median = int(np.rint(np.median(triggers[tr] - events[ev])))
        if median == alignment.offset_us:
            break
        candidate = _align(events, triggers, median, tolerance_us)
        if candidate.key() < alignment.key():
            break  # the median moved off a better optimum: keep the better one
        alignment = candidate
    return alignment


def _candidate_ranges(
    events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float
) -> tuple[Int64Array, Int64Array]:
    """Per event, the trigger index range [lo, hi) within tolerance. Both
    bounds are non-decreasing because events are sorted: the DP relies on it."""
    shifted = events + offset_us
    lo = np.searchsorted(triggers, np.ceil(shifted - tolerance_us), side="left")
    hi = np.searchsorted(triggers, np.floor(shifted + tolerance_us), side="right")
    return lo, hi


def _align(events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float) -> _Alignment:
    """Maximum monotone one-to-one matching within tolerance, least total
    |residual| among those (sparse DP over candidate pairs).

    A chain is a partial matching; its score is ``matches·scale − cost`` with
    ``scale`` above any possible total cost, so comparing scores compares
    (matches, −cost) lexicographically. ``open_chains[j]`` is the best chain
    whose last trigger is j, for j in the current window; chains whose last
    trigger falls below the window can precede every later candidate, so they
    fold into the single best ``closed`` chain."""
    lo_arr, hi_arr = _candidate_ranges(events, triggers, offset_us, tolerance_us)
    ev, tr, lo, hi = events.tolist(), triggers.tolist(), lo_arr.tolist(), hi_arr.tolist()
    scale = int(len(ev) * tolerance_us) + 1
    # Chain nodes: (score, event, trigger, parent node or -1).
    nodes: list[tuple[int, int, int, int]] = []
    closed_score, closed_node = 0, -1
    open_chains: dict[int, int] = {}
    for i, (first, stop) in enumerate(zip(lo, hi, strict=True)):
        if first == stop:
            continue
        for j in [j for j in open_chains if j < first]:
            node = open_chains.pop(j)
            if nodes[node][0] > closed_score:
                closed_score, closed_node = nodes[node][0], node
        best_score, best_node = closed_score, closed_node
        extended: list[tuple[int, int, int]] = []
        for j in range(first, stop):
            before = open_chains.get(j - 1)
            if before is not None and nodes[before][0] > best_score:
                best_score, best_node = nodes[before][0], before
            extended.append((j, best_score + scale - abs(tr[j] - ev[i] - offset_us), best_node))
        for j, score, parent in extended:
            current = open_chains.get(j)
            if current is None or score > nodes[current][0]:
                open_chains[j] = len(nodes)
                nodes.append((score, i, j, parent))
    end_score, end_node = closed_score, closed_node
    for node in open_chains.values():
        if nodes[node][0] > end_score:
            end_score, end_node = nodes[node][0], node
    pairs: list[tuple[int, int]] = []
    while end_node >= 0:
        _, i, j, end_node = nodes[end_node]
        pairs.append((i, j))
    pairs.reverse()
    return _Alignment(offset_us, pairs, len(pairs) * scale - end_score)


# ------------------------------------------------------------------ helpers


def _as_int64(values: TimesLike, name: str) -> Int64Array:
    """Times as a 1-D int64 array; floats are accepted when finite (rounded)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains non-finite values")
        return np.rint(array).astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers (µs), got {array.dtype}")
    return array.astype(np.int64)


def _report(
    expected: Int64Array,
    raw_triggers: Int64Array,
    first_index: npt.NDArray[np.intp],
    alignment: _Alignment | None,
    params: MatchParameters,
    status: str,
    triggers: Int64Array | None = None,
) -> CorrectionReport:
    """The report for ``alignment`` (event indices already in input order,
    trigger indices into the distinct sorted triggers)."""
    pairs = alignment.pairs if alignment is not None else []
    matches = [(event, int(first_index[trigger])) for event, trigger in pairs]
    residuals: list[float] = []
    if alignment is not None and triggers is not None:
        residuals = [
            (int(triggers[trigger]) - int(expected[event]) - alignment.offset_us) / 1000.0 for event, trigger in pairs
        ]
    matched_events = {event for event, _ in matches}
    used_triggers = {trigger for _, trigger in matches}
    return CorrectionReport(
        events_total=int(expected.size),
        triggers_total=int(raw_triggers.size),
        matched=len(matches),
        unmatched_events=[i for i in range(expected.size) if i not in matched_events],
        extra_triggers=sorted(int(i) for i in first_index if int(i) not in used_triggers),
        offset_ms=None if alignment is None else alignment.offset_us / 1000.0,
        residuals_ms=residuals,
        residual_stats=_residual_stats(residuals),
        tolerance_ms=params.tolerance_ms,
        method=METHOD,
        status=status,
        matches=matches,
        duplicate_triggers=int(raw_triggers.size - first_index.size),
    )


def _residual_stats(residuals_ms: list[float]) -> dict[str, float | None]:
    if not residuals_ms:
        return {"mean": None, "median": None, "max_abs": None, "std": None}
    values = np.asarray(residuals_ms, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max_abs": float(np.abs(values).max()),
        "std": float(values.std()),
    }
