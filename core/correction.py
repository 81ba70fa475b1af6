"""Matching logged events to trigger rising edges (pure: numpy only, no I/O).

The phone logs each event with an onset in seconds on its own stopwatch, so
the expected absolute time of event ``i`` is ``session_start_us +
round(onset_s·1e6)``. The trigger channel of the EEG stream gives the true
stimulus times. Between the two there is an unknown constant offset plus a
few ms of jitter; some triggers are missing, some pulses are spurious, some
events have no trigger at all.

The offset can be large. The mobile app starts its stopwatch when the
participant presses "start presentation", after the stimulus images were
downloaded: seconds to minutes after the session start. So the offset is
searched over everything the session allows (``offset_range_ms``; the job
passes :func:`session_offset_range_ms`: from a little before the session
start to its end), not a few seconds around zero.

Trigger codes. Where the event log gives each event a code (its ``value``, or
a code derived from its ``trial_type``: :func:`event_code`) and the trigger
line carries codes (its pulses take at least two different values; a line
whose pulses all have one value is a plain 0/1 line, unless the caller
knows the line carries codes: ``line_has_codes``), an event matches only a
trigger of its own code; an event without a code matches any trigger.
Otherwise codes are ignored. Codes remove most aliases of periodic
schedules: one stimulus spacing off, most events face a trigger of another
class.

The predecessor (spec §5.2 step 9, weakness §8 item 14) walked both lists
greedily: for each event it took the trigger nearest the *uncorrected*
expected time, never going back and never skipping an event. One missing
trigger therefore shifts every later event onto its neighbour's trigger; an
offset larger than the event spacing, or a spurious pulse nearer the
uncorrected time than the true one, sends events to the wrong trigger; and it
never says which events it could not match.

This module works in four steps.

1. **Candidate offsets by voting.** Every code-compatible (event, trigger)
   pair votes for its difference. Events and triggers are binned at half the
   tolerance and the pair counts for every lag come from one FFT
   cross-correlation (summed over codes): work O(B log B) and memory O(B) for
   B bins over the session (at most ``max_bins``; longer sessions get wider
   bins), whatever the number of pulses: a noisy trigger channel costs no
   more than a clean one. A window of about ``2·tolerance`` slid over the
   lags counts the pairs near each offset; the true offset is where many
   agree. Periodic or fast stimuli make aliases (offset ± one stimulus
   spacing) that collect almost as many votes, so the vote only proposes
   ``offset_candidates`` well separated candidates (more when more peaks are
   nearly as strong; and the best one's neighbours one to three event
   spacings away are judged too: :func:`_judge_candidates`).
2. **Judging every candidate by precise matches.** Each candidate is settled
   on its events' nearest compatible triggers (offset += their median
   residual, until it stops moving) and aligned (step 4). True matches are
   many *and precise* (residuals of a few ms); alias matches are spread over
   the tolerance when the stimulus spacing varies. So candidates are ranked
   by the number of matches within a shared precision radius, three times
   the residual spread (90th percentile of |residual|, at least 1 ms) of the
   most precise candidate with at least half the matches of the best, then
   by total |residual|, then by smaller |offset|.
3. **Aliases are reported, not chosen.** The runner-up is the best candidate
   more than two tolerances from the winner. With exactly periodic stimuli
   and no codes, an alias one spacing off matches every event but one (the
   one at the end); missing triggers at the ends make it tie. The winner is
   taken only when its lead of m precise matches is decisive: chance pulses
   (the unmatched triggers' rate, plus one) would give the runner-up m more
   matches within the precision radius with probability below ``alias_p``,
   and the runner-up does not have more matches within the tolerance (unless
   it has at most half the winner's precise ones).
   Otherwise the status is ``ambiguous``: both candidates with their counts
   are in the report and no onset is corrected.
4. **Optimal monotone one-to-one assignment** at an offset. Each event may
   take any compatible trigger within ``tolerance``; a sparse dynamic
   programme (sequence alignment restricted to those candidates) finds the
   matching with the most matches and, among equals, the least total
   |residual|; order is preserved and no trigger is used twice, by
   construction. Because the candidate ranges of successive events only move
   forward, it keeps just the chains ending in the current window of
   triggers: O(E·k) for k candidates per event, no E × T matrix. The offset
   is then moved to the median of the matched differences and the assignment
   redone, until it no longer changes.

Evidence. The result is trusted only when its matches stand out from chance
(``evidence: "statistical"``). Any offset lines up some events with some
triggers by chance, so, with r the residual spread of the final matches and k
the matches within ±r:

- chance would put λ·r/tolerance pairs there, λ being what a
  ``2·tolerance`` window collects near that offset: the vote's pair density
  within ten tolerances of it, leaving out ``offset ± 2·tolerance``, plus
  one pair so that an empty neighbourhood is not taken as proof of no chance;
- the evidence is the Poisson log-likelihood ratio of k against that, less
  the log of the number of ±r windows in the searched range (the
  look-elsewhere effect), as a signed root (≈ standard deviations);
- it must reach ``min_evidence_z`` (4), with at least
  ``min_matches_for_offset`` matches.

A significant linear clock drift between the stopwatch and the trigger
times is fitted on the matches and followed (:func:`_fit_drift`).

In practice five to seven matched events are needed. The final assignment
then accepts residuals up to three residual spreads (at least half the
tolerance, at most all of it): a spurious pulse in a lost trigger's place
farther than the true triggers ever are is not taken. Fewer events are
corrected only on a one-to-one correspondence (``evidence: "one-to-one"``):
as many triggers in the searched range as events, the k-th event with the
k-th trigger of the same code, every interval between consecutive events
equal to the one between their triggers within the tolerance, and every
residual about the median within the tolerance. Every trigger is then
explained by exactly one event and no other offset explains as much. One
event facing several triggers (of its code or not) is not one-to-one. A
session that is neither is ``no_match`` with a ``reason``, and every event
is unmatched: a wrong correction is worse than none.

Trigger indices in the report refer to the caller's ``triggers_us``; exact
duplicate timestamps are collapsed first and represented by their first
occurrence, so ``matched + len(extra_triggers) + duplicate_triggers ==
triggers_total``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
TimesLike = Sequence[int] | npt.NDArray[Any]
CodesLike = Sequence[int | None] | npt.NDArray[Any]

METHOD = "offset-vote+evidence+monotone-dp"
RESOLUTION_US = 1000.0
"""Residual spreads below this are not credited as extra precision."""
PRECISION_MARGIN = 3.0
"""The shared precision radius, in residual spreads of the most precise
candidate: wide enough to hold all its true residuals."""
BACKGROUND_TOLERANCES = 10.0
"""Half-width, in tolerances, of the neighbourhood whose pair density is the
chance level at an offset."""
ALIAS_SHARE = 0.8
"""Vote peaks with at least this share of the strongest one's votes are all
judged: a periodic schedule's aliases collect nearly the truth's votes, and
drift smears them all alike, so the truth need not be among the first
eight (700 periodic events at 100 ppm: it was not, and the best alias was
taken)."""
NO_CODE = -1
"""An event (or a plain trigger line) without a code: compatible with any."""
MAX_CODE = 2**31 - 1
"""The largest code: no trigger line carries more (a larger ``value`` is not
a code; as one it would not fit the matching's 64-bit arrays)."""
APP_TRIAL_TYPE_CODES = (("non", "target", 2), ("", "target", 1), ("", "neutral", 3))
"""The mobile app's trigger code per stimulus class (``_triggerCodeForStimulus``
in its presentation screen): a trial type containing "non" and "target" is 2,
else one containing "target" is 1, else one containing "neutral" is 3."""


@dataclass(frozen=True)
class MatchParameters:
    """How far apart the two clocks may be, how close a match must be, and
    how much evidence an offset needs."""

    tolerance_ms: float = 50.0
    """Largest |trigger − (expected + offset)| accepted as a match."""
    max_offset_ms: float = 2000.0
    """Without an explicit ``offset_range_ms``, the constant offset
    (trigger − expected) is searched in ±this range; it is also the margin
    of :func:`session_offset_range_ms` around the session."""
    min_matches_for_offset: int = 2
    """Matches needed to trust an offset on statistical evidence."""
    min_evidence_z: float = 4.0
    """How far (signed-root likelihood ratio, ≈ standard deviations) the
    matches must exceed what a random offset gives (module docstring)."""
    offset_candidates: int = 8
    """Well separated vote peaks judged on their precise matches (aliases of
    periodic stimuli are the reason for more than one); more when more peaks
    are nearly as strong as the strongest (``ALIAS_SHARE``), up to
    ``max_candidates``."""
    max_candidates: int = 64
    """Bound on the vote peaks judged when many are nearly equal."""
    max_bins: int = 1 << 21
    """Bound on the bins of the offset vote (its memory and FFT length); a
    session longer than ``max_bins × tolerance / 4`` gets wider bins."""
    refine_iterations: int = 3
    """Median refinements of an offset (it settles in one or two)."""
    alias_p: float = 0.01
    """The winner's lead over the runner-up is decisive when chance pulses
    would produce it with a probability below this (module docstring)."""

    def __post_init__(self) -> None:
        if not (self.tolerance_ms > 0 and math.isfinite(self.tolerance_ms)):
            raise ValueError("tolerance_ms must be a positive number")
        if not (self.max_offset_ms >= 0 and math.isfinite(self.max_offset_ms)):
            raise ValueError("max_offset_ms must be a non-negative number")
        if not (self.min_evidence_z >= 0 and math.isfinite(self.min_evidence_z)):
            raise ValueError("min_evidence_z must be a non-negative number")
        if not (0 < self.alias_p < 1):
            raise ValueError("alias_p must be between 0 and 1")
        for name in ("min_matches_for_offset", "offset_candidates", "max_candidates", "refine_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_bins < 1024:
            raise ValueError("max_bins must be at least 1024")


@dataclass
class CorrectionReport:
    """What the matching did, as plain data (``to_dict`` is JSON-ready).

    ``matches`` are (event index, trigger index) into the caller's inputs,
    in time order; ``residuals_ms`` follows the same order and is
    trigger − (expected + offset). ``status`` is ``ok``, ``no_events``,
    ``no_triggers``, ``no_match`` (no offset with enough evidence and no
    one-to-one correspondence; ``reason`` says why) or ``ambiguous`` (two
    clearly different offsets explain the data about equally well; both are
    in ``candidates``, nothing is corrected)."""

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
    """The best offset's evidence against chance (statistical evidence needs
    ``min_evidence_z``)."""
    evidence: str | None = None
    """Why an ``ok`` result is trusted: ``statistical`` or ``one-to-one``."""
    reason: str | None = None
    """Why nothing was corrected (``no_match``, ``ambiguous``)."""
    searched_offset_ms: list[float] = field(default_factory=list)
    """[lowest, highest] offset searched."""
    runner_up: dict[str, Any] | None = None
    """The best candidate clearly apart from the chosen (or first) one:
    ``offset_ms``, ``matched``, ``precise_matches``."""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """When ``ambiguous``: the two offsets that could not be told apart."""
    precision_radius_ms: float | None = None
    """The radius within which candidates' matches were counted."""
    match_radius_ms: float | None = None
    """The largest residual the final (statistical) assignment accepted:
    three residual spreads of the session, within half the tolerance and
    the tolerance."""
    codes_used: bool = False
    """Whether matching required equal codes (both sides had codes)."""
    code_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per code (``"none"``: events without one): events, triggers, matched."""
    drift_ppm: float | None = None
    """A clock drift fitted and followed (trigger clock fast: positive), in
    parts per million; ``offset_ms`` then holds at the first event and the
    residuals are about the drifting line."""
    event_details: list[dict[str, Any]] = field(default_factory=list)
    """Per event in input order: ``code``, ``trigger`` (index into the
    caller's triggers, or None), ``trigger_code``, ``residual_ms``."""

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
    radius_us: float | None = None
    """The largest residual the assignment accepted, when it was narrowed."""

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


@dataclass
class _Problem:
    """Sorted events and distinct sorted triggers with their codes
    (``NO_CODE`` everywhere when codes are not used), the tolerance and the
    searched offset range (µs)."""

    events: Int64Array
    triggers: Int64Array
    event_codes: Int64Array
    trigger_codes: Int64Array
    tolerance_us: float
    low_us: float
    high_us: float
    coded: bool
    groups: list[tuple[npt.NDArray[np.intp], Int64Array]] = field(init=False)
    """Per event code: (sorted-event indices, the triggers they may take)."""

    def __post_init__(self) -> None:
        if not self.coded:
            self.groups = [(np.arange(self.events.size), self.triggers)]
            return
        self.groups = []
        for code in np.unique(self.event_codes).tolist():
            members = np.flatnonzero(self.event_codes == code)
            usable = self.triggers if code == NO_CODE else self.triggers[self.trigger_codes == code]
            self.groups.append((members, usable))

    def window_triggers(self) -> npt.NDArray[np.intp]:
        """Indices of the triggers some event could take at a searched offset."""
        low = self.events[0] + self.low_us - self.tolerance_us
        high = self.events[-1] + self.high_us + self.tolerance_us
        return np.flatnonzero((self.triggers >= low) & (self.triggers <= high))


@dataclass(frozen=True)
class _Candidate:
    alignment: _Alignment
    precise: int
    """Matches within the shared precision radius."""
    precise_cost: int
    problem: _Problem | None = None
    """The problem it was aligned in: the events moved along its fitted
    drift, or the original (None)."""
    drift: tuple[float, int] | None = None


@dataclass
class _Outcome:
    status: str
    alignment: _Alignment | None = None
    evidence: _Evidence = field(default_factory=lambda: _Evidence(0, 0.0, 0.0))
    kind: str | None = None
    reason: str | None = None
    runner_up: _Candidate | None = None
    best: _Candidate | None = None
    radius_us: float | None = None
    match_radius_us: float | None = None
    drift: tuple[float, int] | None = None
    """(slope, origin µs) of a fitted clock drift (:func:`_fit_drift`)."""


# ---------------------------------------------------------------- public API


def event_code(value: object, trial_type: str | None = None) -> int | None:
    """An event's trigger code: its ``value`` when that is a positive integer
    up to ``MAX_CODE`` (``"2"``, ``2``, ``"2.0"``), else the mobile app's code for its
    ``trial_type`` (``APP_TRIAL_TYPE_CODES``: target 1, non-target 2,
    neutral 3), else None (the event then matches any trigger). Unlike the
    app, an unknown trial type gets no code rather than 1."""
    if value is not None and not isinstance(value, bool):
        try:
            number = float(str(value).strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number == int(number) and 0 < number <= MAX_CODE:
            return int(number)
    if trial_type:
        lowered = trial_type.lower()
        for also, word, code in APP_TRIAL_TYPE_CODES:
            if also in lowered and word in lowered:
                return code
    return None


def session_offset_range_ms(
    start_us: int, end_us: int | None, onsets_s: Sequence[float], margin_ms: float
) -> tuple[float, float]:
    """The offsets a session allows: every event's trigger between
    ``margin_ms`` before the session start and ``margin_ms`` after its end
    (``end_us``; None: only the margin around zero), and never less than
    ±``margin_ms``."""
    if not onsets_s:
        return (-margin_ms, margin_ms)
    low = -margin_ms - min(onsets_s) * 1000.0
    high = margin_ms if end_us is None else (end_us - start_us) / 1000.0 - max(onsets_s) * 1000.0 + margin_ms
    return (min(low, -margin_ms), max(high, margin_ms))


def match_events(
    expected_us: TimesLike,
    triggers_us: TimesLike,
    params: MatchParameters = MatchParameters(),
    *,
    event_codes: CodesLike | None = None,
    trigger_codes: CodesLike | None = None,
    offset_range_ms: tuple[float, float] | None = None,
    line_has_codes: bool | None = None,
) -> tuple[list[int | None], CorrectionReport]:
    """Corrected time (µs, the matched trigger's) per event in input order,
    or None when unmatched, and the report.

    ``event_codes`` (None entries: no code) and ``trigger_codes`` (the
    trigger line's value at each rising edge) enable code matching (module
    docstring); ``offset_range_ms`` is the searched [low, high] offset range
    (default ±``max_offset_ms``). ``line_has_codes``: whether the trigger
    line is known to carry codes (the app's trigger block does, by its
    format); None: inferred from the pulses (at least two different values),
    which a line with one pulse, or pulses of one class, cannot show."""
    expected = _as_int64(expected_us, "expected_us")
    raw_triggers = _as_int64(triggers_us, "triggers_us")
    raw_ecodes = _as_codes(event_codes, expected.size, "event_codes")
    raw_tcodes = _as_codes(trigger_codes, raw_triggers.size, "trigger_codes")
    low_ms, high_ms = offset_range_ms if offset_range_ms is not None else (-params.max_offset_ms, params.max_offset_ms)
    if not (math.isfinite(low_ms) and math.isfinite(high_ms) and low_ms <= high_ms):
        raise ValueError("offset_range_ms must be two finite numbers, low <= high")
    triggers, first_index = np.unique(raw_triggers, return_index=True)
    tcodes = raw_tcodes[first_index]
    carries_codes = np.unique(tcodes[tcodes != NO_CODE]).size >= 2 if line_has_codes is None else line_has_codes
    coded = bool(carries_codes and np.any(raw_ecodes != NO_CODE))
    context = _ReportContext(expected, raw_triggers, first_index, triggers, raw_ecodes, tcodes, coded, params,
                             [low_ms, high_ms])  # fmt: skip
    if expected.size == 0:
        return [], context.report(_Outcome("no_events"))
    if triggers.size == 0:
        return [None] * expected.size, context.report(_Outcome("no_triggers", reason="no trigger pulses"))

    order = np.argsort(expected, kind="stable")
    problem = _Problem(
        expected[order], triggers, raw_ecodes[order] if coded else np.full(expected.size, NO_CODE, dtype=np.int64),
        tcodes if coded else np.full(triggers.size, NO_CODE, dtype=np.int64),
        params.tolerance_ms * 1000.0, low_ms * 1000.0, high_ms * 1000.0, coded,
    )  # fmt: skip
    outcome = _decide(problem, params)
    corrected: list[int | None] = [None] * expected.size
    if outcome.status == "ok" and outcome.alignment is not None:
        found = outcome.alignment
        outcome.alignment = _Alignment(found.offset_us, [(int(order[i]), j) for i, j in found.pairs], found.cost_us)
        for event, trigger in outcome.alignment.pairs:
            corrected[event] = int(triggers[trigger])
    else:
        outcome.alignment = None
    return corrected, context.report(outcome)


def _decide(problem: _Problem, params: MatchParameters) -> _Outcome:
    """Statistical evidence first, then a one-to-one correspondence; aliases
    that cannot be told apart make the session ``ambiguous``."""
    searched = _search(problem, params)
    one_to_one, why_not = _one_to_one(problem)
    best = searched.best
    if searched.status == "ok" and one_to_one is not None and best is not None:
        if abs(one_to_one.offset_us - best.alignment.offset_us) > 2.0 * problem.tolerance_us:
            searched.status, searched.reason = "ambiguous", "the one-to-one correspondence and the vote disagree"
            searched.runner_up = _Candidate(one_to_one, len(one_to_one.pairs), one_to_one.cost_us)
            return searched
    if searched.status == "ok":
        return searched
    if one_to_one is not None:
        searched.status, searched.kind, searched.alignment, searched.reason = "ok", "one-to-one", one_to_one, None
        searched.match_radius_us = searched.drift = None
        return searched
    if searched.status == "no_match":
        searched.reason = f"{searched.reason}; {why_not}"
    return searched


def _search(problem: _Problem, params: MatchParameters) -> _Outcome:
    """The offset search (module docstring, steps 1–3) and its evidence."""
    tolerance_us = problem.tolerance_us
    vote = _vote_offsets(problem, params)
    judged = _judge_candidates(problem, vote.candidates, params.refine_iterations, 2.0 * vote.bin_us)
    if not judged:
        return _Outcome("no_match", reason="no offset in the searched range puts an event on a compatible trigger")
    candidates, radius = judged
    best = candidates[0]
    runner = next(
        (c for c in candidates[1:] if abs(c.alignment.offset_us - best.alignment.offset_us) > 2.0 * tolerance_us), None
    )
    drifted, drift = best.problem or problem, best.drift
    alignment = _tightened(drifted, best.alignment)
    chance = _chance_pairs(vote, alignment.offset_us, tolerance_us)
    windows = (problem.high_us - problem.low_us + 2.0 * tolerance_us) / 2.0
    evidence = _evidence(alignment.abs_residuals_us(drifted.events, drifted.triggers), chance, tolerance_us, windows)
    outcome = _Outcome("ok", alignment, evidence, "statistical", None, runner, best, radius)
    outcome.match_radius_us = alignment.radius_us
    outcome.drift = drift
    if len(alignment.pairs) < params.min_matches_for_offset or evidence.z < params.min_evidence_z:
        outcome.status, outcome.kind = "no_match", None
        outcome.reason = (
            f"{len(alignment.pairs)} matches at the best offset, evidence {evidence.z:.2f} "
            f"(needs {params.min_matches_for_offset} matches and {params.min_evidence_z:g})"
        )
    elif runner is not None and not _decisive(problem, best, runner, radius, params.alias_p):
        outcome.status, outcome.kind = "ambiguous", None
        outcome.reason = (
            f"offsets {best.alignment.offset_us / 1000:.1f} ms and {runner.alignment.offset_us / 1000:.1f} ms "
            f"explain {best.precise} and {runner.precise} events: not decisive"
        )
    elif runner is not None and _truncated_alias(problem, best, runner):
        outcome.status, outcome.kind = "ambiguous", None
        outcome.reason = (
            f"offsets {best.alignment.offset_us / 1000:.1f} ms and {runner.alignment.offset_us / 1000:.1f} ms "
            f"are a stimulus period apart and the differences fill the tolerance: counts do not decide"
        )
    elif (more := _matches_more(problem, best, candidates)) is not None:
        outcome.status, outcome.kind, outcome.runner_up = "ambiguous", None, more
        outcome.reason = (
            f"offset {more.alignment.offset_us / 1000:.1f} ms matches {len(more.alignment.pairs)} events within the "
            f"tolerance, {best.alignment.offset_us / 1000:.1f} ms {len(best.alignment.pairs)} more precisely"
        )
    return outcome


def _truncated_alias(problem: _Problem, best: _Candidate, runner: _Candidate) -> bool:
    """Whether the runner-up is a periodic alias of the winner (whole
    median spacings away, within two tolerances) while the winner's
    differences fill the tolerance's window (their spread, the 90th
    percentile of |residual|, at least half the tolerance). Each candidate's
    count is then the truncation of nearly the same spread, and a lead of a
    few events is no evidence: 400 events 0.6 s apart with 12-100 ms
    latencies and 150 ppm drift went to the alias one stimulus early, 379
    to 374."""
    if problem.events.size < 2 or not _regular(problem):
        return False
    spacing = float(np.median(np.diff(problem.events)))
    apart = abs(runner.alignment.offset_us - best.alignment.offset_us)
    if spacing <= 0 or apart < spacing / 2 or abs(apart - round(apart / spacing) * spacing) > 2.0 * problem.tolerance_us:
        return False
    moved = best.problem or problem
    spread = _spread(best.alignment.abs_residuals_us(moved.events, moved.triggers), problem.tolerance_us)
    return spread >= problem.tolerance_us / 2.0


def _matches_more(problem: _Problem, best: _Candidate, candidates: list[_Candidate]) -> _Candidate | None:
    """Where stimuli are far apart (nine in ten more than four tolerances),
    a candidate clearly apart from the winner that matches more events
    within the tolerance: the winner's edge in precision is then no proof.
    An exactly periodic schedule's alias has a subset of the truth's
    differences, which can be the tighter one (8 events with latencies of
    12-100 ms: the truth matched 8, the alias two stimuli early 6 and won on
    precision). With closer stimuli, an alias's extra matches are its
    neighbours' triggers falling in the window, and precision decides."""
    events = problem.events
    if events.size < 2 or float(np.quantile(np.diff(events), 0.1)) <= 4.0 * problem.tolerance_us:
        return None
    far = (c for c in candidates if abs(c.alignment.offset_us - best.alignment.offset_us) > 2.0 * problem.tolerance_us)
    return next((c for c in far if len(c.alignment.pairs) > len(best.alignment.pairs)), None)


MIN_DRIFT_PAIRS = 20
"""Matches needed before a clock drift is fitted."""
MAX_DRIFT = 1e-3
"""The largest drift believed (1000 ppm: far beyond any crystal or clock
slewing); a larger slope is not a drift."""
DRIFT_T = 6.0
"""How many standard errors a fitted drift must exceed to be applied."""


def _with_drift(times: Int64Array, slope: float, origin_us: int) -> Int64Array:
    """``times`` as the trigger clock reads them when it runs ``slope`` fast."""
    return times + np.rint((times - origin_us).astype(np.float64) * slope).astype(np.int64)


def _fit_drift(
    problem: _Problem, alignment: _Alignment, iterations: int
) -> tuple[_Problem, _Alignment, tuple[float, int] | None]:
    """Follow a linear clock drift between the stopwatch and the trigger
    times: the phone's and the headset's clocks (or the wall clock being
    slewed) differ by tens of ppm, i.e. 50-200 ms over a long session, more
    than the tolerance at its ends. The differences of the matched pairs are
    fitted with a line over the events' times (least squares, then again
    without pairs beyond three median |residuals| of the first fit); when
    its slope is significant (``DRIFT_T`` standard errors, at most
    ``MAX_DRIFT``) and the drift over the session exceeds the resolution, the
    events are moved along it and aligned again, until the fit no longer
    changes. The problem to judge (events moved, or the same), its
    alignment, and the (slope, origin) applied or None."""
    if len(alignment.pairs) < MIN_DRIFT_PAIRS:
        return problem, alignment, None
    origin = int(problem.events[0])
    slope_applied, current, moved = 0.0, alignment, problem
    for _ in range(iterations):
        if len(current.pairs) < MIN_DRIFT_PAIRS:
            break
        ev, tr = (np.fromiter(side, dtype=np.int64) for side in zip(*current.pairs, strict=True))
        x = (problem.events[ev] - origin).astype(np.float64)
        y = (problem.triggers[tr] - problem.events[ev]).astype(np.float64)
        keep = np.ones(x.size, dtype=bool)
        for _ in range(2):
            if np.ptp(x[keep]) <= 0 or np.count_nonzero(keep) < MIN_DRIFT_PAIRS:
                return (problem, alignment, None) if slope_applied == 0.0 else (moved, current, (slope_applied, origin))
            slope, intercept = np.polyfit(x[keep], y[keep], 1)
            residuals = y - (slope * x + intercept)
            keep = np.abs(residuals) <= PRECISION_MARGIN * max(float(np.median(np.abs(residuals))), RESOLUTION_US)
        xs, rs = x[keep], residuals[keep]
        error = float(np.sqrt(np.sum(rs**2) / max(xs.size - 2, 1) / np.sum((xs - xs.mean()) ** 2)))
        change = float(slope) - slope_applied
        span = float(problem.events[-1] - problem.events[0])
        if abs(slope) > MAX_DRIFT or abs(change) * span < RESOLUTION_US or abs(change) < DRIFT_T * error:
            break
        candidate_problem = replace(problem, events=_with_drift(problem.events, float(slope), origin))
        candidate = _refined_alignment(candidate_problem, int(np.rint(intercept)), iterations)
        if candidate.key()[:1] < current.key()[:1]:
            break
        slope_applied, current, moved = float(slope), candidate, candidate_problem
    if slope_applied == 0.0:
        return problem, alignment, None
    return moved, current, (slope_applied, origin)


def _tightened(problem: _Problem, alignment: _Alignment) -> _Alignment:
    """The assignment redone within ``PRECISION_MARGIN`` residual spreads
    of its offset, but not less than half the tolerance, when that is less
    than the tolerance: a pulse farther from the expected time than the
    session's true triggers ever are (a spurious pulse where a trigger was
    lost) is left alone. The floor keeps a true trigger whose latency
    happened to vary more than the few others' (a spread from few residuals
    is unreliable).

    The spread is taken over the residuals within ``PRECISION_MARGIN``
    median |residuals|: a pulse in a lost trigger's place, matched within the
    tolerance, must not widen the radius that then admits it (with few
    events the 90th percentile is nearly the largest residual).

    The assignment is centred on the median matched difference: a candidate
    placed where most differences fit (:func:`_refined_alignment`) may sit
    off centre to hold one more pulse, a noise pulse in a lost trigger's
    place as often as a true trigger of unusual latency."""
    if alignment.pairs:
        ev, tr = (np.fromiter(side, dtype=np.int64) for side in zip(*alignment.pairs, strict=True))
        centre = int(np.rint(np.median(problem.triggers[tr] - problem.events[ev])))
        if centre != alignment.offset_us:
            alignment = _align(problem, centre)
    abs_residuals = alignment.abs_residuals_us(problem.events, problem.triggers)
    if abs_residuals.size:
        typical = max(float(np.median(abs_residuals)), min(RESOLUTION_US, problem.tolerance_us))
        abs_residuals = abs_residuals[abs_residuals <= PRECISION_MARGIN * typical]
    spread = _spread(abs_residuals, problem.tolerance_us)
    radius = min(problem.tolerance_us, max(PRECISION_MARGIN * spread, problem.tolerance_us / 2.0))
    if radius >= problem.tolerance_us:
        return replace(alignment, radius_us=problem.tolerance_us)
    return replace(_align(replace(problem, tolerance_us=radius), alignment.offset_us), radius_us=radius)


def _judge_candidates(
    problem: _Problem, offsets: list[int], iterations: int, uncertainty_us: float
) -> tuple[list[_Candidate], float] | None:
    """Every candidate settled and aligned, distinct offsets only, each with
    its own clock drift followed (:func:`_fit_drift`), best first by matches
    within the shared precision radius (step 2); and the radius.

    The drift is fitted per candidate, before they are compared: at one
    constant offset a drifting session's truth loses its most drifted
    events at both ends, and an alias of a periodic schedule, which lacks
    the events at one end, then matched more (700 events at 50 ppm: the
    alias two stimuli early won 698 to 694).

    Then, for an about periodic schedule (:func:`_regular`), the offsets one
    to ``NEIGHBOURS`` median event spacings either side of the best are
    judged too, if the vote did not propose them: a periodic
    schedule has an alias every period across the searched range, all with
    nearly the truth's votes (drift smears them alike), so the truth need
    not be among the strongest peaks; it is next to the best of them."""
    fitted = _fitted(problem, offsets, iterations, uncertainty_us, [])
    if not fitted:
        return None
    judged, radius = _ranked(problem, fitted)
    spacing = float(np.median(np.diff(problem.events))) if problem.events.size > 1 else 0.0
    if spacing > 2.0 * problem.tolerance_us and _regular(problem):
        best = judged[0].alignment.offset_us
        around = [round(best + m * spacing) for m in range(-NEIGHBOURS, NEIGHBOURS + 1) if m != 0]
        around = [o for o in around if problem.low_us <= o <= problem.high_us]
        extra = _fitted(problem, around, iterations, 2.0 * problem.tolerance_us, fitted)
        if extra:
            judged, radius = _ranked(problem, fitted + extra)
    return judged, radius


def _regular(problem: _Problem) -> bool:
    """Whether the events are about periodic (the middle half of their
    spacings within two tolerances): only then are aliases subsets of the
    truth, and worth the extra candidates and placements."""
    if problem.events.size < 3:
        return True
    low, high = np.quantile(np.diff(problem.events), [0.25, 0.75])
    return float(high - low) <= 2.0 * problem.tolerance_us


NEIGHBOURS = 3
"""Median event spacings either side of the best candidate that are judged
whether or not the vote proposed them (:func:`_judge_candidates`)."""

_Fitted = tuple[_Problem, _Alignment, tuple[float, int] | None]


def _fitted(
    problem: _Problem, offsets: list[int], iterations: int, uncertainty_us: float, known: list[_Fitted]
) -> list[_Fitted]:
    """``offsets`` settled and aligned, twins (within two tolerances of each
    other or of a ``known`` one) merged, each with its drift fitted."""
    tolerance_us = problem.tolerance_us
    taken = [a.offset_us for _, a, _ in known]
    alignments: list[_Alignment] = []
    for offset in offsets:
        if any(abs(offset - o) <= 2 * tolerance_us for o in taken):
            continue
        settled, _ = _settle_offset(problem, offset, iterations, uncertainty_us)
        alignment = _refined_alignment(problem, settled, iterations)
        if not alignment.pairs or any(abs(alignment.offset_us - o) <= 2 * tolerance_us for o in taken):
            continue
        twin = next((k for k, a in enumerate(alignments) if abs(a.offset_us - alignment.offset_us) <= 2 * tolerance_us), None)
        if twin is None:
            alignments.append(alignment)
        elif alignment.key() > alignments[twin].key():
            alignments[twin] = alignment
    return [_fit_drift(problem, a, iterations) for a in alignments]


def _ranked(problem: _Problem, fitted: list[_Fitted]) -> tuple[list[_Candidate], float]:
    """Candidates best first by matches within the shared precision radius
    (three residual spreads of the most precise candidate with at least half
    the matches of the best); twins that their drift fits brought within two
    tolerances of each other merged first."""
    tolerance_us = problem.tolerance_us
    distinct: list[_Fitted] = []
    for item in sorted(fitted, key=lambda f: f[1].key(), reverse=True):
        if all(abs(item[1].offset_us - other[1].offset_us) > 2 * tolerance_us for other in distinct):
            distinct.append(item)
    residuals = [a.abs_residuals_us(p.events, p.triggers) for p, a, _ in distinct]
    most = max(r.size for r in residuals)
    sharpest = min(_spread(r, tolerance_us) for r in residuals if 2 * r.size >= most)
    radius = min(tolerance_us, PRECISION_MARGIN * sharpest)
    judged = []
    for (moved, alignment, drift), abs_residuals in zip(distinct, residuals, strict=True):
        inside = abs_residuals[abs_residuals <= radius]
        judged.append(_Candidate(alignment, int(inside.size), int(inside.sum()), None if drift is None else moved, drift))
    judged.sort(key=lambda c: (c.precise, -c.precise_cost, -abs(c.alignment.offset_us)), reverse=True)
    return judged, radius


def _decisive(problem: _Problem, best: _Candidate, runner: _Candidate, radius_us: float, alias_p: float) -> bool:
    """Whether chance pulses would give the runner-up the winner's lead with
    probability below ``alias_p``: a Poisson tail at the rate of the
    triggers the winner leaves unmatched (plus one), over the runner-up's
    unmatched events, each with a window of ±radius.

    The precise count is not the whole story when it is small: the radius
    comes from the sharpest candidate's spread, which a few lucky residuals
    can make too tight for the truth's. So when the runner-up has more
    matches within the tolerance, the winner must also be far more precise
    (the runner-up at most half its precise matches, as an alias of fast
    stimuli is); else the two are not told apart."""
    lead = best.precise - runner.precise
    if lead <= 0:
        return False
    if len(runner.alignment.pairs) > len(best.alignment.pairs) and 2 * runner.precise > best.precise:
        return False
    window = problem.window_triggers()
    span_us = max(float(problem.triggers[window[-1]] - problem.triggers[window[0]]), 1e6) if window.size else 1e6
    rate = (window.size - len(best.alignment.pairs) + 1) / span_us
    mu = (problem.events.size - runner.precise) * rate * 2.0 * radius_us
    return _poisson_tail(mu, lead) < alias_p


def _poisson_tail(mu: float, at_least: int) -> float:
    """P(X ≥ ``at_least``) for X ~ Poisson(``mu``), summed in log space."""
    if at_least <= 0:
        return 1.0
    if mu <= 0:
        return 0.0

    def term(i: int) -> float:
        return math.exp(i * math.log(mu) - mu - math.lgamma(i + 1))

    if mu >= at_least:
        return max(0.0, 1.0 - sum(term(i) for i in range(at_least)))
    return min(1.0, sum(term(i) for i in range(at_least, at_least + 400)))


def _one_to_one(problem: _Problem) -> tuple[_Alignment | None, str]:
    """The k-th event with the k-th trigger of the searched range, when that
    correspondence is exact (module docstring); else None and why not."""
    window = problem.window_triggers()
    count = problem.events.size
    if window.size != count:
        return None, f"not one-to-one: {count} events, {window.size} triggers in the searched range"
    codes = problem.trigger_codes[window]
    clash = np.flatnonzero((problem.event_codes != NO_CODE) & (problem.event_codes != codes))
    if clash.size:
        return None, f"not one-to-one: the event at position {int(clash[0])} and its trigger have different codes"
    differences = problem.triggers[window] - problem.events
    offset = int(np.rint(np.median(differences)))
    if not problem.low_us <= offset <= problem.high_us:
        return None, "not one-to-one: the offset is outside the searched range"
    worst = float(np.abs(differences - offset).max())
    steps = float(np.abs(np.diff(differences)).max()) if count > 1 else 0.0
    if worst > problem.tolerance_us or steps > problem.tolerance_us:
        return None, (
            f"not one-to-one: intervals between events and between triggers differ by up to "
            f"{max(worst, steps) / 1000:.1f} ms (tolerance {problem.tolerance_us / 1000:g} ms)"
        )
    pairs = [(i, int(j)) for i, j in enumerate(window.tolist())]
    return _Alignment(offset, pairs, int(np.abs(differences - offset).sum())), ""



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
    """Pair counts per lag bin (``cumulative[k]``: pairs in bins below k),
    bin ``k`` holding differences near ``origin_us + k·bin_us``, and the
    candidate offsets they propose."""

    cumulative: npt.NDArray[np.float64]
    origin_us: float
    bin_us: float
    candidates: list[int]

    def pairs_between(self, low_us: float, high_us: float) -> float:
        if self.cumulative.size <= 1:
            return 0.0
        last = self.cumulative.size - 1
        first = int(np.clip(math.ceil((low_us - self.origin_us) / self.bin_us), 0, last))
        stop = int(np.clip(math.floor((high_us - self.origin_us) / self.bin_us) + 1, 0, last))
        return float(self.cumulative[stop] - self.cumulative[first]) if stop > first else 0.0


def _fast_length(n: int) -> int:
    """The smallest 2^a·3^b·5^c at least ``n`` (FFTs of such lengths are fast)."""
    best = 1 << max(n - 1, 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35
            while length < n:
                length *= 2
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


def _vote_offsets(problem: _Problem, params: MatchParameters) -> _Vote:
    """Up to ``offset_candidates`` offsets (µs) where most code-compatible
    pairwise differences agree within about the tolerance, strongest first,
    separated by more than two tolerances (step 1).

    Bin ``k`` of the cross-correlation counts the pairs whose binned
    trigger and event differ by k bins: their difference lies within one
    bin of ``origin + k·bin``."""
    events, tolerance_us = problem.events, problem.tolerance_us
    low, high = problem.low_us, problem.high_us
    span = float(events[-1] - events[0])
    bin_us = max(tolerance_us / 2.0, (2.0 * span + high - low + 8.0 * tolerance_us) / params.max_bins)
    origin = low - 2.0 * bin_us
    trigger_base = float(events[0]) + origin
    trigger_top = float(events[-1]) + high + 2.0 * bin_us
    event_bins = int(span // bin_us) + 1
    lag_bins = int((trigger_top - trigger_base) // bin_us) + 1
    length = _fast_length(event_bins + lag_bins)
    spectrum: npt.NDArray[np.complex128] | None = None
    for members, usable in problem.groups:
        usable = usable[(usable >= trigger_base) & (usable <= trigger_top)]
        if members.size == 0 or usable.size == 0:
            continue
        event_hist = np.bincount(((events[members] - events[0]) // bin_us).astype(np.int64), minlength=event_bins)
        trigger_hist = np.bincount(((usable - trigger_base) // bin_us).astype(np.int64), minlength=lag_bins)
        term = np.conj(np.fft.rfft(event_hist, length)) * np.fft.rfft(trigger_hist, length)
        spectrum = term if spectrum is None else spectrum + term
    if spectrum is None:
        return _Vote(np.zeros(1), origin, bin_us, [])
    counts = np.clip(np.rint(np.fft.irfft(spectrum, length)[:lag_bins]), 0, None)
    cumulative = np.concatenate(([0.0], np.cumsum(counts)))
    width = max(2, math.ceil(2.0 * tolerance_us / bin_us) + 1)
    if lag_bins < width:
        return _Vote(cumulative, origin, bin_us, [])
    votes = cumulative[width:] - cumulative[:-width]
    centres = origin + (np.arange(votes.size) + (width - 1) / 2.0) * bin_us
    votes[(centres < low) | (centres > high)] = -1
    chosen: list[int] = []
    top = float(votes.max()) if votes.size else 0.0
    for _ in range(max(params.offset_candidates, params.max_candidates)):
        peak = int(np.argmax(votes))
        if votes[peak] <= 0 or (len(chosen) >= params.offset_candidates and votes[peak] < ALIAS_SHARE * top):
            break
        chosen.append(int(np.rint(centres[peak])))
        votes[np.abs(centres - centres[peak]) <= 2.0 * tolerance_us] = -1
    return _Vote(cumulative, origin, bin_us, chosen)


def _chance_pairs(vote: _Vote, offset_us: int, tolerance_us: float) -> float:
    """Pairs a ``2·tolerance`` window collects by chance near ``offset_us``.

    The density of differences is not flat over the search range (it follows
    the distribution of event spacings), so it is measured locally: in
    ``offset ± BACKGROUND_TOLERANCES·tolerance`` leaving out the peak zone
    ``offset ± 2·tolerance``. One pair is added to what is found there, so an
    empty neighbourhood (few events) is not taken as proof of no chance."""
    reach = BACKGROUND_TOLERANCES * tolerance_us
    around = vote.pairs_between(offset_us - reach, offset_us + reach)
    around -= vote.pairs_between(offset_us - 2.0 * tolerance_us, offset_us + 2.0 * tolerance_us)
    measure = 2.0 * reach - 4.0 * tolerance_us
    return (max(around, 0.0) + 1.0) * 2.0 * tolerance_us / measure


def _settle_offset(
    problem: _Problem, offset_us: int, iterations: int, uncertainty_us: float = 0.0
) -> tuple[int, Int64Array]:
    """Move ``offset_us`` to the median residual of the events' nearest
    compatible triggers until it stops moving (a first step looks as far as
    twice the tolerance or ``uncertainty_us``: a vote peak is known to within
    a bin or two); the offset and the final |residuals|."""
    tolerance_us = problem.tolerance_us
    residuals = _nearest_residuals(problem, offset_us, max(2.0 * tolerance_us, uncertainty_us))
    if residuals.size:
        offset_us += int(np.rint(np.median(residuals)))
    residuals = _nearest_residuals(problem, offset_us, tolerance_us)
    for _ in range(iterations):
        if residuals.size == 0:
            break
        shift = int(np.rint(np.median(residuals)))
        if shift == 0:
            break
        offset_us += shift
        residuals = _nearest_residuals(problem, offset_us, tolerance_us)
    return offset_us, np.abs(residuals)


def _nearest_residuals(problem: _Problem, offset_us: int, reach_us: float) -> Int64Array:
    """Signed residual to the nearest compatible trigger of each event that
    has one within ``reach_us``."""
    parts = []
    for members, usable in problem.groups:
        if usable.size == 0:
            continue
        shifted = problem.events[members] + offset_us
        right = np.clip(np.searchsorted(usable, shifted), 0, usable.size - 1)
        left = np.clip(right - 1, 0, usable.size - 1)
        to_right, to_left = usable[right] - shifted, usable[left] - shifted
        nearest = np.where(np.abs(to_right) < np.abs(to_left), to_right, to_left)
        parts.append(nearest[np.abs(nearest) <= reach_us])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _spread(abs_residuals_us: Int64Array, tolerance_us: float) -> float:
    """The 90th percentile of |residual| (robust to a few spurious matches),
    at least the resolution."""
    floor = min(RESOLUTION_US, tolerance_us)
    return max(float(np.quantile(abs_residuals_us, 0.9)), floor) if abs_residuals_us.size else tolerance_us


def _evidence(abs_residuals_us: Int64Array, chance_pairs: float, tolerance_us: float, reach_us: float) -> _Evidence:
    """How far matches exceed chance: k matches within r (their spread)
    against λ·r/tolerance, as the signed root of the Poisson likelihood
    ratio, less the log of the number of ±r windows the search looked at
    (``reach_us / r``; the look-elsewhere effect: the best of many windows
    is a maximum)."""
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


def _refined_alignment(problem: _Problem, offset_us: int, iterations: int) -> _Alignment:
    """Align at ``offset_us``, move the offset to the median matched
    difference and align again, until the offset stops moving; then also at
    the centre of the ``2·tolerance`` window holding the most differences to
    the nearest compatible triggers, kept when it matches more.

    The median is not where most differences fit when their spread is near
    the window's width (latencies of 12-100 ms): an exactly periodic
    schedule's alias, whose differences are a subset of the truth's, then
    matched more than the truth at its median (8 events: 7 to 6). Only for
    an about periodic schedule (:func:`_regular`), and where nine in ten
    events are more than four tolerances apart: closer
    stimuli put their neighbours' triggers in the window, and the most
    differences would pull a candidate off its precise centre."""
    events, triggers = problem.events, problem.triggers
    alignment = _align(problem, offset_us)
    for _ in range(iterations):
        if not alignment.pairs:
            break
        ev, tr = (np.fromiter(side, dtype=np.int64) for side in zip(*alignment.pairs, strict=True))
        median = int(np.rint(np.median(triggers[tr] - events[ev])))
        if median == alignment.offset_us:
            break
        candidate = _align(problem, median)
        if candidate.key() < alignment.key():
            break  # the median moved off a better optimum: keep the better one
        alignment = candidate
    spacing = float(np.quantile(np.diff(events), 0.1)) if events.size > 1 else math.inf
    if spacing <= 4.0 * problem.tolerance_us or not _regular(problem):
        return alignment  # neighbours' triggers within the window, or no periodic alias to beat
    differences = np.sort(_nearest_residuals(problem, alignment.offset_us, 2.0 * problem.tolerance_us))
    if differences.size:
        ends = np.searchsorted(differences, differences + 2.0 * problem.tolerance_us, side="right")
        first = int(np.argmax(ends - np.arange(differences.size)))
        centre = (int(differences[first]) + int(differences[ends[first] - 1])) // 2
        if centre:
            candidate = _align(problem, alignment.offset_us + centre)
            if candidate.key() > alignment.key():
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


def _align(problem: _Problem, offset_us: int) -> _Alignment:
    """Maximum monotone one-to-one matching of compatible pairs within
    tolerance, least total |residual| among those (sparse DP over candidate
    pairs).

    A chain is a partial matching; its score is ``matches·scale − cost`` with
    ``scale`` above any possible total cost, so comparing scores compares
    (matches, −cost) lexicographically. ``open_chains[j]`` is the best chain
    whose last trigger is j, for j in the current window; chains whose last
    trigger falls below the window can precede every later candidate, so they
    fold into the single best ``closed`` chain."""
    tolerance_us = problem.tolerance_us
    lo_arr, hi_arr = _candidate_ranges(problem.events, problem.triggers, offset_us, tolerance_us)
    ev, tr, lo, hi = problem.events.tolist(), problem.triggers.tolist(), lo_arr.tolist(), hi_arr.tolist()
    ev_code, tr_code = problem.event_codes.tolist(), problem.trigger_codes.tolist()
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
        code = ev_code[i]
        for j in range(first, stop):
            before = open_chains.get(j - 1)
            if before is not None and nodes[before][0] > best_score:
                best_score, best_node = nodes[before][0], before
            if code == NO_CODE or tr_code[j] == code:
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


def _as_codes(codes: CodesLike | None, size: int, name: str) -> Int64Array:
    """Codes as int64 with ``NO_CODE`` for None; absent: all ``NO_CODE``."""
    if codes is None:
        return np.full(size, NO_CODE, dtype=np.int64)
    values = [NO_CODE if c is None else c for c in (codes.tolist() if isinstance(codes, np.ndarray) else codes)]
    if len(values) != size:
        raise ValueError(f"{name} has {len(values)} entries for {size} times")
    if any(isinstance(v, bool) or not isinstance(v, int) or (v < 0 and v != NO_CODE) or v > MAX_CODE for v in values):
        raise ValueError(f"{name} must hold non-negative integers up to {MAX_CODE} or None")
    return np.asarray(values, dtype=np.int64).reshape(size)


@dataclass(frozen=True)
class _ReportContext:
    """The inputs a report describes (codes per input event and per distinct
    trigger)."""

    expected: Int64Array
    raw_triggers: Int64Array
    first_index: npt.NDArray[np.intp]
    triggers: Int64Array
    event_codes: Int64Array
    trigger_codes: Int64Array
    coded: bool
    params: MatchParameters
    searched_ms: list[float]

    def report(self, outcome: _Outcome) -> CorrectionReport:
        """The report of ``outcome`` (its alignment, if any, with event
        indices already in input order and trigger indices into the distinct
        sorted triggers)."""
        alignment = outcome.alignment
        pairs = alignment.pairs if alignment is not None else []
        drift = outcome.drift if outcome.status == "ok" else None
        expected = self.expected if drift is None else _with_drift(self.expected, *drift)
        residuals = [
            (int(self.triggers[j]) - int(expected[i]) - alignment.offset_us) / 1000.0
            for i, j in pairs
            if alignment is not None
        ]
        taken = {i: (j, r) for (i, j), r in zip(pairs, residuals, strict=True)}
        used = {j for _, j in pairs}
        details = []
        for i in range(self.expected.size):
            code = int(self.event_codes[i])
            j, residual = taken.get(i, (None, None))
            details.append({
                "code": None if code == NO_CODE else code,
                "trigger": None if j is None else int(self.first_index[j]),
                "trigger_code": None if j is None or self.trigger_codes[j] == NO_CODE else int(self.trigger_codes[j]),
                "residual_ms": residual,
            })  # fmt: skip
        candidates = []
        if outcome.status == "ambiguous" and outcome.best is not None and outcome.runner_up is not None:
            candidates = [_describe(outcome.best), _describe(outcome.runner_up)]
        return CorrectionReport(
            events_total=int(self.expected.size),
            triggers_total=int(self.raw_triggers.size),
            matched=len(pairs),
            unmatched_events=[i for i in range(self.expected.size) if i not in taken],
            extra_triggers=sorted(int(self.first_index[j]) for j in range(self.triggers.size) if j not in used),
            offset_ms=None if alignment is None else alignment.offset_us / 1000.0,
            residuals_ms=residuals,
            residual_stats=_residual_stats(residuals),
            tolerance_ms=self.params.tolerance_ms,
            method=METHOD,
            status=outcome.status,
            matches=[(i, int(self.first_index[j])) for i, j in pairs],
            duplicate_triggers=int(self.raw_triggers.size - self.first_index.size),
            chance_matches=outcome.evidence.chance if outcome.best is not None else None,
            evidence_z=outcome.evidence.z if outcome.best is not None else None,
            evidence=outcome.kind if outcome.status == "ok" else None,
            reason=outcome.reason,
            searched_offset_ms=list(self.searched_ms),
            runner_up=None if outcome.runner_up is None else _describe(outcome.runner_up),
            candidates=candidates,
            precision_radius_ms=None if outcome.radius_us is None else outcome.radius_us / 1000.0,
            match_radius_ms=None if outcome.match_radius_us is None or outcome.status != "ok"
            else outcome.match_radius_us / 1000.0,
            codes_used=self.coded,
            drift_ppm=None if drift is None else round(drift[0] * 1e6, 3),
            code_counts=self._code_counts(pairs),
            event_details=details,
        )

    def _code_counts(self, pairs: list[tuple[int, int]]) -> dict[str, dict[str, int]]:
        def key(code: int) -> str:
            return "none" if code == NO_CODE else str(code)

        counts: dict[str, dict[str, int]] = {}
        for code in self.event_codes.tolist():
            counts.setdefault(key(code), {"events": 0, "triggers": 0, "matched": 0})["events"] += 1
        for code in self.trigger_codes.tolist():
            counts.setdefault(key(code), {"events": 0, "triggers": 0, "matched": 0})["triggers"] += 1
        for i, _ in pairs:
            counts[key(int(self.event_codes[i]))]["matched"] += 1
        return dict(sorted(counts.items()))


def _describe(candidate: _Candidate) -> dict[str, Any]:
    return {
        "offset_ms": candidate.alignment.offset_us / 1000.0,
        "matched": len(candidate.alignment.pairs),
        "precise_matches": candidate.precise,
    }


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
