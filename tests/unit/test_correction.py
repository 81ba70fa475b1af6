"""Event ↔ trigger matching (eeghub.core.correction) on synthetic sessions
whose true answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eeghub.core.correction import (
    NO_CODE,
    MatchParameters,
    _align,
    _poisson_tail,
    _Problem,
    event_code,
    greedy_baseline,
    match_events,
    session_offset_range_ms,
)

START_US = 1_760_000_000_000_000  # a session start in epoch µs
MS = 1000


@dataclass
class Session:
    expected: np.ndarray
    """Expected event times (µs), in time order."""
    true_triggers: np.ndarray
    """The true trigger of each event (µs), dropped or not."""
    triggers: np.ndarray
    """What the EEG recorded: kept true triggers plus spurious pulses, sorted."""
    dropped: set[int]


def make_session(
    seed: int,
    n: int = 200,
    offset_ms: float = 137.0,
    jitter_ms: float = 0.0,
    isi_ms: tuple[float, float] = (500.0, 1500.0),
    drop: float = 0.0,
    extra: float = 0.0,
    tolerance_ms: float = 50.0,
) -> Session:
    """Events with random inter-stimulus intervals, triggers at a constant
    offset plus uniform jitter, some dropped, some spurious pulses added.

    Half the spurious pulses sit 30–80 ms from a kept trigger (a bouncing
    switch, a second photodiode flash); the others anywhere. None is within
    tolerance of a dropped trigger's place, nor within 10 ms of a kept one:
    there no algorithm could tell a spurious pulse from the real one."""
    rng = np.random.default_rng(seed)
    expected = START_US + np.cumsum(rng.uniform(*isi_ms, n) * MS).astype(np.int64)
    true = expected + int(offset_ms * MS) + np.rint(rng.uniform(-jitter_ms, jitter_ms, n) * MS).astype(np.int64)
    dropped = {int(i) for i in rng.choice(n, int(drop * n), replace=False)}
    kept = np.array([t for i, t in enumerate(true) if i not in dropped], dtype=np.int64)
    spurious: list[int] = []
    while len(spurious) < int(extra * n):
        if len(spurious) % 2 == 0:
            pulse = int(rng.choice(kept)) + int(rng.choice([-1, 1]) * rng.uniform(30, 80) * MS)
        else:
            pulse = int(rng.integers(int(true[0]), int(true[-1])))
        near_dropped = any(abs(pulse - true[i]) <= (tolerance_ms + 10) * MS for i in dropped)
        near_kept = np.min(np.abs(kept - pulse)) < 10 * MS
        if not near_dropped and not near_kept:
            spurious.append(pulse)
    triggers = np.sort(np.concatenate([kept, np.array(spurious, dtype=np.int64)]))
    return Session(expected, true, triggers, dropped)


def wrong(corrected: list[int | None], session: Session) -> list[int]:
    """Events not given their true trigger (or, if dropped, not left unmatched)."""
    return [
        i
        for i, value in enumerate(corrected)
        if value != (None if i in session.dropped else int(session.true_triggers[i]))
    ]


def test_perfect_data_with_a_constant_offset() -> None:
    s = make_session(1, offset_ms=137.0)
    corrected, report = match_events(s.expected, s.triggers)
    assert corrected == s.triggers.tolist()
    assert report.status == "ok" and report.matched == len(s.expected)
    assert report.offset_ms == pytest.approx(137.0, abs=1e-3)
    assert report.residuals_ms == [0.0] * len(s.expected)
    assert report.unmatched_events == [] and report.extra_triggers == []
    assert report.matches == [(i, i) for i in range(len(s.expected))]


def test_jitter_of_a_few_ms() -> None:
    s = make_session(2, offset_ms=137.0, jitter_ms=3.0)
    corrected, report = match_events(s.expected, s.triggers)
    assert wrong(corrected, s) == []
    assert report.offset_ms is not None and abs(report.offset_ms - 137.0) < 0.5
    # Residuals are against the estimated offset, so its error adds to the jitter.
    stats = report.residual_stats
    assert stats["max_abs"] is not None and stats["max_abs"] <= 3.0 + abs(report.offset_ms - 137.0) + 1e-9
    assert max(abs(r) for r in report.residuals_ms) == stats["max_abs"]


@pytest.mark.parametrize("seed", range(5))
def test_dropped_and_spurious_triggers(seed: int) -> None:
    s = make_session(10 + seed, n=300, offset_ms=240.0, jitter_ms=3.0, drop=0.1, extra=0.1)
    assert len(s.dropped) == 30 and len(s.triggers) == 300
    corrected, report = match_events(s.expected, s.triggers)
    assert report.unmatched_events == sorted(s.dropped)
    assert wrong(corrected, s) == []
    assert report.matched == 270 and len(report.extra_triggers) == 30
    kept = set(s.true_triggers.tolist())
    assert all(int(s.triggers[j]) not in kept for j in report.extra_triggers)
    assert report.status == "ok"


@pytest.mark.parametrize("seed", [6, 23, 0])
def test_fast_stimuli_do_not_lock_onto_an_alias(seed: int) -> None:
    """At 100–150 ms between stimuli the ±50 ms tolerance covers a good part
    of the spacing: the offset one stimulus off matches about as many events,
    less precisely. The precise offset must win (with a plain count these
    seeds lock onto an alias). Spurious pulses fall anywhere here, so a few
    events may take one that is nearer than their own trigger."""
    rng = np.random.default_rng(seed)
    expected = START_US + np.cumsum(rng.uniform(100, 150, 300) * MS).astype(np.int64)
    true = expected - 450 * MS + np.rint(rng.normal(0, 2 * MS, 300)).astype(np.int64)
    kept = rng.random(300) >= 0.1
    spurious = rng.integers(int(true[0]), int(true[-1]), 30)
    corrected, report = match_events(expected, np.concatenate([true[kept], spurious]))
    assert report.offset_ms is not None and abs(report.offset_ms + 450.0) < 1.0
    right = sum(c == (int(t) if k else None) for c, t, k in zip(corrected, true, kept, strict=True))
    assert right >= 0.97 * 300


@pytest.mark.parametrize("offset_ms", [1900.0, -1900.0])
def test_offset_near_the_search_limit(offset_ms: float) -> None:
    s = make_session(3, offset_ms=offset_ms, jitter_ms=2.0, drop=0.05, extra=0.05)
    corrected, report = match_events(s.expected, s.triggers)
    assert wrong(corrected, s) == []
    assert report.offset_ms is not None and abs(report.offset_ms - offset_ms) < 1.0


def test_offset_outside_the_search_range_is_not_corrected() -> None:
    # Inside ±2 s only chance alignments remain (about 30 of 200 events at
    # any offset); the two best tie, so the session is ambiguous, never ok.
    s = make_session(3, offset_ms=2500.0)
    corrected, report = match_events(s.expected, s.triggers)
    assert report.status in ("no_match", "ambiguous") and corrected == [None] * len(s.expected)
    assert report.matched == 0 and report.evidence is None
    assert match_events(s.expected, s.triggers, MatchParameters(max_offset_ms=3000.0))[1].matched == len(s.expected)


def regular_session(offset_ms: float, n: int = 100) -> Session:
    """A fixed 300 ms SOA, a constant offset of several SOAs, two interior
    triggers dropped and two spurious pulses between triggers."""
    expected = START_US + np.arange(1, n + 1, dtype=np.int64) * 300 * MS
    rng = np.random.default_rng(7)
    true = expected + int(offset_ms * MS) + rng.integers(-2 * MS, 2 * MS, n)
    dropped = {30, 61}
    spurious = [int(true[10]) + 150 * MS, int(true[75]) + 140 * MS]
    kept = [int(t) for i, t in enumerate(true) if i not in dropped]
    return Session(expected, true, np.sort(np.array(kept + spurious, dtype=np.int64)), dropped)


@pytest.mark.parametrize("offset_ms", [1200.0, -1200.0])
def test_offset_larger_than_the_event_spacing(offset_ms: float) -> None:
    s = regular_session(offset_ms)
    corrected, report = match_events(s.expected, s.triggers)
    assert wrong(corrected, s) == []
    assert report.unmatched_events == [30, 61]
    assert report.offset_ms is not None and abs(report.offset_ms - offset_ms) < 2.0


def test_greedy_baseline_fails_where_matching_succeeds() -> None:
    """Three realistic sessions: one dropped trigger (greedy then shifts every
    later event onto its neighbour's trigger); a negative offset larger than
    the event spacing with spurious pulses; a spurious pulse nearer the
    uncorrected time than the true trigger."""
    one_drop = make_session(5, n=50, offset_ms=137.0, jitter_ms=2.0)
    one_drop = Session(one_drop.expected, one_drop.true_triggers, np.delete(one_drop.triggers, 20), {20})
    large_offset = regular_session(-1200.0)
    spurious = make_session(6, n=50, offset_ms=137.0, jitter_ms=2.0)
    near = spurious.expected[25] + 10 * MS  # e.g. a photodiode flicker at the stimulus command
    spurious = Session(spurious.expected, spurious.true_triggers, np.sort(np.append(spurious.triggers, near)), set())
    for session in (one_drop, large_offset, spurious):
        greedy_wrong = wrong(greedy_baseline(session.expected, session.triggers), session)
        assert greedy_wrong, "the greedy walk was expected to misassign here"
        assert wrong(match_events(session.expected, session.triggers)[0], session) == []
    # A single dropped trigger cascades: every later event gets the next trigger.
    assert wrong(greedy_baseline(one_drop.expected, one_drop.triggers), one_drop) == list(range(20, 50))


def test_greedy_baseline_reproduces_the_predecessor_rules() -> None:
    # Ties advance to the later trigger.
    assert greedy_baseline([100, 200], [90, 110, 150]) == [110, 150]
    assert greedy_baseline([100, 105], [100, 104, 106]) == [100, 106]
    # The walk never goes back: event 1 is nearest to 100 but 100 is taken.
    assert greedy_baseline([100, 101], [100, 500]) == [100, 500]
    # The search range leaves one trigger per remaining event: with as many
    # triggers as events the walk cannot skip, whatever the distances.
    assert greedy_baseline([0, 1000, 2000], [1900, 2000, 2100]) == [1900, 2000, 2100]
    # Events beyond min(#events, #triggers) stay None; input order is kept.
    assert greedy_baseline([300, 100, 200], [100, 200]) == [None, 100, 200]
    # Without expected times the triggers are taken in sequence (None sorts last).
    assert greedy_baseline([None, 100], [5, 9, 12]) == [12, 9]
    # Duplicate triggers collapse first.
    assert greedy_baseline([10, 20], [10, 10]) == [10, None]


def test_greedy_baseline_output_is_increasing() -> None:
    # The last+1 µs rule guards order; on collapsed, sorted triggers the walk
    # already yields increasing times, so it never fires (as upstream).
    s = make_session(13, n=100, jitter_ms=2.0, drop=0.1, extra=0.1)
    out = [t for t in greedy_baseline(s.expected, s.triggers) if t is not None]
    assert all(a < b for a, b in zip(out, out[1:], strict=False))


def test_events_out_of_order_are_mapped_back() -> None:
    s = make_session(8, n=100, offset_ms=90.0, jitter_ms=2.0, drop=0.1, extra=0.1)
    perm = np.random.default_rng(8).permutation(100)
    corrected, report = match_events(s.expected[perm].tolist(), s.triggers.tolist())
    in_time_order, _ = match_events(s.expected, s.triggers)
    assert corrected == [in_time_order[i] for i in perm]
    assert report.unmatched_events == sorted(int(k) for k in np.flatnonzero(np.isin(perm, list(s.dropped))))
    assert all(corrected[e] == int(s.triggers[t]) for e, t in report.matches)
    assert [perm[e] for e, _ in report.matches] == sorted(perm[e] for e, _ in report.matches)


def test_duplicate_trigger_timestamps_are_collapsed() -> None:
    s = make_session(9, n=20, offset_ms=60.0)
    triggers = np.concatenate([s.triggers, s.triggers[[3, 3, 7]]])
    corrected, report = match_events(s.expected, triggers)
    assert corrected == s.triggers.tolist()
    assert report.triggers_total == 23 and report.duplicate_triggers == 3
    assert report.matches == [(i, i) for i in range(20)] and report.extra_triggers == []
    assert report.matched + len(report.extra_triggers) + report.duplicate_triggers == report.triggers_total


def test_equal_expected_times_keep_input_order() -> None:
    # Two events logged at the same instant get two triggers, in input order.
    expected = [t * 1000 * MS for t in (1, 1, 2, 3, 4, 5)]
    triggers = [t + 100 * MS for t in expected]
    triggers[1] += 3 * MS
    corrected, report = match_events(expected, triggers)
    assert corrected == triggers and report.status == "ok"
    assert report.matches == [(i, i) for i in range(6)]


def test_no_triggers() -> None:
    corrected, report = match_events([1 * MS, 2 * MS], [])
    assert corrected == [None, None]
    assert report.status == "no_triggers" and report.unmatched_events == [0, 1] and report.offset_ms is None


def test_no_events() -> None:
    corrected, report = match_events([], [5 * MS])
    assert corrected == [] and report.status == "no_events" and report.extra_triggers == [0]


def test_all_triggers_far_away_is_no_match() -> None:
    s = make_session(4, n=30)
    far = s.triggers + 60_000 * MS
    corrected, report = match_events(s.expected, far)
    assert corrected == [None] * 30
    assert report.status == "no_match" and report.matched == 0 and report.offset_ms is None
    assert report.unmatched_events == list(range(30)) and report.extra_triggers == list(range(30))
    assert report.residual_stats == {"mean": None, "median": None, "max_abs": None, "std": None}


def test_one_event() -> None:
    # One event and one trigger in the searched range correspond one to one.
    corrected, report = match_events([START_US], [START_US + 137 * MS])
    assert corrected == [START_US + 137 * MS] and report.status == "ok" and report.evidence == "one-to-one"
    assert report.offset_ms == 137.0
    # Two triggers, either could be it: never a silent choice, even when the
    # statistical threshold is switched off.
    one = MatchParameters(min_matches_for_offset=1, min_evidence_z=0.0)
    for params in (MatchParameters(), one):
        corrected, report = match_events([START_US], [START_US - 300 * MS, START_US + 137 * MS], params)
        assert corrected == [None] and report.status in ("no_match", "ambiguous")
    assert report.status == "ambiguous" and {c["offset_ms"] for c in report.candidates} == {-300.0, 137.0}


def test_noise_on_the_trigger_channel_is_no_match() -> None:
    """Random pulses line up with some events at some offset by chance (about
    one in ten here); that must not pass for a correction."""
    s = make_session(14, n=300, isi_ms=(300.0, 900.0))
    rng = np.random.default_rng(14)
    noise = rng.integers(int(s.expected[0]), int(s.expected[-1]), 300)
    corrected, report = match_events(s.expected, noise)
    assert report.status == "no_match" and corrected == [None] * 300
    assert report.chance_matches is not None and report.chance_matches > 10


def test_a_sparse_but_consistent_trigger_channel_is_trusted() -> None:
    # 70 % of the triggers lost: the other 30 % still agree far beyond chance.
    s = make_session(15, n=300, jitter_ms=2.0, drop=0.7)
    corrected, report = match_events(s.expected, s.triggers)
    assert report.status == "ok" and wrong(corrected, s) == []


def test_too_few_matches_for_an_offset() -> None:
    # One trigger cannot establish an offset for two events (default needs 2).
    corrected, report = match_events([0, 500 * MS], [100 * MS])
    assert report.status == "no_match" and corrected == [None, None]
    assert report.reason is not None and "not one-to-one: 2 events, 1 triggers" in report.reason
    # Without the threshold either event could own the trigger: ambiguous.
    relax = MatchParameters(min_matches_for_offset=1, min_evidence_z=0.0)
    _, relaxed = match_events([0, 500 * MS], [100 * MS], relax)
    assert relaxed.status == "ambiguous" and relaxed.matched == 0
    assert sorted(c["offset_ms"] for c in relaxed.candidates) == [-400.0, 100.0]


def test_report_is_json_serialisable() -> None:
    s = make_session(11, n=30, jitter_ms=2.0, drop=0.1, extra=0.1)
    data = match_events(s.expected, s.triggers)[1].to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {
        "events_total", "triggers_total", "matched", "unmatched_events", "extra_triggers", "offset_ms",
        "residuals_ms", "residual_stats", "tolerance_ms", "method", "status", "matches", "chance_matches", "evidence_z",
    }  # fmt: skip


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        match_events([float("nan")], [1])
    with pytest.raises(ValueError, match="one-dimensional"):
        match_events([[1, 2]], [1])
    with pytest.raises(ValueError, match="tolerance_ms"):
        MatchParameters(tolerance_ms=0)


def test_bin_bound_still_finds_the_offset() -> None:
    # 1024 bins over a ~400 s session: bins of ~0.8 s instead of 25 ms.
    s = make_session(12, n=400, offset_ms=-700.0, jitter_ms=2.0, drop=0.1, extra=0.1)
    corrected, report = match_events(s.expected, s.triggers, MatchParameters(max_bins=1024))
    assert wrong(corrected, s) == [] and report.status == "ok"


# ------------------------------------------------------------------ properties


def dense_optimum(
    events: list[int], triggers: list[int], offset: int, tolerance_us: float,
    event_codes: list[int], trigger_codes: list[int],
) -> tuple[int, int]:
    """(matches, total |residual|) of the best monotone one-to-one matching
    of compatible pairs (equal codes, or the event's is NO_CODE), by the
    textbook E × T alignment table: the oracle for the sparse DP."""
    best = [[(0, 0)] * (len(triggers) + 1) for _ in range(len(events) + 1)]
    for i in range(1, len(events) + 1):
        for j in range(1, len(triggers) + 1):
            options = [best[i - 1][j], best[i][j - 1]]
            residual = abs(triggers[j - 1] - events[i - 1] - offset)
            compatible = event_codes[i - 1] in (NO_CODE, trigger_codes[j - 1])
            if residual <= tolerance_us and compatible:
                count, cost = best[i - 1][j - 1]
                options.append((count + 1, cost - residual))
            best[i][j] = max(options)
    count, negative_cost = best[-1][-1]
    return count, -negative_cost


times = st.lists(st.integers(0, 20_000), min_size=0, max_size=25)


@settings(max_examples=300, deadline=None)
@given(events=times, triggers=times, offset=st.integers(-300, 300), coded=st.booleans(), seed=st.integers(0, 2**16))
def test_sparse_dp_is_optimal(events: list[int], triggers: list[int], offset: int, coded: bool, seed: int) -> None:
    events, triggers = sorted(events), sorted(set(triggers))
    rng = np.random.default_rng(seed)
    event_codes = rng.choice([NO_CODE, 1, 2], len(events)).tolist() if coded else [NO_CODE] * len(events)
    trigger_codes = rng.choice([1, 2], len(triggers)).tolist() if coded else [NO_CODE] * len(triggers)
    problem = _Problem(
        np.array(events, dtype=np.int64), np.array(triggers, dtype=np.int64),
        np.array(event_codes, dtype=np.int64), np.array(trigger_codes, dtype=np.int64), 400.0, 0.0, 0.0, coded,
    )  # fmt: skip
    alignment = _align(problem, offset)
    assert (len(alignment.pairs), alignment.cost_us) == dense_optimum(
        events, triggers, offset, 400.0, event_codes, trigger_codes
    )
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(alignment.pairs, alignment.pairs[1:], strict=False))
    assert all(event_codes[i] in (NO_CODE, trigger_codes[j]) for i, j in alignment.pairs)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], bool]:
    """Random events (shuffled), their true triggers at a random offset, and
    the recorded triggers (true ones possibly dropped, spurious ones added)."""
    gaps = draw(st.lists(st.integers(1 * MS, 3000 * MS), min_size=2, max_size=60))
    expected = (START_US + np.cumsum(gaps)).tolist()
    offset = draw(st.integers(-1500 * MS, 1500 * MS))
    true = [t + offset for t in expected]
    clean = draw(st.booleans())
    keep = draw(st.lists(st.booleans(), min_size=len(true), max_size=len(true)))
    kept = true if clean else [t for t, k in zip(true, keep, strict=True) if k]
    extra = [] if clean else draw(st.lists(st.integers(expected[0] - 3000 * MS, expected[-1] + 3000 * MS), max_size=20))
    order = draw(st.permutations(range(len(expected))))
    return [expected[i] for i in order], [true[i] for i in order], kept + extra, clean


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=sessions())
def test_matching_is_monotone_and_one_to_one(session: tuple[list[int], list[int], list[int], bool]) -> None:
    expected, true, triggers, clean = session
    corrected, report = match_events(expected, triggers)
    matched = [(e, c) for e, c in zip(expected, corrected, strict=True) if c is not None]
    assert len({c for _, c in matched}) == len(matched)  # one-to-one
    assert set(c for _, c in matched) <= set(triggers)
    ordered = sorted(matched)
    assert all(a[1] < b[1] for a, b in zip(ordered, ordered[1:], strict=False))  # monotone
    assert report.matched == len(matched) == len(report.matches) == len(report.residuals_ms)
    assert all(corrected[e] == triggers[t] for e, t in report.matches)
    assert all(abs(r) <= report.tolerance_ms for r in report.residuals_ms)
    if clean:
        # Never a wrong trigger; and from five events on (fewer are too
        # little evidence against chance at the default min_evidence_z),
        # every event gets its own.
        assert corrected in (true, [None] * len(true))
        if len(true) >= 5:
            assert corrected == true


# ------------------------------------------------------- codes, range, report


def test_event_code_from_value_or_the_apps_trial_types() -> None:
    assert [event_code(v) for v in ("2", 3, "1.0", " 7 ")] == [2, 3, 1, 7]
    assert [event_code(v) for v in (None, "", "0", "-1", "1.5", "x", True, "nan")] == [None] * 8
    # The app's rule (stimulus_presentation_screen.dart): non-target before target.
    assert event_code(None, "Target") == 1 and event_code("", "non-target") == 2 and event_code(None, "nontarget") == 2
    assert event_code(None, "neutral_face") == 3 and event_code(None, "face") is None and event_code(None, None) is None
    assert event_code("3", "target") == 3  # the value wins


def test_an_event_value_too_large_for_a_code_does_not_fail_the_job() -> None:
    """A value like "1e30" or twenty digits is accepted by the event log (up
    to 255 characters); as a code it overflowed int64 and the correction job
    failed on every attempt. No trigger line carries such a code: no code."""
    assert [event_code(v) for v in ("1e30", "99999999999999999999", str(2**31))] == [None, None, None]
    assert event_code(str(2**31 - 1)) == 2**31 - 1
    expected = [START_US, START_US + 2_504_000]
    triggers = [t + 20_000 for t in expected]
    corrected, report = match_events(expected, triggers, event_codes=[event_code("1e30"), 2], trigger_codes=[1, 2])
    assert corrected == triggers and report.status == "ok"
    with pytest.raises(ValueError, match="event_codes must hold"):
        match_events(expected, triggers, event_codes=[10**30, 1], trigger_codes=[1, 2])


def test_session_offset_range() -> None:
    start = START_US
    # Onsets 0.5-20 s, the session ends 300 s after its start: the last event's
    # trigger can be at most 300 s + 2 s, the first no earlier than -2 s.
    assert session_offset_range_ms(start, start + 300 * 10**6, [0.5, 20.0], 2000.0) == (-2500.0, 282000.0)
    assert session_offset_range_ms(start, None, [0.5, 20.0], 2000.0) == (-2500.0, 2000.0)
    assert session_offset_range_ms(start, start, [], 2000.0) == (-2000.0, 2000.0)
    # Never narrower than the margin, even when the log runs past the end.
    assert session_offset_range_ms(start, start + 10 * 10**6, [0.0, 30.0], 2000.0) == (-2000.0, 2000.0)


def coded_session(seed: int, n: int, delay_s: float, period_s: float) -> tuple[list[int], list[int], list[int]]:
    """Periodic events logged from the presentation start, their triggers
    ``delay_s`` later with codes 1-3."""
    rng = np.random.default_rng(seed)
    expected = [START_US + round(k * period_s * 1e6) for k in range(n)]
    codes = rng.choice([1, 2, 3], n).tolist()
    triggers = [t + round(delay_s * 1e6) + int(rng.integers(15_000, 30_000)) for t in expected]
    return expected, triggers, codes


def test_codes_remove_the_alias_of_a_periodic_schedule() -> None:
    expected, triggers, codes = coded_session(1, 8, 6.0, 2.504)
    # Without the first trigger, an alias one period late ties the truth on timing.
    params = {"offset_range_ms": (-2000.0, 30_000.0)}
    _, plain = match_events(expected, triggers[1:], **params)
    assert plain.status == "ambiguous" and plain.matched == 0 and plain.evidence is None
    offsets = sorted(c["offset_ms"] for c in plain.candidates)
    assert len(offsets) == 2 and 2400 < offsets[1] - offsets[0] < 2600
    assert plain.reason is not None and "not decisive" in plain.reason
    corrected, coded = match_events(expected, triggers[1:], event_codes=codes, trigger_codes=codes[1:], **params)
    assert coded.status == "ok" and corrected == [None, *triggers[1:]] and coded.codes_used
    assert coded.code_counts == {
        str(c): {"events": codes.count(c), "triggers": codes[1:].count(c), "matched": codes[1:].count(c)}
        for c in sorted(set(codes))
    }
    details = coded.event_details
    assert details[0] == {"code": codes[0], "trigger": None, "trigger_code": None, "residual_ms": None}
    assert [d["trigger"] for d in details[1:]] == list(range(7))
    assert all(d["code"] == d["trigger_code"] for d in details[1:]) and all(abs(d["residual_ms"]) < 10 for d in details[1:])
    assert coded.searched_offset_ms == [-2000.0, 30_000.0]


def test_an_event_never_takes_a_trigger_of_another_code() -> None:
    expected, triggers, codes = coded_session(2, 30, 40.0, 1.3)
    wrong_codes = [c % 3 + 1 for c in codes]  # every trigger carries another class's code
    corrected, report = match_events(expected, triggers, event_codes=codes, trigger_codes=wrong_codes,
                                     offset_range_ms=(-2000.0, 60_000.0))  # fmt: skip
    assert all(c is None or wrong_codes[triggers.index(c)] == codes[i] for i, c in enumerate(corrected))
    assert report.status != "ok" or all(d["code"] == d["trigger_code"] for d in report.event_details if d["trigger"] is not None)
    # Events without a code take any trigger.
    corrected, report = match_events(expected, triggers, event_codes=[None] * 30, trigger_codes=wrong_codes,
                                     offset_range_ms=(-2000.0, 60_000.0))  # fmt: skip
    assert corrected == triggers and report.code_counts["none"] == {"events": 30, "triggers": 0, "matched": 30}


def test_a_plain_trigger_line_ignores_the_event_codes() -> None:
    expected, triggers, codes = coded_session(3, 20, 3.0, 1.7)
    corrected, report = match_events(expected, triggers, event_codes=codes, trigger_codes=[1] * 20,
                                     offset_range_ms=(-2000.0, 10_000.0))  # fmt: skip
    assert corrected == triggers and report.status == "ok" and not report.codes_used


def test_a_line_known_to_carry_codes_uses_them_even_with_one_pulse() -> None:
    """One event whose trigger was lost and one other pulse: on timing the
    data is that of one event and its trigger. A line of a single value was
    taken for a plain 0/1 line and the codes ignored, so a pulse of another
    class was one-to-one "ok". When the caller knows the line carries codes
    (the app's trigger block), a pulse of another code is no match."""
    expected = [START_US + 4_000]
    pulse = [START_US + 37_512_000]
    corrected, report = match_events(expected, pulse, event_codes=[2], trigger_codes=[1], offset_range_ms=(-2000.0, 60_000.0))
    assert report.status == "ok" and not report.codes_used  # a plain line: timing only, as before
    corrected, report = match_events(expected, pulse, event_codes=[2], trigger_codes=[1], line_has_codes=True,
                                     offset_range_ms=(-2000.0, 60_000.0))  # fmt: skip
    assert corrected == [None] and report.status == "no_match" and report.codes_used
    assert "different codes" in (report.reason or "")
    corrected, report = match_events(expected, pulse, event_codes=[2], trigger_codes=[2], line_has_codes=True,
                                     offset_range_ms=(-2000.0, 60_000.0))  # fmt: skip
    assert corrected == pulse and report.evidence == "one-to-one" and report.codes_used
    # Events without codes: timing only, whatever the line.
    corrected, report = match_events(expected, pulse, trigger_codes=[1], line_has_codes=True, offset_range_ms=(-2000.0, 60_000.0))
    assert corrected == pulse and not report.codes_used


@pytest.mark.parametrize("coded", [True, False])
def test_a_pulse_in_a_lost_triggers_place_does_not_widen_the_radius_that_admits_it(coded: bool) -> None:
    """Eight events whose triggers come 20 ± 5 ms late; one trigger lost and
    a noise pulse 40 ms after that event's expected trigger. The final
    radius came from the 90th percentile of residuals that included the
    noise pulse itself: 46 ms, so the pulse was taken, with ``ok``."""
    rng = np.random.default_rng(7)
    expected = [START_US + round(k * 2.504e6 + rng.uniform(-150e3, 150e3)) for k in range(8)]
    triggers = [t + 37_000_000 + 20_000 + int(rng.integers(-5000, 5001)) for t in expected]
    codes = [1, 2, 3, 1, 2, 3, 1, 2]
    lost = 5
    noise = expected[lost] + 37_000_000 + 20_000 + 40_000
    pulses = sorted([*triggers[:lost], noise, *triggers[lost + 1 :]])
    pulse_codes = [*codes[:lost], codes[lost], *codes[lost + 1 :]]
    kwargs = {"event_codes": codes, "trigger_codes": pulse_codes, "line_has_codes": True} if coded else {}
    corrected, report = match_events(expected, pulses, offset_range_ms=(-2000.0, 60_000.0), **kwargs)
    assert report.status == "ok" and report.evidence == "statistical"
    assert corrected == [*triggers[:lost], None, *triggers[lost + 1 :]]
    assert report.match_radius_ms is not None and report.match_radius_ms < 40


@pytest.mark.parametrize("ppm", [-100.0, 50.0, 100.0])
def test_clock_drift_over_a_long_session_is_followed(ppm: float) -> None:
    """700 events over half an hour, the trigger clock running ``ppm`` fast
    or slow against the stopwatch: at 100 ppm the ends are 90 ms off a
    constant offset, beyond the tolerance, and about half the events were
    left uncorrected. A significant linear drift is fitted and reported."""
    rng = np.random.default_rng(11)
    expected = START_US + np.cumsum(rng.uniform(0.6e6, 4.0e6, 700)).astype(np.int64)
    true = expected + 9_000_000 + rng.integers(15_000, 30_000, 700)
    true = true + np.rint((true - START_US) * ppm * 1e-6).astype(np.int64)
    corrected, report = match_events(expected, true, offset_range_ms=(-2000.0, 60_000.0))
    assert report.status == "ok" and corrected == true.tolist()
    assert report.drift_ppm is not None and abs(report.drift_ppm - ppm) < 5
    assert report.residual_stats["max_abs"] is not None and report.residual_stats["max_abs"] < 15
    # Without drift, none is reported.
    corrected, report = match_events(expected, expected + 9_000_000 + rng.integers(15_000, 30_000, 700),
                                     offset_range_ms=(-2000.0, 60_000.0))  # fmt: skip
    assert report.status == "ok" and report.drift_ppm is None


def test_drift_does_not_hand_a_periodic_session_to_its_alias() -> None:
    """700 events 2.504 s apart, no codes, 50 ppm drift (88 ms over the
    session), 70 noise pulses. At one constant offset the truth's spread
    (drift + latency + sample grid) exceeds twice the tolerance, so it
    matched 694; the alias two stimuli early drops the two most drifted
    events and matched 698: every event put two stimuli early, ``ok``.
    Candidates are now judged after each one's drift fit."""
    rng = np.random.default_rng(11)
    expected = START_US + np.arange(700, dtype=np.int64) * 2_504_000
    true = expected + 168_000_000 + rng.integers(12_000, 28_000, 700)
    true = (true + np.rint((true - START_US) * 50e-6).astype(np.int64) + 3999) // 4000 * 4000
    pulses = np.sort(np.concatenate([true, rng.integers(START_US, int(true[-1]), 70)]))
    corrected, report = match_events(expected, pulses, offset_range_ms=(-2000.0, 175_000.0))
    assert report.status == "ok" and corrected == true.tolist()
    assert report.drift_ppm is not None and abs(report.drift_ppm - 50) < 3


def test_every_near_equal_alias_is_a_candidate() -> None:
    """700 periodic events, no codes, 100 ppm drift, 10 % of the triggers
    lost, 70 noise pulses, presentation 68 s late: the drift smears every
    alias's vote alike, and the eight strongest vote peaks were all aliases.
    The best of them (one stimulus early) beat the next alias by two and was
    taken: 630 events on their neighbours' triggers, ``ok``. Every peak
    nearly as strong as the strongest is now judged, the truth among them;
    it leads its aliases by about one event: not decisive."""
    rng = np.random.default_rng(2)
    n = 700
    expected = START_US + np.arange(n, dtype=np.int64) * 2_504_000
    true = expected + 68_500_000 + rng.integers(12_000, 28_000, n)
    true = (true + np.rint((true - START_US) * 100e-6).astype(np.int64) + 3999) // 4000 * 4000
    lost = set(rng.choice(n, n // 10, replace=False).tolist())
    kept = np.array([t for i, t in enumerate(true) if i not in lost])
    pulses = np.sort(np.concatenate([kept, rng.integers(START_US, int(true[-1]), n // 10)]))
    corrected, report = match_events(expected, pulses, offset_range_ms=(-2000.0, 72_000.0))
    wrong = [i for i, c in enumerate(corrected) if c is not None and c != true[i]]
    assert wrong == [] and (report.status != "ok" or report.matched > 600), (report.status, len(wrong))


def test_a_candidate_is_placed_where_it_matches_most() -> None:
    """8 periodic events, no codes, latencies 12-100 ms (76 ms apart at the
    extremes, within the tolerance's 100 ms window). Settled on the median
    difference, the truth matched 6 and the alias one stimulus late 7: all
    seven on their neighbours' triggers, ``ok``. Each candidate is now also
    tried at the centre of the window that holds most differences."""
    onsets_ms = [1, 2505, 5009, 7513, 10017, 12521, 15025, 17529]
    pulses = [81044672, 150349662, 152841662, 155389662, 157861662, 160429662, 162869662, 165397662, 167941662]
    expected = [START_US + o * MS for o in onsets_ms]
    triggers = [START_US + p for p in pulses]
    corrected, report = match_events(expected, triggers, offset_range_ms=(-2001.0, 153_239.0))
    # The truth now leads (8 to 7); with differences that fill the window a
    # lead of one over a periodic alias is no proof: ambiguous. Never the alias.
    assert all(c is None or c == t for c, t in zip(corrected, triggers[1:], strict=True))
    assert report.status == "ambiguous" and report.runner_up is not None
    offsets = sorted(c["offset_ms"] for c in report.candidates)
    assert any(150_300 < o < 150_420 for o in offsets) and abs(offsets[1] - offsets[0] - 2504) < 100


def test_a_sharper_alias_with_fewer_matches_is_not_decisive() -> None:
    """8 periodic events 0.6 s apart, no codes, latencies 12-100 ms: the
    truth matches all 8 but its residuals spread 88 ms; the alias two
    stimuli early matches 6 whose residuals happen to be tight, and won on
    matches within the precision radius: six events on other stimuli's
    triggers, ``ok``. Where stimuli are far apart (beyond four tolerances),
    a candidate with more matches within the tolerance than the winner makes
    the session ambiguous."""
    onsets_ms = [17, 617, 1217, 1817, 2417, 3017, 3617, 4217]
    pulses = [167698113, 241227273, 241827273, 242423273, 243039273, 243635273, 244223273, 244895273, 245459273]
    expected = [START_US + o * MS for o in onsets_ms]
    triggers = [START_US + p for p in pulses]
    corrected, report = match_events(expected, triggers, offset_range_ms=(-2000.0, 245_000.0))
    assert report.status != "ok" or corrected == triggers[1:], (report.status, report.offset_ms)


def test_periodic_aliases_are_not_told_apart_by_truncated_counts() -> None:
    """A session from ``benchmarks/correction_adversarial.py``-style
    generation (stored: 400 events 0.6 s apart, no codes, latencies 12-100
    ms, 150 ppm drift, 5 % lost): the truth's differences spread wider than
    the tolerance's window, so every alias's count is the truncation of
    nearly the same spread, and the alias one stimulus early won 379 to 374:
    376 events on their neighbours' triggers, ``ok``."""
    data = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "correction_periodic_wide_latency_drift.npz")
    expected = START_US + data["expected_rel_us"]
    truth = [None if t < 0 else START_US + int(t) for t in data["truth_rel_us"].tolist()]
    low, high = data["offset_range_ms"].tolist()
    corrected, report = match_events(expected, START_US + data["pulses_rel_us"], offset_range_ms=(low, high))
    wrong = [i for i, c in enumerate(corrected) if c is not None and c != truth[i]]
    assert len(wrong) <= 5, (report.status, len(wrong))  # at most noise-like coincidences, never the alias


def test_the_decisive_lead_prefers_more_matches() -> None:
    """8 periodic events, presentation 6 s late, no codes: the truth matches
    8, its aliases 7 and 6; all within the searched range."""
    expected, triggers, _ = coded_session(4, 8, 6.0, 2.504)
    corrected, report = match_events(expected, triggers, offset_range_ms=(-2000.0, 12_000.0))
    assert corrected == triggers and report.status == "ok" and report.evidence == "statistical"
    assert report.runner_up is not None and report.runner_up["matched"] == 7


def test_two_events_one_to_one_and_not() -> None:
    expected = [START_US, START_US + 2_504_000]
    triggers = [t + 9_321_000 for t in expected]
    corrected, report = match_events(expected, triggers, offset_range_ms=(-2000.0, 20_000.0))
    assert corrected == triggers and report.evidence == "one-to-one" and report.offset_ms == 9321.0
    # The triggers 80 ms further apart than the events: not the same intervals.
    corrected, report = match_events(expected, [triggers[0], triggers[1] + 80_000], offset_range_ms=(-2000.0, 20_000.0))
    assert corrected == [None, None] and report.status == "no_match"
    assert report.reason is not None and "intervals" in report.reason
    # Codes in the wrong order: not one to one.
    corrected, report = match_events(expected, triggers, event_codes=[1, 2], trigger_codes=[2, 1],
                                     offset_range_ms=(-2000.0, 20_000.0))  # fmt: skip
    assert corrected == [None, None] and report.reason is not None and "different codes" in report.reason
    # One event, three pulses of its code: not one to one.
    corrected, report = match_events(expected[:1], [triggers[0], triggers[0] + 10**6, triggers[0] + 3 * 10**6],
                                     offset_range_ms=(-2000.0, 20_000.0))  # fmt: skip
    assert corrected == [None] and "1 events, 3 triggers" in (report.reason or "")


def test_codes_are_validated() -> None:
    with pytest.raises(ValueError, match="event_codes has 1 entries for 2 times"):
        match_events([1, 2], [1], event_codes=[1])
    with pytest.raises(ValueError, match="trigger_codes must hold"):
        match_events([1], [1], trigger_codes=[-3])
    with pytest.raises(ValueError, match="offset_range_ms"):
        match_events([1], [1], offset_range_ms=(5.0, -5.0))


def test_poisson_tail() -> None:
    assert _poisson_tail(0.0, 1) == 0.0 and _poisson_tail(3.0, 0) == 1.0
    assert _poisson_tail(0.5, 1) == pytest.approx(1 - math.exp(-0.5))
    assert _poisson_tail(2.0, 3) == pytest.approx(1 - math.exp(-2) * (1 + 2 + 2))
    assert 0 < _poisson_tail(0.01, 60) < 1e-100


@st.composite
def app_sessions(draw: st.DrawFn) -> tuple[list[int], list[int | None], list[int], list[int], list[int], bool, float]:
    """Random events with codes (some without), their triggers a random
    0-300 s later, possibly some dropped and spurious coded pulses added;
    and the session's end."""
    gaps = draw(st.lists(st.integers(200 * MS, 4000 * MS), min_size=0, max_size=40))
    expected = (START_US + np.cumsum([0, *gaps])).tolist()
    codes = draw(st.lists(st.sampled_from([1, 2, 3, None]), min_size=len(expected), max_size=len(expected)))
    delay = draw(st.integers(0, 300_000)) * MS
    true = [t + delay + draw(st.integers(15 * MS, 30 * MS)) for t in expected]
    true_codes = [c if c is not None else draw(st.sampled_from([1, 2, 3])) for c in codes]
    clean = draw(st.booleans())
    keep = [True] * len(true) if clean else draw(st.lists(st.booleans(), min_size=len(true), max_size=len(true)))
    end = true[-1] + 2000 * MS
    extra = [] if clean else draw(st.lists(st.integers(START_US, end), max_size=10))
    triggers = [t for t, k in zip(true, keep, strict=True) if k] + extra
    trigger_codes = [c for c, k in zip(true_codes, keep, strict=True) if k] + [draw(st.sampled_from([1, 2, 3])) for _ in extra]
    return expected, codes, true, triggers, trigger_codes, clean, (end - START_US) / 1e6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=app_sessions())
def test_codes_are_respected_and_clean_sessions_are_exact(session: tuple) -> None:
    expected, codes, true, triggers, trigger_codes, clean, seconds = session
    onsets = [(t - START_US) / 1e6 for t in expected]
    corrected, report = match_events(
        expected, triggers, event_codes=codes, trigger_codes=trigger_codes,
        offset_range_ms=session_offset_range_ms(START_US, START_US + round(seconds * 1e6), onsets, 2000.0),
    )  # fmt: skip
    by_time = dict(zip(triggers, trigger_codes, strict=True))
    if report.codes_used:
        assert all(c is None or codes[i] is None or by_time[c] == codes[i] for i, c in enumerate(corrected))
    if clean:
        assert corrected == true and report.status == "ok"
