"""The contract of experiment-level (offline) analyses (hook ``eeghub_experiment_analyses``).

A live analysis sees the last seconds of one stream; an experiment analysis
sees a whole experiment after the fact: every participant's recordings with
their corrected events, and the experiment's stimuli with their metadata.
It runs as a job (``plugins/erp`` runs them: outbox, queue, worker threads),
never on the event loop.

An experiment analysis is any object with:

- ``id`` (str): unique; the ``kind`` of its rows in ``erp_analysis_results``
  and the name in ``POST /api/v1/experiments/{id}/analyses/{kind}``;
- ``display_name`` and ``description`` (str);
- ``run(data: ExperimentData) -> ExperimentAnalysisResult``: called in a
  worker thread; it may block. It pulls participants one at a time from
  ``data.participants()`` (each is read from storage when asked for, so only
  one participant's recordings need be in memory) and may report progress
  with ``data.progress(fraction, stage)``;
- optionally ``figures`` (tuple of names) and ``render(result: dict, name) ->
  bytes``: a PNG drawn from the stored ``result`` (called in a worker thread
  when a client asks for it).

Everything here is plain data: numpy arrays and Python values, no ports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

OnsetSource = Literal["trigger", "logged"]


@dataclass(frozen=True, slots=True)
class Stimulus:
    """A row of the experiment's stimulus list (its CSV), as uploaded."""

    file_name: str
    trial_type: str | None = None
    stimulus_type: str | None = None
    item_name: str | None = None
    brand_name: str | None = None
    description: str | None = None
    category: str | None = None
    gender: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One logged event of a recording.

    ``sample`` is the sample index in ``Recording.data`` of its onset: from
    the trigger when ``source`` is ``trigger``; from the logged onset when
    ``logged`` (its timing is then unknown to tens of milliseconds or
    worse). None when the onset lies outside the recorded data."""

    sample: int | None
    source: OnsetSource
    trial_type: str | None
    stim_file: str | None
    event_id: int | None = None


@dataclass(slots=True)
class Recording:
    """One session of one participant, continuous.

    ``data`` is channels × samples in volts (float32); samples the device did
    not deliver (gaps between packets) are NaN. ``report`` says what was
    left out while reading (missing or undecodable objects, gaps)."""

    session_id: str
    session_type: str
    sampling_rate: float
    channel_names: list[str]
    channel_types: list[str]
    data: np.ndarray
    events: list[Event]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Participant:
    user_id: str
    recordings: list[Recording]


@dataclass(slots=True)
class SessionInfo:
    """A session of the experiment as the database knows it (no signals)."""

    session_id: str
    user_id: str
    session_type: str
    event_correction_status: str
    events_total: int
    events_on_trigger: int
    link_status: str = "completed"
    """``pending`` or ``processing`` while its packets are being linked
    (again, after a late packet), ``failed``; else ``completed``."""
    ended: bool = True
    """False while it is being recorded (no end time yet)."""


@dataclass(slots=True)
class ExperimentData:
    """What ``run`` receives."""

    experiment_id: str
    stimuli: list[Stimulus]
    sessions: list[SessionInfo]
    """Every session of the experiment with its type and event counts."""
    participant_ids: list[str]
    """The participants whose recordings ``participants()`` yields, in that order."""
    load: Callable[[str], Participant]
    """Reads one participant's recordings (blocking; from a worker thread)."""
    progress: Callable[[float, str], None] = lambda fraction, stage: None
    settings: dict[str, Any] = field(default_factory=dict)
    """The analysis's own configuration table (``[plugin.<id>]``)."""

    def participants(self) -> Iterator[Participant]:
        """One participant at a time, read when asked for."""
        for user_id in self.participant_ids:
            yield self.load(user_id)


@dataclass(slots=True)
class ExperimentAnalysisResult:
    """What ``run`` returns.

    ``status``: ``ok``, or a word naming why there is no answer
    (``insufficient_data``, ``no_usable_participants``, ...). ``summary``: one
    or two sentences built from the numbers. ``recommendations``: stimulus
    file names (only for analyses that recommend; empty otherwise).
    ``result``: everything else, JSON-encodable (plain floats, lists, dicts;
    no numpy values), stored and served as it is. ``missing``: what the
    experiment lacks for this analysis, one sentence each."""

    status: str
    summary: str
    result: dict[str, Any]
    recommendations: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


REQUIRED_ATTRIBUTES: Sequence[str] = ("id", "display_name", "description", "run")


def check_experiment_analysis(obj: Any) -> list[str]:
    """What ``obj`` lacks to be an experiment analysis (empty: nothing)."""
    problems = [f"missing attribute {name!r}" for name in REQUIRED_ATTRIBUTES if not hasattr(obj, name)]
    if not problems:
        if not isinstance(obj.id, str) or not obj.id.replace("_", "").replace("-", "").isalnum():
            problems.append("id must be a non-empty string of letters, digits, '-' and '_'")
        if not callable(obj.run):
            problems.append("run must be callable")
        if hasattr(obj, "render") and not callable(obj.render):
            problems.append("render must be callable")
    return problems
