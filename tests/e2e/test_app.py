"""The whole application through HTTP: real PostgreSQL, the filesystem object
store and the in-process broker (the S3 and RabbitMQ adapters have their own
contract suites; ``test_serve.py`` runs the real ``eeghub serve``)."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import get
from litestar.testing import AsyncTestClient

from eeghub.bootstrap import create_app
from eeghub.config import Settings, load_settings
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl
from eeghub.core.host import BUILTIN_PLUGINS
from eeghub.core.ports import Delivery

pytestmark = pytest.mark.postgres


def probe_plugin() -> types.SimpleNamespace:
    """A plugin with a route and a consumer, to watch what disabling does."""
    received: list[bytes] = []

    @get("/api/v1/probe", sync_to_thread=False)
    def probe() -> dict[str, bool]:
        return {"probe": True}

    async def handle(delivery: Delivery) -> None:
        received.append(delivery.message.body)

    return types.SimpleNamespace(
        received=received,
        eeghub_routes=hookimpl(lambda ctx: [probe]),
        eeghub_consumers=hookimpl(lambda ctx: [Consumer(queue="probe_queue", handler=handle)]),
    )


def settings_for(tmp_path: Path, database_url: str, **env: str) -> Settings:
    base = {"EEGHUB_SERVER__DATA_DIR": str(tmp_path), "EEGHUB_DATABASE__URL": database_url}
    return load_settings(env={**base, **env})


@pytest.fixture
async def client(tmp_path: Path, database_url: str) -> AsyncIterator[Any]:
    app = create_app(settings_for(tmp_path, database_url))
    async with AsyncTestClient(app) as c:
        yield c


async def test_health_plugins_and_schema(client: Any) -> None:
    response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}

    report = (await client.get("/api/v1/health")).json()
    assert report["status"] == "ok"
    assert {k: v["status"] for k, v in report["components"].items()} == {
        "database": "ok",
        "object_store": "ok",
        "broker": "ok",
    }
    assert report["components"]["object_store"]["backend"] == "filesystem"
    assert report["components"]["broker"]["backend"] == "inprocess"
    assert set(report["plugins"]) == set(BUILTIN_PLUGINS)
    assert report["uptime_seconds"] >= 0 and report["version"]

    plugins = (await client.get("/api/v1/plugins")).json()["plugins"]
    assert [p["name"] for p in plugins] == list(BUILTIN_PLUGINS)
    assert all(p["version"] and p["source"] == "builtin" for p in plugins)

    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/plugins" in schema.json()["paths"]


async def test_errors_are_json(client: Any) -> None:
    response = await client.get("/api/v1/does-not-exist")
    assert response.status_code == 404
    body = response.json()
    assert body["status_code"] == 404 and body["error"] and body["detail"] == body["error"]
    response = await client.post("/health")
    assert response.status_code == 405 and response.json()["status_code"] == 405


async def test_request_size_limit(tmp_path: Path, database_url: str) -> None:
    settings = settings_for(tmp_path, database_url, EEGHUB_SERVER__MAX_REQUEST_BODY_BYTES="1000")
    plugin = types.SimpleNamespace(
        eeghub_routes=hookimpl(lambda ctx: [_echo_length]),
    )
    app = create_app(settings, extra_plugins={"echo": plugin})
    async with AsyncTestClient(app) as c:
        assert (await c.post("/api/v1/echo", content=b"x" * 999)).json() == {"length": 999}
        response = await c.post("/api/v1/echo", content=b"x" * 5000)
        assert response.status_code == 413 and response.json()["status_code"] == 413


from litestar import Request, post  # noqa: E402


@post("/api/v1/echo")
async def _echo_length(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"length": len(await request.body())}


async def test_disabled_plugin_contributes_nothing(tmp_path: Path, database_url: str) -> None:
    enabled = probe_plugin()
    app = create_app(settings_for(tmp_path, database_url), extra_plugins={"probe": enabled})
    async with AsyncTestClient(app) as c:
        assert (await c.get("/api/v1/probe")).json() == {"probe": True}
        host = app.state.ctx.host
        assert host.consumers_of("probe") == 1 and host.consumers_of("stimulus") == 1
        assert "probe" in [p["name"] for p in (await c.get("/api/v1/plugins")).json()["plugins"]]

    disabled = probe_plugin()
    settings = settings_for(tmp_path, database_url, EEGHUB_PLUGINS__DISABLED="probe,analyzer,stimulus")
    app = create_app(settings, extra_plugins={"probe": disabled})
    async with AsyncTestClient(app) as c:
        assert (await c.get("/api/v1/probe")).status_code == 404
        assert (await c.get("/api/v1/calibrations", headers={"X-User-Id": "u"})).status_code == 404
        host = app.state.ctx.host
        assert host.consumers_of("probe") == host.consumers_of("stimulus") == host.consumers_of("analyzer") == 0
        assert host.consumers_of("ingest") == 2
        names = [p["name"] for p in (await c.get("/api/v1/plugins")).json()["plugins"]]
        assert "probe" not in names and "analyzer" not in names and "session" in names
        assert (await c.get("/api/v1/experiments", headers={"X-User-Id": "u"})).status_code == 200


async def test_enabled_list_selects_plugins(tmp_path: Path, database_url: str) -> None:
    settings = settings_for(tmp_path, database_url, EEGHUB_PLUGINS__ENABLED="session,ingest")
    async with AsyncTestClient(create_app(settings)) as c:
        names = [p["name"] for p in (await c.get("/api/v1/plugins")).json()["plugins"]]
        assert names == ["session", "ingest"]


def test_unknown_plugin_name_stops_start_up(tmp_path: Path) -> None:
    from eeghub.core.errors import PluginError

    settings = load_settings(env={"EEGHUB_PLUGINS__DISABLED": "analyser"})
    with pytest.raises(PluginError, match="analyser"):
        create_app(settings)
