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


class FreezableProxy:
    """A TCP proxy in front of the S3 server that can stop passing bytes
    (what clients see when SeaweedFS is frozen with SIGSTOP). It runs its own
    event loop in a thread: the test client may block the test's loop."""

    def __init__(self, upstream: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.frozen = False

    async def _pipe(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        while self.frozen:
            await asyncio.sleep(0.05)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _serve(self, started: Any) -> None:
        import asyncio

        async def main() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            started.set()
            await self._stop.wait()
            server.close()

        asyncio.run(main())

    async def __aenter__(self) -> str:
        import threading

        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        self.frozen = False
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.mark.s3
async def test_stalled_object_store_gives_503_with_retry_after(
    app_client: Any, local_env: dict[str, str], s3_endpoint: dict[str, str], unique_name: str
) -> None:
    import asyncio
    import time

    from tests.e2e.helpers import wait_for

    proxy = FreezableProxy(s3_endpoint["endpoint_url"])
    async with proxy as endpoint:
        env = {
            **local_env,
            "EEGHUB_OBJECT_STORE__ENDPOINT": endpoint,
            "EEGHUB_OBJECT_STORE__ACCESS_KEY": s3_endpoint["access_key"],
            "EEGHUB_OBJECT_STORE__SECRET_KEY": s3_endpoint["secret_key"],
            "EEGHUB_OBJECT_STORE__BUCKETS__RAW_DATA": f"{unique_name}-raw",
            "EEGHUB_OBJECT_STORE__BUCKETS__MEDIA": f"{unique_name}-media",
            "EEGHUB_OBJECT_STORE__BUCKETS__BIDS_EXPORTS": f"{unique_name}-bids",
            "EEGHUB_OBJECT_STORE__CONNECT_TIMEOUT_SECONDS": "1",
            "EEGHUB_OBJECT_STORE__READ_TIMEOUT_SECONDS": "2",
            "EEGHUB_OBJECT_STORE__MAX_ATTEMPTS": "1",
        }
        async with app_client(env) as (client, app):
            eid = await world(client)
            files = [
                ("stimuli_definition_csv", ("s.csv", b"file_name,trial_type\nface.png,target\n", "text/csv")),
                ("stimulus_files", ("face.png", b"\x89PNG face", "image/png")),
            ]
            r = await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))
            assert r.status_code == 202, r.text
            status_url = r.json()["status_url"]

            async def done() -> Any:
                job = (await client.get(status_url, headers=user(OWNER))).json()
                return job if job["status"] == "completed" else None

            await wait_for(done)
            download = f"/api/v1/stimuli/{eid}/download/face.png"
            assert (await client.get(download, headers=user(PART))).status_code == 200
            media = {
                "file": ("p.jpg", b"\xff\xd8jpeg", "image/jpeg"),
                "user_id": (None, PART), "session_id": (None, "s1"), "mimetype": (None, "image/jpeg"),
                "original_filename": (None, "p.jpg"), "timestamp_utc": (None, "2025-06-01T10:05:00Z"),
            }  # fmt: skip
            proxy.frozen = True
            try:
                for method, url, kwargs in (
                    ("GET", download, {}),
                    ("POST", "/api/v1/media", {"files": media}),
                ):
                    began = time.monotonic()
                    r = await asyncio.wait_for(client.request(method, url, headers=user(PART), **kwargs), 30)
                    took = time.monotonic() - began
                    assert r.status_code == 503, (url, r.status_code, r.text)
                    assert r.headers["retry-after"], r.headers
                    assert "object storage" in r.json()["error"]
                    assert took < 15, (url, took)
                health = await asyncio.wait_for(client.get("/health"), 30)
                assert health.status_code == 503 and health.json()["status"] == "unhealthy"
            finally:
                proxy.frozen = False
            assert (await client.get(download, headers=user(PART))).status_code == 200
