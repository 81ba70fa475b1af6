"""The lab's BIDS metadata from settings and the experiment, and the list of
RECOMMENDED keys an export leaves for the lab to fill."""

from __future__ import annotations

from eeghub.config.loader import load_settings
from eeghub.config.settings import BidsSettings
from eeghub.plugins.exporter.metadata import dataset_fields, left_for_the_lab, sidecar_fields


def fields(left: list[dict[str, str]]) -> list[str]:
    return [f["field"] for f in left]


def test_nothing_configured_leaves_every_recommended_key_to_the_lab() -> None:
    left = left_for_the_lab(BidsSettings(), ["calibration", "main_task", "calibration"], None, events=True)
    assert fields(left) == [
        "Authors", "License", "SourceDatasets", "HEDVersion", "EEGReference",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "Manufacturer",
        "ManufacturersModelName", "SoftwareVersions", "CapManufacturer", "CapManufacturersModelName",
        "EEGPlacementScheme", "EEGGround", "SubjectArtefactDescription",
        "TaskDescription", "Instructions", "CogAtlasID", "CogPOID",  # calibration
        "TaskDescription", "Instructions", "CogAtlasID", "CogPOID",  # main_task
        "HeadCircumference", "StimulusPresentation",
    ]  # fmt: skip
    assert left[0] == {"file": "dataset_description.json", "field": "Authors", "fill": "export.bids.authors"}
    assert left[16] == {"file": "_eeg.json (task calibration)", "field": "TaskDescription",
                        "fill": "export.bids.tasks.calibration.task_description"}  # fmt: skip
    # The experiment's description describes the main tasks, not calibration.
    described = left_for_the_lab(BidsSettings(), ["calibration", "main_task"], "Snacks on a shelf", events=False)
    assert fields(described).count("TaskDescription") == 1
    assert "HEDVersion" in fields(described) and "StimulusPresentation" not in fields(described)  # no events.json


def test_settings_fill_the_files() -> None:
    settings = load_settings(env={
        "EEGHUB_EXPORT__BIDS__AUTHORS": "Ada Lovelace, Alan Turing",
        "EEGHUB_EXPORT__BIDS__LICENSE": "CC0",
        "EEGHUB_EXPORT__BIDS__FUNDING": "Grant 1",
        "EEGHUB_EXPORT__BIDS__CAP_MANUFACTURER": "OpenBCI",
        "EEGHUB_EXPORT__BIDS__TASKS__CALIBRATION__INSTRUCTIONS": "Look at each image",
    })  # fmt: skip
    bids = settings.export.bids
    assert dataset_fields(bids) == {"Authors": ["Ada Lovelace", "Alan Turing"], "License": "CC0", "Funding": ["Grant 1"]}
    assert sidecar_fields(bids, "calibration", "Snacks") == {"CapManufacturer": "OpenBCI", "Instructions": "Look at each image"}
    assert sidecar_fields(bids, "main_task", "Snacks") == {"CapManufacturer": "OpenBCI", "TaskDescription": "Snacks"}
    extra = BidsSettings(sidecar={"HeadCircumference": 56, "CapManufacturer": "Other"}, dataset_description={"SourceDatasets": []})
    assert sidecar_fields(extra, "x", None) == {"HeadCircumference": 56, "CapManufacturer": "Other"}  # extras win
    left = fields(left_for_the_lab(extra, ["x"], None, events=False))
    assert "HeadCircumference" not in left and "CapManufacturer" not in left and "SourceDatasets" in left  # [] is unset
