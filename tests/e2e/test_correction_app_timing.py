"""Issue 14 end to end, against real PostgreSQL, RabbitMQ and S3: packets in
the mobile app's variant (trigger block carrying the stimulus class's code)
and the app's onset semantics (a stopwatch started when the presentation
starts, not at the session start). A main session whose presentation starts
6 s after the session start, 8 periodic stimuli 2.504 s apart: all 8 on their
own triggers. A calibration session with two items: both corrected, on
one-to-one evidence. A one-item calibration whose trigger was lost while
a pulse of another class is on the line: not corrected (the app's trigger
block carries codes, even when it holds one pulse)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import numpy as np
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import end_form, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER, PART, DEVICE = "lab-owner", "subject-14", "ads1299-14"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
RATE, PER_PACKET = 250.0, 250
TRIAL_CODES = {"target": 1, "nontarget": 2, "neutral": 3}


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


class AppSession:
    """One session as the app records it: the stopwatch onsets (whole ms),
    the trigger sample of each (presentation delay + onset + a Bluetooth
    latency of 15-30 ms, on the next sample) and its code."""

    def __init__(self, sid: str, start_ms: int, delay_s: float, trial_types: list[str], seconds: int, seed: int):
        rng = np.random.default_rng(seed)
        self.sid, self.start_ms, self.seconds, self.trial_types = sid, start_ms, seconds, trial_types
        stopwatch = 0.004 + np.arange(len(trial_types)) * 2.504 + rng.uniform(0, 0.003, len(trial_types))
        self.onsets = [float(np.floor(t * 1000) / 1000) for t in stopwatch]
        latency = rng.uniform(0.015, 0.030, len(trial_types))
        self.samples = [int(np.ceil((delay_s + t + lat) * RATE)) for t, lat in zip(stopwatch, latency, strict=True)]
        self.codes = [TRIAL_CODES[t] for t in trial_types]
        self.device = SimulatedDevice(user_id=PART, device_id=DEVICE, sampling_rate=RATE, samples_per_packet=PER_PACKET,
                                      variant="app", trigger_samples=self.samples, trigger_codes=self.codes, seed=seed)  # fmt: skip

    def true_us(self) -> list[int]:
        """Each trigger's time as the correction places it (its packet's
        stamp plus the sample's offset in the packet)."""
        out = []
        for sample in self.samples:
            packet, index = divmod(sample, PER_PACKET)
            out.append((self.start_ms + round(packet * PER_PACKET * 1000 / RATE)) * 1000 + round(index * 1e6 / RATE))
        return out

    def csv(self) -> bytes:
        """The app's event log: onset,duration,trial_type,file_name,stimulus_id,calibration_item_id,value."""
        lines = ["onset,duration,trial_type,file_name,stimulus_id,calibration_item_id,value"]
        for k, (onset, trial, code) in enumerate(zip(self.onsets, self.trial_types, self.codes, strict=True)):
            lines.append(f'{onset},1.0,"{trial}","img{k}.png",,,"{code}"')
        return ("\n".join(lines) + "\n").encode()


async def test_app_timing_presentation_6_s_late_and_a_two_item_calibration(
    app_client: Any, services_env: dict[str, str], database_url: str
) -> None:
    main = AppSession("app-main", T0, 6.0, ["target", "nontarget", "neutral", "nontarget", "target", "neutral",
                                            "nontarget", "target"], 28, seed=1)  # fmt: skip
    calibration = AppSession("app-cal", T0 + 60_000, 9.3, ["target", "nontarget"], 16, seed=2)
    # One calibration item whose trigger was lost, and one pulse of another
    # class on the line: on timing alone that is one event and its trigger.
    lost = AppSession("app-cal-lost", T0 + 120_000, 4.0, ["target"], 10, seed=3)
    lost.device = SimulatedDevice(user_id=PART, device_id=DEVICE, sampling_rate=RATE, samples_per_packet=PER_PACKET,
                                  variant="app", trigger_samples=lost.samples, trigger_codes=[2], seed=3)  # fmt: skip
    sessions = (main, calibration, lost)
    async with app_client(services_env) as (client, _):
        eid = (await client.post("/api/v1/experiments", json={"name": "app timing"}, headers=user(OWNER))).json()["experiment_id"]
        assert (await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(PART))).status_code == 201
        for s, kind in ((main, "main_task"), (calibration, "calibration"), (lost, "calibration")):
            r = await client.post("/api/v1/sessions/start", headers=user(PART), json={
                "session_id": s.sid, "user_id": PART, "experiment_id": eid, "start_time": iso(s.start_ms),
                "session_type": kind})  # fmt: skip
            assert r.status_code == 201, r.text
            for index in range(s.seconds):
                envelope = s.device.envelope(index, s.start_ms)
                params = {k: str(v) for k, v in envelope.items() if v is not None}
                r = await client.post("/api/v1/data", content=compress_frame(s.device.payload(index)), params=params,
                                      headers={**user(PART), "Content-Type": "application/octet-stream"})  # fmt: skip
                assert r.status_code == 202, r.text
            meta = {"session_id": s.sid, "user_id": PART, "device_id": DEVICE,
                    "end_time": iso(s.start_ms + s.seconds * 1000)}  # fmt: skip
            r = await client.post("/api/v1/sessions/end", headers=user(PART), **end_form(meta, s.csv()))
            assert r.status_code == 200, r.text

        async def corrected(sid: str, packets: int) -> Any:
            info = (await client.get(f"/api/v1/sessions/{sid}", headers=user(PART))).json()
            if info["event_correction_status"] != "completed" or info["link_status"] != "completed":
                return None
            data = (await client.get(f"/api/v1/sessions/{sid}/data", headers=user(PART))).json()
            return info if data["streams"] and data["streams"][0]["packets"] == packets else None

        for s in sessions:
            await wait_for(lambda s=s: corrected(s.sid, s.seconds), timeout=60)
        reports = {s.sid: (await client.get(f"/api/v1/sessions/{s.sid}/correction", headers=user(OWNER))).json()
                   for s in sessions}  # fmt: skip

    db = await asyncpg.connect(database_url)
    try:
        onsets = {
            s.sid: [r["onset_corrected_us"] for r in await db.fetch(
                "SELECT onset_corrected_us FROM session_events WHERE session_id = $1 ORDER BY onset", s.sid)]
            for s in sessions
        }  # fmt: skip
    finally:
        await db.close()

    for s in (main, calibration):
        assert onsets[s.sid] == s.true_us(), s.sid  # every event on its own trigger
    assert onsets[lost.sid] == [None]
    odd = reports[lost.sid]
    assert odd["status"] == "no_match" and odd["codes_used"] is True and "different codes" in odd["reason"]
    report = reports[main.sid]
    assert report["status"] == "ok" and report["evidence"] == "statistical" and report["matched"] == 8
    assert 6000 < report["offset_ms"] < 6060
    assert report["codes_used"] is True
    assert report["code_counts"] == {"1": {"events": 3, "triggers": 3, "matched": 3},
                                     "2": {"events": 3, "triggers": 3, "matched": 3},
                                     "3": {"events": 2, "triggers": 2, "matched": 2}}  # fmt: skip
    low, high = report["searched_offset_ms"]
    assert low <= -2000 and high >= 6000
    assert report["runner_up"] is None or abs(report["runner_up"]["offset_ms"] - report["offset_ms"]) > 100
    for k, event in enumerate(report["events"]):
        assert event["code"] == main.codes[k] == event["trigger_code"]
        assert event["trigger"] == k and abs(event["residual_ms"]) < 20
    cal = reports[calibration.sid]
    assert cal["status"] == "ok" and cal["evidence"] == "one-to-one" and cal["matched"] == 2
    assert 9300 < cal["offset_ms"] < 9360
