"""A short soak (seconds): packets from several devices, API reads and slow
clients at once against the real server stack (uvicorn with the guarded
protocol, PostgreSQL, the journaled in-process broker, the filesystem store).
Every packet answered 202 must be stored exactly once, every API read must
succeed, the slow clients must be cut off, and /health must keep answering
(each within 5 s; the load runs in the server's own event loop here, so the
latencies it prints are an upper bound, not a measurement)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import asyncpg
import httpx
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import user, wait_for
from tests.e2e.test_slow_clients import drip, exchange, served  # noqa: F401 - fixture

pytestmark = pytest.mark.postgres

SECONDS = 6.0
DEVICES = 4


async def test_soak_packets_reads_and_slow_clients(served: tuple[str, int], database_url: str) -> None:
    host, port = served
    base = f"http://{host}:{port}"
    start_ms = 1_750_000_000_000
    devices = [SimulatedDevice(f"soak-{d}", f"dev-{d}", channels=8, sampling_rate=250.0, samples_per_packet=50, seed=d) for d in range(DEVICES)]
    deadline = 0.0
    statuses: dict[str, list[int]] = {"data": [], "read": [], "health": []}
    health_seconds: list[float] = []
    accepted: set[tuple[str, int]] = set()

    async def device_loop(client: httpx.AsyncClient, device: SimulatedDevice) -> None:
        index = 0
        while time.monotonic() < deadline:
            envelope = device.envelope(index, start_ms)
            body = {**envelope, "payload_base64": base64.b64encode(compress_frame(device.payload(index))).decode()}
            r = await client.post("/api/v1/data", json=body, headers=user(device.user_id))
            statuses["data"].append(r.status_code)
            if r.status_code == 202:
                accepted.add((device.user_id, int(envelope["timestamp_start_ms"])))  # type: ignore[call-overload]
            index += 1

    async def reader(client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/experiments", json={"name": "soak"}, headers=user("soak-owner"))
        assert r.status_code == 201, r.text
        eid = r.json()["experiment_id"]
        while time.monotonic() < deadline:
            for url in (f"/api/v1/experiments/{eid}", "/api/v1/experiments", "/api/v1/plugins"):
                statuses["read"].append((await client.get(url, headers=user("soak-owner"))).status_code)

    async def health(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            began = time.monotonic()
            r = await client.get("/health", timeout=5)
            health_seconds.append(time.monotonic() - began)
            statuses["health"].append(r.status_code)
            await asyncio.sleep(0.2)

    async def slow_client() -> bytes:
        answer, _, _ = await exchange(host, port, drip(b"GET /health HTTP/1.1\r\nX-Slow: " + b"z" * 200), 0.3)
        return answer

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        # Steady state first: right after start-up numba compiles the decoder
        # (holding the GIL for about a second), which can fail a health probe.
        healthy = 0
        for _ in range(100):
            healthy = healthy + 1 if (await client.get("/health")).status_code == 200 else 0
            if healthy == 3:
                break
            await asyncio.sleep(0.2)
        assert healthy == 3
        deadline = time.monotonic() + SECONDS
        slow = [asyncio.create_task(slow_client()) for _ in range(8)]
        await asyncio.gather(*(device_loop(client, d) for d in devices), reader(client), health(client))
        slow_answers = await asyncio.gather(*slow)

    assert statuses["data"] and set(statuses["data"]) == {202}, set(statuses["data"])
    assert statuses["read"] and set(statuses["read"]) == {200}, set(statuses["read"])
    assert statuses["health"] and set(statuses["health"]) == {200}
    assert len(health_seconds) >= SECONDS / 0.2 / 3  # /health kept answering throughout
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in slow_answers), slow_answers
    print(
        f"soak: {len(statuses['data'])} packets, {len(statuses['read'])} reads, {len(health_seconds)} health checks "
        f"(median {sorted(health_seconds)[len(health_seconds) // 2] * 1000:.0f} ms, slowest {max(health_seconds) * 1000:.0f} ms), "
        f"{len(slow_answers)} slow clients cut off"
    )

    conn = await asyncpg.connect(database_url)
    try:
        async def stored() -> Any:
            rows = await conn.fetch("SELECT user_id, timestamp_start_ms, count(*) AS n FROM raw_data_objects WHERE user_id LIKE 'soak-%' GROUP BY 1, 2")
            return rows if len(rows) >= len(accepted) else None

        rows = await wait_for(stored, timeout=60)
    finally:
        await conn.close()
    assert {(r["user_id"], r["timestamp_start_ms"]) for r in rows} == accepted  # nothing lost
    assert all(r["n"] == 1 for r in rows)  # nothing stored twice
