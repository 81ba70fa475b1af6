"""Synthetic streams through the real broker (RabbitMQ) into the live
analyzer: PSD peak, coherence honesty, channel quality, the results API
(202 before enough data, 403 for a stranger), images on demand, server-sent
events, and isolation of a plugin that raises and one that hangs."""

from __future__ import annotations

import base64
import json
import threading
import types
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest

from eeghub.core.hookspecs import hookimpl
from eeghub.core.packet import compress_frame, encode_payload
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import user, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

P, OWNER, STRANGER = "subject-live", "owner-live", "stranger-live"
FAST = {
    "EEGHUB_ANALYZER__INTERVAL_SECONDS": "0.3",
    "EEGHUB_ANALYZER__WINDOW_SECONDS": "2",
    "EEGHUB_ANALYZER__COHERENCE_WINDOW_SECONDS": "8",
    "EEGHUB_ANALYZER__QUALITY_WINDOW_SECONDS": "4",
    "EEGHUB_ANALYZER__BUFFER_SECONDS": "10",
    "EEGHUB_ANALYZER__PLUGIN_TIMEOUT_SECONDS": "1",
}


@pytest.fixture
def env(local_env: dict[str, str], rabbitmq_url: str, unique_name: str) -> dict[str, str]:
    # Real broker; PostgreSQL and the filesystem store for the rest.
    return {**local_env, **FAST, "EEGHUB_BROKER__URL": rabbitmq_url,
            "EEGHUB_BROKER__QUEUES__RAW_DATA_EXCHANGE": f"{unique_name}.raw",
            "EEGHUB_BROKER__QUEUES__PROCESSING_QUEUE": f"{unique_name}.processing",
            "EEGHUB_BROKER__QUEUES__DATA_LINKER_QUEUE": f"{unique_name}.link",
            "EEGHUB_BROKER__QUEUES__EVENT_CORRECTION_QUEUE": f"{unique_name}.correct",
            "EEGHUB_BROKER__QUEUES__MEDIA_PROCESSING_QUEUE": f"{unique_name}.media",
            "EEGHUB_BROKER__QUEUES__STIMULUS_ASSET_QUEUE": f"{unique_name}.stim",
            "EEGHUB_BROKER__QUEUES__EXPORT_QUEUE": f"{unique_name}.export"}


def packet_body(device: SimulatedDevice, index: int, start_ms: int, zero_channel: int | None = None) -> dict[str, Any]:
    first = index * device.samples_per_packet
    signals = device.eeg(first, device.samples_per_packet)
    if zero_channel is not None:
        signals[zero_channel] = 0
    trigger = device.trigger(first, device.samples_per_packet)
    payload = encode_payload(np.vstack([signals, trigger[None, :]]), device.channel_names, device.channel_types)
    return {**device.envelope(index, start_ms), "payload_base64": base64.b64encode(compress_frame(payload)).decode()}


async def stream(client: Any, device: SimulatedDevice, seconds: int, zero_channel: int | None = None) -> None:
    for i in range(seconds):
        r = await client.post("/api/v1/data", json=packet_body(device, i, 1_760_000_000_000, zero_channel), headers=user(device.user_id))
        assert r.status_code == 202, r.text


@pytest.mark.parametrize("source", ["ingest", "exchange"])
async def test_live_analysis(app_client: Any, env: dict[str, str], source: str) -> None:
    """Both ways packets reach the analyzer (``analyzer.source``): in process
    from the ingest route, or from a queue bound to the raw fanout."""
    alpha = SimulatedDevice(user_id=P, device_id="alpha-dev", alpha_amplitude_counts=600, noise_counts=60, seed=1)
    noise = SimulatedDevice(user_id=P, device_id="noise-dev", alpha_amplitude_counts=0, noise_counts=300, seed=2)
    async with app_client({**env, "EEGHUB_ANALYZER__SOURCE": source}) as (client, _):
        eid = (await client.post("/api/v1/experiments", json={"name": "live"}, headers=user(OWNER))).json()["experiment_id"]
        await client.post(f"/api/v1/auth/experiments/{eid}/join", json={}, headers=user(P))
        first = await client.get(f"/api/v1/users/{P}/analysis", headers=user(P))
        assert first.status_code == 202 and "status" in first.json()
        await stream(client, alpha, 1)  # one second: less than any window
        assert (await client.get(f"/api/v1/users/{P}/analysis", headers=user(P))).status_code == 202

        await stream(client, alpha, 10, zero_channel=2)
        await stream(client, noise, 10)

        async def ready(device: str) -> Any:
            r = await client.get(f"/api/v1/users/{P}/analysis?format=json&device_id={device}", headers=user(P))
            body = r.json() if r.status_code == 200 else {}
            if not {"psd", "coherence", "channel_quality"} <= set(body.get("applications", {})):
                return None
            # Coherence starts at 5 s of data and grows: wait for the full 8 s window (15 segments).
            if body["applications"]["coherence"]["window_seconds"] < 8:
                return None
            # Every result from a window ending with the last packet (a run may
            # have started while the packets were still arriving).
            last = datetime.fromtimestamp((1_760_000_000_000 + 9 * 1000 + 996) / 1000, UTC).isoformat()
            return body if all(r["window_end"] == last for r in body["results"].values()) else None

        a = await wait_for(lambda: ready("alpha-dev"), timeout=30)
        b = await wait_for(lambda: ready("noise-dev"), timeout=30)

        psd = a["applications"]["psd"]
        assert "CH3" not in psd["channels"]  # zero-filled: bad, left out
        assert all(abs(f - 10.0) <= 0.5 for f in psd["peak_frequency"].values()), psd["peak_frequency"]
        quality = a["applications"]["channel_quality"]
        assert quality["bad_channels"] == ["CH3"]
        assert quality["channel_quality"]["CH3"]["status"] == "bad"
        assert "zero-fill 100%" in quality["channel_quality"]["CH3"]["reasons"]
        assert quality["channel_quality"]["CH1"]["status"] == "good"
        compat = a["applications"]["psd_coherence"]
        assert compat["bad_channels"] == ["CH3"] and "psd_image" not in compat
        assert compat["timestamp"].endswith("+00:00")

        coh_a, coh_b = a["applications"]["coherence"], b["applications"]["coherence"]
        assert coh_b["n_segments"] == 15 and coh_b["mean"] < 3 * coh_b["noise_floor"] + 0.02, coh_b
        assert coh_a["mean"] > 0.4 > coh_b["mean"], (coh_a["mean"], coh_b["mean"])

        # images on demand, cached
        r = await client.get(f"/api/v1/users/{P}/analysis?device_id=alpha-dev", headers=user(P))
        entry = r.json()["applications"]["psd_coherence"]
        assert base64.b64decode(entry["psd_image"])[:4] == b"\x89PNG"
        assert base64.b64decode(entry["coherence_image"])[:4] == b"\x89PNG"

        # who may read
        assert (await client.get(f"/api/v1/users/{P}/analysis", headers=user(STRANGER))).status_code == 403
        # compat (the default): the app polls without a header, for the path's user
        assert (await client.get(f"/api/v1/users/{P}/analysis")).status_code == 200
        assert (await client.get(f"/api/v1/users/{P}/analysis?format=json", headers=user(OWNER))).status_code == 200

        plugins = (await client.get("/api/v1/analysis/plugins")).json()["plugins"]
        assert {p["id"] for p in plugins} == {"psd", "coherence", "channel_quality"}
        feed = (await client.get("/api/v1/health")).json()["plugins"]["analyzer"]["detail"]["feed"]
        assert feed["source"] == source
        if source == "ingest":  # one process: every packet analysed here, none forwarded
            assert feed["analysed_here"] == 21 and feed["forwarded"] == 0 and feed["unowned"] == 0, feed


async def test_server_sent_events(env: dict[str, str]) -> None:
    """Through a real uvicorn server (the test client cannot stream)."""
    import asyncio
    import socket

    import httpx
    import uvicorn

    from eeghub.bootstrap import create_app
    from eeghub.config import load_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(load_settings(env=env)), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        device = SimulatedDevice(user_id=P, device_id="sse-dev", seed=9)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await client.get(f"/api/v1/users/{P}/analysis/stream", headers=user(STRANGER))).status_code == 403
            # compat (the default): a browser's EventSource sends no header, the path names the user
            async with client.stream("GET", f"/api/v1/users/{P}/analysis/stream") as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")
                await stream(client, device, 4)
                got = None
                async for line in events.aiter_lines():
                    if line.startswith("data:"):
                        got = json.loads(line[5:].strip())
                        break
        assert got is not None and got["plugin"] in {"psd", "coherence", "channel_quality"}
        assert got["device_id"] == "sse-dev" and got["timestamp"].endswith("+00:00")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class Alpha(msgspec.Struct):
    value: float


def analysis(id_: str, fn: Any) -> Any:
    return types.SimpleNamespace(id=id_, display_name=id_, description=id_, window_seconds=1.0,
                                 channel_types=("eeg",), interval_seconds=0.3, analyze=fn)


async def test_a_failing_and_a_hanging_plugin_do_not_stop_the_others(app_client: Any, env: dict[str, str]) -> None:
    release = threading.Event()

    def boom(window: Any) -> Any:
        raise RuntimeError("plugin bug")

    def hang(window: Any) -> Any:
        release.wait(20)
        return Alpha(value=0.0)

    def mean_power(window: Any) -> Alpha:
        return Alpha(value=float(np.mean(window.data**2)))

    lab = types.SimpleNamespace(
        eeghub_analyses=hookimpl(lambda ctx: [analysis("boom", boom), analysis("hang", hang), analysis("power", mean_power)])
    )
    device = SimulatedDevice(user_id=P, device_id="dev", seed=5)
    try:
        async with app_client(env, extra_plugins={"lab": lab}) as (client, _):
            await stream(client, device, 3)

            async def power_runs(n: int) -> Any:
                r = await client.get(f"/api/v1/users/{P}/analysis?format=json", headers=user(P))
                if r.status_code != 200 or "power" not in r.json()["results"]:
                    return None
                stats = {p["id"]: p["stats"] for p in (await client.get("/api/v1/analysis/plugins")).json()["plugins"]}
                return stats if stats["power"]["runs"] >= n else None

            stats = await wait_for(lambda: power_runs(3), timeout=30)
            # Ingest goes on while "hang" sits on its threads: every packet accepted.
            await stream(client, device, 5)
            later = await wait_for(lambda: power_runs(stats["power"]["runs"] + 3), timeout=30)
            assert later["boom"]["failures"] >= 3 and "plugin bug" in later["boom"]["last_error"]
            assert later["hang"]["timeouts"] >= 1 and later["hang"]["runs"] == 0
            assert later["psd"]["runs"] >= 3 and later["psd"]["failures"] == 0
            health = (await client.get("/api/v1/health")).json()
            assert health["plugins"]["analyzer"]["status"] == "degraded"
    finally:
        release.set()


async def test_a_plugin_render_draws_images_on_request_and_its_failures_are_reported(
    app_client: Any, env: dict[str, str]
) -> None:
    calls: list[dict[str, Any]] = []

    def mean_power(window: Any) -> Alpha:
        return Alpha(value=float(np.mean(window.data**2)))

    def render(result: Alpha, info: dict[str, Any]) -> dict[str, str]:
        calls.append(info)
        return {"bar": base64.b64encode(f"power={result.value:.3e}".encode()).decode()}

    broken_calls: list[int] = []

    def broken_render(result: Alpha, info: dict[str, Any]) -> dict[str, str]:
        broken_calls.append(1)
        raise ValueError("no canvas")

    drawn = analysis("drawn", mean_power)
    drawn.render = render
    broken = analysis("broken", mean_power)
    broken.render = broken_render
    lab = types.SimpleNamespace(eeghub_analyses=hookimpl(lambda ctx: [drawn, broken]))
    device = SimulatedDevice(user_id=P, device_id="draw-dev", seed=6)
    async with app_client(env, extra_plugins={"lab": lab}) as (client, _):
        await stream(client, device, 3)

        async def both() -> Any:
            r = await client.get(f"/api/v1/users/{P}/analysis?format=json", headers=user(P))
            results = r.json().get("results", {}) if r.status_code == 200 else {}
            return results if {"drawn", "broken", "psd"} <= set(results) else None

        as_json = await wait_for(both, timeout=30)
        assert "images" not in as_json["drawn"] and calls == []  # json: render not called
        body = (await client.get(f"/api/v1/users/{P}/analysis", headers=user(P))).json()
        drawn_entry = body["results"]["drawn"]
        assert base64.b64decode(drawn_entry["images"]["bar"]).startswith(b"power=")
        assert calls and calls[0]["plugin_id"] == "drawn" and calls[0]["device_id"] == "draw-dev"
        assert calls[0]["window_end_us"] > calls[0]["window_start_us"]
        assert body["results"]["broken"]["images"] == {}
        assert body["results"]["broken"]["images_error"] == "ValueError: no canvas"
        sequence = body["results"]["broken"]["timestamp"]
        again = (await client.get(f"/api/v1/users/{P}/analysis", headers=user(P))).json()
        if again["results"]["broken"]["timestamp"] == sequence:  # the same result: its failure is cached
            assert again["results"]["broken"]["images_error"] == "ValueError: no canvas" and len(broken_calls) == 1
        stats = {p["id"]: p["stats"] for p in (await client.get("/api/v1/analysis/plugins")).json()["plugins"]}
        assert "render: ValueError: no canvas" in stats["broken"]["last_error"]
        assert "images" not in body["results"]["psd"]  # built-ins: the psd_coherence entry
        assert body["applications"]["psd_coherence"]["psd_image"]


async def test_a_twelve_second_session_gets_a_coherence_image(app_client: Any, env: dict[str, str]) -> None:
    """The default 20 s coherence window, a 12 s stream: the estimate starts at
    9 segments (5 s) and the predecessor's entry carries its picture."""
    defaults = {**env, "EEGHUB_ANALYZER__COHERENCE_WINDOW_SECONDS": "20", "EEGHUB_ANALYZER__BUFFER_SECONDS": "60"}
    device = SimulatedDevice(user_id="short-session", device_id="short-dev", alpha_amplitude_counts=600, noise_counts=60, seed=3)
    async with app_client(defaults) as (client, _):
        await stream(client, device, 12)

        async def ready() -> Any:
            r = await client.get("/api/v1/users/short-session/analysis?format=json", headers=user("short-session"))
            coherence = r.json().get("applications", {}).get("coherence") if r.status_code == 200 else None
            return coherence if coherence and coherence["window_seconds"] >= 12 else None

        coherence = await wait_for(ready, timeout=30)
        assert coherence["n_segments"] == 23 and 0.04 < coherence["noise_floor"] < 0.05, coherence
        assert coherence["units"]["matrix"] == "1"
        r = await client.get("/api/v1/users/short-session/analysis", headers=user("short-session"))
        entry = r.json()["applications"]["psd_coherence"]
        assert base64.b64decode(entry["coherence_image"])[:4] == b"\x89PNG"
        plugins = {p["id"]: p for p in r.json()["available_applications"] if "window_seconds" in p}
        assert plugins["coherence"]["min_window_seconds"] == 5.0 and plugins["coherence"]["window_seconds"] == 20.0
