"""One session of a BIDS dataset: the recording, its sidecars, its events and its scans row.

``write_session`` streams the packets through ``placement.plan_recording``
into a ``BrainVisionWriter`` (one multiplexed block of at most
``placement.BLOCK_SAMPLES`` samples in memory at a time), then
writes ``_eeg.json``, ``_channels.tsv``, ``_events.tsv``/``.json`` and the
session's ``scans.tsv`` row. The conventions it follows (gaps as
``BAD_ACQ_SKIP`` events, ``onset_source``, ``stim_file`` relative to
``stimuli/``) are described in ``dataset.py`` and in every dataset's README.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from eeghub.core.files import validate_file_name
from eeghub.core.timeline import Packet

from .brainvision import BrainVisionWriter, resolutions_for_types, safe_channel_names, units_for_types
from .labels import is_bids_label
from .placement import CallableSource, RecordingLayout, iter_multiplexed, plan_recording
from .tsv import NA, cell, inside, iso_utc, number, read_tsv, write_json, write_tsv

GAP_TRIAL_TYPE = "BAD_ACQ_SKIP"
BIDS_CHANNEL_TYPE = {"eeg": "EEG", "emg": "EMG", "eog": "EOG", "stim": "TRIG", "misc": "MISC"}
CHANNEL_DESCRIPTION = {
    "EEG": "ElectroEncephaloGram",
    "EMG": "ElectroMyoGram",
    "EOG": "ElectroOculoGram",
    "TRIG": "Trigger (device counts, 0 = no trigger)",
    "MISC": "Miscellaneous",
}
UNIT_IN_TSV = {"V": "µV", "n/a": NA}
"""channels.tsv states the unit the .vhdr stores (volts as µV)."""


@dataclass(frozen=True)
class SessionSpec:
    """One session to write. Labels must already be valid BIDS labels
    (use ``labels.LabelMap``); ``start_ms``/``end_ms`` bound the recording."""

    subject: str
    session: str
    task: str
    session_id: str
    session_type: str
    sampling_rate: float
    lsb_to_volts: float
    channel_names: Sequence[str]
    channel_types: Sequence[str]
    start_ms: int | None
    end_ms: int | None
    device_id: str | None = None
    manufacturer: str | None = None
    model_name: str | None = None
    eeg_reference: str = NA
    task_description: str | None = None
    tolerance_ms: float | None = None
    """Gap/overlap tolerance passed to ``plan_stream`` (None: its default)."""
    sidecar_extra: Mapping[str, Any] = field(default_factory=dict)
    """More ``_eeg.json`` fields (InstitutionName, CapManufacturer, …); they win over ours."""
    stimulus_presentation: Mapping[str, Any] | None = None
    """``StimulusPresentation`` of ``_events.json`` (OperatingSystem, SoftwareName, …), when known."""

    @property
    def stem(self) -> str:
        return f"sub-{self.subject}_ses-{self.session}_task-{self.task}"


@dataclass(frozen=True)
class EventSpec:
    """One logged event. ``onset_us`` is the corrected absolute onset (µs
    since the epoch) or None when no trigger matched; ``logged_onset_s`` is
    the app's onset in seconds from the session start; ``stim_file`` is a
    path relative to ``stimuli/``: a file name, or ``calibration/<name>``."""

    onset_us: int | None
    logged_onset_s: float | None
    duration: float | None = None
    trial_type: str | None = None
    value: str | int | float | None = None
    stim_file: str | None = None
    event_id: str | int | None = None


@dataclass
class SessionResult:
    files: list[str]
    """Written files, relative to the dataset root."""
    recording_start: datetime
    samples: int
    duration_s: float
    gaps: list[tuple[float, float]]
    """(onset s, duration s) of zero-filled gaps."""
    duplicates: list[str]
    overlaps: list[tuple[str, int]]
    outside_bounds: list[str]
    trimmed_samples: int
    events_from_trigger: int
    events_from_log: int
    events_not_placed: list[tuple[str | int | None, str]]
    """(event id, reason) of events with no usable onset at all (kept out of events.tsv)."""
    missing_stimuli: list[str] = field(default_factory=list)
    """``stim_file`` names not found in ``stimuli/``: written as ``n/a`` (the
    validator rejects a reference to a missing file)."""


def write_session(
    root: Path,
    spec: SessionSpec,
    packets: Sequence[Packet],
    get_signals: Callable[[str], np.ndarray],
    events: Sequence[EventSpec],
    quality: Mapping[str, Mapping[str, str]],
    power_line_frequency: float | None,
) -> SessionResult:
    """Write one session's recording and sidecars, streaming block by block.

    ``get_signals(object_id)`` returns that packet's decoded int16 signals
    (channels × samples, channels in ``spec.channel_names`` order). When it
    also has a ``place`` method (a ``placement.SegmentSource``, as
    ``runner.SessionSignals``), that is used instead: it decodes a block's
    packets straight into the multiplexed block the ``.eeg`` file receives.
    ``quality`` maps a channel name to ``{"status": "good"|"bad",
    "description": …}``; missing channels are good. When it also has a
    ``channel_report()`` method (``runner._SessionQuality``), the full
    report is written beside the recording as
    ``…_desc-quality_channels.json`` (read after the data is written). ``power_line_frequency``
    comes from configuration (None writes ``n/a``). Raises
    ``placement.NoSamplesError`` when no sample lies within the session, and
    FileExistsError rather than overwrite a recording already written.
    """
    _check_spec(spec)
    names = safe_channel_names(spec.channel_names)
    types = list(spec.channel_types)
    layout = plan_recording(
        packets,
        sampling_rate=spec.sampling_rate,
        start_ms=spec.start_ms,
        end_ms=spec.end_ms,
        tolerance_ms=spec.tolerance_ms,
    )
    eeg_dir = inside(root, f"sub-{spec.subject}", f"ses-{spec.session}", "eeg")
    eeg_dir.mkdir(parents=True, exist_ok=True)
    stem = eeg_dir / f"{spec.stem}_eeg"
    if stem.with_name(stem.name + ".vhdr").exists():
        raise FileExistsError(f"{stem.name}.vhdr already exists: two sessions got the same labels")
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=layout.start_us)

    writer = BrainVisionWriter(
        stem,
        names,
        units_for_types(types),
        spec.sampling_rate,
        resolutions_for_types(types, spec.lsb_to_volts),
        start,
    )
    source = get_signals if callable(getattr(get_signals, "place", None)) else CallableSource(get_signals, len(names))
    with writer:
        for block in iter_multiplexed(layout, source, len(names)):  # type: ignore[arg-type]
            writer.write_multiplexed(block)
        for gap in layout.gaps:
            writer.add_marker("Comment", GAP_TRIAL_TYPE, gap.offset, gap.samples)
    if writer.samples_written != layout.total_samples:  # pragma: no cover - an internal invariant
        raise RuntimeError(f"wrote {writer.samples_written} samples, planned {layout.total_samples}")

    files = [writer.vhdr_path, writer.vmrk_path, writer.eeg_path]
    sidecar = eeg_dir / f"{spec.stem}_eeg.json"
    write_json(sidecar, _eeg_sidecar(spec, types, layout, power_line_frequency))
    channels = eeg_dir / f"{spec.stem}_channels.tsv"
    _write_channels(channels, spec, names, types, quality)
    files += [sidecar, channels]
    full_report = getattr(quality, "channel_report", None)
    if callable(full_report):
        report_path = eeg_dir / f"{spec.stem}{QUALITY_REPORT_SUFFIX}"
        write_quality_report(report_path, spec, names, full_report())
        files.append(report_path)

    stimuli_dir = inside(root, "stimuli")
    rows, not_placed, missing = _event_rows(spec, layout, events, lambda name: (stimuli_dir / name).is_file())
    if rows:
        events_tsv = eeg_dir / f"{spec.stem}_events.tsv"
        write_tsv(events_tsv, EVENT_COLUMNS, rows)
        events_json = eeg_dir / f"{spec.stem}_events.json"
        events_doc = _events_sidecar(rows)
        if spec.stimulus_presentation:
            events_doc["StimulusPresentation"] = dict(spec.stimulus_presentation)
        write_json(events_json, events_doc)
        files += [events_tsv, events_json]
    files.append(_add_scan(root, spec, writer.vhdr_path, start))
    base = Path(root).resolve()
    sources = [row["onset_source"] for row in rows]
    return SessionResult(
        files=[path.relative_to(base).as_posix() for path in files],
        recording_start=start,
        samples=layout.total_samples,
        duration_s=layout.duration_s,
        gaps=[(g.offset / spec.sampling_rate, g.samples / spec.sampling_rate) for g in layout.gaps],
        duplicates=layout.duplicates,
        overlaps=layout.overlaps,
        outside_bounds=layout.outside_bounds,
        trimmed_samples=layout.trimmed_samples,
        events_from_trigger=sources.count("trigger"),
        events_from_log=sources.count("logged"),
        events_not_placed=not_placed,
        missing_stimuli=missing,
    )


QUALITY_REPORT_SUFFIX = "_desc-quality_channels.json"
"""The predecessor's per-recording channel-quality report, beside the
recording. Not a BIDS file: the dataset's ``.bidsignore`` lists it."""


def write_quality_report(
    path: Path, spec: SessionSpec, names: Sequence[str], report: Mapping[str, Mapping[str, Any]]
) -> None:
    """``{channel: {status, reasons, zero_ratio, bad_impedance_ratio,
    unknown_impedance_ratio, flatline, type, has_warning}}`` as the
    predecessor wrote it (indent 2), keyed by the channel names of
    ``channels.tsv``, in channel order."""
    document = {
        name: dict(report[original])
        for original, name in zip(spec.channel_names, names, strict=True)
        if original in report
    }
    write_json(path, document)


def _check_spec(spec: SessionSpec) -> None:
    for kind, label in (("subject", spec.subject), ("session", spec.session), ("task", spec.task)):
        if not is_bids_label(label):
            raise ValueError(f"{kind} label {label!r} is not a valid BIDS label (letters and digits only)")
    if len(spec.channel_names) != len(spec.channel_types) or not spec.channel_names:
        raise ValueError("need one type per channel, and at least one channel")
    if not (spec.lsb_to_volts > 0 and math.isfinite(spec.lsb_to_volts)):
        raise ValueError(f"lsb_to_volts must be a positive number, got {spec.lsb_to_volts!r}")


def _eeg_sidecar(
    spec: SessionSpec, types: Sequence[str], layout: RecordingLayout, power_line_frequency: float | None
) -> dict[str, Any]:
    count = {kind: types.count(kind) for kind in ("eeg", "eog", "emg", "misc", "stim")}
    document: dict[str, Any] = {
        "TaskName": cell(spec.session_type) if spec.session_type.strip() else spec.task,
        "SamplingFrequency": spec.sampling_rate,
        "PowerLineFrequency": power_line_frequency if power_line_frequency is not None else NA,
        "EEGReference": spec.eeg_reference,
        "SoftwareFilters": NA,
        "HardwareFilters": NA,
        "EEGChannelCount": count["eeg"],
        "EOGChannelCount": count["eog"],
        "ECGChannelCount": 0,
        "EMGChannelCount": count["emg"],
        "MISCChannelCount": count["misc"],  # BIDS 1.11 spelling (was MiscChannelCount)
        "TriggerChannelCount": count["stim"],
        "RecordingDuration": layout.duration_s,
        "RecordingType": "continuous",
    }
    if spec.task_description:
        document["TaskDescription"] = spec.task_description
    if spec.manufacturer:
        document["Manufacturer"] = spec.manufacturer
    if spec.model_name:
        document["ManufacturersModelName"] = spec.model_name
    if spec.device_id:
        document["DeviceSerialNumber"] = spec.device_id
    document.update(spec.sidecar_extra)
    return document


def _write_channels(
    path: Path,
    spec: SessionSpec,
    names: Sequence[str],
    types: Sequence[str],
    quality: Mapping[str, Mapping[str, str]],
) -> None:
    rows: list[dict[str, object]] = []
    for original, name, kind in zip(spec.channel_names, names, types, strict=True):
        bids_type = BIDS_CHANNEL_TYPE.get(kind, "MISC")
        report = quality.get(original, quality.get(name, {}))
        status = report.get("status", "good")
        if status not in ("good", "bad"):
            raise ValueError(f"channel {original!r}: status must be 'good' or 'bad', got {status!r}")
        description = CHANNEL_DESCRIPTION[bids_type]
        if name != original:
            description += f" (device name {original!r})"
        rows.append(
            {
                "name": name,
                "type": bids_type,
                "units": UNIT_IN_TSV[units_for_types([kind])[0]],
                "low_cutoff": None,
                "high_cutoff": None,
                "description": description,
                "sampling_frequency": spec.sampling_rate,
                "status": status,
                "status_description": report.get("description") or None,
            }
        )
    columns = ["name", "type", "units", "low_cutoff", "high_cutoff", "description", "sampling_frequency"]
    write_tsv(path, [*columns, "status", "status_description"], rows)


EVENT_COLUMNS = [
    "onset",
    "duration",
    "trial_type",
    "value",
    "stim_file",
    "sample",
    "onset_source",
    "logged_onset",
    "event_id",
]


def _event_rows(
    spec: SessionSpec, layout: RecordingLayout, events: Sequence[EventSpec], stimulus_exists: Callable[[str], bool]
) -> tuple[list[dict[str, object]], list[tuple[str | int | None, str]], list[str]]:
    """Rows of events.tsv (events and gaps, by sample), the events that had
    no onset at all, and the stimulus names not found."""
    rate = spec.sampling_rate
    placed: list[tuple[int, int, dict[str, object]]] = []
    not_placed: list[tuple[str | int | None, str]] = []
    missing: list[str] = []
    for order, event in enumerate(events):
        logged = event.logged_onset_s
        logged_ok = logged is not None and math.isfinite(logged)
        if event.onset_us is not None:
            time_us, source = int(event.onset_us), "trigger"
        elif logged_ok and spec.start_ms is not None:
            assert logged is not None
            time_us, source = round(spec.start_ms * 1000) + round(logged * 1e6), "logged"
        else:
            not_placed.append((event.event_id, "no corrected onset and no finite logged onset"))
            continue
        stim_file = event.stim_file
        if stim_file is not None:
            for part in stim_file.split("/"):  # a name, or folder/name (calibration/…)
                validate_file_name(part, field="events.stim_file")
            if not stimulus_exists(stim_file):
                if stim_file not in missing:
                    missing.append(stim_file)
                stim_file = None
        sample = layout.sample_at(time_us)
        duration = event.duration if event.duration is not None and math.isfinite(event.duration) else None
        placed.append(
            (
                sample,
                order,
                {
                    "onset": number(sample / rate),
                    "duration": duration if duration is not None and duration >= 0 else None,
                    "trial_type": event.trial_type,
                    "value": event.value,
                    "stim_file": stim_file,
                    "sample": sample,
                    "onset_source": source,
                    "logged_onset": logged if logged_ok else None,
                    "event_id": event.event_id,
                },
            )
        )
    for gap in layout.gaps:
        row: dict[str, object] = {
            "onset": number(gap.offset / rate),
            "duration": number(gap.samples / rate),
            "trial_type": GAP_TRIAL_TYPE,
            "sample": gap.offset,
            "onset_source": "exporter",
        }
        placed.append((gap.offset, -1, row))
    placed.sort(key=lambda item: (item[0], item[1]))
    return [row for _, _, row in placed], not_placed, missing


def _events_sidecar(rows: Sequence[Mapping[str, object]]) -> dict[str, Any]:
    trial_types = sorted({cell(row.get("trial_type")) for row in rows} - {NA})
    levels = {t: ("Zero-filled span: no data arrived from the device" if t == GAP_TRIAL_TYPE else t) for t in trial_types}
    return {
        "onset": {"Description": "Onset from the first sample of the recording, an exact sample time", "Units": "s"},
        "duration": {"Description": "Duration as logged (gaps: the zero-filled span)", "Units": "s"},
        "trial_type": {"Description": "Event type as logged by the app", "Levels": levels},
        "value": {"Description": "Event value as logged by the app"},
        "stim_file": {"Description": "Stimulus presented, relative to stimuli/"},
        "sample": {"Description": "Onset as a sample index of the recording (0 = first sample)"},
        "onset_source": {
            "Description": "Where the onset comes from",
            "Levels": {
                "trigger": "Corrected onset: the trigger edge matched to this event",
                "logged": "No trigger matched: session start plus the onset logged by the app",
                "exporter": "A gap in the data stream found by the exporter",
            },
        },
        "logged_onset": {"Description": "Onset logged by the app, from the session start", "Units": "s"},
        "event_id": {"Description": "The event's id in eeghub"},
    }


def _add_scan(root: Path, spec: SessionSpec, vhdr: Path, start: datetime) -> Path:
    """Add (or replace) this recording's row in the session's scans.tsv."""
    path = inside(root, f"sub-{spec.subject}", f"ses-{spec.session}", f"sub-{spec.subject}_ses-{spec.session}_scans.tsv")
    filename = f"eeg/{vhdr.name}"
    rows: list[dict[str, object]] = []
    if path.exists():
        _, old = read_tsv(path)
        rows = [dict(row) for row in old if row.get("filename") != filename]
    rows.append({"filename": filename, "acq_time": iso_utc(start)})
    rows.sort(key=lambda row: str(row["filename"]))
    write_tsv(path, ["filename", "acq_time"], rows)
    return path
