"""Issue 6's end-to-end flow (real PostgreSQL, RabbitMQ and S3): two
subjects with calibration and main sessions, triggers and event logs →
export → download → the BIDS validator reports 0 errors → mne_bids reads
every recording back with the int16 values that were sent, the events on the
trigger samples and the stimuli present."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import mne_bids
import numpy as np
import pandas as pd
import pytest

from eeghub.core.packet import compress_frame, decode_payload
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, finished_task, start_export, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER = "lab-owner"
T0 = 1_748_736_000_000
RATE, PER_PACKET, SECONDS = 250.0, 250, 12
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
ADMIN = "lab-admin"
# Calibration items (shared by every experiment); one shares its name with an experiment stimulus.
CALIBRATION = {"cal_target.png": PNG + b"target", "choco.png": PNG + b"calibration choco"}


def iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


async def record(client: Any, eid: str, subject: str, sid: str, kind: str, start: int, variant: str, seed: int,
                 ended_later_ms: int = 0) -> tuple[np.ndarray, list[int]]:
    """Start, stream, end one session; return the int16 data sent and the trigger samples."""
    triggers = [int(RATE * (1.0 + 1.1 * k)) for k in range(9)]
    device = SimulatedDevice(user_id=subject, device_id=f"{subject}-dev", variant=variant, seed=seed,
                             sampling_rate=RATE, samples_per_packet=PER_PACKET, trigger_samples=triggers)
    r = await client.post("/api/v1/sessions/start", headers=user(subject), json={
        "session_id": sid, "user_id": subject, "experiment_id": eid, "start_time": iso(start), "session_type": kind})
    assert r.status_code == 201, r.text
    sent = []
    for i in range(SECONDS):
        payload = device.payload(i)
        sent.append(decode_payload(payload).signals)
        body = {**device.envelope(i, start), "payload_base64": base64.b64encode(compress_frame(payload)).decode()}
        assert (await client.post("/api/v1/data", json=body, headers=user(subject))).status_code == 202
    onsets = [s / RATE - 0.08 for s in triggers]
    files = ["choco.png", "chime.png"] if kind != "calibration" else list(CALIBRATION)
    csv = "onset,duration,trial_type,file_name,value\n" + "".join(
        f"{o:.4f},0.5,{'target' if k % 2 else 'other'},{files[k % len(files)]},{k}\n" for k, o in enumerate(onsets))
    meta = {"session_id": sid, "user_id": subject, "device_id": f"{subject}-dev", "end_time": iso(start + SECONDS * 1000 + ended_later_ms)}
    r = await client.post("/api/v1/sessions/end", headers=user(subject), **end_form(meta, csv.encode()))
    assert r.status_code == 200, r.text
    return np.concatenate(sent, axis=1), triggers


LAB_METADATA = """
[export.bids]
authors = ["Ada Lovelace", "Alan Turing"]
license = "CC0"
institution_name = "Example University"
institution_address = "1 Example Road, Tokyo, Japan"
institutional_department_name = "Department of Neuroscience"
manufacturer = "OpenBCI"
manufacturers_model_name = "Cyton"
software_versions = "eeg_mobile_app 1.0"
cap_manufacturer = "OpenBCI"
cap_manufacturers_model_name = "Ultracortex Mark IV"
eeg_placement_scheme = "10-20"
eeg_reference = "linked earlobes"
eeg_ground = "Fpz"
subject_artefact_description = "n/a"

[export.bids.stimulus_presentation]
OperatingSystem = "Android 14"
SoftwareName = "eeg_mobile_app"

[export.bids.tasks.calibration]
task_description = "Calibration images shown one by one"
instructions = "Look at each image"
cog_atlas_id = "https://www.cognitiveatlas.org/task/id/trm_4f244ad7dcde7/"
cog_po_id = "http://www.wiki.cogpo.org/index.php?title=Passive_Viewing"

[export.bids.tasks.main_external]
instructions = "Look at the shelf"
cog_atlas_id = "https://www.cognitiveatlas.org/task/id/trm_4f244ad7dcde7/"
cog_po_id = "http://www.wiki.cogpo.org/index.php?title=Passive_Viewing"
"""
"""Everything a lab can configure but SourceDatasets (raw data has none); the
main task's TaskDescription comes from the experiment's description."""


async def test_export_two_subjects(app_client: Any, services_env: dict[str, str], tmp_path: Path) -> None:
    subjects = ["subj-A_01", "subj.B"]  # not valid BIDS labels as they are
    sent: dict[tuple[str, str], np.ndarray] = {}
    config = tmp_path / "lab.toml"
    config.write_text(LAB_METADATA)
    env = {**services_env, "EEGHUB_AUTH__ADMIN_USERS": ADMIN, "EEGHUB_CONFIG": str(config)}
    async with app_client(env) as (client, _):
        for name, content in CALIBRATION.items():
            r = await client.post("/api/v1/calibrations", headers=user(ADMIN),
                                  files={"file": (name, content, "image/png"), "item_type": (None, "target")})
            assert r.status_code == 201, r.text
        experiment = {"name": "Export study: 視覚", "description": "Snack images on a shelf, one at a time"}
        eid = (await client.post("/api/v1/experiments", json=experiment, headers=user(OWNER))).json()["experiment_id"]
        files = [("stimuli_definition_csv", ("s.csv", b"file_name,trial_type\nchoco.png,target\nchime.png,other\n", "text/csv")),
                 ("stimulus_files", ("choco.png", PNG, "image/png")), ("stimulus_files", ("chime.png", PNG[:-1], "image/png"))]
        assert (await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))).status_code == 202
        for n, subject in enumerate(subjects):
            assert (await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(subject))).status_code == 201
            base = T0 + n * 3_600_000
            for k, (kind, variant) in enumerate((("calibration", "app"), ("main_external", "v4"))):
                sid = f"{subject}-{kind}"
                # subj.B's main session ends 2 s after its last packet.
                later = 2000 if (n, kind) == (1, "main_external") else 0
                data, _ = await record(client, eid, subject, sid, kind, base + k * 60_000, variant, seed=10 * n + k,
                                       ended_later_ms=later)
                sent[(subject, kind)] = data
                if n == 0 and kind == "main_external":  # a photo taken during the session
                    photo = {"user_id": subject, "session_id": sid, "mimetype": "image/png", "original_filename": "shelf.png",
                             "timestamp_utc": iso(base + k * 60_000 + 3000)}
                    r = await client.post("/api/v1/media", headers=user(subject),
                                          files={"file": ("shelf.png", PNG, "image/png"), **{f: (None, v) for f, v in photo.items()}})
                    assert r.status_code == 202, r.text

        async def all_corrected() -> bool:
            for subject in subjects:
                for kind in ("calibration", "main_external"):
                    info = (await client.get(f"/api/v1/sessions/{subject}-{kind}", headers=user(subject))).json()
                    if info["event_correction_status"] != "completed":
                        return False
                    # A 202 means published, not stored yet: packets stored
                    # after the session was linked are linked (and the events
                    # corrected) again, so wait until every packet is linked.
                    data = (await client.get(f"/api/v1/sessions/{subject}-{kind}/data", headers=user(subject))).json()
                    if sum(stream["packets"] for stream in data["streams"]) != SECONDS:
                        return False
            return True

        await wait_for(all_corrected, timeout=90)
        # A stimulus stored before names were limited to 255 UTF-8 bytes (or
        # adopted from the predecessor): exported under a shortened name.
        legacy = "chime-" + "é" * 150 + ".png"
        conn = await asyncpg.connect(services_env["EEGHUB_DATABASE__URL"])
        try:
            renamed = await conn.fetch(
                "UPDATE experiment_stimuli SET file_name = $1 WHERE experiment_id = $2 AND file_name = 'chime.png'"
                " RETURNING stimulus_id",
                legacy,
                uuid.UUID(eid),
            )
            assert len(renamed) == 1
        finally:
            await conn.close()
        status_url = await start_export(client, eid, OWNER)
        task = await finished_task(client, status_url, OWNER, timeout=180)
        assert task["status"] == "completed", task
        assert task["validation"]["errors"] == 0 and task["progress"] == 100
        # What the lab configured fills every RECOMMENDED key but those only it could add later;
        # the report names exactly those, with what fills them.
        warned = {(i["code"], i["sub_code"]) for i in task["validation"]["issues"]}
        assert warned == {("SIDECAR_KEY_RECOMMENDED", "HeadCircumference"), ("JSON_KEY_RECOMMENDED", "SourceDatasets"),
                          ("JSON_KEY_RECOMMENDED", "HEDVersion")}, warned
        # HeadCircumference on every recording's sidecars (three files each; one
        # issue per file), SourceDatasets and HEDVersion once.
        heads = [i["location"] for i in task["validation"]["issues"] if i["sub_code"] == "HeadCircumference"]
        recordings = {loc.rsplit("_", 1)[0] for loc in heads if loc}
        assert len(recordings) == 4, (recordings, task["validation"]["issues"])
        assert task["validation"]["warnings"] == len(task["validation"]["issues"]), task["validation"]
        left = {(f["field"], f["fill"]) for f in task["report"]["left_for_the_lab"]}
        assert left == {("SourceDatasets", "export.bids.dataset_description.SourceDatasets"),
                        ("HEDVersion", "export.bids.dataset_description.HEDVersion"),
                        ("HeadCircumference", "per participant: eeghub does not collect it")}, left
        assert task["report"]["calibration_stimuli"] == ["calibration/cal_target.png", "calibration/choco.png"]
        assert task["report"]["missing_calibration_stimuli"] == []
        assert all(s["missing_stimuli"] == [] for s in task["report"]["sessions"]), task["report"]
        # The recordings run from the first to the last sample; the session's edges without data are reported.
        edges = {s["session_id"]: (s["missing_before_first_sample_s"], s["missing_after_last_sample_s"])
                 for s in task["report"]["sessions"]}
        assert edges.pop("subj.B-main_external") == (0, 2.0), task["report"]
        assert all(before == 0 and abs(after) <= 0.004 for before, after in edges.values()), edges
        listed = (await client.get(f"/api/v1/export-tasks?experiment_id={eid}", headers=user(OWNER))).json()
        assert [t["task_id"] for t in listed] == [task["task_id"]]
        assert (await client.get(f"{status_url}/download", headers=user(subjects[0]))).status_code == 403
        download = await client.get(f"{status_url}/download", headers=user(OWNER))
        assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
        name = f"export-study-視覚-{task['task_id'].replace('-', '')[:8]}.zip"
        assert download.headers["content-disposition"].endswith(f"filename*=UTF-8''{quote(name)}")
        assert int(download.headers["content-length"]) == len(download.content) == task["size_bytes"]
        partial = await client.get(f"{status_url}/download", headers={**user(OWNER), "Range": "bytes=10-99"})
        assert partial.status_code == 206 and partial.content == download.content[10:100]

    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        assert all(n.startswith("bids_dataset/") and ".." not in n for n in names)
        archive.extractall(tmp_path)
    root = tmp_path / "bids_dataset"
    assert (root / "stimuli" / "choco.png").read_bytes() == PNG
    for name, content in CALIBRATION.items():  # beside, never instead of, the experiment's own choco.png
        assert (root / "stimuli" / "calibration" / name).read_bytes() == content
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["Authors"] == ["Ada Lovelace", "Alan Turing"] and description["License"] == "CC0"
    assert description["GeneratedBy"][0]["Name"] == "eeghub" and description["GeneratedBy"][0]["Version"]
    for events_tsv in root.rglob("*task-calibration_events.tsv"):
        calibration_events = pd.read_csv(events_tsv, sep="\t")
        shown = calibration_events[calibration_events["trial_type"] != "BAD_ACQ_SKIP"]["stim_file"]
        assert set(shown) == {f"calibration/{n}" for n in CALIBRATION}, events_tsv
        sidecar = json.loads(Path(str(events_tsv).replace("_events.tsv", "_eeg.json")).read_text())
        assert sidecar["TaskDescription"] == "Calibration images shown one by one" and sidecar["EEGGround"] == "Fpz"
        assert sidecar["EEGReference"] == "linked earlobes" and sidecar["CapManufacturer"] == "OpenBCI"
    for eeg_json in root.rglob("*task-mainexternal_eeg.json"):
        assert json.loads(eeg_json.read_text())["TaskDescription"] == "Snack images on a shelf, one at a time"
    for events_json in root.rglob("*_events.json"):
        assert json.loads(events_json.read_text())["StimulusPresentation"]["SoftwareName"] == "eeg_mobile_app"
    # The predecessor's quality report beside each recording, ignored by the validator.
    assert (root / ".bidsignore").read_text() == "*_desc-quality_channels.json\n"
    for vhdr in root.rglob("*_eeg.vhdr"):
        report = json.loads(Path(str(vhdr).replace("_eeg.vhdr", "_desc-quality_channels.json")).read_text())
        channels = pd.read_csv(str(vhdr).replace("_eeg.vhdr", "_channels.tsv"), sep="\t", keep_default_na=False)
        assert list(report) == list(channels["name"])
        assert [report[n]["status"] for n in channels["name"]] == list(channels["status"])
        assert set(report["CH1"]) == {"status", "reasons", "zero_ratio", "bad_impedance_ratio",
                                      "unknown_impedance_ratio", "flatline", "type", "has_warning"}
    shortened = task["report"]["renamed_stimuli"][legacy]
    assert shortened.endswith(".png") and len(shortened.encode()) <= 255
    assert (root / "stimuli" / shortened).read_bytes() == PNG[:-1]
    all_events = pd.concat(pd.read_csv(p, sep="\t") for p in root.rglob("*_events.tsv"))
    assert shortened in set(all_events["stim_file"]) and legacy not in set(all_events["stim_file"])
    media_index = pd.read_csv(root / "sourcedata" / "media" / "media.tsv", sep="\t")
    assert len(media_index) == 1 and media_index["kind"][0] == "image"
    assert (root / "sourcedata" / "media" / media_index["filename"][0]).read_bytes() == PNG
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert len(participants) == 2 and all(p.startswith("sub-") and p[4:].isalnum() for p in participants["participant_id"])
    vhdrs = sorted(root.rglob("*_eeg.vhdr"))
    assert len(vhdrs) == 4
    for vhdr in vhdrs:
        path = mne_bids.get_bids_path_from_fname(vhdr)
        raw = mne_bids.read_raw_bids(path, verbose="error")
        ses = path.session
        subject_label = path.subject
        original = next(s for s in subjects if "".join(ch for ch in s if ch.isalnum()) == subject_label)
        kind = "calibration" if path.task == "calibration" else "main_external"
        expected = sent[(original, kind)]
        data = raw.get_data()
        lsb = SimulatedDevice(user_id="x", device_id="y").lsb_to_volts
        eeg = np.rint(data[:-1] / lsb).astype(np.int64)
        assert np.array_equal(eeg, expected[:-1].astype(np.int64)), f"{vhdr.name}: EEG differs"
        trigger = np.rint(data[-1]).astype(np.int64)
        assert np.array_equal(trigger, expected[-1].astype(np.int64)), f"{vhdr.name}: trigger differs"
        events = pd.read_csv(str(vhdr).replace("_eeg.vhdr", "_events.tsv"), sep="\t")
        rising = np.flatnonzero((trigger[1:] != 0) & (trigger[:-1] == 0)) + 1
        on_trigger = events[events["onset_source"] == "trigger"]
        assert len(on_trigger) == 9, ses
        assert set(np.rint(on_trigger["onset"] * RATE).astype(int)) == set(rising.tolist())
        assert raw.info["meas_date"] is not None
