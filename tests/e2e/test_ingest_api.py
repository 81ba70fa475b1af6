"""The ingest API and linking rules through HTTP (real PostgreSQL, the
filesystem store and the in-process broker)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import asyncpg
import pytest
import zstandard

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, user, wait_for

pytestmark = pytest.mark.postgres

U = "subject-7"


def body(device: SimulatedDevice, index: int, start: int = 1_750_000_000_000, **overrides: Any) -> dict[str, Any]:
    frame = compress_frame(device.payload(index))
    return {**device.envelope(index, start), "payload_base64": base64.b64encode(frame).decode(), **overrides}


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


async def count_objects(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM raw_data_objects"))
    finally:
        await conn.close()


def zstd(data: bytes) -> str:
    return base64.b64encode(zstandard.ZstdCompressor().compress(data)).decode()


async def test_garbage_is_rejected_with_400_and_never_stored(app_client: Any, local_env: dict[str, str], database_url: str) -> None:
    device = SimulatedDevice(user_id=U, device_id="d1")
    good = body(device, 0)
    payload = device.payload(0)
    cases = {
        "not base64": {**good, "payload_base64": "!!!not base64!!!"},
        "base64 with a line break": {**good, "payload_base64": good["payload_base64"][:8] + "\n" + good["payload_base64"][8:]},
        "base64 without its padding": {**good, "payload_base64": base64.b64encode(b"abcd").decode().rstrip("=")},
        "empty payload": {**good, "payload_base64": ""},
        "not zstd": {**good, "payload_base64": base64.b64encode(b"hello world").decode()},
        "wrong version": {**good, "payload_base64": zstd(b"\x05" + payload[1:])},
        "truncated header": {**good, "payload_base64": zstd(payload[:10])},
        "partial sample": {**good, "payload_base64": zstd(payload[:-3])},
        "zero channels": {**good, "payload_base64": zstd(b"\x04\x00\x00\x00")},
        "sampling_rate 0": {**good, "sampling_rate": 0},
        "lsb_to_volts 0": {**good, "lsb_to_volts": 0},
        "end before start": {**good, "timestamp_end_ms": good["timestamp_start_ms"] - 1},
        "missing device": {k: v for k, v in good.items() if k != "device_id"},
        "bomb": {**good, "payload_base64": zstd(payload[:94] + b"\x00" * 40_000_000)},
    }
    async with app_client(local_env) as (client, _):
        for name, case in cases.items():
            r = await client.post("/api/v1/data", json=case, headers=user(U))
            assert r.status_code in (400, 413), (name, r.status_code, r.text)
            assert r.json()["error"], name
            if "base64" in name:
                assert r.json()["error"] == "payload_base64 must be valid base64", (name, r.text)
            if name == "empty payload":
                assert "payload_base64" in r.json()["error"], r.text
        r = await client.post("/api/v1/data", content=b"{not json", headers={**user(U), "Content-Type": "application/json"})
        assert r.status_code == 400
        # compat (the default): without X-User-Id the caller is the envelope's
        # user_id, as for the predecessor (the strict modes: test_identity_modes)
        assert (await client.post("/api/v1/data", json=good)).status_code == 202
        r = await client.post("/api/v1/data", json=good, headers=user("someone-else"))
        assert r.status_code == 403 and "user_id" in r.json()["error"]
        # session_id may be omitted (the predecessor demanded the key)
        assert "session_id" in good and good["session_id"] is None
        r = await client.post("/api/v1/data", json={k: v for k, v in good.items() if k != "session_id"}, headers=user(U))
        assert r.status_code == 202 and r.json() == {"status": "accepted"}
        await wait_for(lambda: _count_is(database_url, 1))
    assert await count_objects(database_url) == 1


async def _count_is(url: str, n: int) -> bool:
    return await count_objects(url) == n


async def test_binary_body_and_the_app_variant(app_client: Any, local_env: dict[str, str], database_url: str) -> None:
    device = SimulatedDevice(user_id=U, device_id="d2", variant="app", trigger_samples=[10])
    frame = compress_frame(device.payload(0))
    envelope = device.envelope(0, 1_750_000_000_000)
    async with app_client(local_env) as (client, _):
        params = {k: str(v) for k, v in envelope.items() if v is not None and k not in ("sampling_rate", "lsb_to_volts")}
        headers = {**user(U), "Content-Type": "application/octet-stream", "X-Sampling-Rate": "250",
                   "X-Lsb-To-Volts": str(device.lsb_to_volts)}
        r = await client.post("/api/v1/data", content=frame, params=params, headers=headers)
        assert r.status_code == 202, r.text
        r = await client.post("/api/v1/data", content=frame, params={"device_id": "d2"}, headers=headers)
        assert r.status_code == 400  # no timestamps
        await wait_for(lambda: _count_is(database_url, 1))
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM raw_data_objects")
    finally:
        await conn.close()
    assert row["payload_format"] == "v4-trigger" and row["channel_names"][-1] == "TRIG"
    assert row["num_samples"] == 250 and row["user_id"] == U and row["device_id"] == "d2"
    assert row["object_id"].startswith(f"raw/{U}/d2/start_ms=1750000000000/")


async def test_media_upload(app_client: Any, local_env: dict[str, str], database_url: str) -> None:
    async with app_client(local_env) as (client, _):
        def form(mimetype: str, **times: str) -> dict[str, Any]:
            fields = {"user_id": U, "session_id": "s1", "mimetype": mimetype, "original_filename": "x.jpg", **times}
            return {"files": {"file": ("x.jpg", b"\xff\xd8\xff" + b"0" * 100, mimetype), **{k: (None, v) for k, v in fields.items()}}}

        r = await client.post("/api/v1/media", headers=user(U), **form("image/jpeg", timestamp_utc="2025-06-01T10:00:00+09:00"))
        assert r.status_code == 202, r.text
        r = await client.post("/api/v1/media", headers=user(U), **form("image/jpeg", timestamp_utc="2025-06-01T10:00:00+09:00"))
        assert r.status_code == 202  # the same photo again: one row
        r = await client.post("/api/v1/media", headers=user(U), **form("audio/mp4", start_time_utc="2025-06-01T01:00:00Z", end_time_utc="2025-06-01T01:00:05Z"))
        assert r.status_code == 202, r.text
        assert (await client.post("/api/v1/media", headers=user(U), **form("video/mp4", start_time_utc="2025-06-01T01:00:00Z", end_time_utc="2025-06-01T01:00:05Z"))).status_code == 415
        assert (await client.post("/api/v1/media", headers=user(U), **form("image/jpeg"))).status_code == 400
        assert (await client.post("/api/v1/media", headers=user(U), **form("image/jpeg", timestamp_utc="yesterday"))).status_code == 400
        assert (await client.post("/api/v1/media", headers=user("other"), **form("image/jpeg", timestamp_utc="2025-06-01T01:00:00Z"))).status_code == 403
        assert (await client.post("/api/v1/media", headers=user(U), files={"user_id": (None, U)})).status_code == 400

        async def rows() -> Any:
            conn = await asyncpg.connect(database_url)
            try:
                images = await conn.fetch("SELECT timestamp_utc, content_type FROM images")
                audio = await conn.fetch("SELECT start_time, end_time FROM audio_clips")
            finally:
                await conn.close()
            return (images, audio) if len(images) == 1 and len(audio) == 1 else None

        images, audio = await wait_for(rows)
    assert images[0]["timestamp_utc"] == dt.datetime(2025, 6, 1, 1, 0, tzinfo=dt.UTC)
    assert (audio[0]["end_time"] - audio[0]["start_time"]).total_seconds() == 5


async def test_adjacent_sessions_and_late_packets(app_client: Any, local_env: dict[str, str], database_url: str) -> None:
    t0 = 1_750_000_000_000
    device = SimulatedDevice(user_id=U, device_id="d3")
    async with app_client(local_env) as (client, _):
        for sid, start, end in (("a", t0, t0 + 10_000), ("b", t0 + 10_000, t0 + 20_000)):
            r = await client.post("/api/v1/sessions/start", headers=user(U), json={
                "session_id": sid, "user_id": U, "start_time": iso(start), "session_type": "main_task"})
            assert r.status_code == 201
        for i in range(12):  # a's packets and the start of b's
            assert (await client.post("/api/v1/data", json=body(device, i, t0), headers=user(U))).status_code == 202
        await wait_for(lambda: _count_is(database_url, 12))
        for sid, end in (("a", t0 + 10_000), ("b", t0 + 20_000)):
            r = await client.post("/api/v1/sessions/end", headers=user(U), **end_form(
                {"session_id": sid, "user_id": U, "device_id": "d3", "end_time": iso(end)}))
            assert r.status_code == 200

        async def linked(sid: str, n: int) -> bool:
            report = (await client.get(f"/api/v1/sessions/{sid}/data", headers=user(U))).json()
            return bool(report["streams"]) and report["streams"][0]["packets"] == n and report["link_status"] == "completed"

        await wait_for(lambda: linked("a", 10))
        await wait_for(lambda: linked("b", 2))
        for i in range(12, 20):  # late packets for b, after b was linked
            assert (await client.post("/api/v1/data", json=body(device, i, t0), headers=user(U))).status_code == 202
        await wait_for(lambda: linked("b", 10))
        report = (await client.get("/api/v1/sessions/b/data", headers=user(U))).json()
    stream = report["streams"][0]
    assert stream["samples_received"] == 2500 and stream["samples_expected"] == 2500 and stream["completeness"] == 1.0
    conn = await asyncpg.connect(database_url)
    try:
        owners = await conn.fetch("SELECT timestamp_start_ms, session_id FROM raw_data_objects ORDER BY 1")
    finally:
        await conn.close()
    assert [r["session_id"] for r in owners] == ["a"] * 10 + ["b"] * 10


async def test_the_gaps_at_the_edges_of_a_session_are_listed(app_client: Any, local_env: dict[str, str], database_url: str) -> None:
    """A 10 s session whose device sent seconds 1-3 and 5-7: the missing second
    before the first packet, the one in between and the two after the last
    are all listed, and they add up to what completeness counts as missing."""
    t0 = 1_751_000_000_000
    device = SimulatedDevice(user_id=U, device_id="d-edges")
    async with app_client(local_env) as (client, _):
        r = await client.post("/api/v1/sessions/start", headers=user(U), json={
            "session_id": "edges", "user_id": U, "start_time": iso(t0), "session_type": "main_task"})
        assert r.status_code == 201
        sent = [1, 2, 3, 5, 6, 7]
        for i in sent:
            assert (await client.post("/api/v1/data", json=body(device, i, t0), headers=user(U))).status_code == 202
        await wait_for(lambda: _count_is(database_url, len(sent)))
        r = await client.post("/api/v1/sessions/end", headers=user(U), **end_form(
            {"session_id": "edges", "user_id": U, "device_id": "d-edges", "end_time": iso(t0 + 10_000)}))
        assert r.status_code == 200

        async def linked() -> Any:
            report = (await client.get("/api/v1/sessions/edges/data", headers=user(U))).json()
            return report if report["link_status"] == "completed" and report["streams"] else None

        report = await wait_for(linked)
    stream = report["streams"][0]
    assert stream["samples_received"] == 1500 and stream["samples_expected"] == 2500 and stream["completeness"] == 0.6
    gaps = stream["gaps"]
    assert [(g["position"], g["start_ms"], g["missing_ms"], g["missing_samples"]) for g in gaps] == [
        ("start", t0, 1000.0, 250), ("between", t0 + 4000, 1000.0, 250), ("end", t0 + 8000, 2000.0, 500)]
    assert gaps[0]["after_object"] is None and gaps[2]["after_object"] and gaps[1]["after_object"] != gaps[2]["after_object"]
    assert sum(g["missing_samples"] for g in gaps) == stream["samples_expected"] - stream["samples_received"]
