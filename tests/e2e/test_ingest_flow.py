"""Issue 4's end-to-end flow against real PostgreSQL, RabbitMQ and S3:
simulated calibration and main sessions with triggers → ended with event
logs → every packet stored once → sessions linked → events corrected to the
trigger sample; with dropped and spurious triggers the report names exactly
the unmatched events."""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg
import numpy as np
import pytest

from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER, PART, DEVICE = "lab-owner", "subject-01", "ads1299-ab:cd"
T0 = 1_748_736_000_000  # 2025-06-01T00:00:00Z, the device's first sample
RATE, PER_PACKET, SECONDS = 250.0, 250, 20
CLOCK_OFFSET_S = 0.137  # the phone's stopwatch runs behind the trigger by this much
MAIN_START_S = 30


def iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def make_session(first_packet: int, true_trigger_samples: list[int], spurious: list[int], rng: np.random.Generator,
                 variant: str) -> tuple[SimulatedDevice, list[float]]:
    """A device whose pulses are the true triggers (minus dropped) plus
    spurious ones; returns it and the logged onsets (relative to the session
    start = the first packet) of every true trigger."""
    device = SimulatedDevice(user_id=PART, device_id=DEVICE, sampling_rate=RATE, samples_per_packet=PER_PACKET,
                             variant=variant, seed=first_packet)
    device.trigger_samples = sorted(true_trigger_samples + spurious)
    onsets = [s / RATE - CLOCK_OFFSET_S + rng.normal(0, 0.002) for s in true_trigger_samples]
    return device, onsets


async def post_packets(client: Any, device: SimulatedDevice, start_ms: int, binary: bool) -> list[tuple[dict[str, Any], bytes]]:
    from eeghub.core.packet import compress_frame

    sent = []
    for index in range(SECONDS):
        envelope = device.envelope(index, start_ms)
        frame = compress_frame(device.payload(index))
        if binary:
            params = {k: str(v) for k, v in envelope.items() if v is not None}
            r = await client.post("/api/v1/data", content=frame, params=params,
                                  headers={**user(PART), "Content-Type": "application/octet-stream"})
        else:
            r = await client.post("/api/v1/data", json={**envelope, "payload_base64": base64.b64encode(frame).decode()},
                                  headers=user(PART))
        assert r.status_code == 202, r.text
        sent.append((envelope, frame))
    return sent


async def test_ingest_link_and_correct(app_client: Any, services_env: dict[str, str], database_url: str) -> None:
    rng = np.random.default_rng(7)
    cal_triggers = [int(RATE * (1.0 + 0.9 * k)) for k in range(18)]
    main_triggers = [int(RATE * (1.2 + 0.95 * k)) for k in range(18)]
    dropped = {main_triggers[3], main_triggers[11]}  # ~10 % of the main session's triggers
    spurious = [main_triggers[5] + 15, int(RATE * 17.9)]  # one 60 ms after a true pulse
    cal_device, cal_onsets = make_session(0, cal_triggers, [], rng, "app")
    main_device, main_onsets = make_session(1, [s for s in main_triggers if s not in dropped], spurious, rng, "v4")
    main_onsets = [s / RATE - CLOCK_OFFSET_S + rng.normal(0, 0.002) for s in main_triggers]  # every event is logged
    main_start = T0 + MAIN_START_S * 1000
    async with app_client(services_env) as (client, _):
        eid = (await client.post("/api/v1/experiments", json={"name": "ingest"}, headers=user(OWNER))).json()["experiment_id"]
        assert (await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(PART))).status_code == 201
        for sid, start, kind in (("cal", T0, "calibration"), ("main", main_start, "main_task")):
            r = await client.post("/api/v1/sessions/start", headers=user(PART), json={
                "session_id": sid, "user_id": PART, "experiment_id": eid, "start_time": iso(start), "session_type": kind})
            assert r.status_code == 201, r.text
        sent = len(await post_packets(client, cal_device, T0, binary=False))
        main_packets = await post_packets(client, main_device, main_start, binary=True)
        sent += len(main_packets)
        # The phone sending a packet twice changes nothing.
        envelope, frame = main_packets[0]
        r = await client.post("/api/v1/data", json={**envelope, "payload_base64": base64.b64encode(frame).decode()}, headers=user(PART))
        assert r.status_code == 202
        for sid, start, onsets in (("cal", T0, cal_onsets), ("main", main_start, main_onsets)):
            csv = "onset,duration,trial_type\n" + "".join(f"{o:.6f},0.5,stim\n" for o in onsets)
            meta = {"session_id": sid, "user_id": PART, "device_id": DEVICE, "end_time": iso(start + SECONDS * 1000)}
            r = await client.post("/api/v1/sessions/end", headers=user(PART), **end_form(meta, csv.encode()))
            assert r.status_code == 200, r.text

        async def corrected(sid: str) -> Any:
            info = (await client.get(f"/api/v1/sessions/{sid}", headers=user(PART))).json()
            if info["event_correction_status"] != "completed" or info["link_status"] != "completed":
                return None
            report = (await client.get(f"/api/v1/sessions/{sid}/data", headers=user(PART))).json()
            return info if report["streams"] and report["streams"][0]["packets"] == SECONDS else None

        cal_info = await wait_for(lambda: corrected("cal"), timeout=60)
        main_info = await wait_for(lambda: corrected("main"), timeout=60)
        cal_report = (await client.get("/api/v1/sessions/cal/correction", headers=user(PART))).json()
        main_report = (await client.get("/api/v1/sessions/main/correction", headers=user(OWNER))).json()
        data_report = (await client.get("/api/v1/sessions/main/data", headers=user(PART))).json()

    # every packet stored exactly once
    db = await asyncpg.connect(database_url)
    try:
        assert await db.fetchval("SELECT count(*) FROM raw_data_objects") == sent == 2 * SECONDS
        links = await db.fetch("SELECT session_id, count(*) AS n FROM session_object_links GROUP BY session_id ORDER BY 1")
        assert [(r["session_id"], r["n"]) for r in links] == [("cal", SECONDS), ("main", SECONDS)]
        events = {
            sid: [r["onset_corrected_us"] for r in await db.fetch(
                "SELECT onset_corrected_us FROM session_events WHERE session_id = $1 ORDER BY onset", sid)]
            for sid in ("cal", "main")
        }
        main_ids = [r["event_id"] for r in await db.fetch("SELECT event_id FROM session_events WHERE session_id = 'main' ORDER BY onset")]
    finally:
        await db.close()

    def true_us(start_ms: int, sample: int) -> int:
        packet, index = divmod(sample, PER_PACKET)
        return (start_ms + round(packet * PER_PACKET * 1000 / RATE)) * 1000 + round(index * 1e6 / RATE)

    assert events["cal"] == [true_us(T0, s) for s in cal_triggers]
    expected_main = [None if s in dropped else true_us(main_start, s) for s in main_triggers]
    assert events["main"] == expected_main
    assert cal_report["status"] == "ok" and cal_report["matched"] == len(cal_triggers)
    assert abs(cal_report["offset_ms"] - CLOCK_OFFSET_S * 1000) < 5
    assert main_report["matched"] == len(main_triggers) - 2
    assert sorted(main_report["unmatched_event_ids"]) == sorted(
        main_ids[i] for i, s in enumerate(main_triggers) if s in dropped
    )
    assert len(main_report["extra_triggers"]) == 2
    assert cal_info["corrected_event_count"] == len(cal_triggers)
    assert main_info["event_count"] == len(main_triggers)
    stream = data_report["streams"][0]
    assert stream["device_id"] == DEVICE and stream["samples_received"] == SECONDS * PER_PACKET
    assert stream["duplicates_dropped"] == 0 and stream["gaps"] == []
    assert json.dumps(main_report)  # serialisable
