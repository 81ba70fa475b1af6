"""One test per hook (``test_hook_<name>``): each registers a plugin that
implements the hook and checks the host does what the hookspec promises.

``test_every_hook_has_a_test`` fails when a hookspec has no test here.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from typing import Any

import numpy as np
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from eeghub.config import Settings
from eeghub.core import hookspecs
from eeghub.core.context import AppContext
from eeghub.core.errors import PluginError
from eeghub.core.extension import BackgroundTask, Consumer, PluginHealth
from eeghub.core.hookspecs import hookimpl
from eeghub.core.host import PluginHost
from eeghub.core.http import EXCEPTION_HANDLERS
from eeghub.core.ports import Delivery, Message
from eeghub.core.system_routes import system_routes
from tests.fakes import FakeBroker, FakePing


def hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("eeghub_")]


def make_host(**plugins: Any) -> tuple[PluginHost, AppContext, FakeBroker]:
    host = PluginHost()
    host.load(builtins={}, include_entry_points=False, extra=plugins)
    ctx = AppContext(settings=Settings(), host=host)
    broker = FakeBroker()
    ctx.attach(database=FakePing(), objects=FakePing(), broker=broker)  # type: ignore[arg-type]
    return host, ctx, broker


def plugin(**functions: Any) -> types.SimpleNamespace:
    """A plugin object whose attributes are hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in functions.items()})


def test_every_hook_has_a_test() -> None:
    tested = {name[len("test_hook_") :] for name in globals() if name.startswith("test_hook_")}
    missing = [name for name in hook_names() if name not in tested]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


async def test_hook_eeghub_routes() -> None:
    @get("/api/v1/greeting", sync_to_thread=False)
    def greeting() -> dict[str, str]:
        return {"hello": "lab"}

    host, ctx, _ = make_host(greeter=plugin(eeghub_routes=lambda ctx: [greeting]))
    assert host.plugins[0].hooks == ("eeghub_routes",)
    app = Litestar(route_handlers=[*system_routes(ctx), *host.routes(ctx)], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/api/v1/greeting")).json() == {"hello": "lab"}
        listed = (await client.get("/api/v1/plugins")).json()["plugins"]
        assert listed[0]["name"] == "greeter" and listed[0]["hooks"] == ["eeghub_routes"]


async def test_hook_eeghub_consumers() -> None:
    received: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        received.append(delivery.message.body)

    consumers = plugin(eeghub_consumers=lambda ctx: [Consumer(queue="q1", handler=handle, bind_to="ex1")])
    host, ctx, broker = make_host(c=consumers)
    await host.startup(ctx)
    assert "ex1" in broker.exchanges and broker.queues["q1"]["bind_to"] == "ex1"
    await broker.publish(Message(body=b"hi"), exchange="ex1")
    assert received == [b"hi"] and host.consumer_count == 1
    await host.shutdown(ctx)
    assert "q1" not in broker.handlers and host.consumer_count == 0


async def test_hook_eeghub_consumers_rejects_wrong_type() -> None:
    host, ctx, _ = make_host(bad=plugin(eeghub_consumers=lambda ctx: ["not a consumer"]))
    with pytest.raises(PluginError, match="bad"):
        await host.startup(ctx)


async def test_hook_eeghub_background_tasks() -> None:
    runs: list[int] = []
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")  # restarted by the host
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = BackgroundTask(name="flaky", run=flaky, restart_delay=0.01)
    host, ctx, _ = make_host(t=plugin(eeghub_background_tasks=lambda ctx: [task]))
    await host.startup(ctx)
    await asyncio.wait_for(started.wait(), 5)
    assert len(runs) == 3 and host.task_count == 1
    await host.shutdown(ctx)
    assert cancelled.is_set() and host.task_count == 0


async def test_hook_eeghub_startup() -> None:
    order: list[str] = []

    async def later() -> None:
        order.append("awaited")

    def startup(ctx: AppContext) -> Any:
        order.append("called")
        return later()

    def consumers(ctx: AppContext) -> list[Consumer]:
        order.append("consumers")
        return []

    host, ctx, _ = make_host(s=plugin(eeghub_startup=startup, eeghub_consumers=consumers))
    await host.startup(ctx)
    assert order == ["called", "awaited", "consumers"]


async def test_hook_eeghub_startup_failure_names_the_plugin() -> None:
    def startup() -> None:
        raise RuntimeError("no licence")

    host, ctx, _ = make_host(licensed=plugin(eeghub_startup=startup))
    with pytest.raises(PluginError, match="licensed.*no licence"):
        await host.startup(ctx)


async def test_hook_eeghub_shutdown() -> None:
    calls: list[str] = []

    async def graceful() -> None:
        calls.append("b")

    def failing() -> None:
        calls.append("a")
        raise RuntimeError("ignored")

    host, ctx, _ = make_host(
        a=plugin(eeghub_shutdown=failing), b=plugin(eeghub_shutdown=lambda: graceful())
    )
    await host.shutdown(ctx)
    assert calls == ["a", "b"]  # a's failure does not stop b


async def test_hook_eeghub_health() -> None:
    async def slow(ctx: AppContext) -> PluginHealth:
        await asyncio.sleep(5)
        return PluginHealth()

    def broken() -> None:
        raise RuntimeError("sensor offline")

    host, ctx, broker = make_host(
        good=plugin(eeghub_health=lambda: PluginHealth(status="ok", detail={"streams": 3})),
        slow=plugin(eeghub_health=slow),
        broken=plugin(eeghub_health=broken),
        silent=plugin(eeghub_health=lambda: None),
    )
    import eeghub.core.system_routes as sr

    sr.CHECK_TIMEOUT, old = 0.2, sr.CHECK_TIMEOUT
    try:
        app = Litestar(route_handlers=system_routes(ctx), exception_handlers=EXCEPTION_HANDLERS)
        async with AsyncTestClient(app) as client:
            response = await client.get("/api/v1/health")
            body = response.json()
            assert response.status_code == 200 and body["status"] == "degraded"
            assert body["plugins"]["good"] == {"status": "ok", "detail": {"streams": 3}}
            assert body["plugins"]["silent"]["status"] == "ok"
            assert body["plugins"]["slow"]["status"] == "unhealthy"
            assert "sensor offline" in body["plugins"]["broken"]["error"]
            broker.up = False
            assert (await client.get("/health")).status_code == 503
            assert (await client.get("/api/v1/health")).json()["components"]["broker"]["status"] == "unhealthy"
    finally:
        sr.CHECK_TIMEOUT = old


async def test_hook_eeghub_analyses() -> None:
    spec = {"id": "alpha_power"}
    host, ctx, _ = make_host(lab=plugin(eeghub_analyses=lambda ctx: [spec]), other=plugin(eeghub_analyses=lambda: None))
    assert host.analyses(ctx) == [("lab", spec)]


def test_hook_eeghub_experiment_analyses() -> None:
    """The runner collects every plugin's experiment analyses by id, leaves
    out malformed ones and a second analysis with a taken id, and runs one
    on an experiment's data."""
    from eeghub.core.experiment_analysis import ExperimentAnalysisResult, ExperimentData
    from eeghub.plugins.erp import runner

    class TrialCount:
        id = "trial_count"
        display_name = "Trials per participant"
        description = "Counts each participant's trigger-corrected events."

        def run(self, data: ExperimentData) -> ExperimentAnalysisResult:
            counts = {p.user_id: sum(e.source == "trigger" for r in p.recordings for e in r.events) for p in data.participants()}
            return ExperimentAnalysisResult("ok", f"{len(counts)} participant(s)", {"counts": counts})

    host, ctx, _ = make_host(
        lab=plugin(eeghub_experiment_analyses=lambda ctx: [TrialCount(), types.SimpleNamespace(id="broken")]),
        copycat=plugin(eeghub_experiment_analyses=lambda: [TrialCount()]),
    )
    found = runner.analyses(ctx)
    assert list(found) == ["trial_count"]
    from eeghub.core.experiment_analysis import Event, Participant, Recording

    def load(user: str) -> Participant:
        events = [Event(10, "trigger", "target", None), Event(20, "logged", "target", None)]
        return Participant(user, [Recording("s", "calibration", 250.0, ["Pz"], ["eeg"], np.zeros((1, 100)), events)])

    result = found["trial_count"].run(ExperimentData("e", [], [], ["a", "b"], load))
    assert result.result == {"counts": {"a": 1, "b": 1}} and result.summary == "2 participant(s)"


def test_unknown_hook_fails_at_startup() -> None:
    with pytest.raises(PluginError, match="eeghub_rotues"):
        make_host(typo=plugin(eeghub_rotues=lambda ctx: []))


def test_call_each_runs_in_registration_order() -> None:
    host, ctx, _ = make_host(
        first=plugin(eeghub_analyses=lambda: ["1"]),
        second=plugin(eeghub_analyses=lambda: ["2"]),
    )
    assert [name for name, _ in host.call_each("eeghub_analyses", ctx=ctx)] == ["first", "second"]
