"""When the broker cannot confirm a packet, the client gets 503 with
Retry-After, never 202."""

from __future__ import annotations

import base64

from litestar import Litestar
from litestar.testing import AsyncTestClient

from eeghub.config import Settings
from eeghub.core.auth import Authenticator
from eeghub.core.context import AppContext
from eeghub.core.errors import BrokerUnavailable
from eeghub.core.host import PluginHost
from eeghub.core.http import EXCEPTION_HANDLERS
from eeghub.core.packet import compress_frame
from eeghub.core.ports import Message
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest.routes import post_data
from tests.fakes import FakeBroker, FakePing


class RefusingBroker(FakeBroker):
    async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
        raise BrokerUnavailable("no confirmation within 5 s")


async def test_unconfirmed_publish_is_503_with_retry_after() -> None:
    settings = Settings()
    ctx = AppContext(settings=settings, host=PluginHost(), auth=Authenticator(settings.auth))
    broker = RefusingBroker()
    ctx.attach(database=FakePing(), objects=FakePing(), broker=broker)  # type: ignore[arg-type]
    from litestar.di import Provide

    from eeghub.core.auth import provide_identity

    app = Litestar(
        route_handlers=[post_data],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies={"ctx": Provide(lambda: ctx, sync_to_thread=False), "identity": Provide(provide_identity, sync_to_thread=False)},
    )
    app.state.ctx = ctx
    device = SimulatedDevice(user_id="u", device_id="d")
    body = {**device.envelope(0, 1_750_000_000_000), "payload_base64": base64.b64encode(compress_frame(device.payload(0))).decode()}
    async with AsyncTestClient(app) as client:
        response = await client.post("/api/v1/data", json=body, headers={"X-User-Id": "u"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "broker" in response.json()["error"]
