"""Issue 3's end-to-end flow through HTTP against real PostgreSQL, RabbitMQ
and S3: create experiment → upload stimuli → participant joins → start and
end a calibration and a main session with event logs → events stored and
mapped → linking queued after commit."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import asyncpg
import pytest

from tests.e2e.helpers import end_form, events_csv, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER, PARTICIPANT, ADMIN = "owner-1", "participant-1", "admin-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WAV = b"RIFF" + b"\x00" * 60


async def test_whole_session_flow(
    app_client: Any, services_env: dict[str, str], rabbitmq_url: str, database_url: str
) -> None:
    env = {**services_env, "EEGHUB_AUTH__ADMIN_USERS": ADMIN, "EEGHUB_PLUGINS__DISABLED": "linker"}
    # The app runs on the test client's own event loop: the test reads the
    # database and the broker through connections of its own.
    db = await asyncpg.connect(database_url)
    async with app_client(env) as (client, _app):
        # --- experiment
        response = await client.post(
            "/api/v1/experiments",
            json={"name": "Snack study", "description": "ERP", "password": "s3cret-pass", "presentation_order": "sequential"},
            headers=user(OWNER),
        )
        assert response.status_code == 201, response.text
        experiment = response.json()
        eid = experiment["experiment_id"]
        assert experiment == {"experiment_id": eid, "name": "Snack study", "description": "ERP", "presentation_order": "sequential"}

        # --- stimuli (extra CSV columns are kept)
        csv = (
            "file_name,trial_type,description,item_name,brand_name,category,gender,shelf\n"
            "choco.png,target,Chocolate,Choco Bar,Sweetco,snack,f,top\n"
            "chime.wav,nontarget,,Chime,,sound,,\n"
        ).encode()
        files = [
            ("stimuli_definition_csv", ("stimuli.csv", csv, "text/csv")),
            ("stimulus_files", ("choco.png", PNG, "image/png")),
            ("stimulus_files", ("chime.wav", WAV, "audio/wav")),
        ]
        response = await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))
        assert response.status_code == 202, response.text
        status_url = response.json()["status_url"]

        async def job_done() -> Any:
            job = (await client.get(status_url, headers=user(OWNER))).json()
            return job if job["status"] == "completed" else None

        job = await wait_for(job_done)
        assert job["processed_files"] == 2 and job["progress"] == 100

        # --- participant joins (wrong password first)
        bad = await client.post(f"/api/v1/auth/experiments/{eid}/join", json={"password": "nope-nope"}, headers=user(PARTICIPANT))
        assert bad.status_code == 401 and bad.json()["error"] == "Invalid password"
        joined = await client.post(
            f"/api/v1/auth/experiments/{eid}/join", json={"user_id": PARTICIPANT, "password": "s3cret-pass"}, headers=user(PARTICIPANT)
        )
        assert joined.status_code == 201 and joined.json() == {"message": "Successfully joined experiment"}
        detail = (await client.get(f"/api/v1/experiments/{eid}", headers=user(PARTICIPANT))).json()
        # Members with the participant role only; the owner is counted apart.
        assert (detail["participant_count"], detail["owner_count"], detail["stimulus_count"]) == (1, 1, 2)

        stimuli = (await client.get(f"/api/v1/experiments/{eid}/stimuli", headers=user(PARTICIPANT))).json()
        assert [s["file_name"] for s in stimuli] == ["chime.wav", "choco.png"]
        choco = stimuli[1]
        assert (choco["stimulus_type"], choco["item_name"], choco["brand_name"], choco["category"], choco["gender"]) == (
            "image", "Choco Bar", "Sweetco", "snack", "f"
        )
        assert choco["extra"] == {"shelf": "top"} and isinstance(choco["stimulus_id"], int)
        download = await client.get(f"/api/v1/stimuli/{eid}/download/choco.png", headers=user(PARTICIPANT))
        assert download.status_code == 200 and download.content == PNG
        assert download.headers["content-type"] == "image/png"

        # --- calibration items (administrator)
        for name, kind in (("cal_target.png", "target"), ("cal_other.png", "nontarget")):
            response = await client.post(
                "/api/v1/calibrations",
                files={"file": (name, PNG, "image/png"), "item_type": (None, kind)},
                headers=user(ADMIN),
            )
            assert response.status_code == 201, response.text
        calibrations = (await client.get("/api/v1/calibrations", headers=user(PARTICIPANT))).json()
        assert [c["file_name"] for c in calibrations] == ["cal_other.png", "cal_target.png"]

        # --- a calibration and a main session
        sessions = {"cal-1": "calibration", "main-1": "main_external"}
        for sid, kind in sessions.items():
            response = await client.post(
                "/api/v1/sessions/start",
                json={"session_id": sid, "user_id": PARTICIPANT, "experiment_id": eid,
                      "start_time": "2025-06-01T10:00:00+09:00", "session_type": kind},
                headers=user(PARTICIPANT),
            )
            assert response.status_code == 201, response.text
        again = await client.post(
            "/api/v1/sessions/start",
            json={"session_id": "cal-1", "user_id": PARTICIPANT, "experiment_id": eid,
                  "start_time": "2025-06-01T01:00:00Z", "session_type": "calibration"},
            headers=user(PARTICIPANT),
        )
        assert again.status_code == 200 and again.json() == {"message": "Session already exists."}

        cal_events = events_csv([(1.0, 0.5, "target", "cal_target.png"), (2.0, 0.5, "nontarget", "cal_other.png")])
        main_events = events_csv([(1.5, 1.0, "target", "choco.png"), (3.0, 1.0, "nontarget", "chime.wav"), (4.0, 1.0, "probe", "unknown.png")])
        for sid, csv_bytes in (("cal-1", cal_events), ("main-1", main_events)):
            meta = {"session_id": sid, "user_id": PARTICIPANT, "experiment_id": eid, "device_id": "dev-1",
                    "start_time": "2025-06-01T01:00:00Z", "end_time": "2025-06-01T01:05:00Z", "session_type": sessions[sid]}
            response = await client.post("/api/v1/sessions/end", headers=user(PARTICIPANT), **end_form(meta, csv_bytes))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["message"] == "Session ended and processed successfully"
        assert body["unmapped_file_names"] == ["unknown.png"]

        # --- events stored and mapped
        rows = await db.fetch(
            """SELECT e.session_id, e.onset, e.trial_type, s.file_name AS stimulus, c.file_name AS calibration
               FROM session_events e LEFT JOIN experiment_stimuli s ON s.stimulus_id = e.stimulus_id
               LEFT JOIN calibration_items c ON c.item_id = e.calibration_item_id ORDER BY e.session_id, e.onset"""
        )
        assert [(r["session_id"], r["onset"], r["stimulus"], r["calibration"]) for r in rows] == [
            ("cal-1", 1.0, None, "cal_target.png"),
            ("cal-1", 2.0, None, "cal_other.png"),
            ("main-1", 1.5, "choco.png", None),
            ("main-1", 3.0, "chime.wav", None),
            ("main-1", 4.0, None, None),
        ]
        info = (await client.get("/api/v1/sessions/main-1", headers=user(PARTICIPANT))).json()
        assert info["event_count"] == 3 and info["link_status"] == "pending" and info["device_id"] == "dev-1"
        assert info["start_time"].startswith("2025-06-01T01:00:00")  # +09:00 stored as the same instant
        page = (await client.get(f"/api/v1/experiments/{eid}/sessions?limit=1", headers=user(OWNER))).json()
        assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["session_id"] == "cal-1"

    await db.close()

    # --- linking was queued, after commit, once per session end
    queue_name = env["EEGHUB_BROKER__QUEUES__DATA_LINKER_QUEUE"]
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True, passive=True)
        bodies = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
        assert sorted(b["session_id"] for b in bodies) == ["cal-1", "main-1"]
    finally:
        await connection.close()
