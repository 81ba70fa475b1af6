"""Hostile inputs and slow or stalled peers (issue 16): each must be a clear
4xx or a bounded wait, never a 500, a hang or unbounded memory."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import user
from tests.e2e.test_api_fuzz_regressions import OWNER, PART, world

pytestmark = pytest.mark.postgres

DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_LIST = b"[" * 1000 + b"]" * 1000

# Every route that takes a JSON body (the OpenAPI document lists them; the
# test below checks this list is complete).
JSON_ROUTES = [
    ("POST", "/api/v1/experiments"),
    ("PUT", "/api/v1/experiments/{eid}"),
    ("PATCH", "/api/v1/experiments/{eid}"),
    ("POST", "/api/v1/auth/experiments/{eid}/join"),
    ("PUT", "/api/v1/auth/experiments/{eid}/participants/{part}"),
    ("POST", "/api/v1/auth/check"),
    ("POST", "/api/v1/data"),
    ("POST", "/api/v1/sessions/start"),
    ("POST", "/internal/v1/create-bids-for-analysis"),
]


async def test_deeply_nested_json_is_400_on_every_json_route(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_EXPORT__INTERNAL_API_ENABLED": "true", "EEGHUB_EXPORT__INTERNAL_TOKEN": "tok"}
    async with app_client(env) as (client, _):
        eid = await world(client)
        schema = (await client.get("/schema/openapi.json")).json()
        declared = {
            (method.upper(), path)
            for path, item in schema["paths"].items()
            for method, op in item.items()
            if "application/json" in op.get("requestBody", {}).get("content", {})
        }
        listed = {(m, p.replace("{eid}", "{experiment_id}").replace("{part}", "{user_id}")) for m, p in JSON_ROUTES}
        assert declared <= listed, declared - listed
        headers = {**user(OWNER), "content-type": "application/json", "x-internal-token": "tok"}
        for method, path in JSON_ROUTES:
            url = path.format(eid=eid, part=PART)
            for body in (DEEP, DEEP_LIST):
                r = await client.request(method, url, content=body, headers=headers)
                assert r.status_code == 400, (method, path, r.status_code, r.text)
                assert r.json()["status_code"] == 400 and r.json()["error"], r.text


async def test_internal_api_checks_its_token_before_the_body(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_EXPORT__INTERNAL_API_ENABLED": "true", "EEGHUB_EXPORT__INTERNAL_TOKEN": "tok"}
    async with app_client(env) as (client, _):
        url = "/internal/v1/create-bids-for-analysis"
        for body in (DEEP, b"not json", b'{"unexpected": 1}'):
            r = await client.post(url, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, r.text
            r = await client.post(url, content=body, headers={"content-type": "application/json", "x-internal-token": "wrong"})
            assert r.status_code == 401, r.text
        r = await client.post(url, content=b"not json", headers={"content-type": "application/json", "x-internal-token": "tok"})
        assert r.status_code == 400, r.text


def zeros_frame(channels: int, samples: int) -> bytes:
    import numpy as np

    from eeghub.core.packet import compress_frame, encode_payload

    signals = np.zeros((channels, samples), dtype=np.int16)
    return compress_frame(encode_payload(signals, [f"C{i}" for i in range(channels)], ["eeg"] * channels))


async def test_amplified_packets_are_refused_before_they_are_stored(app_client: Any, local_env: dict[str, str]) -> None:
    import base64

    frame = zeros_frame(128, 39_000)  # about 15.4 MB of samples in a few kB
    assert len(frame) < 64 * 1024
    start = 1_750_000_000_000
    base = {"user_id": PART, "device_id": "d1", "sampling_rate": 250.0, "lsb_to_volts": 1e-6}
    async with app_client(local_env) as (client, app):
        # A one-second envelope cannot hold 39,000 samples at 250 Hz.
        one_second = {**base, "timestamp_start_ms": start, "timestamp_end_ms": start + 1000}
        r = await client.post("/api/v1/data", json={**one_second, "payload_base64": base64.b64encode(frame).decode()}, headers=user(PART))
        assert r.status_code == 400, r.text
        assert "39000 samples" in r.json()["error"] and "at most" in r.json()["error"]
        # An envelope that does explain them (156 s) is accepted until the
        # stream's byte budget (32 MiB burst, 4 MiB/s) is spent: then 429.
        statuses = []
        for i in range(6):
            env = {**base, "timestamp_start_ms": start + i * 156_000, "timestamp_end_ms": start + i * 156_000 + 155_996}
            r = await client.post("/api/v1/data", json={**env, "payload_base64": base64.b64encode(frame).decode()}, headers=user(PART))
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert "ingest.stream_bytes_per_second" in r.json()["error"]
        assert statuses[:2] == [202, 202] and 429 in statuses, statuses
        # Another device stream has its own budget.
        env = {**base, "device_id": "d2", "timestamp_start_ms": start, "timestamp_end_ms": start + 155_996}
        r = await client.post("/api/v1/data", json={**env, "payload_base64": base64.b64encode(frame).decode()}, headers=user(PART))
        assert r.status_code == 202, r.text


async def test_stimulus_upload_admits_exactly_max_files(app_client: Any, local_env: dict[str, str]) -> None:
    names = [f"s{i:04d}.png" for i in range(1001)]
    csv = ("file_name,trial_type\n" + "".join(f"{n},target\n" for n in names)).encode()

    def form(count: int) -> list[Any]:
        return [("stimuli_definition_csv", ("s.csv", csv, "text/csv"))] + [
            ("stimulus_files", (n, b"PNG" + n.encode(), "image/png")) for n in names[:count]
        ]

    async with app_client(local_env) as (client, _):  # stimulus.max_files = 1000, the default
        eid = await world(client)
        url = f"/api/v1/experiments/{eid}/stimuli"
        too_many = await client.post(url, files=form(1001), headers=user(OWNER))
        assert too_many.status_code == 413, too_many.text
        assert "1000" in too_many.json()["error"], too_many.text
        r = await client.post(url, files=form(1000), headers=user(OWNER))
        assert r.status_code == 400, r.text  # all 1000 files are read: the CSV names 1001, one is missing
        assert "s1000.png" in r.text, r.text


async def test_session_end_with_many_parts_names_the_problem(app_client: Any, local_env: dict[str, str]) -> None:
    import json

    async with app_client(local_env) as (client, _):
        await world(client)
        metadata = json.dumps({"session_id": "s1", "user_id": PART, "device_id": "d", "end_time": "2025-06-01T11:00:00Z"})
        extra = [(f"junk{i}", (None, "x")) for i in range(998)]
        r = await client.post("/api/v1/sessions/end", files=[("metadata", (None, metadata)), *extra], headers=user(PART))
        assert r.status_code == 200, r.text  # 999 parts: fine, the unknown ones are ignored
        many = [(f"junk{i}", (None, "x")) for i in range(5000)]
        r = await client.post("/api/v1/sessions/end", files=[("metadata", (None, metadata)), *many], headers=user(PART))
        assert r.status_code == 413 and "parts" in r.json()["error"], r.text
        twice = [("metadata", (None, metadata)), ("metadata", (None, metadata))]
        r = await client.post("/api/v1/sessions/end", files=twice, headers=user(PART))
        assert r.status_code == 400 and "metadata" in r.json()["error"], r.text


def test_refused_database_at_start_up_says_it_was_the_database(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.e2e.test_serve import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_") and k != "DATABASE_URL"}
    env["EEGHUB_DATABASE__URL"] = f"postgresql://eeghub:s3cret-pw@127.0.0.1:{free_port()}/lab"
    command = [sys.executable, "-m", "eeghub.cli", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    first_error = next(line for line in output.splitlines() if "ERROR" in line)
    assert "start-up failed: cannot connect to the database (PostgreSQL at 127.0.0.1:" in first_error, output
    assert "/lab, database.url): ConnectionRefusedError" in first_error, output
    assert "s3cret-pw" not in output
