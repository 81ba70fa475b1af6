"""Malformed input to the session and stimulus routes: always a 4xx with a
message that says what is wrong, and the database left unchanged."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from tests.e2e.helpers import user

pytestmark = pytest.mark.postgres

OWNER, PART = "owner", "part"
TABLES = ("experiments", "experiment_participants", "experiment_stimuli", "sessions", "session_events",
          "stimulus_jobs", "eeghub_outbox", "calibration_items")


async def snapshot(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
            out[table] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
        return out
    finally:
        await conn.close()


def meta(**overrides: Any) -> str:
    base = {"session_id": "s1", "user_id": PART, "device_id": "d1", "end_time": "2025-06-01T10:05:00Z"}
    base.update(overrides)
    return json.dumps(base)


def stim(csv: bytes, files: list[tuple[str, bytes]]) -> list[Any]:
    out: list[Any] = [("stimuli_definition_csv", ("s.csv", csv, "text/csv"))]
    out += [("stimulus_files", (name, data, "application/octet-stream")) for name, data in files]
    return out


GOOD_CSV = b"file_name,trial_type\na.png,target\nb.png,nontarget\n"
FILES = [("a.png", b"AAAA"), ("b.png", b"BBBB")]

# (description, method, path, kwargs builder, expected status, text expected in the error)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("experiment: bad JSON", "POST", "/api/v1/experiments", lambda e: {"content": b"{name:", "headers": {"content-type": "application/json"}}, 400, ""),
    ("experiment: bad UTF-8", "POST", "/api/v1/experiments", lambda e: {"content": b'{"name": "\xff"}', "headers": {"content-type": "application/json"}}, 400, "UTF-8"),
    ("experiment: missing name", "POST", "/api/v1/experiments", lambda e: {"json": {}}, 400, "name"),
    ("experiment: short password", "POST", "/api/v1/experiments", lambda e: {"json": {"name": "x", "password": "abc"}}, 400, "password"),
    ("experiment: bad order", "POST", "/api/v1/experiments", lambda e: {"json": {"name": "x", "presentation_order": "shuffle"}}, 400, "presentation_order"),
    ("experiment: not a UUID", "GET", "/api/v1/experiments/not-a-uuid", lambda e: {}, 400, "UUID"),
    ("experiment: unknown", "GET", "/api/v1/experiments/00000000-0000-0000-0000-000000000000", lambda e: {}, 404, "not found"),
    ("join: not a UUID", "POST", "/api/v1/auth/experiments/xyz/join", lambda e: {"json": {}}, 400, "UUID"),
    ("start: bad JSON", "POST", "/api/v1/sessions/start", lambda e: {"content": b"{", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("start: bad UTF-8", "POST", "/api/v1/sessions/start", lambda e: {"content": b'{"session_id": "\xff\xfe"}', "headers": {"content-type": "application/json"}}, 400, ""),
    ("start: unknown type", "POST", "/api/v1/sessions/start", lambda e: {"json": {"session_id": "n", "user_id": PART, "start_time": "2025-06-01T10:00:00Z", "session_type": "nap"}}, 400, "allowed values: main_integrated, main_external, main_task, calibration"),
    ("start: unknown field", "POST", "/api/v1/sessions/start", lambda e: {"json": {"session_id": "n", "user_id": PART, "start_time": "2025-06-01T10:00:00Z", "session_type": "calibration", "colour": "red"}}, 400, "unknown field `colour`"),
    ("start: bad nested value", "POST", "/api/v1/sessions/start", lambda e: {"json": {"session_id": "n", "user_id": PART, "start_time": "2025-06-01T10:00:00Z", "session_type": "calibration", "clock_offset_info": {"offset_ms": "x"}}}, 400, '"field": "clock_offset_info.offset_ms"'),
    ("start: naive time", "POST", "/api/v1/sessions/start", lambda e: {"json": {"session_id": "n", "user_id": PART, "start_time": "2025-06-01T10:00:00", "session_type": "calibration"}}, 400, "start_time"),
    ("start: bad experiment id", "POST", "/api/v1/sessions/start", lambda e: {"json": {"session_id": "n", "user_id": PART, "experiment_id": "nope", "start_time": "2025-06-01T10:00:00Z", "session_type": "calibration"}}, 400, "experiment_id"),
    ("end: JSON body, no form", "POST", "/api/v1/sessions/end", lambda e: {"json": {"session_id": "s1"}}, 400, "metadata"),
    ("end: metadata not JSON", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, "{oops")}}, 400, "metadata"),
    ("end: metadata missing field", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, json.dumps({"session_id": "s1", "user_id": PART}))}}, 400, "device_id"),
    ("end: unknown session", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta(session_id="ghost"))}}, 404, "ghost"),
    ("end: end before start", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta(end_time="2025-06-01T09:00:00Z"))}}, 400, "end_time"),
    ("end: CSV missing onset", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"duration,trial_type\n1,t\n", "text/csv")}}, 400, "onset"),
    ("end: CSV non-numeric onset", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,trial_type\n1.0,a\nsoon,b\n", "text/csv")}}, 400, "line 3"),
    ("end: CSV row with extra field", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,trial_type\n1.0,a,extra\n", "text/csv")}}, 400, "line 2"),
    ("end: CSV row missing a field", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,duration,trial_type\n1.0,2\n", "text/csv")}}, 400, "line 2"),
    ("end: CSV empty", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"", "text/csv")}}, 400, "empty"),
    ("end: CSV bad UTF-8", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,trial_type\n1,\xff\n", "text/csv")}}, 400, "UTF-8"),
    ("end: CSV duplicate column", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,onset,trial_type\n1,1,a\n", "text/csv")}}, 400, "duplicate"),
    ("end: negative duration", "POST", "/api/v1/sessions/end", lambda e: {"files": {"metadata": (None, meta()), "events_log_csv": ("e.csv", b"onset,duration,trial_type\n1,-2,a\n", "text/csv")}}, 400, "duration"),
    ("end: broken multipart", "POST", "/api/v1/sessions/end", lambda e: {"content": b"--xx\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400, "multipart"),
    ("stimuli: no files", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": {"stimuli_definition_csv": ("s.csv", GOOD_CSV, "text/csv")}}, 400, "required"),
    ("stimuli: CSV missing column", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name\na.png\nb.png\n", FILES)}, 400, "trial_type"),
    ("stimuli: CSV extra field in row", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\na.png,t,x\nb.png,t\n", FILES)}, 400, "line 2"),
    ("stimuli: CSV empty", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"", FILES)}, 400, "empty"),
    ("stimuli: CSV header only", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\n", FILES)}, 400, "no rows"),
    ("stimuli: CSV bad UTF-8", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\na.png,\xff\n", FILES)}, 400, "UTF-8"),
    ("stimuli: empty file", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(GOOD_CSV, [("a.png", b""), ("b.png", b"B")])}, 400, "empty"),
    ("stimuli: duplicate upload", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(GOOD_CSV, [("a.png", b"A"), ("a.png", b"A"), ("b.png", b"B")])}, 400, "duplicate"),
    ("stimuli: duplicate CSV row", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\na.png,t\na.png,t\n", [("a.png", b"A")])}, 400, "already defined"),
    ("stimuli: traversal in upload name", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\n../a.png,t\n", [("../a.png", b"A")])}, 400, "path separator"),
    ("stimuli: traversal in CSV", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\n..,t\n", [("a.png", b"A")])}, 400, "'..'"),
    ("stimuli: control character", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(b"file_name,trial_type\n\"a\x07.png\",t\n", [("a.png", b"A")])}, 400, "control"),
    ("stimuli: mismatch", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(GOOD_CSV, [("a.png", b"A"), ("c.png", b"C")])}, 400, "Mismatch"),
    ("stimuli: file too large", "POST", "/api/v1/experiments/{eid}/stimuli", lambda e: {"files": stim(GOOD_CSV, [("a.png", b"A" * 3000), ("b.png", b"B")])}, 413, "larger"),
    ("any: body over the server limit", "POST", "/api/v1/experiments", lambda e: {"content": b"{" + b" " * 20000 + b"}", "headers": {"content-type": "application/json"}}, 413, ""),
]


@pytest.mark.parametrize(("name", "method", "path", "build", "status", "needle"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_4xx_and_changes_nothing(
    name: str, method: str, path: str, build: Any, status: int, needle: str,
    app_client: Any, local_env: dict[str, str], database_url: str,
) -> None:
    env = {**local_env, "EEGHUB_STIMULUS__MAX_FILE_BYTES": "2048", "EEGHUB_SERVER__MAX_REQUEST_BODY_BYTES": "10000"}
    async with app_client(env) as (client, _):
        eid = (await client.post("/api/v1/experiments", json={"name": "e"}, headers=user(OWNER))).json()["experiment_id"]
        await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(PART))
        start = {"session_id": "s1", "user_id": PART, "experiment_id": eid, "start_time": "2025-06-01T10:00:00Z", "session_type": "calibration"}
        assert (await client.post("/api/v1/sessions/start", json=start, headers=user(PART))).status_code == 201
        before = await snapshot(database_url)
        kwargs = build(eid)
        headers = {**user(OWNER if "{eid}/stimuli" in path or path == "/api/v1/experiments" else PART), **kwargs.pop("headers", {})}
        response = await client.request(method, path.format(eid=eid), headers=headers, **kwargs)
        after = await snapshot(database_url)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status and body["error"]
    assert needle.lower() in json.dumps(body).lower(), body
    assert before == after, "the database changed"


async def test_a_403_says_why(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        eid = (await client.post("/api/v1/experiments", json={"name": "e"}, headers=user(OWNER))).json()["experiment_id"]
        await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(PART))
        outsider = await client.get(f"/api/v1/experiments/{eid}", headers=user("stranger"))
        assert outsider.status_code == 403
        assert outsider.json()["error"] == f"Forbidden: stranger is not a member of experiment {eid} (join it first)"
        participant = await client.get(f"/api/v1/auth/experiments/{eid}/participants", headers=user(PART))
        assert participant.status_code == 403
        assert participant.json()["error"] == f"Forbidden: this needs the owner role in experiment {eid}; {PART} is a participant"


async def test_analysis_ids_out_of_range_are_a_400(app_client: Any, local_env: dict[str, str]) -> None:
    """An analysis id is a BIGINT: one that does not fit is a 400 naming the
    field, never a 500 from the database driver."""
    async with app_client(local_env) as (client, _):
        for aid in ("99999999999999999999999", "9223372036854775808", "-9223372036854775809"):
            for tail in ("", "/result", "/figures/x.png"):
                r = await client.get(f"/api/v1/experiment-analyses/{aid}{tail}", headers=user(OWNER))
                assert r.status_code == 400 and "analysis_id" in r.json()["error"], (aid, tail, r.status_code, r.text)
        r = await client.get("/api/v1/experiment-analyses/9223372036854775807", headers=user(OWNER))
        assert r.status_code == 404
