"""Write a BIDS dataset from a session's packets, events and metadata (no database, no network).

The exporter's orchestration reads the database and the object store and
calls these functions in a worker thread; everything here is plain files.
This module writes the dataset-level files and re-exports the session
writer (``session.py``) and the validator (``validation.py``), so it is the
one entry point. Layout, for each session (one recording per session, BrainVision, see
``brainvision.py``)::

    dataset_description.json  README  participants.tsv  participants.json  .bidsignore
    stimuli/<file_name>                              the experiment's stimuli
    stimuli/calibration/<file_name>                  calibration items its sessions showed
    sourcedata/label_map.json                        original ids → BIDS labels
    sourcedata/media/media.tsv + sub-<S>/ses-<T>/…   photos and audio from the app
    sub-<S>/ses-<T>/sub-<S>_ses-<T>_scans.tsv        filename, acq_time
    sub-<S>/ses-<T>/eeg/sub-<S>_ses-<T>_task-<K>_eeg.vhdr|.vmrk|.eeg|.json
    sub-<S>/ses-<T>/eeg/sub-<S>_ses-<T>_task-<K>_channels.tsv
    sub-<S>/ses-<T>/eeg/sub-<S>_ses-<T>_task-<K>_desc-quality_channels.json   (the predecessor's quality report)
    sub-<S>/ses-<T>/eeg/sub-<S>_ses-<T>_task-<K>_events.tsv|.json

Conventions (also written into the README, so a dataset explains itself):

- The recording holds the device's int16 counts unchanged; the trigger
  channel is included (type ``TRIG``).
- ``meas_date`` (the .vmrk New Segment date) and ``acq_time`` are the time
  of the recording's first sample, which is at or after the session start.
- Gaps in the data stream are zero-filled and listed in ``events.tsv`` with
  ``trial_type`` ``BAD_ACQ_SKIP`` (MNE's name for skipped acquisition, so MNE
  leaves them out of epochs); see ``placement.py`` for overlaps and bounds.
- Every logged event is in ``events.tsv``. ``onset_source`` says where its
  onset comes from: ``trigger`` (the onset corrected to a trigger edge) or
  ``logged`` (no trigger matched: the session start plus the app's logged
  onset). ``logged_onset`` keeps the app's own value; ``sample`` is the
  onset's sample index. Onsets are always exact sample times. An event
  with neither onset cannot be placed: it is reported in
  ``SessionResult.events_not_placed``, never dropped silently.
- ``stim_file`` is relative to ``stimuli/``, as the BIDS specification says
  (``img.png`` means ``stimuli/img.png``).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import eeghub
from eeghub.core.files import MAX_FILE_NAME, file_name_problem, validate_file_name

from .labels import is_bids_label
from .session import EventSpec, SessionResult, SessionSpec, write_session
from .tsv import cell, inside, iso_utc, neutralise, read_tsv, write_json, write_tsv
from .validation import ValidationSummary, validate

__all__ = [
    "BIDS_VERSION",
    "EventSpec",
    "MediaItem",
    "SessionResult",
    "SessionSpec",
    "ValidationSummary",
    "validate",
    "write_bidsignore",
    "write_dataset_description",
    "write_participants",
    "write_readme",
    "write_session",
    "write_sourcedata_media",
    "write_stimuli",
]

BIDS_VERSION = "1.11.1"
"""The BIDS version implemented by the bundled bids-validator-deno 3.0 (schema 1.2.7)."""

Source = bytes | Path


@dataclass(frozen=True)
class MediaItem:
    """A photo or audio clip from the app, kept under ``sourcedata/media``."""

    media_id: str
    subject: str
    session: str | None
    kind: str
    file_name: str
    source: Source
    captured_at: datetime | None = None
    content_type: str | None = None


# ---------------------------------------------------------------- dataset-level files
def write_dataset_description(
    root: Path,
    *,
    name: str,
    authors: Sequence[str] = (),
    license: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """``dataset_description.json`` (BIDSVersion = what the bundled validator implements)."""
    document: dict[str, Any] = {
        "Name": cell(name) if name.strip() else "eeghub export",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
    }
    if license:
        document["License"] = license
    if authors:
        document["Authors"] = [cell(author) for author in authors]
    document["GeneratedBy"] = [
        {"Name": "eeghub", "Version": eeghub.__version__, "Description": "BIDS export of an eeghub experiment"}
    ]
    document.update(extra or {})
    path = inside(root, "dataset_description.json")
    write_json(path, document)
    return path


def write_readme(root: Path, *, title: str, description: str = "", extra_sections: Mapping[str, str] | None = None) -> Path:
    """``README`` with the experiment's description and the export's conventions."""
    parts = [f"# {title.strip() or 'eeghub export'}", ""]
    if description.strip():
        parts += ["\n".join(neutralise(line) for line in description.strip().splitlines()), ""]
    parts += ["## How this dataset was made", "", _CONVENTIONS.strip(), ""]
    for heading, text in (extra_sections or {}).items():
        parts += [f"## {heading}", "", text.strip(), ""]
    path = inside(root, "README")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


_CONVENTIONS = """
Exported by eeghub. The EEG is stored as BrainVision INT_16: the values are
the device's int16 counts, unchanged, with each channel's resolution set to
the device's volts per count (the trigger channel: 1, counts). The trigger
channel is included (type TRIG in channels.tsv).

Time: acq_time (scans.tsv) and the BrainVision New Segment date are the time
of the first sample, in UTC. Packets are placed by their timestamps; exact
duplicates are dropped; where two packets overlap, the earlier one's samples
are kept; samples before the session start and after its end are left out.
Gaps in the data stream are filled with zeros and listed in events.tsv with
trial_type BAD_ACQ_SKIP (onset and duration of the filled span).

Events: every logged event is listed. onset_source is "trigger" when the
onset was corrected to a trigger edge, "logged" when no trigger matched and
the onset is the session start plus the onset the app logged. logged_onset is
the app's onset (seconds from the session start); sample is the onset as a
sample index. stim_file is relative to stimuli/.

Labels: subject, session and task labels may contain only letters and
digits; sourcedata/label_map.json maps the original identifiers to them.
Photos and audio recorded by the app are in sourcedata/media (index:
sourcedata/media/media.tsv).

Text from the app or the experimenters that begins with =, +, - or @ (not a
number) has a leading apostrophe, so that a spreadsheet shows it instead of
running it as a formula; removing one leading apostrophe gives the original
(text that began with apostrophes before such a character has one more).
"""


BIDSIGNORE = ("*_desc-quality_channels.json",)
"""Files beside the recordings that BIDS does not define: the predecessor's
channel-quality reports (the quality is in ``channels.tsv`` too)."""


def write_bidsignore(root: Path, patterns: Sequence[str] = BIDSIGNORE) -> Path:
    """``.bidsignore``: what the validator skips (gitignore syntax)."""
    path = inside(root, ".bidsignore")
    path.write_text("".join(f"{pattern}\n" for pattern in patterns), encoding="utf-8")
    return path


def write_participants(
    root: Path,
    rows: Sequence[Mapping[str, object]],
    *,
    descriptions: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """``participants.tsv`` with one row per subject, and ``participants.json``.

    ``participant_id`` may be given with or without ``sub-``; the label must
    be valid and unique (ValueError otherwise, the predecessor's duplicate
    rows are what this prevents). Other keys become columns (union of all
    rows, ``n/a`` where missing), described by ``descriptions``.
    """
    seen: set[str] = set()
    normalized: list[dict[str, object]] = []
    columns = ["participant_id"]
    for row in rows:
        raw = str(row.get("participant_id", ""))
        label = raw[4:] if raw.startswith("sub-") else raw
        if not is_bids_label(label):
            raise ValueError(f"participant_id {raw!r} is not a valid BIDS label")
        if label.lower() in seen:
            raise ValueError(f"participant {label!r} appears twice")
        seen.add(label.lower())
        normalized.append({**row, "participant_id": f"sub-{label}"})
        columns += [key for key in row if key not in columns]
    path = inside(root, "participants.tsv")
    write_tsv(path, columns, normalized)
    sidecar: dict[str, Any] = {"participant_id": {"Description": "Unique participant label (see sourcedata/label_map.json)"}}
    for column in columns[1:]:
        sidecar[column] = dict((descriptions or {}).get(column, {"Description": column.replace("_", " ")}))
    write_json(inside(root, "participants.json"), sidecar)
    return path


def _copy_source(source: Source, target: Path) -> int:
    """Copy bytes or a file to ``target``; returns the size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes | bytearray | memoryview):
        target.write_bytes(bytes(source))
    else:
        shutil.copyfile(source, target)
    return target.stat().st_size


def exported_stimulus_name(name: str) -> str:
    """The name a stimulus gets under ``stimuli/``: its own, or, when only
    its length is wrong (rows stored before uploads were limited to 255
    UTF-8 bytes, or adopted from a predecessor database), a shortened one
    that keeps the extension and ends with ``~`` and a hash of the original
    (so two long names never collide). Any other problem is left for
    ``write_stimuli`` to refuse."""
    if file_name_problem(name) is None:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8", "surrogatepass")) > 16:
        stem, ext = name, ""
    suffix = "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12] + (f".{ext}" if ext else "")
    budget = MAX_FILE_NAME - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8", "surrogatepass")[:budget].decode("utf-8", "ignore").rstrip()
    candidate = cut + suffix
    return candidate if file_name_problem(candidate) is None else name


CALIBRATION_STIMULI = "calibration"
"""Folder of ``stimuli/`` that holds the calibration items' files (they are
shared by all experiments and may share a name with an experiment's stimulus)."""


def write_stimuli(root: Path, items: Iterable[tuple[str, Source]], *, folder: str | None = None) -> list[str]:
    """Copy the experiment's stimuli to ``stimuli/<file_name>`` (or
    ``stimuli/<folder>/<file_name>``); returns the names, which (with the
    folder) are what ``EventSpec.stim_file`` refers to. Client file names are
    checked (``validate_file_name``: no separators, no ``..``) and the target
    must resolve inside the dataset; a repeated name is an error."""
    names: list[str] = []
    where = ["stimuli"] if folder is None else ["stimuli", validate_file_name(folder, field="stimuli folder")]
    for file_name, source in items:
        validate_file_name(file_name, field="stimuli.file_name")
        target = inside(root, *where, file_name)
        if file_name in names:
            raise ValueError(f"stimulus file name {file_name!r} appears twice")
        _copy_source(source, target)
        names.append(file_name)
    return names


MEDIA_COLUMNS = [
    "filename",
    "media_id",
    "subject",
    "session",
    "kind",
    "content_type",
    "captured_at",
    "original_file_name",
    "size_bytes",
    "sha256",
]


def write_sourcedata_media(root: Path, items: Iterable[MediaItem]) -> Path:
    """Copy media to ``sourcedata/media/sub-<S>/[ses-<T>/]<file_name>`` and
    list them in ``sourcedata/media/media.tsv`` (BIDS has no place for them
    in the raw tree; the validator ignores sourcedata). May be called once
    per session: rows are appended, and a name already taken on disk gets a
    ``-2``, ``-3`` suffix (the index keeps the original name)."""
    path = inside(root, "sourcedata", "media", "media.tsv")
    rows: list[dict[str, object]] = []
    if path.exists():
        rows = [dict(row) for row in read_tsv(path)[1]]
    for item in items:
        validate_file_name(item.file_name, field="media.file_name")
        if not is_bids_label(item.subject) or (item.session is not None and not is_bids_label(item.session)):
            raise ValueError(f"media {item.media_id}: subject/session must be BIDS labels")
        folder = [f"sub-{item.subject}"] + ([f"ses-{item.session}"] if item.session else [])
        target = _unused_path(inside(root, "sourcedata", "media", *folder), item.file_name)
        size = _copy_source(item.source, target)
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        rows.append(
            {
                "filename": "/".join([*folder, target.name]),
                "media_id": item.media_id,
                "subject": f"sub-{item.subject}",
                "session": f"ses-{item.session}" if item.session else None,
                "kind": item.kind,
                "content_type": item.content_type,
                "captured_at": iso_utc(item.captured_at) if item.captured_at else None,
                "original_file_name": item.file_name,
                "size_bytes": size,
                "sha256": digest.hexdigest(),
            }
        )
    write_tsv(path, MEDIA_COLUMNS, rows)
    return path


def _unused_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``stem-2.ext``, ``stem-3.ext`` … when that file exists."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    candidate, n = folder / name, 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{dot}{ext}"
    return candidate
