"""The predecessor's mobile app against eeghub on its defaults (``compat``
identity, real PostgreSQL, RabbitMQ and S3): every HTTP call in
``lib/providers/*.dart``, replayed byte for byte as the Dart code builds it
(``dart_http``), each reply parsed as the Dart code parses it
(``app_study``; ``test_serve.py`` replays the same against ``eeghub serve``
on its embedded defaults). The calls, in the order a study makes them:

owner: create experiment, upload stimuli, list experiments; participant:
join (unknown experiment, password, success), list experiments, list
stimuli, list calibration items, download a stimulus and a calibration
item, start a calibration and a main session, stream packets, upload a
photo and an audio clip (zstd-compressed, no header), poll the analysis (no
header), end each session with its event log; owner: request the
neuro-marketing analysis and fetch its result, start the export, poll it,
list the tasks, download the ZIP in a browser (no header), delete the
experiment. (The neuro-marketing analysis on EEG with a known P300 is in
``test_neuro_marketing.py``.)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import zstandard

from eeghub.bootstrap import open_object_store
from eeghub.config import load_settings
from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e import dart_http as dart
from tests.e2e.helpers import wait_for
from tests.e2e.test_neuro_marketing import parse_like_the_app

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER, PARTICIPANT, ADMIN = "owner-app-01", "user-default-01", "lab-admin"
DEVICE = "E4:5F:01:3A:7C:21"  # _targetDevice!.remoteId.str
SECONDS = 12
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 40 + b"\xff\xd9"
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(range(200)) * 30


def experiment_from_json(item: Any) -> dict[str, Any]:
    """``Experiment.fromJson`` (``models/experiment.dart``)."""
    item = dart.cast(item, "Map", "experiment")
    return {
        "id": dart.cast(item.get("experiment_id") or "", "String", "experiment_id"),
        "name": dart.cast(item.get("name") or "No Name", "String", "name"),
        "description": dart.cast(item.get("description") or "", "String", "description"),
        "presentation_order": dart.cast(item.get("presentation_order") or "random", "String", "presentation_order"),
    }


def stimulus_from_json(item: Any) -> dict[str, Any]:
    """``Stimulus.fromJson`` (``models/stimulus.dart``): every field typed, ``trial_type`` required."""
    return {
        "stimulus_id": dart.parse_int(item["stimulus_id"], "stimulus_id"),
        "file_name": dart.cast(item.get("file_name"), "String", "file_name"),
        "stimulus_type": dart.cast(item.get("stimulus_type"), "String", "stimulus_type"),
        "trial_type": dart.cast(item.get("trial_type"), "String", "trial_type"),
        "description": dart.cast(item.get("description"), "String?", "description"),
    }


def calibration_from_json(item: Any) -> dict[str, Any]:
    """``CalibrationItem.fromJson``."""
    return {
        "item_id": dart.parse_int(item["item_id"], "item_id"),
        "file_name": dart.cast(item.get("file_name"), "String", "file_name"),
        "trial_type": dart.cast(item.get("item_type"), "String", "item_type"),
        "description": dart.cast(item.get("description"), "String?", "description"),
    }


def task_from_start_json(data: Any) -> dict[str, Any]:
    """``BidsTask.fromStartJson``."""
    return {
        "task_id": dart.cast(data.get("task_id"), "String", "task_id"),
        "status": dart.cast(data.get("status"), "String", "status"),
        "message": dart.cast(data.get("message") or "Task started", "String", "message"),
        "requested_by_user_id": dart.cast(data.get("requested_by_user_id"), "String?", "requested_by_user_id"),
    }


def task_from_status_json(data: Any) -> dict[str, Any]:
    """``BidsTask.fromStatusJson`` (and ``_statusFromString``)."""
    progress = data.get("progress")
    return {
        "status": dart.cast(data.get("status"), "String", "status"),
        "progress": dart.cast(0 if progress is None else progress, "int", "progress"),
        "message": dart.cast(data.get("status_message") or "", "String", "status_message"),
        "result_file_path": dart.cast(data.get("result_file_path"), "String?", "result_file_path"),
        "error_message": dart.cast(data.get("error_message"), "String?", "error_message"),
        "created_at": dart.try_parse_datetime(data.get("created_at")),
        "updated_at": dart.try_parse_datetime(data.get("updated_at")),
        "requested_by_user_id": dart.cast(data.get("requested_by_user_id"), "String?", "requested_by_user_id"),
    }


def analysis_from_json(payload: Any) -> dict[str, Any] | None:
    """``AnalysisProvider.fetchLatestResults`` on a 200: the entry it shows, or None."""
    apps = payload.get("applications")
    if not isinstance(apps, dict):
        return None
    selected = apps.get("psd_coherence")
    if not isinstance(selected, dict):
        selected = next((v for v in apps.values() if isinstance(v, dict)), None)
    if selected is None:
        return None

    def decode_image(value: Any) -> bytes | None:
        value = dart.cast(value, "String?", "image")
        if value is None or not value.strip():
            return None
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            return None

    quality = {}
    raw_quality = selected.get("channel_quality")
    if isinstance(raw_quality, dict):
        for key, value in raw_quality.items():
            if isinstance(value, dict):  # ChannelQualityStatus.fromJson
                quality[key.upper()] = {
                    "status": (dart.cast(value.get("status"), "String?", "status") or "").lower(),
                    "reasons": [str(r) for r in dart.cast(value.get("reasons"), "List?", "reasons") or []],
                    "bad_impedance_ratio": dart.cast(value.get("bad_impedance_ratio"), "num?", "bad_impedance_ratio"),
                    "unknown_impedance_ratio": dart.cast(value.get("unknown_impedance_ratio"), "num?", "unknown_impedance_ratio"),
                    "zero_ratio": dart.cast(value.get("zero_ratio"), "num?", "zero_ratio"),
                    "flatline": value.get("flatline") is True,
                    "type": (dart.cast(value.get("type"), "String?", "type") or "").lower(),
                }
    ts = selected.get("timestamp")
    return {
        "psd_image": decode_image(selected.get("psd_image")),
        "coherence_image": decode_image(selected.get("coherence_image")),
        "analysis_channels": [v.upper() for v in dart.cast(selected.get("analysis_channels"), "List?", "analysis_channels") or [] if isinstance(v, str)],
        "bad_channels": [v.upper() for v in dart.cast(selected.get("bad_channels"), "List?", "bad_channels") or [] if isinstance(v, str)],
        "channel_quality": quality,
        "timestamp": dart.try_parse_datetime(ts) if isinstance(ts, str) else None,
    }


def data_body(device: SimulatedDevice, index: int, start_ms: int) -> bytes:
    """``BleProvider._sendPayloadToServer``'s ``jsonEncode`` (doubles as Dart prints them)."""
    envelope = device.envelope(index, start_ms)
    return dart.json_encode({
        "user_id": PARTICIPANT,
        "session_id": None,
        "device_id": DEVICE,
        "timestamp_start_ms": envelope["timestamp_start_ms"],
        "timestamp_end_ms": envelope["timestamp_end_ms"],
        "sampling_rate": dart.DartDouble("250.0"),
        "lsb_to_volts": dart.DartDouble("0.0000057220458984375"),  # 5.7220458984375e-6
        "payload_base64": base64.b64encode(compress_frame(device.payload(index))).decode(),
    }).encode()


def media_request(data: bytes, content_type: str, filename: str, session_id: str, **times: dt.datetime) -> dict[str, Any]:
    """``MediaProvider._uploadMedia(..., compress: true)``: no header at all."""
    fields = {"user_id": PARTICIPANT, "session_id": session_id, "original_filename": filename, "mimetype": content_type}
    for name in ("timestamp_utc", "start_time_utc", "end_time_utc"):
        if name in times:
            fields[name] = dart.dart_iso(times[name])
    compressed = zstandard.ZstdCompressor(level=3).compress(data)
    return dart.multipart(fields, [dart.MultipartFile("file", compressed, filename)], seed=len(data))


async def end_session(client: Any, eid: str, sid: str, kind: str, start: dt.datetime, events: str) -> None:
    """``SessionProvider.endSessionAndUpload``: metadata field + events.csv from a string."""
    end = start + dt.timedelta(seconds=SECONDS, microseconds=5000)
    metadata = dart.json_encode({"session_id": sid, "user_id": PARTICIPANT, "device_id": DEVICE, "start_time": dart.dart_iso(start),
                                 "end_time": dart.dart_iso(end), "session_type": kind, "experiment_id": eid})
    r = await client.post("/api/v1/sessions/end", **dart.multipart(
        {"metadata": metadata}, [dart.MultipartFile.from_string("events_log_csv", events, "events.csv")], {"X-User-Id": PARTICIPANT}))
    assert r.status_code == 200, r.text


async def record_session(client: Any, eid: str, kind: str, start: dt.datetime, codes: tuple[int, ...] = ()) -> str:
    """``SessionProvider.startSession``, then ``BleProvider._sendPayloadToServer``
    for ``SECONDS`` packets (trigger pulses at 2 s and 5 s). Returns the session id."""
    participant = {"X-User-Id": PARTICIPANT}
    start_ms = int(start.timestamp() * 1000)
    sid = f"{kind}-{start_ms}"
    r = await client.post("/api/v1/sessions/start", **dart.post_json(
        {"session_id": sid, "user_id": PARTICIPANT, "start_time": dart.dart_iso(start), "session_type": kind,
         "experiment_id": eid}, {"Content-Type": "application/json", **participant}))
    assert r.status_code == 201, r.text
    device = SimulatedDevice(user_id=PARTICIPANT, device_id=DEVICE, variant="app", seed=3,
                             lsb_to_volts=5.7220458984375e-6, trigger_samples=[250 * 2, 250 * 5], trigger_codes=codes)
    for i in range(SECONDS):
        r = await client.post("/api/v1/data", headers={**dart.BASE, "content-type": "application/json; charset=utf-8", **participant},
                              content=data_body(device, i, start_ms))
        assert r.status_code == 202, r.text
    return sid


async def app_study(client: Any, admin: dict[str, str], before_export: Callable[[str, dt.datetime], Awaitable[None]] | None = None) -> bytes:
    """Every call of the app, in the order a study makes them, each reply
    parsed as the Dart code parses it; ``admin`` registers the calibration
    item; ``before_export(session_id, photo_time)`` runs before the export.
    Returns the downloaded export (the experiment is deleted)."""
    owner, participant = {"X-User-Id": OWNER}, {"X-User-Id": PARTICIPANT}
    # SessionProvider.createExperiment
    r = await client.post("/api/v1/experiments", **dart.post_json(
        {"name": "Snack study", "description": "choose a snack", "presentation_order": "sequential"},
        {"Content-Type": "application/json", **owner}))
    assert r.status_code == 201, r.text
    eid = dart.cast(r.json()["experiment_id"], "String", "experiment_id")
    stimuli = dart.multipart({}, [
        dart.MultipartFile("stimuli_definition_csv", b"file_name,trial_type,description\nchoco.png,target,Chocolate\nchips.png,nontarget,\n", "stimuli.csv"),
        dart.MultipartFile("stimulus_files", PNG, "choco.png"),
        dart.MultipartFile("stimulus_files", PNG[::-1], "chips.png"),
    ], owner)
    r = await client.post(f"/api/v1/experiments/{eid}/stimuli", **stimuli)
    assert r.status_code == 202, r.text
    # SessionProvider.fetchExperiments (owner)
    r = await client.get("/api/v1/experiments", **dart.get(owner))
    assert r.status_code == 200 and [experiment_from_json(e)["id"] for e in r.json()] == [eid]

    # SessionProvider.joinExperiment: Content-Type only, user_id in the body
    join = {"Content-Type": "application/json"}
    r = await client.post(f"/api/v1/auth/experiments/{uuid.uuid4()}/join", **dart.post_json({"user_id": PARTICIPANT}, join))
    assert r.status_code == 404, r.text  # "指定した実験が見つかりません"
    locked = (await client.post("/api/v1/experiments", **dart.post_json({"name": "locked", "password": "pw-secret-1234"}, {**join, **owner}))).json()
    r = await client.post(f"/api/v1/auth/experiments/{locked['experiment_id']}/join", **dart.post_json({"user_id": PARTICIPANT}, join))
    assert r.status_code == 401, r.text  # "パスワードが必要か不正です"
    r = await client.post(f"/api/v1/auth/experiments/{locked['experiment_id']}/join",
                          **dart.post_json({"user_id": PARTICIPANT, "password": "pw-secret-1234"}, join))
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/v1/auth/experiments/{eid}/join", **dart.post_json({"user_id": PARTICIPANT}, join))
    assert r.status_code in (200, 201), r.text
    r = await client.get("/api/v1/experiments", **dart.get(participant))
    assert r.status_code == 200 and {experiment_from_json(e)["id"] for e in r.json()} == {eid, locked["experiment_id"]}

    # StimulusProvider: lists and downloads (with X-User-Id)
    async def stimuli_listed() -> Any:
        r = await client.get(f"/api/v1/experiments/{eid}/stimuli", **dart.get(participant))
        assert r.status_code == 200, r.text
        return r.json() if len(r.json()) == 2 else None

    listed = [stimulus_from_json(s) for s in await wait_for(stimuli_listed, timeout=30)]
    assert {s["file_name"]: s["trial_type"] for s in listed} == {"choco.png": "target", "chips.png": "nontarget"}
    calibration = dart.multipart({"item_type": "target"}, [dart.MultipartFile("file", PNG, "face01.png", "image/png")], admin)
    assert (await client.post("/api/v1/calibrations", **calibration)).status_code == 201
    r = await client.get("/api/v1/calibrations", **dart.get(participant))
    assert r.status_code == 200 and [calibration_from_json(c)["file_name"] for c in r.json()] == ["face01.png"]
    r = await client.get(f"/api/v1/stimuli/{eid}/download/choco.png", **dart.get(participant))
    assert r.status_code == 200 and r.content == PNG
    r = await client.get("/api/v1/stimuli/calibration/download/face01.png", **dart.get(participant))
    assert r.status_code == 200 and r.content == PNG

    # A calibration session (the app's codes: target 1, non-target 2), then the main one.
    calibration_start = dt.datetime(2026, 12, 3, 5, 19, 0, 123456, tzinfo=dt.UTC)
    cal_sid = await record_session(client, eid, "calibration", calibration_start, codes=(1, 2))
    await end_session(client, eid, cal_sid, "calibration", calibration_start,
                      "onset,duration,trial_type,file_name\n1.95,1.0,target,face01.png\n4.95,1.0,nontarget,face01.png\n")
    start = dt.datetime(2026, 12, 3, 5, 20, 0, 123456, tzinfo=dt.UTC)
    sid = await record_session(client, eid, "main_task", start)

    # MediaProvider._uploadMedia: zstd-compressed, no header
    shot = start + dt.timedelta(seconds=3)
    r = await client.post("/api/v1/media", **media_request(JPEG, "image/jpeg", f"photo_{int(shot.timestamp() * 1000)}.jpg", sid, timestamp_utc=shot))
    assert r.status_code == 202, r.text
    audio_start, audio_end = start + dt.timedelta(seconds=4), start + dt.timedelta(seconds=9)
    r = await client.post("/api/v1/media", **media_request(M4A, "audio/m4a", f"audio_{int(audio_start.timestamp() * 1000)}.m4a", sid,
                                                           start_time_utc=audio_start, end_time_utc=audio_end))
    assert r.status_code == 202, r.text

    # AnalysisProvider.fetchLatestResults: no header, 202 until ready
    async def analysis() -> Any:
        r = await client.get(f"/api/v1/users/{PARTICIPANT}/analysis", **dart.get())
        assert r.status_code in (200, 202), r.text
        return analysis_from_json(r.json()) if r.status_code == 200 else None

    shown = await wait_for(analysis, timeout=30, interval=0.25)
    assert shown["psd_image"] is not None and shown["psd_image"][:4] == b"\x89PNG"
    assert shown["analysis_channels"] and set(shown["analysis_channels"]) <= set(shown["channel_quality"])
    assert shown["timestamp"] is not None

    await end_session(client, eid, sid, "main_task", start,
                      "onset,duration,trial_type,file_name\n1.95,1.0,target,choco.png\n4.95,1.0,nontarget,chips.png\n")

    async def linked() -> bool:
        for session, packets in ((cal_sid, SECONDS), (sid, SECONDS)):
            info = (await client.get(f"/api/v1/sessions/{session}", headers=participant)).json()
            data = (await client.get(f"/api/v1/sessions/{session}/data", headers=participant)).json()
            if info["event_correction_status"] != "completed" or sum(s["packets"] for s in data["streams"]) != packets:
                return False
        return True

    await wait_for(linked, timeout=90)

    # ErpAnalysisProvider.requestAnalysis (200 expected), then fetchLatestResults.
    # The simulator's EEG holds no ERP: a result naming why, nothing recommended.
    r = await client.post(f"/api/v1/neuro-marketing/experiments/{eid}/analyze", **dart.post_empty(owner))
    assert r.status_code == 200, r.text
    requested = parse_like_the_app(r.json())
    r = await client.get(f"/api/v1/neuro-marketing/experiments/{eid}/analysis-results", **dart.get(owner))
    assert r.status_code == 200, r.text
    latest = parse_like_the_app(r.json())
    assert latest["analysis_id"] == requested["analysis_id"] and latest["requested_by"] == OWNER
    assert latest["summary"] and latest["recommendations"] == [] and latest["raw"]["outcome"] == "insufficient_data"
    if before_export is not None:
        await before_export(sid, shot)

    # BidsProvider: start, poll, list, download in the browser
    r = await client.post(f"/api/v1/experiments/{eid}/export", **dart.post_empty(owner))
    assert r.status_code == 202, r.text
    task_id = task_from_start_json(r.json())["task_id"]

    async def finished() -> Any:
        r = await client.get(f"/api/v1/export-tasks/{task_id}", **dart.get(owner))
        assert r.status_code == 200, r.text
        task = task_from_status_json(r.json())
        return task if task["status"] in ("completed", "failed") else None

    task = await wait_for(finished, timeout=180, interval=0.5)
    assert task["status"] == "completed" and task["progress"] == 100, task
    assert task["created_at"] is not None and task["updated_at"] is not None
    r = await client.get("/api/v1/export-tasks?limit=50", **dart.get(owner))
    assert r.status_code == 200
    assert [(str(t["task_id"]), task_from_status_json(t)["status"]) for t in r.json()] == [(task_id, "completed")]
    download = await client.get(f"/api/v1/export-tasks/{task_id}/download", headers=dart.BROWSER)
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip", download.text[:200]

    # SessionProvider.deleteExperiment
    r = await client.delete(f"/api/v1/experiments/{eid}", **dart.delete(owner))
    assert r.status_code in (200, 202, 204), r.text
    return bytes(download.content)


def exported_media(archive_bytes: bytes) -> tuple[list[bytes], str]:
    """The media files of an export and its ``media.tsv``."""
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        media = [archive.read(n) for n in archive.namelist() if "/sourcedata/media/sub-" in n]
        index = archive.read(next(n for n in archive.namelist() if n.endswith("sourcedata/media/media.tsv"))).decode()
    return sorted(media, key=len), index


async def test_the_predecessor_app_works_unchanged(app_client: Any, services_env: dict[str, str], tmp_path: Any) -> None:
    env = {**services_env, "EEGHUB_ANALYZER__INTERVAL_SECONDS": "0.5", "EEGHUB_AUTH__ADMIN_USERS": ADMIN}
    assert "EEGHUB_AUTH__MODE" not in env  # the default mode
    legacy = JPEG[:100] + b"legacy" + JPEG[100:]

    async def stored_and_legacy(sid: str, shot: dt.datetime) -> None:
        conn = await asyncpg.connect(env["EEGHUB_DATABASE__URL"])
        try:  # stored as the real files, not as the zstd frames that came
            stored = await conn.fetch(
                """SELECT content_type, size_bytes, sha256 FROM images WHERE session_id = $1
                   UNION ALL SELECT content_type, size_bytes, sha256 FROM audio_clips WHERE session_id = $1""", sid)
        finally:
            await conn.close()
        assert sorted(tuple(r) for r in stored) == sorted(
            [("image/jpeg", len(JPEG), hashlib.sha256(JPEG).hexdigest()), ("audio/m4a", len(M4A), hashlib.sha256(M4A).hexdigest())])
        # A photo stored as the predecessor stored it (the zstd frame, under
        # image/jpeg), and one a stranger filed under this session id before
        # the session existed: the export unwraps the first, leaves out the second.
        settings = load_settings(env=env)
        async with open_object_store(settings) as (objects, _):
            for key, data in ((f"media/legacy/{sid}/1_photo.jpg", legacy), (f"media/stranger/{sid}/2_photo.jpg", b"not yours")):
                await objects.put_bytes(settings.object_store.buckets.media, key, zstandard.ZstdCompressor().compress(data),
                                        content_type="image/jpeg")
        conn = await asyncpg.connect(env["EEGHUB_DATABASE__URL"])
        try:
            for key, who in ((f"media/legacy/{sid}/1_photo.jpg", PARTICIPANT), (f"media/stranger/{sid}/2_photo.jpg", "stranger")):
                await conn.execute("INSERT INTO images (object_id, user_id, session_id, timestamp_utc, content_type) VALUES ($1, $2, $3, $4, 'image/jpeg')",
                                   key, who, sid, shot)
        finally:
            await conn.close()

    async with app_client(env) as (client, _):
        download = await app_study(client, {"X-User-Id": ADMIN}, before_export=stored_and_legacy)

    # The media are exported as the real files, with their real type.
    media, index = exported_media(download)
    assert media == sorted([JPEG, legacy, M4A], key=len), [m[:8] for m in media]
    assert "image/jpeg" in index and "audio/m4a" in index
