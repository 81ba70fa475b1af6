"""Regressions found by fuzzing the HTTP API (schemathesis and hand-made
probes against ``eeghub serve``): each input here used to get a 500 (or was
accepted and then failed in the background) and must now be a 4xx that names
the field, with nothing stored."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from tests.e2e.helpers import user, wait_for
from tests.e2e.test_bad_input import snapshot

pytestmark = pytest.mark.postgres

OWNER, PART, ADMIN = "owner", "part", "admin"
START = "2025-06-01T10:00:00Z"


async def world(client: Any) -> str:
    """An experiment owned by OWNER, joined by PART, with PART's session s1."""
    r = await client.post("/api/v1/experiments", json={"name": "e"}, headers=user(OWNER))
    assert r.status_code == 201, r.text
    eid = r.json()["experiment_id"]
    assert (await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(PART))).status_code == 201
    start = {"session_id": "s1", "user_id": PART, "experiment_id": eid, "start_time": START, "session_type": "main_task"}
    assert (await client.post("/api/v1/sessions/start", json=start, headers=user(PART))).status_code == 201
    return eid


def assert_400_naming(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400 and body["error"]
    assert field in json.dumps(body), body


# PostgreSQL text cannot hold NUL: a path or query value with one used to reach
# the query and fail there (CharacterNotInRepertoireError, a 500).
NUL_PATHS = [
    ("GET", "/api/v1/sessions/s%001", PART, "session_id"),
    ("GET", "/api/v1/sessions/s%001/data", PART, "session_id"),
    ("GET", "/api/v1/sessions/s%001/correction", PART, "session_id"),
    ("GET", "/api/v1/stimuli/{eid}/download/a%00.png", PART, "filename"),
    ("GET", "/api/v1/stimuli/calibration/download/a%00.png", PART, "filename"),
    ("GET", "/api/v1/users/pa%00rt/analysis", OWNER, "user_id"),
    ("GET", "/api/v1/users/pa%00rt/analysis/stream", OWNER, "user_id"),
    ("PUT", "/api/v1/auth/experiments/{eid}/participants/pa%00rt", OWNER, "user_id"),
    ("DELETE", "/api/v1/auth/experiments/{eid}/participants/pa%00rt", OWNER, "user_id"),
    ("GET", "/api/v1/experiments/{eid}/sessions?user_id=pa%00rt", OWNER, "user_id"),
    ("GET", "/api/v1/experiments/{eid}/sessions?session_type=main%00", OWNER, "session_type"),
]


@pytest.mark.parametrize(("method", "path", "caller", "field"), NUL_PATHS, ids=[f"{m} {p}" for m, p, _, _ in NUL_PATHS])
async def test_nul_in_path_or_query_is_400(
    method: str, path: str, caller: str, field: str, app_client: Any, local_env: dict[str, str]
) -> None:
    async with app_client(local_env) as (client, _):
        eid = await world(client)
        kwargs: dict[str, Any] = {"json": {"role": "owner"}} if method == "PUT" else {}
        response = await client.request(method, path.format(eid=eid), headers=user(caller), **kwargs)
    assert_400_naming(response, field)


async def test_session_list_offset_beyond_bigint_is_400(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        eid = await world(client)
        base = f"/api/v1/experiments/{eid}/sessions"
        largest = await client.get(f"{base}?offset={2**63 - 1}", headers=user(OWNER))
        response = await client.get(f"{base}?offset={2**63}", headers=user(OWNER))
    assert largest.status_code == 200, largest.text
    assert largest.json()["items"] == []
    assert_400_naming(response, "offset")


# Times that parse but whose UTC instant no datetime can hold: asyncpg raised
# OverflowError ("date value out of range"), a 500.
OUT_OF_RANGE_TIMES = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-12:00"]


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
async def test_session_times_out_of_range_in_utc_are_400(
    when: str, app_client: Any, local_env: dict[str, str], database_url: str
) -> None:
    async with app_client(local_env) as (client, _):
        await world(client)
        before = await snapshot(database_url)
        start = await client.post(
            "/api/v1/sessions/start",
            json={"session_id": "s2", "user_id": PART, "start_time": when, "session_type": "calibration"},
            headers=user(PART),
        )
        metadata = {"session_id": "s1", "user_id": PART, "device_id": "d1", "end_time": when}
        end = await client.post("/api/v1/sessions/end", files={"metadata": (None, json.dumps(metadata))}, headers=user(PART))
        after = await snapshot(database_url)
    assert_400_naming(start, "start_time")
    assert_400_naming(end, "end_time")
    assert before == after


async def test_session_time_with_offset_is_stored_in_utc(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        start = {"session_id": "tz", "user_id": PART, "start_time": "2025-06-01T19:00:00+09:00", "session_type": "calibration"}
        assert (await client.post("/api/v1/sessions/start", json=start, headers=user(PART))).status_code == 201
        info = (await client.get("/api/v1/sessions/tz", headers=user(PART))).json()
    assert info["start_time"] == START


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
async def test_media_time_out_of_range_in_utc_is_400(when: str, app_client: Any, local_env: dict[str, str]) -> None:
    fields = {"user_id": PART, "session_id": "s1", "mimetype": "image/png", "original_filename": "a.png", "timestamp_utc": when}
    async with app_client(local_env) as (client, _):
        response = await client.post(
            "/api/v1/media",
            files={**{k: (None, v) for k, v in fields.items()}, "file": ("a.png", b"PNG", "image/png")},
            headers=user(PART),
        )
    assert_400_naming(response, "timestamp_utc")


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("POST", {"name": "a\x00b"}, "name"),
        ("POST", {"name": "ok", "description": "x\x00"}, "description"),
        ("PATCH", {"name": "a\x00b"}, "name"),
        ("PUT", {"description": "\x00"}, "description"),
    ],
)
async def test_experiment_text_with_nul_is_400(
    method: str, body: dict[str, Any], field: str, app_client: Any, local_env: dict[str, str], database_url: str
) -> None:
    async with app_client(local_env) as (client, _):
        eid = await world(client)
        before = await snapshot(database_url)
        path = "/api/v1/experiments" if method == "POST" else f"/api/v1/experiments/{eid}"
        response = await client.request(method, path, json=body, headers=user(OWNER))
        after = await snapshot(database_url)
        # Newlines and tabs in a description stay allowed.
        ok = await client.patch(f"/api/v1/experiments/{eid}", json={"description": "line 1\n\tline 2"}, headers=user(OWNER))
    assert_400_naming(response, field)
    assert before == after
    assert ok.status_code == 200 and ok.json()["description"] == "line 1\n\tline 2"


@pytest.mark.parametrize(
    ("item_type", "description", "field"),
    [("tar\x00get", None, "item_type"), ("tar\x07get", None, "item_type"), ("target", "bad\x00", "description")],
)
async def test_calibration_fields_with_nul_are_400(
    item_type: str, description: str | None, field: str, app_client: Any, local_env: dict[str, str], database_url: str
) -> None:
    files: dict[str, Any] = {"file": ("cal.png", b"PNG", "image/png"), "item_type": (None, item_type)}
    if description is not None:
        files["description"] = (None, description)
    async with app_client(local_env, EEGHUB_AUTH__ADMIN_USERS=ADMIN) as (client, _):
        before = await snapshot(database_url)
        response = await client.post("/api/v1/calibrations", files=files, headers=user(ADMIN))
        after = await snapshot(database_url)
    assert_400_naming(response, field)
    assert before == after


SECRET = "a-test-secret-that-is-long-enough-1234567890"


@pytest.mark.parametrize("subject", ["a\x00b", "a\nb"])
async def test_jwt_subject_with_control_character_is_401(
    subject: str, app_client: Any, local_env: dict[str, str]
) -> None:
    token = jwt.encode({"sub": subject, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    async with app_client(local_env, EEGHUB_AUTH__MODE="jwt", EEGHUB_AUTH__JWT_SECRET=SECRET) as (client, _):
        response = await client.post(
            "/api/v1/experiments", json={"name": "e"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401, response.text
    assert "sub" in response.json()["error"]


@pytest.mark.parametrize(
    ("client_type", "stored"),
    [
        ("image/" + "x" * 300, "application/octet-stream"),  # longer than content_type VARCHAR(255)
        ("image/png\x00", "application/octet-stream"),  # NUL
        ("not a type", "application/octet-stream"),
        ("image/png; charset=binary", "image/png"),  # parameters dropped, the type kept
    ],
)
async def test_stimulus_part_content_type_is_sanitised(
    client_type: str, stored: str, app_client: Any, local_env: dict[str, str]
) -> None:
    """A part's Content-Type used to be stored as sent: too long or with NUL,
    the upload got 202 and its job then failed in the background forever
    (dead-lettered, the job left ``pending``)."""
    files = [
        ("stimuli_definition_csv", ("s.csv", b"file_name,trial_type\nnoext,target\n", "text/csv")),
        ("stimulus_files", ("noext", b"DATA", client_type)),
    ]
    async with app_client(local_env) as (client, _):
        eid = await world(client)
        r = await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))
        assert r.status_code == 202, r.text
        status_url = r.json()["status_url"]

        async def finished() -> Any:
            job = (await client.get(status_url, headers=user(OWNER))).json()
            return job if job["status"] in ("completed", "failed") else None

        job = await wait_for(finished)
        listed = (await client.get(f"/api/v1/experiments/{eid}/stimuli", headers=user(PART))).json()
    assert job["status"] == "completed", job
    assert [(s["file_name"], s["content_type"]) for s in listed] == [("noext", stored)]


async def test_stimulus_file_name_over_255_utf8_bytes_is_400(
    app_client: Any, local_env: dict[str, str], database_url: str
) -> None:
    """100 characters, 300 bytes: it used to be accepted (202), and every
    export of the experiment then failed writing ``stimuli/<name>``
    (OSError: File name too long)."""
    name = "€" * 100
    files = [
        ("stimuli_definition_csv", ("s.csv", f"file_name,trial_type\n{name},target\n".encode(), "text/csv")),
        ("stimulus_files", (name, b"DATA", "image/png")),
    ]
    async with app_client(local_env) as (client, _):
        eid = await world(client)
        before = await snapshot(database_url)
        response = await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))
        after = await snapshot(database_url)
        fits = "€" * 85  # 255 bytes
        ok = await client.post(
            f"/api/v1/experiments/{eid}/stimuli",
            files=[
                ("stimuli_definition_csv", ("s.csv", f"file_name,trial_type\n{fits},target\n".encode(), "text/csv")),
                ("stimulus_files", (fits, b"DATA", "image/png")),
            ],
            headers=user(OWNER),
        )
    assert_400_naming(response, "bytes in UTF-8")
    assert before == after
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(
    ("row", "field"),
    [("1e308,0,a", "onset"), ("-1e308,0,a", "onset"), ("1,1e308,a", "duration"), ("1000000001,0,a", "onset")],
)
async def test_event_onset_or_duration_beyond_bound_is_400(
    row: str, field: str, app_client: Any, local_env: dict[str, str], database_url: str
) -> None:
    """Finite but huge: stored with 200, then the correction job failed on
    every attempt (OverflowError converting the onset to microseconds)."""
    metadata = json.dumps({"session_id": "s1", "user_id": PART, "device_id": "d1", "end_time": "2025-06-01T10:05:00Z"})
    csv = f"onset,duration,trial_type\n0.5,0,ok\n{row}\n".encode()
    async with app_client(local_env) as (client, _):
        await world(client)
        before = await snapshot(database_url)
        response = await client.post(
            "/api/v1/sessions/end",
            files={"metadata": (None, metadata), "events_log_csv": ("e.csv", csv, "text/csv")},
            headers=user(PART),
        )
        after = await snapshot(database_url)
    assert_400_naming(response, field)
    assert "line 3" in response.json()["error"]
    assert before == after


async def test_events_at_the_bound_are_corrected(app_client: Any, local_env: dict[str, str]) -> None:
    metadata = json.dumps({"session_id": "s1", "user_id": PART, "device_id": "d1", "end_time": "2025-06-01T10:05:00Z"})
    csv = b"onset,duration,trial_type\n1e9,1e9,a\n-1e9,0,b\n"
    async with app_client(local_env) as (client, _):
        await world(client)
        response = await client.post(
            "/api/v1/sessions/end",
            files={"metadata": (None, metadata), "events_log_csv": ("e.csv", csv, "text/csv")},
            headers=user(PART),
        )
        assert response.status_code == 200, response.text

        async def settled() -> Any:
            info = (await client.get("/api/v1/sessions/s1", headers=user(PART))).json()
            return info if info["event_correction_status"] in ("completed", "failed") else None

        info = await wait_for(settled)
    assert info["event_correction_status"] == "completed", info
