"""Export hardening through HTTP: concurrent exports of one experiment,
hostile and malformed data (labels that are not BIDS labels, a session with
no data, an object that does not decode, nothing to export), authorization of
every export route, and the internal build endpoint.

The concurrency test uses the real services (PostgreSQL, RabbitMQ, S3); the
rest use ``local_env`` (PostgreSQL, filesystem store, in-process broker).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import mne
import numpy as np
import pandas as pd
import pytest

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.core.packet import compress_frame, decode_payload
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, finished_task, start_export, user, wait_for

pytestmark = pytest.mark.postgres

OWNER = "lab-owner"
T0 = 1_748_736_000_000
RATE, PER_PACKET, SECONDS = 250.0, 250, 6
TRIGGERS = [int(RATE * (0.5 + 1.0 * k)) for k in range(5)]


async def query(url: str, sql: str, *args: Any) -> list[Any]:
    """Run SQL on the test's database from the test's own event loop (the
    app's pool lives in the test client's loop and cannot be shared)."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def new_experiment(client: Any, name: str) -> str:
    r = await client.post("/api/v1/experiments", json={"name": name}, headers=user(OWNER))
    assert r.status_code == 201, r.text
    return str(r.json()["experiment_id"])


async def join(client: Any, eid: str, who: str) -> None:
    r = await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(who))
    assert r.status_code == 201, r.text


async def start_session(client: Any, eid: str, subject: str, sid: str, start: int, kind: str = "main_task") -> None:
    r = await client.post("/api/v1/sessions/start", headers=user(subject), json={
        "session_id": sid, "user_id": subject, "experiment_id": eid, "start_time": iso(start), "session_type": kind})
    assert r.status_code == 201, r.text


async def end_session(client: Any, subject: str, sid: str, device: str, end: int, csv: bytes | None) -> None:
    meta = {"session_id": sid, "user_id": subject, "device_id": device, "end_time": iso(end)}
    r = await client.post("/api/v1/sessions/end", headers=user(subject), **end_form(meta, csv))
    assert r.status_code == 200, r.text


async def record(
    client: Any, db: str, eid: str, subject: str, sid: str, start: int, seed: int, *, packets: bool = True
) -> np.ndarray | None:
    """Start, stream (unless ``packets`` is false), end one session with an
    event log; return the int16 data sent (channels x samples)."""
    device_id = f"dev-{seed}"
    await start_session(client, eid, subject, sid, start)
    sent = None
    if packets:
        device = SimulatedDevice(user_id=subject, device_id=device_id, variant="v4", seed=seed,
                                 sampling_rate=RATE, samples_per_packet=PER_PACKET, trigger_samples=TRIGGERS)
        chunks = []
        for i in range(SECONDS):
            payload = device.payload(i)
            chunks.append(decode_payload(payload).signals)
            body = {**device.envelope(i, start), "payload_base64": base64.b64encode(compress_frame(payload)).decode()}
            r = await client.post("/api/v1/data", json=body, headers=user(subject))
            assert r.status_code == 202, r.text
        sent = np.concatenate(chunks, axis=1)

        async def stored() -> bool:
            rows = await query(
                db, "SELECT count(*) AS n FROM raw_data_objects WHERE user_id = $1 AND device_id = $2", subject, device_id)
            return bool(rows[0]["n"] == SECONDS)

        await wait_for(stored, timeout=30)
    csv = "onset,duration,trial_type,file_name,value\n" + "".join(
        f"{s / RATE - 0.05:.4f},0.5,{'target' if k % 2 else 'other'},n/a,{k}\n" for k, s in enumerate(TRIGGERS))
    await end_session(client, subject, sid, device_id, start + SECONDS * 1000, csv.encode())
    return sent


async def wait_processed(client: Any, sessions: dict[str, str], timeout: float = 60) -> None:
    """Wait until every session (id → its user) is linked and corrected."""

    async def done() -> bool:
        for sid, who in sessions.items():
            info = (await client.get(f"/api/v1/sessions/{sid}", headers=user(who))).json()
            if info["link_status"] != "completed" or info["event_correction_status"] != "completed":
                return False
        return True

    await wait_for(done, timeout=timeout, interval=0.2)


async def concurrently(client: Any, app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send requests at the same time. The test client hands each request
    to the app's event loop (in another thread) and waits for it, so
    ``asyncio.gather`` over ``client.post`` would run them one after the
    other; here they are sent from inside the app's loop."""

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local", timeout=60) as c:
            return list(await asyncio.gather(*(c.request(method, url, **kw) for method, url, kw in calls)))

    return await asyncio.to_thread(client.blocking_portal.call, send_all)


def check_archive(content: bytes) -> zipfile.ZipFile:
    """The ZIP is complete (every CRC checks) and no member can escape."""
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None
    for name in archive.namelist():
        assert name.startswith("bids_dataset/"), name
        assert not name.startswith("/") and "\\" not in name and ".." not in name, name
    return archive


def eeg_members(archive: zipfile.ZipFile) -> dict[str, bytes]:
    return {n: archive.read(n) for n in archive.namelist() if n.endswith("_eeg.eeg")}


# 1. Two exports of the same experiment at once (real S3 and RabbitMQ) ------


@pytest.mark.rabbitmq
@pytest.mark.s3
async def test_two_concurrent_exports_of_one_experiment(app_client: Any, services_env: dict[str, str]) -> None:
    subject = "subj-1"
    db = services_env["EEGHUB_DATABASE__URL"]
    async with app_client(services_env, EEGHUB_EXPORT__MAX_CONCURRENT_EXPORTS="2") as (client, app):
        eid = await new_experiment(client, "Concurrent exports")
        await join(client, eid, subject)
        sent = []
        for k in range(2):
            sent.append(await record(client, db, eid, subject, f"conc-{k}", T0 + k * 60_000, seed=k))
        await wait_processed(client, {"conc-0": subject, "conc-1": subject})

        export = ("POST", f"/api/v1/experiments/{eid}/export", {"headers": user(OWNER)})
        accepted = await concurrently(client, app, [export, export])
        assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
        first, second = (r.json()["status_url"] for r in accepted)
        tasks = await asyncio.gather(finished_task(client, first, OWNER), finished_task(client, second, OWNER))
        archives = []
        for task in tasks:
            assert task["status"] == "completed", task
            assert task["validation"]["errors"] == 0, task["validation"]
            download = await client.get(task["download_url"], headers=user(OWNER))
            assert download.status_code == 200
            assert len(download.content) == task["size_bytes"] == int(download.headers["content-length"])
            archives.append(check_archive(download.content))

    a, b = tasks
    assert a["task_id"] != b["task_id"]
    assert a["result_file_path"] != b["result_file_path"]
    assert {a["result_file_path"], b["result_file_path"]} == {
        f"exports/{eid}/{t['task_id']}.zip" for t in tasks}
    # They really ran at the same time: each started before the other finished.
    assert max(parse_time(t["started_at"]) for t in tasks) < min(parse_time(t["finished_at"]) for t in tasks), tasks
    names_a, names_b = sorted(archives[0].namelist()), sorted(archives[1].namelist())
    assert names_a == names_b
    eeg_a, eeg_b = eeg_members(archives[0]), eeg_members(archives[1])
    assert len(eeg_a) == 2 and eeg_a == eeg_b
    # ... and that content is exactly what was recorded (BrainVision int16, multiplexed).
    expected = {np.ascontiguousarray(d.T, dtype="<i2").tobytes() for d in sent if d is not None}
    assert set(eeg_a.values()) == expected
    for name in names_a:  # every sidecar, TSV and header is the same too
        if not name.endswith(".eeg"):
            assert archives[0].read(name) == archives[1].read(name), name


# 2. Malformed and hostile data ----------------------------------------------

WEIRD = "../weird user.01"
ABSOLUTE = "/root/evil\\name"  # HTTP headers are ASCII


async def test_hostile_labels_empty_session_and_undecodable_object(
    app_client: Any, local_env: dict[str, str], tmp_path: Path
) -> None:
    db = local_env["EEGHUB_DATABASE__URL"]
    async with app_client(local_env) as (client, app):
        eid = await new_experiment(client, "Hostile data")
        for who in (WEIRD, ABSOLUTE):
            await join(client, eid, who)
        sent_weird = await record(client, db, eid, WEIRD, "weird-main", T0, seed=1)
        await record(client, db, eid, WEIRD, "weird-empty", T0 + 60_000, seed=2, packets=False)
        sent_abs = await record(client, db, eid, ABSOLUTE, "abs-main", T0 + 120_000, seed=3)
        await wait_processed(client, {"weird-main": WEIRD, "weird-empty": WEIRD, "abs-main": ABSOLUTE})

        # Overwrite the third packet of abs-main in the store with garbage.
        # Packets sent one after the other are usually stored together, in
        # a segment: then its bytes in the segment are overwritten.
        rows = await query(db,
            """SELECT r.object_id, r.segment_key, r.segment_offset, r.stored_bytes
               FROM session_object_links l JOIN raw_data_objects r ON r.object_id = l.object_id
               WHERE l.session_id = 'abs-main' ORDER BY r.timestamp_start_ms""")
        assert len(rows) == SECONDS
        broken = rows[2]["object_id"]
        store = FilesystemObjectStore(Path(local_env["EEGHUB_SERVER__DATA_DIR"]) / "objects")
        bucket = app.state.ctx.settings.object_store.buckets.raw_data
        if rows[2]["segment_key"] is None:
            await store.put_bytes(bucket, broken, b"\x04garbage, not a packet")
        else:
            segment = bytearray(await store.get_bytes(bucket, rows[2]["segment_key"]))
            start, length = rows[2]["segment_offset"], rows[2]["stored_bytes"]
            segment[start : start + length] = b"\x04" + b"\xff" * (length - 1)  # 255 channels: refused
            await store.put_bytes(bucket, rows[2]["segment_key"], bytes(segment))

        task = await finished_task(client, await start_export(client, eid, OWNER), OWNER)
        assert task["status"] == "completed", task
        assert task["validation"]["errors"] == 0, task["validation"]
        # Members may read the status, but only the owner downloads.
        member_view = await client.get(f"/api/v1/export-tasks/{task['task_id']}", headers=user(WEIRD))
        assert member_view.status_code == 200 and member_view.json()["status"] == "completed"
        # ...without the report, which names every participant's sessions,
        # and with the validator's counts but not its issue locations.
        assert member_view.json()["report"] is None
        assert set(member_view.json()["validation"]) == {"errors", "warnings", "schema_version"}
        assert "issues" in task["validation"]  # the owner's view
        listed = (await client.get(f"/api/v1/export-tasks?experiment_id={eid}", headers=user(OWNER))).json()
        assert [t["task_id"] for t in listed] == [task["task_id"]] and listed[0]["report"] is None
        assert (await client.get(task["download_url"], headers=user(WEIRD))).status_code == 403
        download = await client.get(task["download_url"], headers=user(OWNER))
        assert download.status_code == 200

    report = task["report"]
    assert report is not None, "the task response exposes the export report"
    skipped = {s["session_id"]: s for s in report["skipped_sessions"]}
    assert list(skipped) == ["weird-empty"]
    assert "no data" in skipped["weird-empty"]["error"]
    exported = {s["session_id"]: s for s in report["sessions"]}
    assert set(exported) == {"weird-main", "abs-main"}
    assert exported["abs-main"]["undecodable_objects"] == [broken]
    assert exported["weird-main"]["undecodable_objects"] == []
    assert task["sessions_total"] == 3 and task["sessions_done"] == 3

    archive = check_archive(download.content)
    label_map = json.loads(archive.read("bids_dataset/sourcedata/label_map.json"))
    subjects = label_map["labels"]["subject"]
    assert set(subjects) == {WEIRD, ABSOLUTE}
    for original, label in subjects.items():
        assert label.isascii() and label.isalnum(), (original, label)
    assert subjects[WEIRD] != subjects[ABSOLUTE]
    archive.extractall(tmp_path / "out")
    root = tmp_path / "out" / "bids_dataset"
    participants = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    assert sorted(participants["participant_id"]) == sorted(f"sub-{label}" for label in subjects.values())
    vhdrs = {p.parent.parent.parent.name: p for p in root.rglob("*_eeg.vhdr")}
    assert sorted(vhdrs) == sorted(f"sub-{label}" for label in subjects.values())

    lsb = SimulatedDevice(user_id="x", device_id="y").lsb_to_volts

    def recorded(subject: str) -> np.ndarray:
        raw = mne.io.read_raw_brainvision(vhdrs[f"sub-{subjects[subject]}"], verbose="error")
        data = raw.get_data()
        return np.vstack([np.rint(data[:-1] / lsb), np.rint(data[-1:])]).astype(np.int64)

    assert sent_weird is not None and sent_abs is not None
    assert np.array_equal(recorded(WEIRD), sent_weird.astype(np.int64))
    abs_data = recorded(ABSOLUTE)
    assert abs_data.shape == sent_abs.shape
    bad = slice(2 * PER_PACKET, 3 * PER_PACKET)
    assert not abs_data[:, bad].any(), "the undecodable packet is a zero-filled stretch"
    good = np.ones(abs_data.shape[1], dtype=bool)
    good[bad] = False
    assert np.array_equal(abs_data[:, good], sent_abs.astype(np.int64)[:, good])


async def test_nothing_to_export_fails_with_a_clear_message(app_client: Any, local_env: dict[str, str]) -> None:
    subject = "subj-x"
    async with app_client(local_env) as (client, _):
        # Only a session that never ended: nothing is processed.
        unended = await new_experiment(client, "Unended")
        await join(client, unended, subject)
        await start_session(client, unended, subject, "never-ended", T0)
        task = await finished_task(client, await start_export(client, unended, OWNER), OWNER)
        assert task["status"] == "failed", task
        assert "No fully processed sessions" in task["error_message"], task
        assert task["result_file_path"] is None and task["download_url"] is None
        assert (await client.get(f"/api/v1/export-tasks/{task['task_id']}/download", headers=user(OWNER))).status_code == 400

        # Only a session without data: processed, but nothing can be exported.
        empty = await new_experiment(client, "Empty")
        await join(client, empty, subject)
        await start_session(client, empty, subject, "no-data", T0 + 60_000)
        await end_session(client, subject, "no-data", "dev-0", T0 + 66_000, None)
        await wait_processed(client, {"no-data": subject})
        task = await finished_task(client, await start_export(client, empty, OWNER), OWNER)
        assert task["status"] == "failed", task
        assert "no-data" in task["error_message"] and "no data linked" in task["error_message"], task
        assert task["result_file_path"] is None
        # The participant sees that it failed, not which sessions and why.
        as_participant = (await client.get(f"/api/v1/export-tasks/{task['task_id']}", headers=user(subject))).json()
        assert as_participant["status"] == "failed" and "no-data" not in as_participant["error_message"]
        listed = (await client.get(f"/api/v1/export-tasks?experiment_id={empty}", headers=user(subject))).json()
        assert "no-data" not in listed[0]["error_message"]
        listed = (await client.get(f"/api/v1/export-tasks?experiment_id={empty}", headers=user(OWNER))).json()
        assert "no-data" in listed[0]["error_message"]  # the owner's list keeps the detail


@pytest.mark.parametrize("mode", ["compat", "trusted-header"])
async def test_export_authorization(app_client: Any, local_env: dict[str, str], mode: str) -> None:
    """compat (the default) answers a request without X-User-Id for the task
    it names, as the predecessor did (its app opens the download in a
    browser); trusted-header refuses it."""
    member, stranger = "member-1", "stranger-1"
    anonymous = 401 if mode == "trusted-header" else None
    async with app_client(local_env, EEGHUB_AUTH__MODE=mode) as (client, app):
        eid = await new_experiment(client, "Authorization")
        await join(client, eid, member)
        export_url = f"/api/v1/experiments/{eid}/export"
        assert (await client.post(export_url)).status_code == 401
        assert (await client.post(export_url, headers=user(stranger))).status_code == 403
        assert (await client.post(export_url, headers=user(member))).status_code == 403
        assert (await client.post(f"/api/v1/experiments/{uuid.uuid4()}/export", headers=user(OWNER))).status_code == 404
        assert (await client.post("/api/v1/experiments/not-a-uuid/export", headers=user(OWNER))).status_code == 400
        status_url = await start_export(client, eid, OWNER)
        task = await finished_task(client, status_url, OWNER)  # no sessions: fails fast
        assert task["status"] == "failed"

        by_id = await client.get(status_url)
        if anonymous:
            assert by_id.status_code == anonymous
        else:  # the participant's view: that it failed, not why
            assert by_id.status_code == 200 and by_id.json()["status"] == "failed", by_id.text
            assert by_id.json()["report"] is None and "owner" in by_id.json()["error_message"]
        assert (await client.get(status_url, headers=user(stranger))).status_code == 403
        assert (await client.get(status_url, headers=user(member))).status_code == 200
        listed = await client.get(f"/api/v1/export-tasks?experiment_id={eid}", headers=user(member))
        assert listed.status_code == 200 and [t["task_id"] for t in listed.json()] == [task["task_id"]]
        assert (await client.get(f"/api/v1/export-tasks?experiment_id={eid}", headers=user(stranger))).status_code == 403
        assert (await client.get("/api/v1/export-tasks", headers=user(stranger))).json() == []

        download_url = f"{status_url}/download"
        assert (await client.get(download_url)).status_code == (anonymous or 400)  # compat: not complete
        assert (await client.get(download_url, headers=user(stranger))).status_code == 403
        assert (await client.get(download_url, headers=user(member))).status_code == 403
        failed = await client.get(download_url, headers=user(OWNER))
        assert failed.status_code == 400 and "failed" in failed.text

        # A task still running: its status is readable, it cannot be downloaded yet.
        running = uuid.uuid4()
        await query(local_env["EEGHUB_DATABASE__URL"],
            """INSERT INTO export_tasks (task_id, experiment_id, status, progress, requested_by, stage)
               VALUES ($1, $2, 'processing', 40, $3, 'session 1/2')""", running, uuid.UUID(eid), OWNER)
        r = await client.get(f"/api/v1/export-tasks/{running}", headers=user(member))
        assert r.status_code == 200 and r.json()["status"] == "processing" and r.json()["download_url"] is None
        r = await client.get(f"/api/v1/export-tasks/{running}/download", headers=user(OWNER))
        assert r.status_code == 400 and "processing" in r.text

        unknown = uuid.uuid4()
        for url in (f"/api/v1/export-tasks/{unknown}", f"/api/v1/export-tasks/{unknown}/download"):
            assert (await client.get(url, headers=user(OWNER))).status_code == 404, url
        for url in ("/api/v1/export-tasks/not-a-uuid", "/api/v1/export-tasks/not-a-uuid/download"):
            assert (await client.get(url, headers=user(OWNER))).status_code == 400, url


# 3. The internal build endpoint ---------------------------------------------

INTERNAL = "/internal/v1/create-bids-for-analysis"
TOKEN = "s3cret-internal-token-for-tests"


@pytest.mark.parametrize(
    ("settings", "status"),
    [
        ({"EEGHUB_EXPORT__INTERNAL_API_ENABLED": "false", "EEGHUB_EXPORT__INTERNAL_TOKEN": TOKEN}, 404),
        ({"EEGHUB_EXPORT__INTERNAL_API_ENABLED": "true"}, 403),
    ],
    ids=["disabled", "no-token-configured"],
)
async def test_internal_api_refuses_when_not_configured(
    app_client: Any, local_env: dict[str, str], settings: dict[str, str], status: int
) -> None:
    async with app_client(local_env, **settings) as (client, _):
        for headers in ({}, {"X-Internal-Token": TOKEN}, {"X-Internal-Token": ""}):
            r = await client.post(INTERNAL, json={"experiment_id": str(uuid.uuid4())}, headers=headers)
            assert r.status_code == status, (headers, r.text)


async def test_internal_build(app_client: Any, local_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "analysis-output"
    subject = "subj-int"
    async with app_client(local_env, EEGHUB_EXPORT__INTERNAL_TOKEN=TOKEN, EEGHUB_EXPORT__OUTPUT_DIR=str(out)) as (client, app):
        eid = await new_experiment(client, "Internal")
        await join(client, eid, subject)
        await record(client, local_env["EEGHUB_DATABASE__URL"], eid, subject, "int-1", T0, seed=7)
        await wait_processed(client, {"int-1": subject})
        body = {"experiment_id": eid}
        for headers in ({}, {"X-Internal-Token": "wrong"}, {"X-Internal-Token": TOKEN[:-1]}, user(OWNER),
                        {"Authorization": "Bearer wrong"}):
            r = await client.post(INTERNAL, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
        good = {"X-Internal-Token": TOKEN}
        r = await client.post(INTERNAL, json={"experiment_id": str(uuid.uuid4())}, headers=good)
        assert r.status_code == 404, r.text

        responses = await concurrently(client, app, [("POST", INTERNAL, {"json": body, "headers": good})] * 2)
    paths = []
    for r in responses:
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["experiment_id"] == eid
        assert result["validation"]["errors"] == 0, result["validation"]
        path = Path(result["bids_path"])
        assert path.is_dir()
        assert path.resolve().is_relative_to(out.resolve()), path
        assert (path / "dataset_description.json").is_file()
        assert len(list(path.rglob("*_eeg.eeg"))) == 1
        paths.append(path.resolve())
    assert paths[0] != paths[1]
    assert not paths[0].is_relative_to(paths[1]) and not paths[1].is_relative_to(paths[0])
    # The builds overlapped: each began (dataset_description.json) before the
    # other ended (sourcedata/label_map.json, the last file of a build).
    began = [(p / "dataset_description.json").stat().st_mtime_ns for p in paths]
    ended = [(p / "sourcedata" / "label_map.json").stat().st_mtime_ns for p in paths]
    assert max(began) < min(ended), (began, ended)
