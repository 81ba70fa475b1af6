"""``eeghub simulate``: synthetic devices and a whole simulated study, over HTTP.

Stream mode sends packets for ``--users`` users (or the one ``--user``) with
``--devices`` devices each and prints the user, device and session ids it
used, the seed of each stream and how many packets were sent, accepted (202)
and refused. Each stream has a seed of its own, drawn at random unless
``--seed`` is given, so two runs differ unless asked to repeat one.

Study mode (``--study``) plays a small study the way a lab and its phones do:
calibration items (registered through the running server's local
administrator token when missing), an experiment with stimuli, participants
joining, a calibration and a main session per participant with trigger pulses
in the EEG and an event log whose onsets match them (seconds from the session
start, as a phone's stopwatch logs them: ``--log-lag`` late), the sessions
ended, and - with ``--export FILE`` - the experiment exported as BIDS and
downloaded.

A connection error or a 503 is retried with exponential back-off
(``--retries``) instead of ending in a traceback; what still fails is counted
and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from eeghub.config import Settings
from eeghub.core.correction import event_code
from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice

RETRY_STATUSES = {502, 503, 504}


def _headers(settings: Settings, user: str) -> dict[str, str]:
    if settings.auth.mode == "jwt":
        from eeghub.core.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(settings.auth, user)}"}
    return {settings.auth.user_header: user}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Tally:
    sent: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    """Requests that never got an answer, after every retry."""
    last_error: str | None = None

    def line(self) -> str:
        refused = sum(self.refused.values())
        detail = f" {dict(sorted(self.refused.items()))}" if self.refused else ""
        failed = f", {self.failed} unanswered ({self.last_error})" if self.failed else ""
        return f"packets sent {self.sent}, accepted {self.accepted}, refused {refused}{detail}{failed}"


class Client:
    """An httpx client that retries connection errors and 502-504 with back-off."""

    def __init__(self, settings: Settings, url: str, retries: int) -> None:
        self.settings = settings
        self.url = url
        self.retries = retries
        self.http = httpx.AsyncClient(base_url=url, timeout=60)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(_headers(self.settings, user) if user else {}), **kwargs.pop("headers", {})}
        delay = 0.25
        for attempt in range(self.retries + 1):
            try:
                response = await self.http.request(method, path, headers=headers, **kwargs)
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
                reason = f"{response.status_code}"
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
            if attempt == 0 or attempt == self.retries - 1:
                print(f"  {method} {path}: {reason}; retrying (up to {self.retries} times)", file=sys.stderr)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def expect(self, status: int | tuple[int, ...], method: str, path: str, user: str | None = None, **kwargs: Any) -> Any:
        """The JSON answer of a request that must succeed; ``StudyError`` otherwise."""
        response = await self.request(method, path, user, **kwargs)
        wanted = (status,) if isinstance(status, int) else status
        if response.status_code not in wanted:
            raise StudyError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None


class StudyError(Exception):
    pass


async def send_packets(client: Client, device: SimulatedDevice, start_ms: int, count: int, *, speed: float,
                       binary: bool, limit: asyncio.Semaphore, tally: Tally) -> None:
    began = time.monotonic()

    async def send(index: int) -> None:
        envelope = device.envelope(index, start_ms)
        frame = compress_frame(device.payload(index))
        async with limit:
            tally.sent += 1
            try:
                if binary:
                    params = {k: str(v) for k, v in envelope.items() if v is not None}
                    response = await client.request(
                        "POST", "/api/v1/data", device.user_id, content=frame, params=params,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                else:
                    body = {**envelope, "payload_base64": base64.b64encode(frame).decode()}
                    response = await client.request("POST", "/api/v1/data", device.user_id, json=body)
            except httpx.TransportError as exc:
                tally.failed += 1
                tally.last_error = f"{type(exc).__name__}: {exc}"[:200]
                return
        if response.status_code == 202:
            tally.accepted += 1
        else:
            tally.refused[response.status_code] = tally.refused.get(response.status_code, 0) + 1
            if tally.last_error is None:
                tally.last_error = response.text[:200]

    tasks = []
    for index in range(count):
        if speed > 0:
            delay = began + index * device.packet_ms / 1000.0 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index)))
    await asyncio.gather(*tasks)


def _seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else secrets.randbits(31)


def _server_url(settings: Settings, args: argparse.Namespace) -> str:
    from .admin import local_url

    return (args.url or local_url(settings)).rstrip("/")


async def run_simulation(settings: Settings, args: argparse.Namespace) -> int:
    if args.study:
        return await run_study(settings, args)
    url = _server_url(settings, args)
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    users = [args.user] if args.user else [f"{args.user_prefix}-{u + 1}" for u in range(args.users)]
    base_seed = _seed(args)
    devices = []
    for u, user in enumerate(users):
        for d in range(args.devices):
            device_id = args.device if args.device and args.devices == 1 else (
                f"{args.device}-{d + 1}" if args.device else f"sim-device-{u + 1}-{d + 1}")
            device = SimulatedDevice(
                user_id=user,
                device_id=device_id,
                channels=args.channels,
                sampling_rate=args.rate,
                samples_per_packet=args.samples_per_packet,
                variant=args.variant,
                seed=base_seed + len(devices),
                session_id=args.session_id,
            )
            if args.trigger_every > 0:
                step = round(args.trigger_every * args.rate)
                device.trigger_samples = list(range(step, round(args.seconds * args.rate), step))
            devices.append(device)
    packets = max(1, round(args.seconds * args.rate / args.samples_per_packet))
    print(f"server {url}; first sample at {iso(start_ms)} ({start_ms} ms); {packets} packet(s) per device")
    for device in devices:
        print(f"  user {device.user_id}  device {device.device_id}  session {device.session_id or '-'}  seed {device.seed}")
    tally = Tally()
    limit = asyncio.Semaphore(args.concurrency)
    began = time.monotonic()
    async with Client(settings, url, args.retries) as client:
        await asyncio.gather(*(
            send_packets(client, d, start_ms, packets, speed=args.speed, binary=args.binary, limit=limit, tally=tally)
            for d in devices
        ))
    elapsed = time.monotonic() - began
    print(f"{tally.line()} from {len(devices)} device(s) in {elapsed:.2f} s ({tally.sent / elapsed:.0f}/s)")
    if tally.failed and not tally.accepted:
        print(f"eeghub: no server answered at {url}", file=sys.stderr)
    return 0 if tally.accepted == tally.sent else 1


# ---------------------------------------------------------------- study mode
CALIBRATION_ITEMS = (("sim-cal-target.png", "target", (0.85, 0.15, 0.1)), ("sim-cal-nontarget.png", "nontarget", (0.1, 0.3, 0.85)))
STIMULI = (
    ("sim-apple.png", "food", (0.8, 0.1, 0.1)),
    ("sim-banana.png", "food", (0.95, 0.85, 0.2)),
    ("sim-car.png", "object", (0.3, 0.3, 0.35)),
    ("sim-chair.png", "object", (0.55, 0.35, 0.15)),
)


def png(color: tuple[float, float, float], seed: int) -> bytes:
    """A small PNG image (a colour with a pattern), written by matplotlib."""
    from matplotlib import image

    rng = np.random.default_rng(seed)
    pixels = np.ones((64, 64, 3)) * np.array(color)
    pixels = np.clip(pixels + rng.normal(0, 0.05, pixels.shape), 0, 1)
    out = io.BytesIO()
    image.imsave(out, pixels, format="png")
    return out.getvalue()


@dataclass
class Recording:
    session_id: str
    user: str
    device: str
    kind: str
    trials: int


async def ensure_calibration_items(client: Client, settings: Settings, owner: str) -> list[tuple[str, str]]:
    """The study's calibration items, registered as the local administrator if missing."""
    from .admin import NoServer, admin_request, print_error

    present = {item["file_name"] for item in await client.expect(200, "GET", "/api/v1/calibrations", owner)}
    for name, kind, color in CALIBRATION_ITEMS:
        if name in present:
            continue
        try:
            response = await asyncio.to_thread(
                admin_request, settings, "POST", "/api/v1/calibrations", url=client.url,
                files={"file": (name, png(color, 0), "image/png")}, data={"item_type": kind},
            )
        except NoServer as exc:
            raise StudyError(
                f"calibration item {name} is missing and cannot be registered ({exc}). Run the study on the server's "
                "machine with the server's --data-dir, or register it: eeghub calibration add FILE --type TYPE"
            ) from None
        if response.status_code != 201:
            print_error(response)
            raise StudyError(f"could not register calibration item {name}")
        print(f"  registered calibration item {name} ({kind})")
    return [(name, kind) for name, kind, _ in CALIBRATION_ITEMS]


async def record_session(client: Client, eid: str, rec: Recording, items: list[tuple[str, str]], start_ms: int,
                         args: argparse.Namespace, seed: int, limit: asyncio.Semaphore, tally: Tally) -> None:
    rate, per_packet = args.rate, args.samples_per_packet
    first = round(args.trial_start * rate)
    step = round(args.trigger_every * rate)
    total = round(args.seconds * rate)
    trigger_samples = list(range(first, total - round(rate), step))
    rec.trials = len(trigger_samples)
    # Each pulse carries the code its event's trial type has in the app (target
    # 1, non-target 2; 1 for other types), and the log's ``value`` says the same.
    codes = [event_code(None, items[k % len(items)][1]) or 1 for k in range(len(trigger_samples))]
    device = SimulatedDevice(user_id=rec.user, device_id=rec.device, channels=args.channels, sampling_rate=rate,
                             samples_per_packet=per_packet, variant="app", seed=seed, trigger_samples=trigger_samples,
                             trigger_codes=codes)
    await client.expect(201, "POST", "/api/v1/sessions/start", rec.user, json={
        "session_id": rec.session_id, "user_id": rec.user, "experiment_id": eid, "device_id": rec.device,
        "start_time": iso(start_ms), "session_type": rec.kind,
    })
    packets = max(1, round(args.seconds * rate / per_packet))
    await send_packets(client, device, start_ms, packets, speed=args.speed, binary=False, limit=limit, tally=tally)
    rng = np.random.default_rng(seed + 1)
    lines = ["onset,duration,trial_type,file_name,value"]
    for k, sample in enumerate(trigger_samples):
        name, trial_type = items[k % len(items)]
        onset = sample / rate + args.log_lag + rng.normal(0, 0.002)
        lines.append(f"{onset:.4f},{args.stimulus_seconds},{trial_type},{name},{codes[k]}")
    metadata = {"session_id": rec.session_id, "user_id": rec.user, "device_id": rec.device, "experiment_id": eid,
                "end_time": iso(start_ms + packets * round(per_packet * 1000 / rate))}
    files = {"metadata": (None, json.dumps(metadata)), "events_log_csv": ("events.csv", ("\n".join(lines) + "\n").encode(), "text/csv")}
    ended = await client.expect(200, "POST", "/api/v1/sessions/end", rec.user, files=files)
    if ended.get("unmapped_file_names"):
        print(f"  warning: {rec.session_id}: event file names the server does not know: {ended['unmapped_file_names']}")


async def wait_until(what: str, probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StudyError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.5)


async def run_study(settings: Settings, args: argparse.Namespace) -> int:
    url = _server_url(settings, args)
    seed = _seed(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    owner = args.owner
    participants = [f"{args.user_prefix}-{p + 1}" for p in range(args.participants)] if not args.user else [args.user]
    tally = Tally()
    limit = asyncio.Semaphore(args.concurrency)
    try:
        async with Client(settings, url, args.retries) as client:
            health = await client.request("GET", "/health")
            if health.status_code != 200:
                raise StudyError(f"{url}/health answered {health.status_code}: {health.text[:200]}")
            print(f"server {url}; seed {seed}")
            calibration = await ensure_calibration_items(client, settings, owner)
            name = args.experiment_name or f"Simulated study {stamp}"
            created = await client.expect(201, "POST", "/api/v1/experiments", owner, json={
                "name": name, "description": "Played by eeghub simulate --study", "presentation_order": "sequential"})
            eid = created["experiment_id"]
            print(f"experiment {eid} ({name}), owner {owner}")
            csv = "file_name,trial_type,description\n" + "".join(f"{n},{t},simulated {t}\n" for n, t, _ in STIMULI)
            files: list[tuple[str, Any]] = [("stimuli_definition_csv", ("stimuli.csv", csv.encode(), "text/csv"))]
            files += [("stimulus_files", (n, png(c, i + 1), "image/png")) for i, (n, _, c) in enumerate(STIMULI)]
            job = await client.expect(202, "POST", f"/api/v1/experiments/{eid}/stimuli", owner, files=files)

            async def stimuli_ready() -> Any:
                state = await client.expect(200, "GET", job["status_url"], owner)
                if state["status"] == "failed":
                    raise StudyError(f"stimulus registration failed: {state['error_message']}")
                return state["status"] == "completed"

            await wait_until("the stimulus job", stimuli_ready, args.timeout)
            print(f"  {len(STIMULI)} stimuli registered")
            recordings: list[Recording] = []
            # Every recording lies in the past: sessions of one device follow
            # each other with a gap, participants record side by side.
            session_ms = round(args.seconds * 1000)
            base_ms = int(time.time() * 1000) - 2 * (session_ms + 10_000)
            tasks = []
            for p, user in enumerate(participants):
                await client.expect((200, 201), "POST", f"/api/v1/auth/experiments/{eid}/join", user, json={})
                # A device of its own per run: a second run within a minute
                # must not put sessions of one device at overlapping times
                # (linking goes by user, device and time).
                device = f"{args.device}-{p + 1}" if args.device and len(participants) > 1 else args.device
                device = device or f"sim-device-{p + 1}-{stamp}"
                for k, (kind, items) in enumerate((("calibration", calibration), (args.main_type, [(n, t) for n, t, _ in STIMULI]))):
                    rec = Recording(f"{args.session_id or 'sim'}-{stamp}-{p + 1}-{kind}", user, device, kind, 0)
                    recordings.append(rec)
                    start = base_ms + k * (session_ms + 10_000)
                    tasks.append(record_session(client, eid, rec, items, start, args, seed + 10 * p + k, limit, tally))
            print(f"  {len(participants)} participant(s) joined: {', '.join(participants)}")
            await asyncio.gather(*tasks)
            for rec in recordings:
                print(f"  session {rec.session_id}: user {rec.user}, device {rec.device}, {rec.kind}, {rec.trials} trials")
            print(tally.line())

            async def corrected() -> Any:
                for rec in recordings:
                    info = await client.expect(200, "GET", f"/api/v1/sessions/{rec.session_id}", rec.user)
                    if info["link_status"] != "completed" or info["event_correction_status"] not in ("completed", "failed"):
                        return False
                    data = await client.expect(200, "GET", f"/api/v1/sessions/{rec.session_id}/data", rec.user)
                    if sum(s["packets"] for s in data["streams"]) < round(args.seconds * args.rate / args.samples_per_packet):
                        return False
                return True

            await wait_until("every session to be linked and its events corrected", corrected, args.timeout)
            for rec in recordings:
                info = await client.expect(200, "GET", f"/api/v1/sessions/{rec.session_id}", rec.user)
                print(f"  {rec.session_id}: linked {info['link_status']}, events {info['event_count']}, "
                      f"corrected to a trigger {info['corrected_event_count']}")
            if args.export:
                await export(client, eid, owner, Path(args.export), args.timeout)
            else:
                print(f"export it: curl -X POST -H '{settings.auth.user_header}: {owner}' {url}/api/v1/experiments/{eid}/export")
    except StudyError as exc:
        print(f"eeghub: study stopped: {exc}", file=sys.stderr)
        print(tally.line(), file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"eeghub: no server answers at {url} ({type(exc).__name__}: {exc}); is `eeghub serve` running?", file=sys.stderr)
        return 1
    return 0 if tally.accepted == tally.sent else 1


async def export(client: Client, eid: str, owner: str, target: Path, timeout: float) -> None:
    accepted = await client.expect(202, "POST", f"/api/v1/experiments/{eid}/export", owner)
    status_url = accepted["status_url"]
    print(f"export task {accepted['task_id']} started")

    async def finished() -> Any:
        task = await client.expect(200, "GET", status_url, owner)
        return task if task["status"] in ("completed", "failed") else None

    task = await wait_until("the export", finished, max(timeout, 300))
    if task["status"] != "completed":
        raise StudyError(f"the export failed: {task.get('error_message')}")
    validation = task.get("validation") or {}
    print(f"export {task['status']}: {task.get('size_bytes')} bytes; BIDS validator: "
          f"{validation.get('errors')} error(s), {validation.get('warnings')} warning(s)")
    response = await client.request("GET", f"{status_url}/download", owner)
    if response.status_code != 200:
        raise StudyError(f"download answered {response.status_code}")
    target.write_bytes(response.content)
    print(f"wrote {target} ({len(response.content)} bytes)")
