"""The analyzer's health: degraded while a plugin hangs or timed out
recently, ok again afterwards."""

from __future__ import annotations

import asyncio
import threading
import types
from typing import Any

import numpy as np

from eeghub.core.packet import decode_payload
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.analyzer.host import AnalysisHost


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plugin(id_: str, fn: Any) -> Any:
    return types.SimpleNamespace(
        id=id_, display_name=id_, description=id_, window_seconds=1.0, channel_types=("eeg",),
        interval_seconds=0.1, analyze=fn,
    )  # fmt: skip


async def test_health_recovers_after_a_timeout() -> None:
    release = threading.Event()

    def hang(window: Any) -> Any:
        release.wait(10)
        return None

    clock = Clock()
    host = AnalysisHost(
        [plugin("hang", hang), plugin("fine", lambda w: float(np.mean(w.data)))], plugin_timeout=0.2, clock=clock
    )
    try:
        assert host.health()[0] == "ok"
        device = SimulatedDevice("u", "d")
        for index in range(3):
            decoded = decode_payload(device.payload(index))
            host.add_packet(
                user_id="u", device_id="d", session_id=None, sampling_rate=250.0, lsb_to_volts=device.lsb_to_volts,
                channel_names=tuple(device.channel_names), channel_types=tuple(device.channel_types),
                signals=decoded.signals, start_us=1_767_225_600_000_000 + index * 1_000_000,
            )  # fmt: skip
        await host.run_due()
        for _ in range(100):
            if host.plugins["hang"].timeouts:
                break
            await asyncio.sleep(0.05)
        state = host.plugins["hang"]
        assert state.timeouts == 1 and state.hung == 1
        status, detail = host.health()
        assert status == "degraded" and "past the 0.2 s timeout" in detail["plugins"]["hang"]
        assert "fine" not in detail["plugins"]
        release.set()
        for _ in range(100):
            if state.hung == 0:
                break
            await asyncio.sleep(0.05)
        assert state.hung == 0 and state.in_flight == 0
        status, detail = host.health()
        assert status == "degraded" and "timed out" in detail["plugins"]["hang"]  # recently
        clock.now += AnalysisHost.HEALTH_WINDOW_SECONDS + 1
        assert host.health() == ("ok", {"streams": 1, "packets": 3})
    finally:
        release.set()
        host.close()


async def test_a_hanging_render_uses_its_plugin_threads_and_shows_in_health() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hanging_render(result: Any, info: dict[str, Any]) -> dict[str, str]:
        calls.append(1)
        release.wait(10)
        return {}

    drawn = plugin("drawn", lambda w: 1.0)
    drawn.render = hanging_render
    clock = Clock()
    host = AnalysisHost([drawn], plugin_timeout=0.2, clock=clock)
    try:
        from eeghub.plugins.analyzer.host import Result

        result = Result(plugin_id="drawn", user_id="u", device_id="d", session_id=None, computed_at=0.0,
                        window_start_us=0, window_end_us=1, value=1.0, sequence=1)  # fmt: skip
        # Many requests at once: one render call, shared.
        await asyncio.gather(*(host.render(result) for _ in range(10)))
        assert calls == [1]
        assert result.images is None and result.images_error == "render timed out after 0.2 s"
        status, detail = host.health()
        assert status == "degraded" and "past the 0.2 s timeout" in detail["plugins"]["drawn"]
        await host.render(result)  # cached: not called again
        assert calls == [1]
        # Unrelated work on the loop's default pool is not held up.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 2) == 42
        release.set()
        for _ in range(100):
            if host.plugins["drawn"].hung == 0:
                break
            await asyncio.sleep(0.02)
        assert host.plugins["drawn"].hung == 0
    finally:
        release.set()
        host.close()
