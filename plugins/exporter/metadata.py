"""The dataset and recording metadata only the lab knows (``[export.bids]``
settings and the experiment's fields), mapped to BIDS keys, and the list of
RECOMMENDED keys left unset for the export report.

The validator warns about every RECOMMENDED key that is missing
(``SIDECAR_KEY_RECOMMENDED`` once per recording file, ``JSON_KEY_RECOMMENDED``,
``NO_AUTHORS``/``TOO_FEW_AUTHORS``); eeghub fills what it knows itself
(sampling, channel counts, duration, power line, device serial number, …)
and, from here, what the lab configured. :func:`left_for_the_lab` names the
rest, with the setting that fills each one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eeghub.config.settings import BidsSettings

DATASET_FIELDS: tuple[tuple[str, str], ...] = (
    ("authors", "Authors"),
    ("license", "License"),
    ("acknowledgements", "Acknowledgements"),
    ("how_to_acknowledge", "HowToAcknowledge"),
    ("funding", "Funding"),
    ("ethics_approvals", "EthicsApprovals"),
    ("references_and_links", "ReferencesAndLinks"),
    ("dataset_doi", "DatasetDOI"),
)
"""``export.bids.<setting>`` → dataset_description.json key."""

SIDECAR_FIELDS: tuple[tuple[str, str], ...] = (
    ("institution_name", "InstitutionName"),
    ("institution_address", "InstitutionAddress"),
    ("institutional_department_name", "InstitutionalDepartmentName"),
    ("manufacturer", "Manufacturer"),
    ("manufacturers_model_name", "ManufacturersModelName"),
    ("software_versions", "SoftwareVersions"),
    ("cap_manufacturer", "CapManufacturer"),
    ("cap_manufacturers_model_name", "CapManufacturersModelName"),
    ("eeg_placement_scheme", "EEGPlacementScheme"),
    ("eeg_ground", "EEGGround"),
    ("subject_artefact_description", "SubjectArtefactDescription"),
)
"""``export.bids.<setting>`` → ``_eeg.json`` key, the same for every recording."""

TASK_FIELDS: tuple[tuple[str, str], ...] = (
    ("task_description", "TaskDescription"),
    ("instructions", "Instructions"),
    ("cog_atlas_id", "CogAtlasID"),
    ("cog_po_id", "CogPOID"),
)
"""``export.bids.tasks.<session type>.<setting>`` → ``_eeg.json`` key."""

RECOMMENDED_DATASET = ("Authors", "License", "SourceDatasets", "HEDVersion")
"""dataset_description.json keys the validator recommends (1.11), with or
without events (HEDVersion: the HED schema of HED tags, which eeghub does
not write)."""

RECOMMENDED_SIDECAR = tuple(key for _, key in SIDECAR_FIELDS) + tuple(key for _, key in TASK_FIELDS)
"""``_eeg.json`` keys the validator recommends that eeghub cannot know (HeadCircumference aside)."""

CALIBRATION = "calibration"


def _given(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def dataset_fields(bids: BidsSettings) -> dict[str, Any]:
    """dataset_description.json keys from the settings (extras win)."""
    out = {key: getattr(bids, name) for name, key in DATASET_FIELDS if _given(getattr(bids, name))}
    out.update(bids.dataset_description)
    return out


def task_fields(bids: BidsSettings, session_type: str, experiment_description: str | None) -> dict[str, Any]:
    """TaskDescription, Instructions, CogAtlasID, CogPOID of one session
    type: the settings' ``tasks.<type>``, and for any type but calibration
    the experiment's description as TaskDescription when none is set."""
    task = bids.tasks.get(session_type)
    out = {key: getattr(task, name) for name, key in TASK_FIELDS if task is not None and _given(getattr(task, name))}
    if "TaskDescription" not in out and session_type != CALIBRATION and (experiment_description or "").strip():
        out["TaskDescription"] = experiment_description.strip()  # type: ignore[union-attr]
    return out


def sidecar_fields(bids: BidsSettings, session_type: str, experiment_description: str | None) -> dict[str, Any]:
    """``_eeg.json`` keys for one recording (the settings' ``sidecar`` extras win)."""
    out = {key: getattr(bids, name) for name, key in SIDECAR_FIELDS if _given(getattr(bids, name))}
    out.update(task_fields(bids, session_type, experiment_description))
    out.update(bids.sidecar)
    return out


def left_for_the_lab(
    bids: BidsSettings, session_types: Iterable[str], experiment_description: str | None, *, events: bool
) -> list[dict[str, str]]:
    """The RECOMMENDED keys this export leaves unset: ``{file, field, fill}``
    (``fill``: the setting that fills it, or why eeghub cannot)."""
    left: list[dict[str, str]] = []
    dataset = dataset_fields(bids)
    for key in RECOMMENDED_DATASET:
        if not _given(dataset.get(key)):
            name = next((n for n, k in DATASET_FIELDS if k == key), None)
            fill = f"export.bids.{name}" if name else f"export.bids.dataset_description.{key}"
            left.append({"file": "dataset_description.json", "field": key, "fill": fill})
    if bids.eeg_reference is None and "EEGReference" not in bids.sidecar:
        left.append({"file": "_eeg.json", "field": "EEGReference", "fill": "export.bids.eeg_reference (written as n/a)"})
    for name, key in SIDECAR_FIELDS:  # the same for every recording: listed once
        if not _given(getattr(bids, name)) and key not in bids.sidecar:
            left.append({"file": "_eeg.json", "field": key, "fill": f"export.bids.{name}"})
    for session_type in sorted(set(session_types)):
        present = sidecar_fields(bids, session_type, experiment_description)
        for name, key in TASK_FIELDS:
            if key not in present:
                fill = f"export.bids.tasks.{session_type}.{name}"
                left.append({"file": f"_eeg.json (task {session_type})", "field": key, "fill": fill})
    if "HeadCircumference" not in bids.sidecar:
        left.append(
            {"file": "_eeg.json", "field": "HeadCircumference", "fill": "per participant: eeghub does not collect it"}
        )
    if events and not bids.stimulus_presentation:
        left.append({"file": "_events.json", "field": "StimulusPresentation", "fill": "export.bids.stimulus_presentation"})
    return left
