"""The ingest route's ASGI fast path answers exactly as the Litestar route:
the same status, body and headers for every accepted and refused request,
and it really bypasses Litestar for an ordinary JSON packet."""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.testing import AsyncTestClient

from eeghub.config import Settings
from eeghub.core.auth import Authenticator, provide_identity
from eeghub.core.context import AppContext
from eeghub.core.errors import BrokerUnavailable
from eeghub.core.host import PluginHost
from eeghub.core.http import EXCEPTION_HANDLERS
from eeghub.core.metrics import Metrics, observability_middleware
from eeghub.core.packet import compress_frame
from eeghub.core.ports import Message
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest.routes import DATA_PATH, fast_path, post_data
from tests.fakes import FakeBroker, FakePing


class Broker(FakeBroker):
    refuse = False

    async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
        if self.refuse:
            raise BrokerUnavailable("no confirmation within 5 s")
        await super().publish(message, queue=queue, exchange=exchange)


def make_app(*, fast: bool, broker: Broker, max_body: int = 1024 * 1024) -> tuple[Litestar, list[str]]:
    """The route as bootstrap serves it (with or without the fast path), and
    the paths of the requests that reached Litestar's own handler."""
    settings = Settings()
    ctx = AppContext(settings=settings, host=PluginHost(), auth=Authenticator(settings.auth))
    ctx.attach(database=FakePing(), objects=FakePing(), broker=broker)  # type: ignore[arg-type]
    metrics = ctx.services["metrics"] = Metrics()
    app = Litestar(
        route_handlers=[post_data],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies={"ctx": Provide(lambda: ctx, sync_to_thread=False), "identity": Provide(provide_identity, sync_to_thread=False)},
        request_max_body_size=max_body,
    )
    app.state.ctx = ctx
    reached: list[str] = []
    litestar_handler = app.asgi_handler

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await litestar_handler(scope, receive, send)

    observed = observability_middleware(metrics)(counted)  # as app/bootstrap.py wires them
    app.asgi_handler = post_data.opt["asgi_fast_path"](app, observed) if fast else observed
    return app, reached


def packet(device: SimulatedDevice, index: int, **overrides: Any) -> dict[str, Any]:
    frame = compress_frame(device.payload(index))
    return {**device.envelope(index, 1_750_000_000_000), "payload_base64": base64.b64encode(frame).decode(), **overrides}


def cases() -> list[tuple[str, dict[str, Any]]]:
    """(name, keyword arguments of ``client.post``) for each request."""
    d = SimulatedDevice(user_id="u", device_id="d")
    good = packet(d, 0)
    raw = compress_frame(d.payload(1))
    return [
        ("accepted", {"json": good, "headers": {"X-User-Id": "u"}}),
        ("request id", {"json": packet(d, 6), "headers": {"X-User-Id": "u", "X-Request-Id": "lab-42"}}),
        ("request id refused", {"json": {**packet(d, 7), "user_id": "v"}, "headers": {"X-User-Id": "u", "X-Request-Id": "lab-43"}}),
        ("charset", {"content": json.dumps(packet(d, 2)), "headers": {"X-User-Id": "u", "Content-Type": "application/json; charset=utf-8"}}),
        ("not base64", {"json": {**good, "payload_base64": "!!!"}, "headers": {"X-User-Id": "u"}}),
        ("not json", {"content": b"{nope", "headers": {"X-User-Id": "u", "Content-Type": "application/json"}}),
        ("unknown field", {"json": {**good, "extra": 1}, "headers": {"X-User-Id": "u"}}),
        ("other user", {"json": {**good, "user_id": "v"}, "headers": {"X-User-Id": "u"}}),
        ("no identity", {"json": packet(d, 5), "headers": {}}),  # compat mode: the envelope's user
        ("garbage frame", {"json": {**good, "payload_base64": base64.b64encode(b"garbage").decode()}, "headers": {"X-User-Id": "u"}}),
        ("too many samples", {"json": {**packet(d, 3), "sampling_rate": 10.0}, "headers": {"X-User-Id": "u"}}),
        ("body too large", {"content": b"{" + b" " * 2_000_000 + b"}", "headers": {"X-User-Id": "u", "Content-Type": "application/json"}}),
        (
            "octet-stream",
            {
                "content": raw,
                "headers": {
                    "X-User-Id": "u",
                    "Content-Type": "application/octet-stream",
                    **{f"X-{k.replace('_', '-')}": str(v) for k, v in d.envelope(1, 1_750_000_000_000).items() if k != "user_id" and v is not None},
                },
            },
        ),
        ("cors origin", {"json": packet(d, 4), "headers": {"X-User-Id": "u", "Origin": "http://example.org"}}),
    ]


async def answers(*, fast: bool, refuse: bool = False) -> tuple[dict[str, tuple[int, bytes, dict[str, str]]], list[str], Broker]:
    broker = Broker()
    broker.refuse = refuse
    app, reached = make_app(fast=fast, broker=broker)
    out: dict[str, tuple[int, bytes, dict[str, str]]] = {}
    async with AsyncTestClient(app) as client:
        for name, kwargs in cases():
            response = await client.post(DATA_PATH, **kwargs)
            headers = {k: v for k, v in response.headers.items() if k not in ("date", "server", "x-request-id")}
            # Every answer has a request id: the caller's when it sent a good one.
            assert response.headers["x-request-id"] == kwargs["headers"].get("X-Request-Id", response.headers["x-request-id"])
            out[name] = (response.status_code, response.content, headers)
            out[name + " metrics"] = counted_requests(app)  # type: ignore[assignment]
    return out, reached, broker


def counted_requests(app: Litestar) -> tuple[tuple[str, str, str, float], ...]:
    """The request counter's samples so far (method, route, status, count)."""
    metrics: Metrics = app.state.ctx.services["metrics"]
    return tuple(
        sorted(
            (sample.labels["method"], sample.labels["route"], sample.labels["status"], sample.value)
            for family in metrics.requests.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
    )


async def test_fast_path_answers_every_request_as_the_route_does() -> None:
    slow, slow_reached, slow_broker = await answers(fast=False)
    quick, quick_reached, quick_broker = await answers(fast=True)
    assert slow["accepted"][0] == 202 and slow["charset"][0] == 202 and slow["octet-stream"][0] == 202
    assert {slow[name][0] for name in ("not base64", "not json", "unknown field", "garbage frame", "too many samples")} == {400}
    assert (slow["other user"][0], slow["no identity"][0], slow["body too large"][0]) == (403, 202, 413)
    for name in slow:
        assert quick[name] == slow[name], name
    # Every accepted packet was published either way, and nothing else.
    assert len(quick_broker.published) == len(slow_broker.published) == 6
    # The ordinary JSON packets never reached Litestar's handler; the refusals
    # (answered by the route) and the other forms did.
    assert len(slow_reached) == len(cases())
    assert len(quick_reached) == len(cases()) - 4
    # Counted alike, request by request (the fast path's own RequestRecorder).
    assert ("POST", "/api/v1/data", "202", 5.0) in slow["octet-stream metrics"]


async def test_a_broker_refusal_is_the_route_503() -> None:
    slow, _, _ = await answers(fast=False, refuse=True)
    quick, quick_reached, _ = await answers(fast=True, refuse=True)
    assert slow["accepted"][0] == 503 and slow["accepted"][2]["retry-after"] == "5"
    assert quick["accepted"] == slow["accepted"]
    assert len(quick_reached) == len(cases())  # the refusal was answered by the route
