"""The console in a real browser (headless Chromium, Selenium) against a real
server on the real services: a researcher creates an experiment, uploads
stimuli, watches a simulated participant stream (quality lights and PSD
update), sees the session linked and corrected, exports and downloads; a
participant cannot see another participant's data; administrators see the
operations page. Screenshots of each page are kept on failure."""

from __future__ import annotations

import base64
import datetime as dt
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice

from .conftest import ADMIN

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3, pytest.mark.timeout(600)]

RESEARCHER, SUBJECT, OTHER = "dr-tanaka", "subj-01", "subj-02"
RATE = 250.0
PACKET_SAMPLES = 125  # 0.5 s per packet
SECONDS = 16
TRIGGERS = [int(RATE * (1.5 + 1.2 * k)) for k in range(10)]


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG (real, so the browser can draw the preview)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


class Participant:
    """A participant's phone: joins, records one session in real time with
    triggers, and ends it with an event log naming the stimuli."""

    def __init__(self, base: str, user: str, eid: str) -> None:
        self.client = httpx.Client(base_url=base, headers={"X-User-Id": user}, timeout=30)
        self.user, self.eid = user, eid
        self.session_id = f"{user}-main"
        self.device = SimulatedDevice(user_id=user, device_id=f"{user}-dev", sampling_rate=RATE,
                                      samples_per_packet=PACKET_SAMPLES, trigger_samples=TRIGGERS, seed=7)
        self.errors: list[str] = []

    def join(self) -> None:
        r = self.client.post(f"/api/v1/auth/experiments/{self.eid}/join", json={})
        assert r.status_code == 201, r.text

    def record(self) -> None:
        """Start, stream SECONDS of packets (the first 4 s at once, the rest
        in real time, so a live view sees updates), end with the event log."""
        try:
            start = int(time.time() * 1000) - 4000
            r = self.client.post("/api/v1/sessions/start", json={
                "session_id": self.session_id, "user_id": self.user, "experiment_id": self.eid,
                "device_id": self.device.device_id, "start_time": iso(start), "session_type": "main_external"})
            assert r.status_code == 201, r.text
            packets = int(SECONDS * RATE / PACKET_SAMPLES)
            began = time.monotonic()
            for i in range(packets):
                due = (i * PACKET_SAMPLES / RATE) - 4.0
                if due > 0:
                    time.sleep(max(0.0, due - (time.monotonic() - began)))
                body = {**self.device.envelope(i, start),
                        "payload_base64": base64.b64encode(compress_frame(self.device.payload(i))).decode()}
                r = self.client.post("/api/v1/data", json=body)
                assert r.status_code == 202, r.text
            files = ["choco.png", "chime.png"]
            csv = "onset,duration,trial_type,file_name\n" + "".join(
                f"{s / RATE - 0.06:.4f},1.0,{'target' if k % 2 else 'other'},{files[k % 2]}\n" for k, s in enumerate(TRIGGERS))
            meta = {"session_id": self.session_id, "user_id": self.user, "device_id": self.device.device_id,
                    "end_time": iso(start + SECONDS * 1000)}
            import json

            r = self.client.post("/api/v1/sessions/end", files={"metadata": (None, json.dumps(meta)),
                                                               "events_log_csv": ("events.csv", csv.encode(), "text/csv")})
            assert r.status_code == 200, r.text
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            self.errors.append(repr(exc))


def test_researcher_flow_and_participant_isolation(console_server: Any, browser_factory: Any, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    b = browser_factory(console_server.base)
    # --- sign in; an unknown page without identity goes to the sign-in page first
    b.open("/console/experiments")
    b.wait(lambda d: "/console/sign-in" in d.current_url, message="no redirect to sign-in")
    b.shot("sign-in")
    b.sign_in(RESEARCHER)

    # --- create an experiment
    form = b.visible("#create-experiment")
    form.find_element("name", "name").send_keys("Chocolate shelf study")
    form.find_element("name", "description").send_keys("Which wrapper draws the eye?")
    Select(form.find_element("name", "presentation_order")).select_by_visible_text("sequential")
    form.find_element("css selector", "button[type=submit]").click()
    b.wait(lambda d: "/console/experiments/" in d.current_url and d.current_url.count("/") >= 5, message="no experiment page")
    b.wait_ready()
    eid = b.driver.current_url.rstrip("/").split("/")[-1]
    b.text_in("#experiment-name", "Chocolate shelf study")
    b.text_in("#experiment-facts", "sequential")
    b.shot("experiment-new")

    # --- upload stimuli: the CSV and two images; the job completes and previews appear
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    (stimuli / "def.csv").write_text("file_name,trial_type,brand_name\nchoco.png,target,Choco\nchime.png,other,Chime\n")
    (stimuli / "choco.png").write_bytes(png(64, 48, (150, 75, 0)))
    (stimuli / "chime.png").write_bytes(png(64, 48, (30, 120, 200)))
    upload = b.visible("#upload-stimuli")
    upload.find_element("name", "stimuli_definition_csv").send_keys(str(stimuli / "def.csv"))
    upload.find_element("name", "stimulus_files").send_keys(f"{stimuli / 'choco.png'}\n{stimuli / 'chime.png'}")
    upload.find_element("css selector", "button[type=submit]").click()
    b.text_in("#stimulus-job-status", "completed", timeout=60)
    b.wait(lambda d: len(b.all(".stimulus img")) == 2, message="image previews did not appear")
    loaded = b.driver.execute_script(
        "return [...document.querySelectorAll('.stimulus img')].map(i => [i.src.slice(0, 5), i.naturalWidth])")
    assert loaded == [["blob:", 64], ["blob:", 64]], loaded
    b.shot("experiment-stimuli")
    assert b.foreign_references() == []

    # --- participants join; one streams a session in real time
    subject = Participant(console_server.base, SUBJECT, eid)
    other = Participant(console_server.base, OTHER, eid)
    subject.join()
    other.join()
    b.open(f"/console/experiments/{eid}")
    b.wait(lambda d: len(b.all("#participants tbody tr")) == 3, message="participants table")
    streamer = threading.Thread(target=subject.record, daemon=True)
    streamer.start()

    # --- live view: quality lights and the PSD update from the SSE stream
    b.open(f"/console/live/{SUBJECT}")
    b.wait(lambda d: len(b.all("#quality .light[data-state]")) == 9, timeout=60, message="no quality lights")
    states = {e.get_attribute("data-channel"): e.get_attribute("data-state") for e in b.all("#quality .light")}
    # The simulator sends clean signals without impedance values: no channel
    # is bad; EEG channels warn about the unknown impedance.
    assert list(states) == [f"CH{i}" for i in range(1, 9)] + ["TRIG"] and "bad" not in states.values(), states
    b.text_in("#quality-reasons", "impedance")
    b.wait(lambda d: int(b.css("#psd-plot > div").get_attribute("data-updated") or 0) >= 3, timeout=60,
           message="the PSD did not update from the stream: ")
    b.text_in("#live-status", "Connected")
    assert "frequency (Hz)" in b.css("#psd-plot svg").text and "V²/Hz" in b.css("#psd-plot svg").text
    assert len(b.all("#psd-plot svg polyline")) == 8
    b.wait(lambda d: len(b.all("#coherence-plot svg rect")) >= 64, timeout=60, message="no coherence matrix")
    b.shot("live")
    assert b.foreign_references() == []
    streamer.join(timeout=60)
    assert not streamer.is_alive() and not subject.errors, subject.errors

    # --- sessions: linked and corrected, with the correction timeline
    b.open(f"/console/experiments/{eid}/sessions")
    row = f'#sessions tr[data-session-id="{subject.session_id}"]'
    b.visible(row)
    b.shot("sessions")
    b.open(f"/console/sessions/{subject.session_id}")  # the list re-renders while linking runs
    b.text_in("#link-status", "completed", timeout=90)
    b.text_in("#correction-status", "completed", timeout=90)
    b.text_in("#correction-matched", f"{len(TRIGGERS)} of {len(TRIGGERS)} events", timeout=30)
    # The log's onsets are 60 ms before the triggers: the known offset.
    b.text_in("#correction-facts", "60.0 ms")
    b.text_in("#correction-facts", "Evidence")
    b.wait(lambda d: len(b.all("#correction-plot circle.ev-matched")) == len(TRIGGERS), message="timeline")
    assert "time since session start (s)" in b.css("#correction-plot svg").text
    # A 202 means queued, not stored: a packet stored after the session was
    # linked is linked by a second pass, so reload until all are counted.
    for _ in range(60):
        if "4000 / 4000" in b.css("#streams tbody").text:
            break
        time.sleep(1)
        b.driver.refresh()
        b.text_in("#correction-status", "completed")
    assert "100.0 %" in b.css("#streams tbody").text, b.css("#streams tbody").text
    b.shot("session")
    assert b.foreign_references() == []

    # --- export: start, progress to completed, validator summary, download
    b.open(f"/console/experiments/{eid}/exports")
    b.visible("#start-export").click()
    b.wait(lambda d: b.all('.export[data-status="completed"]') or b.all('.export[data-status="failed"]'), timeout=240,
           message="export did not finish: ")
    card = b.css(".export")
    assert card.get_attribute("data-status") == "completed", card.text
    assert "BIDS validator: 0 error(s)" in card.text, card.text
    task_id = card.get_attribute("data-task-id")
    card.find_element("css selector", "details summary").click()
    b.shot("exports")
    assert b.foreign_references() == []
    card.find_element("css selector", "button.download").click()
    b.wait(lambda d: [p for p in b.downloads.glob("*.zip")], timeout=60, message="no download")
    zip_path = next(b.downloads.glob("*.zip"))
    b.wait(lambda d: not list(b.downloads.glob("*.crdownload")), timeout=60)
    task = httpx.get(f"{console_server.base}/api/v1/export-tasks/{task_id}", headers={"X-User-Id": RESEARCHER}).json()
    assert zip_path.stat().st_size == task["size_bytes"]
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert any(n.endswith("_eeg.vhdr") for n in names) and "bids_dataset/stimuli/choco.png" in names

    # --- neuro-marketing: no result yet; asking for the analysis without a
    # calibration session shows the API's refusal, and no ranking
    b.open(f"/console/experiments/{eid}/neuro-marketing")
    b.text_in("#nm-unavailable", "Not available yet")
    b.css("#run-analysis").click()
    b.text_in("#flash", "no calibration session", timeout=60)
    assert not b.all("#nm-ranking") and not b.all("#nm-recommendations")
    b.shot("neuro-marketing")

    # --- a participant cannot see another participant's data
    p = browser_factory(console_server.base)
    p.sign_in(OTHER)
    p.open(f"/console/live/{SUBJECT}")
    p.text_in("#flash", "403", timeout=30)
    assert not p.all("#quality .light") and not p.all("#psd-plot svg")
    p.shot("other-live-403")
    p.open(f"/console/sessions/{subject.session_id}")
    p.text_in("#flash", "403")
    assert not p.all("#streams tbody tr") and not p.all("#correction-plot svg")
    p.open(f"/console/experiments/{eid}/sessions")
    p.text_in("#flash", "403")
    assert not p.all("#sessions tbody tr")
    p.open(f"/console/experiments/{eid}")
    p.text_in("#experiment-facts", "participant")
    assert not p.css("#participants").is_displayed()
    p.open(f"/console/experiments/{eid}/exports")
    p.visible('.export[data-status="completed"]')
    assert "Only owners may download" in p.css(".export").text and not p.all(".export details")
    p.open("/console/operations")
    p.text_in("#flash", "administrators")
    assert not p.all("#queues tbody tr")
    p.shot("other-operations")

    # --- an administrator's operations page
    a = browser_factory(console_server.base)
    a.sign_in(ADMIN)
    a.open("/console/operations")
    for component in ("database", "object_store", "broker"):
        a.text_in(f'#health tr[data-component="{component}"]', "ok")
    a.wait(lambda d: len(a.all("#queues tbody tr")) == 6, message="queues")
    a.text_in("#plugins", "console")
    a.shot("operations")
    assert a.foreign_references() == []
    # Calibration items: administrators register one; it is listed with its preview.
    (stimuli / "fixation.png").write_bytes(png(32, 32, (0, 0, 0)))
    a.open("/console/calibrations")
    add = a.visible("#add-calibration")
    add.find_element("name", "file").send_keys(str(stimuli / "fixation.png"))
    add.find_element("name", "description").send_keys("fixation cross")
    add.find_element("css selector", "button[type=submit]").click()
    a.text_in("#calibrations tbody", "fixation.png")
    a.wait(lambda d: a.all("#calibrations img.thumb"), message="calibration preview")
    a.shot("calibrations")
    p.open("/console/calibrations")
    p.text_in("#calibrations tbody", "fixation.png")
    assert not p.css("#add-calibration").is_displayed()
    # Signing out forgets the identity: the next page asks again.
    a.css("#sign-out").click()
    a.wait(lambda d: "/console/sign-in" in d.current_url, message="sign-out")
    a.open("/console/operations")
    a.wait(lambda d: "/console/sign-in?next=" in d.current_url, message="pages need an identity after sign-out")

    # --- a tablet-width viewport: the pages reflow without horizontal scrolling
    t = browser_factory(console_server.base, width=768, height=1024)
    t.sign_in(RESEARCHER)
    for path, ready in ((f"/console/experiments/{eid}", ".stimulus img"), (f"/console/sessions/{subject.session_id}", "#correction-plot svg"),
                        (f"/console/live/{SUBJECT}", "#psd-plot svg")):
        t.open(path)
        t.visible(ready, timeout=60)
        overflow = t.driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        t.shot("tablet-" + path.split("/")[2])
        assert t.foreign_references() == [], path
    for browser in (b, p, a, t):
        assert not [m for m in browser.console_errors() if "the server responded with a status of 4" not in m], browser.console_errors()
