"""Packets sent at once through the real stack (RabbitMQ, S3, PostgreSQL):
they share messages and segment objects, and each is still stored exactly
once, readable as its own payload, and linked, corrected and exported like
any other."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from datetime import UTC, datetime
import base64
from typing import Any

import asyncpg
import httpx
import mne_bids
import numpy as np
import pytest

from eeghub.bootstrap import create_app
from eeghub.config import load_settings
from eeghub.core.packet import compress_frame, decode_payload, decompress_frame
from eeghub.core.raw_objects import RAW_LOCATION_COLUMNS, RawLocation, read_raw_payload
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, finished_task, start_export, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

START = 1_767_225_600_000
OWNER = "batch-owner"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def test_concurrent_packets_share_segments_and_are_each_stored_once(services_env: dict[str, str], tmp_path: Path) -> None:
    triggers = [250 * (2 + 3 * k) + 17 * k for k in range(12)]  # samples of device 0's pulses
    devices = [
        SimulatedDevice(user_id=f"batch-{n}", device_id=f"dev-{n}", seed=n, trigger_samples=triggers if n == 0 else ())
        for n in range(4)
    ]
    sent: dict[tuple[str, int], bytes] = {}
    bodies = []
    for device in devices:
        for i in range(40):
            frame = compress_frame(device.payload(i))
            sent[(device.user_id, START + i * 1000)] = decompress_frame(frame, max_output_size=1 << 24)
            bodies.append((device.user_id, {**device.envelope(i, START), "payload_base64": base64.b64encode(frame).decode()}))
    app = create_app(load_settings(env=services_env))
    # Litestar's test client handles one request at a time (on a thread of
    # its own); the app's lifespan and httpx's ASGI transport on this event
    # loop let requests run together, as under uvicorn.
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
            eid = (await client.post("/api/v1/experiments", json={"name": "batched"}, headers=user(OWNER))).json()["experiment_id"]
            r = await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user("batch-0"))
            assert r.status_code == 201, r.text
            r = await client.post("/api/v1/sessions/start", headers=user("batch-0"), json={
                "session_id": "batched", "user_id": "batch-0", "experiment_id": eid, "start_time": iso(START),
                "session_type": "main_task"})
            assert r.status_code == 201, r.text
            responses = await asyncio.gather(
                *(client.post("/api/v1/data", json=body, headers=user(who)) for who, body in bodies)
            )
        assert [r.status_code for r in responses] == [202] * len(bodies)
        ctx = app.state.ctx
        publisher = ctx.services["ingest.publisher"]
        assert publisher.packets == len(bodies) and publisher.messages < len(bodies), "nothing was published together"
        conn = await asyncpg.connect(services_env["EEGHUB_DATABASE__URL"])
        try:

            async def all_stored() -> bool:
                count = await conn.fetchval("SELECT count(*) FROM raw_data_objects WHERE user_id LIKE 'batch-%'")
                return count == len(bodies)

            await wait_for(all_stored, timeout=60)
            rows = await conn.fetch(
                f"SELECT object_id, user_id, timestamp_start_ms, {RAW_LOCATION_COLUMNS} FROM raw_data_objects"
                " WHERE user_id LIKE 'batch-%'"
            )
        finally:
            await conn.close()
        assert sum(r["segment_key"] is not None for r in rows) > 0
        bucket = ctx.settings.object_store.buckets.raw_data
        for row in rows:
            payload = await read_raw_payload(ctx.objects, bucket, RawLocation.of(dict(row)))
            assert payload == sent[(row["user_id"], row["timestamp_start_ms"])]
        # Segment objects: fewer objects than packets in the bucket.
        keys = [info.key async for info in ctx.objects.list(bucket)]
        assert len(keys) < len(bodies)
        assert all(k.startswith(("raw/batch-", "segments/date=2026-01-01/")) for k in keys)

        # Linked and corrected from the segments: every event on its pulse.
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
            csv = "onset,duration,trial_type\n" + "".join(f"{t / 250 + 0.03:.4f},0.5,stim\n" for t in triggers)
            meta = {"session_id": "batched", "user_id": "batch-0", "device_id": "dev-0", "end_time": iso(START + 40_000)}
            r = await client.post("/api/v1/sessions/end", headers=user("batch-0"), **end_form(meta, csv.encode()))
            assert r.status_code == 200, r.text

            async def corrected() -> Any:
                info = (await client.get("/api/v1/sessions/batched", headers=user("batch-0"))).json()
                return info if info["event_correction_status"] == "completed" else None

            await wait_for(corrected, timeout=60)
            report = (await client.get("/api/v1/sessions/batched/correction", headers=user("batch-0"))).json()
            data = (await client.get("/api/v1/sessions/batched/data", headers=user("batch-0"))).json()
            # Exported from the segments: the samples that were sent.
            status_url = await start_export(client, eid, OWNER)
            task = await finished_task(client, status_url, OWNER)
            assert task["status"] == "completed", task
            archive = (await client.get(f"{status_url}/download", headers=user(OWNER))).content
    assert report["matched"] == len(triggers) and report["unmatched_event_ids"] == [], report
    assert sum(stream["packets"] for stream in data["streams"]) == 40
    conn = await asyncpg.connect(services_env["EEGHUB_DATABASE__URL"])
    try:
        onsets = [r[0] for r in await conn.fetch(
            "SELECT onset_corrected_us FROM session_events WHERE session_id = 'batched' ORDER BY onset")]
    finally:
        await conn.close()
    assert onsets == [START * 1000 + t * 4000 for t in triggers]
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        zipped.extractall(tmp_path)
    (vhdr,) = sorted(tmp_path.rglob("*_eeg.vhdr"))
    exported = mne_bids.read_raw_bids(mne_bids.get_bids_path_from_fname(vhdr), verbose="error").get_data()
    expected = np.concatenate([decode_payload(sent[("batch-0", START + i * 1000)]).signals for i in range(40)], axis=1)
    lsb = devices[0].lsb_to_volts
    assert np.array_equal(np.rint(exported[:-1] / lsb).astype(np.int64), expected[:-1].astype(np.int64))
    assert np.array_equal(np.rint(exported[-1]).astype(np.int64), expected[-1].astype(np.int64))
