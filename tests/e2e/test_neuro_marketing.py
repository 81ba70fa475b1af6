"""The ERP neuro-marketing analysis end to end (real PostgreSQL, RabbitMQ and
S3): generated EEG with a known P300 streamed as the app streams it (trigger
block), sessions ended with event logs, linked and corrected by eeghub; then
the app's two calls, replayed as ``erp_analysis_provider.dart`` builds them
(a POST with only the identity header, then a GET), parsed as
``ErpAnalysisResult.fromJson`` parses them. Also the predecessor
integration suite's ERP scenario (3 s of calibration) and the bad-input
cases."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import numpy as np
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from eeghub.core.experiment_analysis import Participant
from eeghub.plugins.erp import synthetic
from eeghub.plugins.erp.analysis import ErpParameters, analyze_participant
from tests.e2e import dart_http as dart
from tests.e2e.helpers import end_form, user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3]

OWNER, SUBJECT, STRANGER = "nm-owner", "nm-subject", "nm-stranger"
T0 = 1_748_736_000_000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
DESIGN = synthetic.Design(calibration_s=150, main_s=75, p300_uv=10.0, target_ratio=0.25, product_strengths=(0.0, 0.0, 1.0), logged_fraction=0.0)
STIMULI_CSV = (
    "trial_type,file_name,description,item_name,brand_name,category,gender\n"
    "product,product_01.png,Red T-shirt,Classic Red Tee,BrandA,Tops,unisex\n"
    "product,product_02.png,Blue Jeans,Denim Pro,BrandB,Bottoms,unisex\n"
    "product,product_03.png,Green Cap,Field Cap,BrandC,Hats,unisex\n"
)


class RecordedDevice(SimulatedDevice):
    """A device that sends given signals (volts) instead of its own."""

    signals_volts: np.ndarray = np.zeros((0, 0))
    codes: tuple[int, ...] = ()
    """The trigger line's value at each of ``trigger_samples`` (the app's codes)."""

    @property
    def channel_names(self) -> list[str]:
        return list(synthetic.CHANNELS)

    def trigger(self, first_sample: int, count: int) -> np.ndarray:
        out = np.zeros(count, dtype=np.int16)
        for start, code in zip(self.trigger_samples, self.codes, strict=True):
            lo, hi = max(start, first_sample), min(start + self.pulse_samples, first_sample + count)
            if lo < hi:
                out[lo - first_sample : hi - first_sample] = code
        return out

    def eeg(self, first_sample: int, count: int) -> np.ndarray:
        chunk = self.signals_volts[:, first_sample : first_sample + count] / self.lsb_to_volts
        return np.clip(np.rint(chunk), -32768, 32767).astype(np.int16)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


async def record(client: Any, eid: str, subject: str, sid: str, kind: str, start: int, recording: Any,
                 pulses: list[tuple[int, int]] | None = None, log: str | None = None) -> int:
    """Stream ``recording`` as the app does and end the session with its
    event log (onsets logged 80 ms before the trigger), the trigger line
    carrying the app's codes; or with the given trigger ``pulses`` (sample,
    code) and event ``log`` rows. Returns the packets sent."""
    triggers = [e.sample for e in recording.events] if pulses is None else [p[0] for p in pulses]
    device = RecordedDevice(user_id=subject, device_id=f"{subject}-dev", variant="app", sampling_rate=DESIGN.sampling_rate,
                            samples_per_packet=250, trigger_samples=triggers, channels=len(synthetic.CHANNELS))
    device.signals_volts = recording.data
    # The app's codes: target 1, non-target 2; products 3 (an event without a code matches any).
    device.codes = tuple({"target": 1, "nontarget": 2}.get(e.trial_type or "", 3) for e in recording.events)
    if pulses is not None:
        device.codes = tuple(p[1] for p in pulses)
    r = await client.post("/api/v1/sessions/start", headers=user(subject), json={
        "session_id": sid, "user_id": subject, "experiment_id": eid, "start_time": iso(start), "session_type": kind})
    assert r.status_code == 201, r.text
    packets = recording.data.shape[1] // 250
    for i in range(packets):
        body = {**device.envelope(i, start), "payload_base64": base64.b64encode(compress_frame(device.payload(i))).decode()}
        assert (await client.post("/api/v1/data", json=body, headers=user(subject))).status_code == 202
    rows = log if log is not None else "".join(
        f"{e.sample / DESIGN.sampling_rate - 0.08:.4f},0.5,{e.trial_type},{e.stim_file}\n" for e in recording.events
        if e.sample < packets * 250 - 250
    )
    meta = {"session_id": sid, "user_id": subject, "device_id": f"{subject}-dev", "end_time": iso(start + packets * 1000)}
    r = await client.post("/api/v1/sessions/end", headers=user(subject),
                          **end_form(meta, ("onset,duration,trial_type,file_name\n" + rows).encode()))
    assert r.status_code == 200, r.text
    return packets


async def corrected(client: Any, sessions: dict[str, int], subject: str, *, every_event: bool = False) -> bool:
    """Every session linked with all its packets and corrected; with
    ``every_event``, each of its events on a trigger (data made so): a
    correction run while the session's last packets were still being stored
    (they are linked, and the session corrected, again moments later) does
    not count."""
    for sid, packets in sessions.items():
        info = (await client.get(f"/api/v1/sessions/{sid}", headers=user(subject))).json()
        if info["event_correction_status"] != "completed" or info["link_status"] != "completed":
            return False
        if every_event and info["corrected_event_count"] != info["event_count"]:
            return False
        data = (await client.get(f"/api/v1/sessions/{sid}/data", headers=user(subject))).json()
        if sum(stream["packets"] for stream in data["streams"]) != packets:
            return False
    return True


async def new_experiment(client: Any, name: str, with_stimuli: bool = True) -> str:
    eid = (await client.post("/api/v1/experiments", json={"name": name}, headers=user(OWNER))).json()["experiment_id"]
    if with_stimuli:
        files = [("stimuli_definition_csv", ("s.csv", STIMULI_CSV.encode(), "text/csv"))]
        files += [("stimulus_files", (f"product_0{k}.png", PNG, "image/png")) for k in (1, 2, 3)]
        assert (await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=user(OWNER))).status_code == 202

        async def stored() -> bool:
            listed = (await client.get(f"/api/v1/experiments/{eid}/stimuli", headers=user(OWNER))).json()
            return len(listed) == 3

        await wait_for(stored, timeout=30)
    for member in (SUBJECT, STRANGER):
        assert (await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(member))).status_code == 201
    return eid


def parse_like_the_app(data: Any) -> dict[str, Any]:
    """``ErpAnalysisResult.fromJson`` of ``models/erp_analysis_result.dart``,
    with Dart's casts: ``analysis_id`` an int (or parsed from a string),
    ``summary`` and ``experiment_id`` by ``toString``, ``recommendations`` a
    ``List?`` of maps whose ``file_name`` falls back to '' and whose other
    fields are ``String?``, ``generated_at`` through ``DateTime.tryParse``."""
    data = dart.cast(data, "Map", "result")
    analysis_id = data["analysis_id"] if isinstance(data.get("analysis_id"), int) else dart.parse_int(data.get("analysis_id"), "analysis_id")
    recommendations = []
    for item in dart.cast(data.get("recommendations"), "List?", "recommendations") or []:
        item = dart.cast(item, "Map", "recommendation")
        recommendations.append({
            "file_name": item.get("file_name") or "",
            **{key: dart.cast(item.get(key), "String?", key) for key in ("item_name", "brand_name", "description", "category", "gender")},
        })
    generated = dart.try_parse_datetime(data.get("generated_at"))
    assert generated is not None and generated.tzinfo is not None  # formattedGeneratedAt shows it, in local time
    return {
        "analysis_id": analysis_id,
        "experiment_id": str(data.get("experiment_id") or ""),
        "summary": str(data.get("summary") or ""),
        "recommendations": recommendations,
        "requested_by": str(data.get("requested_by_user_id") or ""),
        "raw": data,
    }


async def test_app_calls_and_known_truth(app_client: Any, services_env: dict[str, str]) -> None:
    rng = np.random.default_rng(11)
    calibration = synthetic.calibration_recording(rng, DESIGN)
    main = synthetic.main_recording(rng, DESIGN)
    async with app_client(services_env) as (client, app):
        eid = await new_experiment(client, "Shelf study")
        base = "/api/v1/neuro-marketing/experiments"
        # Before any session: 404 naming what is missing (the predecessor's 404s).
        r = await client.post(f"{base}/{eid}/analyze", headers=user(OWNER))
        assert r.status_code == 404 and "no sessions" in r.json()["detail"]
        sessions = {
            "nm-cal": await record(client, eid, SUBJECT, "nm-cal", "calibration", T0, calibration),
            "nm-main": await record(client, eid, SUBJECT, "nm-main", "main_integrated", T0 + 600_000, main),
        }
        # The analysis is asked for at once: a link or correction job still
        # queued for a session linked and corrected since (a late packet's,
        # a second round's) must leave it so (tests/integration/
        # test_job_idempotence.py).
        await wait_for(lambda: corrected(client, sessions, SUBJECT, every_event=True), timeout=120, interval=0.5)

        r = await client.get(f"{base}/{eid}/analysis-results", headers=user(OWNER))
        assert r.status_code == 404 and r.json()["detail"] == "No completed analysis result found for this experiment."
        # Owners only: a participant of the experiment gets 403 (the predecessor answered 503).
        assert (await client.post(f"{base}/{eid}/analyze", headers=user(STRANGER))).status_code == 403
        assert (await client.get(f"{base}/{eid}/analysis-results", headers=user(STRANGER))).status_code == 403
        assert (await client.post(f"{base}/{eid}/analyze")).status_code == 401

        # The app (ErpAnalysisProvider.requestAnalysis, then fetchLatestResults):
        # http.post with its headers only, a 200 with the result; then http.get.
        posted = await client.post(f"{base}/{eid}/analyze", **dart.post_empty(user(OWNER)))
        assert posted.status_code == 200, posted.text
        parsed = parse_like_the_app(posted.json())
        fetched = await client.get(f"{base}/{eid}/analysis-results", **dart.get(user(OWNER)))
        assert fetched.status_code == 200
        latest = parse_like_the_app(json.loads(fetched.content.decode("utf-8")))  # utf8.decode(response.bodyBytes)
        assert latest["analysis_id"] == parsed["analysis_id"] > 0
        assert latest["requested_by"] == OWNER and latest["experiment_id"] == eid
        result = parsed["raw"]
        if result["outcome"] != "ok":  # say why (what was missing, and the sessions as the server saw them then)
            seen = {sid: ((await client.get(f"/api/v1/sessions/{sid}", headers=user(SUBJECT))).json(),
                          (await client.get(f"/api/v1/sessions/{sid}/correction", headers=user(SUBJECT))).json())
                    for sid in sessions}
            raise AssertionError(f"outcome {result['outcome']}: missing {result['details'].get('missing')}; "
                                 f"participants {result['details'].get('participants')}; sessions {seen}")
        # Known truth: only product_03 carries a response.
        assert latest["recommendations"] == [{
            "file_name": "product_03.png", "item_name": "Field Cap", "brand_name": "BrandC", "description": "Green Cap",
            "category": "Hats", "gender": "unisex"}]
        participant = result["details"]["participants"][0]
        assert participant["detector"]["better_than_chance"] and participant["detector"]["auc"] > 0.7
        # What went through ingest, storage, linking and correction is what was generated:
        # the same analysis of the generated recordings in memory gives the same AUC.
        direct = analyze_participant(Participant(SUBJECT, [calibration, main]), synthetic.product_files(DESIGN),
                                     ErpParameters(), np.random.default_rng(0))
        assert abs(direct.report["detector"]["auc"] - participant["detector"]["auc"]) < 0.03
        assert direct.report["calibration_epochs"]["kept"] == participant["calibration_epochs"]["kept"]
        read = {entry["session_id"]: entry for entry in participant["sessions"]}
        assert read["nm-cal"]["seconds"] == DESIGN.calibration_s and read["nm-cal"]["gaps"] == 0
        assert read["nm-main"]["missing_objects"] == read["nm-main"]["overlapping_objects"] == 0
        counts = participant["calibration_epochs"]
        assert counts["logged_onset_excluded"] == 0 and counts["kept"] >= 0.9 * counts["events"]
        assert "Field Cap" in latest["summary"] and "非標的" in latest["summary"]  # Japanese by default, names and numbers in it

        # New clients: 202 and a status URL; progress; figures as PNG.
        accepted = await client.post(f"{base}/{eid}/analyze?wait=false", headers=user(OWNER))
        assert accepted.status_code == 202 and accepted.headers["location"] == accepted.json()["status_url"]
        prefer = await client.post(f"{base}/{eid}/analyze", headers={**user(OWNER), "Prefer": "respond-async"})
        assert prefer.status_code == 202
        app.state.ctx.settings.neuro_marketing.wait_seconds = 0.0  # a wait that runs out: 202 too
        timed_out = await client.post(f"{base}/{eid}/analyze", headers=user(OWNER))
        assert timed_out.status_code == 202 and timed_out.json()["status"] in ("pending", "processing")
        status_url = accepted.json()["status_url"]

        async def done() -> Any:
            job = (await client.get(status_url, headers=user(OWNER))).json()
            return job if job["status"] in ("completed", "failed") else None

        job = await wait_for(done, timeout=120, interval=0.25)
        assert job["status"] == "completed" and job["progress"] == 100 and job["kind"] == "erp"
        assert (await client.get(status_url, headers=user(STRANGER))).status_code == 403
        again = (await client.get(job["result_url"], headers=user(OWNER))).json()
        assert again["recommendations"] == result["recommendations"]  # the same seed, the same answer
        for name, url in again["figures"].items():
            png = await client.get(url, headers=user(OWNER))
            assert png.status_code == 200 and png.headers["content-type"] == "image/png", name
            assert png.content.startswith(b"\x89PNG") and len(png.content) > 5000
            assert (await client.get(url, headers=user(STRANGER))).status_code == 403
        assert (await client.get(f"{status_url}/figures/..%2Fsecret.png", headers=user(OWNER))).status_code == 404
        assert (await client.get("/api/v1/experiment-analyses/abc", headers=user(OWNER))).status_code == 400


async def test_predecessor_integration_scenario_and_bad_input(app_client: Any, services_env: dict[str, str]) -> None:
    """The predecessor's integration suite: 3 s of calibration (target,
    non-target, target) and a main session showing two products. The POST
    answers 200 with a non-empty summary, as the suite expects; but there is
    nothing to train a detector on, so the result names what is missing and
    recommends nothing (the predecessor's single-class fallback recommended
    every product)."""
    rng = np.random.default_rng(3)
    tiny = dataclasses.replace(DESIGN, calibration_s=6, main_s=6, product_strengths=(1.0, 1.0))
    calibration = synthetic.calibration_recording(rng, tiny)
    main = synthetic.main_recording(rng, tiny)
    calibration.events = [dataclasses.replace(e, trial_type=t) for e, t in zip(calibration.events[:3], ["target", "nontarget", "target"], strict=True)]
    async with app_client(services_env) as (client, _):
        eid = await new_experiment(client, "Integration-like")
        sessions = {
            "it-cal": await record(client, eid, SUBJECT, "it-cal", "calibration", T0, calibration),
            "it-main": await record(client, eid, SUBJECT, "it-main", "main_task", T0 + 60_000, main),
        }
        await wait_for(lambda: corrected(client, sessions, SUBJECT), timeout=60, interval=0.5)
        r = await client.post(f"/api/v1/neuro-marketing/experiments/{eid}/analyze", **dart.post_empty(user(OWNER)))
        assert r.status_code == 200, r.text
        parsed = parse_like_the_app(r.json())
        body = parsed["raw"]
        assert parsed["summary"] and parsed["recommendations"] == []
        assert body["outcome"] == "insufficient_data"
        assert any("too few calibration epochs" in m for m in body["missing"]), body["missing"]

        # A crash mid-analysis leaves the row 'processing' and the job
        # unacknowledged; the redelivered job runs it again to the end. A
        # redelivered job whose row is completed is skipped.
        conn = await asyncpg.connect(services_env["EEGHUB_DATABASE__URL"])
        try:
            crashed = await conn.fetchval(
                """INSERT INTO erp_analysis_results (experiment_id, requested_by_user_id, status, kind, progress, stage)
                   VALUES ($1, $2, 'processing', 'erp', 40, 'participant 1 of 1') RETURNING analysis_id""",
                uuid.UUID(eid), OWNER)
            finished_at = await conn.fetchval(
                "SELECT completed_at FROM erp_analysis_results WHERE analysis_id = $1", body["analysis_id"])
            for job in (crashed, body["analysis_id"]):
                await conn.execute(
                    "INSERT INTO eeghub_outbox (target_kind, target, body, headers, content_type)"
                    " VALUES ('queue', $1, $2, '{}'::jsonb, 'application/json')",
                    services_env["EEGHUB_BROKER__QUEUES__EXPERIMENT_ANALYSIS_QUEUE"],
                    json.dumps({"analysis_id": job, "experiment_id": eid, "kind": "erp"}).encode())
        finally:
            await conn.close()

        async def rerun() -> Any:
            job = (await client.get(f"/api/v1/experiment-analyses/{crashed}", headers=user(OWNER))).json()
            return job if job["status"] == "completed" else None

        job = await wait_for(rerun, timeout=60, interval=0.25)
        assert job["progress"] == 100 and job["stage"] == "done"
        unchanged = (await client.get(f"/api/v1/experiment-analyses/{body['analysis_id']}", headers=user(OWNER))).json()
        assert dt.datetime.fromisoformat(unchanged["completed_at"]) == finished_at

        # The predecessor suite's own data: each 1 s chunk i carries pulses
        # at samples 50 + 10 i (code 1) and 150 + 15 i (code 2); the logs put
        # events at 1.5, 3.0, 4.5 s and 2.0, 4.0 s, where no common offset
        # matches them. The correction finds no match; the POST still
        # answers 200, a summary naming why, nothing recommended.
        def suite_pulses(chunks: range) -> list[tuple[int, int]]:
            out = []
            for j, i in enumerate(chunks):
                out += [(250 * j + 50 + 10 * i, 1)] + ([(250 * j + 150 + 15 * i, 2)] if 150 + 15 * i < 250 else [])
            return out

        suite = await new_experiment(client, "Suite triggers")
        cal3 = dataclasses.replace(calibration, data=calibration.data[:, :750])
        main12 = dataclasses.replace(main, data=np.tile(main.data, (1, 2))[:, :3000])
        suite_sessions = {
            "su-cal": await record(client, suite, SUBJECT, "su-cal", "calibration", T0 + 240_000, cal3, pulses=suite_pulses(range(0, 3)),
                                   log="1.5,1.0,target,face01.jpg\n3.0,1.0,nontarget,house01.jpg\n4.5,1.0,target,face02.jpg\n"),
            "su-main": await record(client, suite, SUBJECT, "su-main", "main_external", T0 + 243_000, main12,
                                    pulses=suite_pulses(range(3, 15)),
                                    log="2.0,1.0,product,product_01.png\n4.0,1.0,product,product_02.png\n"),
        }
        await wait_for(lambda: corrected(client, suite_sessions, SUBJECT), timeout=60, interval=0.5)
        correction = (await client.get("/api/v1/sessions/su-cal/correction", headers=user(SUBJECT))).json()
        assert correction["status"] == "no_match", correction
        r = await client.post(f"/api/v1/neuro-marketing/experiments/{suite}/analyze", **dart.post_empty(user(OWNER)))
        assert r.status_code == 200, r.text
        parsed = parse_like_the_app(r.json())
        assert parsed["summary"] and parsed["recommendations"] == []
        assert parsed["raw"]["outcome"] == "insufficient_data"
        assert parsed["raw"]["missing"] == ["no calibration event has a trigger-corrected onset"]
        assert "トリガーで補正されたキャリブレーションのイベントがありません" in parsed["summary"]  # summary_language ja

        # No stimuli, no calibration: 404 naming each.
        bare = await new_experiment(client, "No stimuli", with_stimuli=False)
        await record(client, bare, SUBJECT, "bare-main", "main_external", T0 + 120_000, main)
        r = await client.post(f"/api/v1/neuro-marketing/experiments/{bare}/analyze", headers=user(OWNER))
        assert r.status_code == 404
        assert "no calibration session" in r.json()["detail"] and "no stimuli" in r.json()["detail"]
        r = await client.post("/api/v1/neuro-marketing/experiments/not-a-uuid/analyze", headers=user(OWNER))
        assert r.status_code == 400
