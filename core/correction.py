"""Matching logged events to trigger rising edges (pure: numpy only, no I/O).

The phone logs each event with an onset in seconds from the session start on
its own stopwatch, so the expected absolute time of event ``i`` is
``session_start_us + round(onset_s·1e6)``. The trigger channel of the EEG
stream gives the true stimulus times. Between the two clocks there is an
unknown, roughly constant offset (tens to hundreds of ms, up to a couple of
seconds) plus a few ms of jitter; some triggers are missing, some pulses are
spurious, some events have no trigger at all.

The predecessor (spec §5.2 step 9, weakness §8 item 14) walked both lists
greedily: for each event it took the trigger nearest the *uncorrected*
expected time, never going back and never skipping an event. One missing
trigger therefore shifts every later event onto its neighbour's trigger; an
offset larger than the event spacing, or a spurious pulse nearer the
uncorrected time than the true one, sends events to the wrong trigger; and it
never says which events it could not match.

This module works in three steps.

1. **Candidate offsets by voting.** Every (event, trigger) pair whose
   difference lies within ``max_offset + tolerance`` votes for that
   difference. The true offset is where many votes agree: a window of width
   ``2·tolerance`` slid over the sorted differences counts them in
   O(P log P) for P pairs, whatever the drops and extra pulses, which only add
   scattered votes. Pairs come from a ``searchsorted`` range per event, so P
   is about E × (triggers within ``max_offset`` of an event), not E × T; over
   ``max_pairs`` an evenly spaced subset of events votes (the offset is
   constant, so a subset estimates it as well). Periodic or fast stimuli make
   aliases (offset ± one inter-stimulus interval) that collect almost as many
   votes, so the vote only proposes a few well separated candidates.
2. **Choosing among candidates by precise matches.** Each candidate is
   settled on its events' nearest triggers (offset += their median residual,
   until it stops moving). True matches are many *and precise* (residuals of
   a few ms); alias matches are spread over the tolerance when the stimulus
   spacing varies. So candidates are ranked by the number of matches within a
   shared precision radius, three times the residual spread (90th percentile
   of |residual|, at least 1 ms) of the most precise candidate with at least
   half the matches of the best, then by total |residual|, then by smaller
   |offset| (the clocks are meant to agree). A plain count within the
   tolerance lets an alias win as soon as the tolerance is a sizeable part of
   the stimulus spacing (fast paradigms); a pure precision score cannot tell
   the true offset from an alias of exactly periodic stimuli, where only the
   count differs (by the events at the ends). A shared radius that holds all
   true residuals keeps the count decisive there and precision decisive in
   the first case.
3. **Optimal monotone one-to-one assignment** at the chosen offset. Each
   event may take any trigger within ``tolerance``; a sparse dynamic
   programme (sequence alignment restricted to those candidates) finds the
   matching with the most matches and, among equals, the least total
   |residual|; order is preserved and no trigger is used twice, by
   construction. Because the candidate ranges of successive events only move
   forward, it keeps just the chains ending in the current window of
   triggers: O(E·k) for k candidates per event, no E × T matrix. The offset
   is then moved to the median of the matched differences (robust to the odd
   spurious match) and the assignment redone, until it no longer changes.

The result is trusted only when its matches stand out from chance. With many
events, any offset in a ±2 s range lines up some events with some triggers
within ±50 ms (about 10 % of them at a 1 s spacing), so a count threshold
alone would accept a wrong offset whenever the true one is out of range or
the trigger channel carries only noise, and write wrong onsets. So, with r
the residual spread of the final matches and k the matches within ±r:

- chance would put λ·r/tolerance pairs there, λ being what a
  ``2·tolerance`` window collects near that offset: the density of the
  vote's differences within ten tolerances of it, leaving out
  ``offset ± 2·tolerance``, plus one pair so that an empty neighbourhood is
  not taken as proof of no chance (the density follows the distribution of
  event spacings, so it is measured locally);
- the evidence is the Poisson log-likelihood ratio of k against that, less
  the log of the number of ±r windows in the search range (the best of many
  windows is a maximum: the look-elsewhere effect), as a signed root
  (≈ standard deviations; unlike a z-score it stays honest for small
  counts);
- it must reach ``min_evidence_z`` (4), and there must be at least
  ``min_matches_for_offset`` matches. Otherwise the status is ``no_match``
  and every event is unmatched: a wrong correction is worse than none.

In practice five to seven matched events are needed at the defaults; on
synthetic sessions a noise-only trigger channel, or a true offset beyond
``max_offset``, then passes in about 1 % of sessions or fewer (more with
quasi-periodic stimuli, below).

Trigger indices in the report refer to the caller's ``triggers_us``; exact
duplicate timestamps are collapsed first and represented by their first
occurrence, so ``matched + len(extra_triggers) + duplicate_triggers ==
triggers_total``.

Known limit: with quasi-periodic stimuli, a true offset beyond
``max_offset`` can be replaced by an alias inside it (one stimulus spacing
off); its residuals then spread as widely as the spacing varies, which
``residual_stats`` shows.
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

METHOD = "offset-vote+evidence+monotone-dp"
RESOLUTION_US = 1000.0
"""Residual spreads below this are not credited as extra precision."""
PRECISION_MARGIN = 3.0
"""The shared precision radius, in residual spreads of the most precise
candidate: wide enough to hold all its true residuals."""
BACKGROUND_TOLERANCES = 10.0
"""Half-width, in tolerances, of the neighbourhood whose pair density is the
chance level at an offset."""


@dataclass(frozen=True)
class MatchParameters:
    """How far apart the two clocks may be, how close a match must be, and
    how much evidence an offset needs."""

    tolerance_ms: float = 50.0
    """Largest |trigger − (expected + offset)| accepted as a match."""
    max_offset_ms: float = 2000.0
    """The constant offset (trigger − expected) is searched in ±this range."""
    min_matches_for_offset: int = 2
    """Matches needed to trust an offset (so one event alone never is)."""
    min_evidence_z: float = 4.0
    """How far (signed-root likelihood ratio, ≈ standard deviations) the
    matches must exceed what a random offset gives (module docstring)."""
    offset_candidates: int = 5
    """Well separated vote peaks judged on their precise matches (aliases of
    periodic stimuli are the reason for more than one)."""
    max_pairs: int = 2_000_000
    """Bound on the (event, trigger) differences used for the vote, which
    bounds memory and time on pathological inputs (a noisy trigger channel)."""
    refine_iterations: int = 3
    """Median refinements of an offset (it settles in one or two)."""

    def __post_init__(self) -> None:
        if not (self.tolerance_ms > 0 and math.isfinite(self.tolerance_ms)):
            raise ValueError("tolerance_ms must be a positive number")
        if not (self.max_offset_ms >= 0 and math.isfinite(self.max_offset_ms)):
            raise ValueError("max_offset_ms must be a non-negative number")
        if not (self.min_evidence_z >= 0 and math.isfinite(self.min_evidence_z)):
            raise ValueError("min_evidence_z must be a non-negative number")
        for name in ("min_matches_for_offset", "offset_candidates", "max_pairs", "refine_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class CorrectionReport:
    """What the matching did, as plain data (``to_dict`` is JSON-ready).

    ``matches`` are (event index, trigger index) into the caller's inputs,
    in time order; ``residuals_ms`` follows the same order and is
    trigger − (expected + offset). ``status`` is ``ok``, ``no_events``,
    ``no_triggers`` or ``no_match`` (no offset with enough evidence)."""

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
    """Matches a random offset would put within the residual spread of the
    best offset found (λ·r/tolerance in the module docstring)."""
    evidence_z: float | None = None
    """The best offset's evidence against chance; ``no_match`` when below
    ``min_evidence_z``."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["matches"] = [list(pair) for pair in self.matches]
        return data


@dataclass(frozen=True)
class _Alignment:
    """One assignment at one offset (sorted-event, distinct-trigger indices)."""

    offset_us: int
    pairs: list[tuple[int, int]]
    cost_us: int

    def key(self) -> tuple[int, int, int]:
        """Larger is better: more matches, less |residual|, smaller |offset|."""
        return (len(self.pairs), -self.cost_us, -abs(self.offset_us))

    def abs_residuals_us(self, events: Int64Array, triggers: Int64Array) -> Int64Array:
        if not self.pairs:
            return np.zeros(0, dtype=np.int64)
        ev, tr = (np.fromiter(side, dtype=np.int64) for side in zip(*self.pairs, strict=True))
        return np.abs(triggers[tr] - events[ev] - self.offset_us)


@dataclass(frozen=True)
class _Evidence:
    precise: int
    """Matches within the residual spread r."""
    chance: float
    """What a random offset would put within ±r."""
    z: float
    """Signed root of the Poisson likelihood ratio of ``precise`` vs ``chance``."""


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
    alignment, evidence = _best_alignment(events, triggers, params)
    corrected: list[int | None] = [None] * expected.size
    if alignment is None or not _trusted(alignment, evidence, params):
        report = _report(expected, raw_triggers, first_index, None, params, "no_match")
    else:
        mapped = _Alignment(alignment.offset_us, [(int(order[i]), j) for i, j in alignment.pairs], alignment.cost_us)
        for event, trigger in mapped.pairs:
            corrected[event] = int(triggers[trigger])
        report = _report(expected, raw_triggers, first_index, mapped, params, "ok", triggers)
    report.chance_matches = evidence.chance
    report.evidence_z = evidence.z
    return corrected, report


def _trusted(alignment: _Alignment, evidence: _Evidence, params: MatchParameters) -> bool:
    return len(alignment.pairs) >= params.min_matches_for_offset and evidence.z >= params.min_evidence_z


def greedy_baseline(expected_us: Sequence[int | None] | npt.NDArray[Any], triggers_us: TimesLike) -> list[int | None]:
    """The predecessor's greedy walk (spec §5.2 steps 5, 7–9), for comparison.

    Triggers sorted with exact duplicates removed; events in expected-time
    order (None, i.e. no expected time, sorts last as a NaN onset does in
    PostgreSQL); K = min(#events, #triggers); for event i the walk starts at
    the current trigger index and advances while |trigger − expected| does
    not increase (ties advance), up to max(index, #triggers − (K − i))
    inclusive; a non-increasing result becomes last + 1 µs; events beyond K
    stay None. Returned in input order."""
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


@dataclass(frozen=True)
class _Vote:
    """The sorted pairwise differences (µs) of the offset vote, each standing
    for ``weight`` pairs (more than one when only a subset of events voted),
    and the candidate offsets they propose."""

    diffs: Int64Array
    weight: float
    reach_us: float
    candidates: list[int]


def _best_alignment(
    events: Int64Array, triggers: Int64Array, params: MatchParameters
) -> tuple[_Alignment | None, _Evidence]:
    """The assignment at the best candidate offset, and its evidence."""
    tolerance_us = params.tolerance_ms * 1000.0
    vote = _vote_offsets(events, triggers, params)
    if not vote.candidates:
        return None, _Evidence(0, 0.0, 0.0)
    offset = _choose_offset(events, triggers, vote.candidates, tolerance_us, params.refine_iterations)
    alignment = _refined_alignment(events, triggers, offset, tolerance_us, params.refine_iterations)
    chance = _chance_pairs(vote, alignment.offset_us, tolerance_us)
    return alignment, _evidence(alignment.abs_residuals_us(events, triggers), chance, tolerance_us, vote.reach_us)


def _choose_offset(
    events: Int64Array, triggers: Int64Array, candidates: list[int], tolerance_us: float, iterations: int
) -> int:
    """The settled candidate with the most matches within the shared
    precision radius (module docstring, step 2)."""
    settled = [_settle_offset(events, triggers, c, tolerance_us, iterations) for c in candidates]
    most = max(residuals.size for _, residuals in settled)
    sharpest = min(_spread(residuals, tolerance_us) for _, residuals in settled if 2 * residuals.size >= most)
    radius = min(tolerance_us, PRECISION_MARGIN * sharpest)

    def rank(item: tuple[int, Int64Array]) -> tuple[int, int, int]:
        offset, residuals = item
        inside = residuals[residuals <= radius]
        return (inside.size, -int(inside.sum()), -abs(offset))

    return max(settled, key=rank)[0]


def _vote_offsets(events: Int64Array, triggers: Int64Array, params: MatchParameters) -> _Vote:
    """Up to ``offset_candidates`` offsets (µs) where most pairwise
    differences agree within the tolerance, strongest first, separated by
    more than two tolerances."""
    tolerance_us = params.tolerance_ms * 1000.0
    limit_us = params.max_offset_ms * 1000.0
    reach_us = limit_us + tolerance_us
    lo = np.searchsorted(triggers, events - reach_us, side="left")
    hi = np.searchsorted(triggers, events + reach_us, side="right")
    diffs = np.sort(_pair_differences(events, triggers, lo, hi, params.max_pairs))
    if diffs.size == 0:
        return _Vote(diffs, 1.0, reach_us, [])
    # Windows [start, start + 2·tolerance] starting at each difference, kept
    # inside the range so that their centre is a permitted offset.
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
        chosen.append(int(np.rint(np.median(diffs[first[peak] : last[peak]]))))
        votes[np.abs(centres - chosen[-1]) <= 2.0 * tolerance_us] = -1
    return _Vote(diffs, int((hi - lo).sum()) / diffs.size, reach_us, chosen)


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


def _chance_pairs(vote: _Vote, offset_us: int, tolerance_us: float) -> float:
    """Pairs a ``2·tolerance`` window collects by chance near ``offset_us``.

    The density of differences is not flat over the search range (it follows
    the distribution of event spacings), so it is measured locally: in
    ``offset ± BACKGROUND_TOLERANCES·tolerance`` leaving out the peak zone
    ``offset ± 2·tolerance``. One pair is added to what is found there, so an
    empty neighbourhood (few events) is not taken as proof of no chance."""
    near_low = max(offset_us - BACKGROUND_TOLERANCES * tolerance_us, -vote.reach_us)
    near_high = min(offset_us + BACKGROUND_TOLERANCES * tolerance_us, vote.reach_us)
    peak_low = max(offset_us - 2.0 * tolerance_us, near_low)
    peak_high = min(offset_us + 2.0 * tolerance_us, near_high)
    peak_width = max(peak_high - peak_low, 0.0)
    around = _count_between(vote.diffs, near_low, near_high)
    if peak_width > 0:
        around -= _count_between(vote.diffs, peak_low, peak_high)
    measure = max(near_high - near_low - peak_width, 2.0 * tolerance_us)
    return (around * vote.weight + 1.0) * 2.0 * tolerance_us / measure


def _count_between(sorted_values: Int64Array, low: float, high: float) -> int:
    return int(np.searchsorted(sorted_values, high, side="right") - np.searchsorted(sorted_values, low, side="left"))


def _settle_offset(
    events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float, iterations: int
) -> tuple[int, Int64Array]:
    """Move ``offset_us`` to the median residual of the events' nearest
    triggers within tolerance until it stops moving (cheap and vectorised:
    one-to-one does not matter for locating a mode); the offset and those
    |residuals|."""
    residuals = _nearest_residuals(events, triggers, offset_us, tolerance_us)
    for _ in range(iterations):
        if residuals.size == 0:
            break
        shift = int(np.rint(np.median(residuals)))
        if shift == 0:
            break
        offset_us += shift
        residuals = _nearest_residuals(events, triggers, offset_us, tolerance_us)
    return offset_us, np.abs(residuals)


def _nearest_residuals(events: Int64Array, triggers: Int64Array, offset_us: int, tolerance_us: float) -> Int64Array:
    """Signed residual to the nearest trigger of each event that has one
    within tolerance."""
    shifted = events + offset_us
    right = np.clip(np.searchsorted(triggers, shifted), 0, triggers.size - 1)
    left = np.clip(right - 1, 0, triggers.size - 1)
    to_right, to_left = triggers[right] - shifted, triggers[left] - shifted
    nearest = np.where(np.abs(to_right) < np.abs(to_left), to_right, to_left)
    return nearest[np.abs(nearest) <= tolerance_us]


def _spread(abs_residuals_us: Int64Array, tolerance_us: float) -> float:
    """The 90th percentile of |residual| (robust to a few spurious matches),
    at least the resolution."""
    floor = min(RESOLUTION_US, tolerance_us)
    return max(float(np.quantile(abs_residuals_us, 0.9)), floor) if abs_residuals_us.size else tolerance_us


def _evidence(abs_residuals_us: Int64Array, chance_pairs: float, tolerance_us: float, reach_us: float) -> _Evidence:
    """How far matches exceed chance: k matches within r (their spread)
    against λ·r/tolerance, as the signed root of the Poisson likelihood
    ratio, less the log of the number of ±r windows the search looked at
    (the look-elsewhere effect: the best of many windows is a maximum)."""
    if abs_residuals_us.size == 0:
        return _Evidence(0, chance_pairs, 0.0)
    spread = _spread(abs_residuals_us, tolerance_us)
    precise = int(np.count_nonzero(abs_residuals_us <= spread))
    chance = chance_pairs * spread / tolerance_us
    if precise <= chance:
        return _Evidence(precise, chance, 0.0)
    log_ratio = precise * math.log(precise / chance) - (precise - chance)
    log_ratio -= math.log(max(reach_us / spread, 1.0))
    return _Evidence(precise, chance, math.sqrt(2.0 * max(log_ratio, 0.0)))


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
    trigger indices into the distinct sorted ``triggers``)."""
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
