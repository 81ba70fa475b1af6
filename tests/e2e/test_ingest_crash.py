"""Kill the server (ingest and storage consumer) with SIGKILL in the middle
of a stream, start it again, and check that every packet that was answered
202 is stored exactly once (real PostgreSQL, RabbitMQ and S3)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

PACKETS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_")}
    full.update(env)
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "eeghub", "serve", "--port", str(port)], env=full, stdout=handle, stderr=subprocess.STDOUT
    )


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited"
            try:
                if (await client.get(base + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(services_env: dict[str, str], database_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    device = SimulatedDevice(user_id="crash-user", device_id="crash-dev", seed=3)
    bodies = [
        {**device.envelope(i, 1_750_000_000_000), "payload_base64": base64.b64encode(compress_frame(device.payload(i))).decode()}
        for i in range(PACKETS)
    ]
    accepted: set[int] = set()

    async def send_all(indices: list[int], stop_after: float | None = None) -> None:
        began = time.monotonic()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with sem:
                    if stop_after is not None and time.monotonic() - began > stop_after:
                        return
                    try:
                        r = await client.post("/api/v1/data", json=bodies[i], headers={"X-User-Id": "crash-user"})
                    except httpx.HTTPError:
                        return  # the server died under this request: not acknowledged
                    if r.status_code == 202:
                        accepted.add(i)

            await asyncio.gather(*(one(i) for i in indices))

    proc = start_server(services_env, port, log)
    try:
        await wait_healthy(base, proc)
        sender = asyncio.create_task(send_all(list(range(PACKETS))))
        while len(accepted) < PACKETS // 2:
            await asyncio.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # ingest and storage consumer die mid-stream
        proc.wait(10)
        await sender
        first_round = set(accepted)
        assert PACKETS // 2 <= len(first_round) < PACKETS, "the kill happened too late to test anything"

        proc = start_server(services_env, port, log)
        await wait_healthy(base, proc)
        await send_all([i for i in range(PACKETS) if i not in first_round])
        assert accepted == set(range(PACKETS))

        db = await asyncpg.connect(database_url)
        try:
            async def stored() -> int:
                return int(await db.fetchval("SELECT count(DISTINCT timestamp_start_ms) FROM raw_data_objects"))

            deadline = time.monotonic() + 60
            while await stored() < PACKETS and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            rows = await db.fetch("SELECT timestamp_start_ms, count(*) AS n FROM raw_data_objects GROUP BY 1")
        finally:
            await db.close()
        counts = {r["timestamp_start_ms"]: r["n"] for r in rows}
        starts = {int(bodies[i]["timestamp_start_ms"]) for i in accepted}
        missing = sorted(starts - set(counts))
        duplicated = {k: n for k, n in counts.items() if n != 1}
        assert not missing, f"acknowledged packets never stored: {missing[:10]}"
        assert not duplicated, f"packets stored more than once: {duplicated}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
