"""The console's pages and its administrators' routes over HTTP (no browser):
every page and asset comes from this server and asks nothing of any other
(labs run offline), path values are escaped, and the operations routes answer
administrators only, with queue depths read from the real broker."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from eeghub.core.errors import PermanentFailure
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl
from tests.e2e.helpers import end_form, user, wait_for

pytestmark = [pytest.mark.postgres]

ADMIN = "ops-admin"
PAGES = [
    "/console/sign-in",
    "/console/experiments",
    "/console/experiments/6f1c1a8e-0000-4000-8000-000000000001",
    "/console/experiments/6f1c1a8e-0000-4000-8000-000000000001/sessions",
    "/console/experiments/6f1c1a8e-0000-4000-8000-000000000001/exports",
    "/console/experiments/6f1c1a8e-0000-4000-8000-000000000001/neuro-marketing",
    "/console/sessions/s-1",
    "/console/live",
    "/console/live/subj-01",
    "/console/calibrations",
    "/console/operations",
]
STATIC = Path(__file__).resolve().parents[2] / "plugins" / "console" / "static"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
EXTERNAL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}|\burl\(\s*['"]?(?:https?:)?//|@import""", re.IGNORECASE)


def external_references(text: str) -> list[str]:
    """URLs to other hosts (absolute or protocol-relative), CSS imports."""
    return [m.group(0) for m in EXTERNAL.finditer(text.replace(SVG_NAMESPACE, ""))]


def test_the_scanner_finds_external_references() -> None:
    assert external_references('<script src="https://cdn.example.org/htmx.js">') == ["https://cdn.example.org"]
    assert external_references('<link href="//fonts.googleapis.com/css">') == ["//fonts.googleapis.com"]
    assert external_references("body { background: url('//x.example.com/a.png') }")
    assert external_references(f'document.createElementNS("{SVG_NAMESPACE}", "svg")') == []


async def test_pages_and_assets_reference_nothing_outside_the_server(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        assets: set[str] = set()
        for path in PAGES:
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (path, r.status_code)
            assert external_references(r.text) == [], path
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
            # No inline script, style or event handler: the CSP forbids them anyway.
            assert "<script>" not in r.text and " style=" not in r.text and not re.search(r"<[^>]+\son[a-z]+=", r.text)
            assets.update(re.findall(r'(?:src|href)="(/console/static/[^"]+)"', r.text))
        assert {"/console/static/console.js", "/console/static/console.css"} <= assets
        for asset in sorted(assets | {f"/console/static/{p.name}" for p in STATIC.iterdir()}):
            r = await client.get(asset)
            assert r.status_code == 200, asset
            assert external_references(r.text) == [], asset
        assert (await client.get("/console", follow_redirects=False)).headers["location"] == "/console/experiments"
        # Path traversal out of the static folder is a 404.
        for bad in ("/console/static/../pages.py", "/console/static/%2e%2e/pages.py", "/console/static/..%2fpages.py"):
            assert (await client.get(bad)).status_code == 404, bad


async def test_path_values_are_escaped_into_the_page(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        r = await client.get('/console/live/"><img src=x onerror=alert(1)>')
        assert r.status_code == 200
        assert "<img src=x" not in r.text and 'data-user-id="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in r.text


async def test_operations_routes_are_for_administrators(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env, EEGHUB_AUTH__ADMIN_USERS=ADMIN) as (client, app):
        me = (await client.get("/api/v1/console/me", headers=user(ADMIN))).json()
        assert me == {"user_id": ADMIN, "auth_mode": "compat", "administrator": True}
        assert (await client.get("/api/v1/console/me", headers=user("bob"))).json()["administrator"] is False
        assert (await client.get("/api/v1/console/me")).status_code == 401
        for method, path in (("GET", "/api/v1/admin/queues"), ("GET", "/api/v1/admin/errors")):
            assert (await client.request(method, path)).status_code == 401, path
            r = await client.request(method, path, headers=user("bob"))
            assert r.status_code == 403 and "not an administrator" in r.json()["error"], path
        assert (await client.get("/api/v1/admin/errors?limit=0", headers=user(ADMIN))).status_code == 400
        # Recent errors: what the eeghub loggers logged at ERROR, newest first, without tracebacks.
        logging.getLogger("eeghub.test").error("first failure")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("eeghub.test").exception("second failure for %s", "s-9")
        logging.getLogger("eeghub.test").warning("only a warning")
        errors = (await client.get("/api/v1/admin/errors", headers=user(ADMIN))).json()["errors"]
        assert [(e["message"], e["exception"]) for e in errors[:2]] == [("second failure for s-9", "ValueError"), ("first failure", None)]
        assert all("Traceback" not in e["message"] for e in errors)
    # The handler leaves with the application.
    assert not any(type(h).__name__ == "RecentErrors" for h in logging.getLogger("eeghub").handlers)


class FailingLinker:
    """Stands in for the linker: every message it gets is a permanent failure."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    @hookimpl
    def eeghub_consumers(self, ctx: Any) -> list[Consumer]:
        async def handler(delivery: Any) -> None:
            self.seen.append(delivery.message.body)
            raise PermanentFailure("cannot link this")

        return [Consumer(queue=ctx.settings.broker.queues.data_linker_queue, handler=handler)]


@pytest.mark.rabbitmq
@pytest.mark.s3
async def test_queue_depths_and_the_dead_letters_the_console_shows(app_client: Any, services_env: dict[str, str]) -> None:
    """The operations page's queue table, and the host's dead-letter routes it
    calls (``/api/v1/admin/dlq``), on RabbitMQ."""
    failing = FailingLinker()
    env = {**services_env, "EEGHUB_PLUGINS__DISABLED": "linker"}
    async with app_client(env, extra_plugins={"failing_linker": failing}, EEGHUB_AUTH__ADMIN_USERS=ADMIN) as (client, app):
        queue = app.state.ctx.settings.broker.queues.data_linker_queue
        # Ending a session queues {"session_id"} for the linker.
        r = await client.post("/api/v1/sessions/start", headers=user("subj"), json={
            "session_id": "s-42", "user_id": "subj", "start_time": "2026-12-03T09:00:00Z", "session_type": "main_external"})
        assert r.status_code == 201, r.text
        metadata = {"session_id": "s-42", "user_id": "subj", "device_id": "d", "end_time": "2026-12-03T09:01:00Z"}
        assert (await client.post("/api/v1/sessions/end", headers=user("subj"), **end_form(metadata))).status_code == 200

        async def dead() -> Any:
            queues = (await client.get("/api/v1/admin/queues", headers=user(ADMIN))).json()["queues"]
            row = next(q for q in queues if q["queue"] == queue)
            return row if row["dead_letters"] == 1 else None

        row = await wait_for(dead, timeout=30)
        assert row["depth"] == 0
        letters = (await client.get(f"/api/v1/admin/dlq/{queue}", headers=user(ADMIN))).json()
        assert len(letters) == 1 and "cannot link this" in letters[0]["error"]
        assert '"s-42"' in letters[0]["body_preview"]
        # Listing does not consume: it is still there.
        assert (await dead()) is not None
        r = await client.post(f"/api/v1/admin/dlq/{queue}/replay", headers=user(ADMIN))
        assert r.status_code == 200 and r.json() == {"queue": queue, "replayed": 1}
        # Replayed to the consumer, which fails it again.
        await wait_for(lambda: _async(len(failing.seen) == 2), timeout=30)
        await wait_for(dead, timeout=30)

        # A dead-letter queue deleted behind eeghub's back is shown as
        # unavailable in the queue table, not a 500.
        export_queue = app.state.ctx.settings.broker.queues.export_queue
        connection = await aio_pika.connect(services_env["EEGHUB_BROKER__URL"])
        try:
            channel = await connection.channel()
            await channel.queue_delete(export_queue + ".dlq")
        finally:
            await connection.close()
        r = await client.get("/api/v1/admin/queues", headers=user(ADMIN))
        assert r.status_code == 200, r.text
        row = next(q for q in r.json()["queues"] if q["queue"] == export_queue)
        assert str(row["dead_letters"]).startswith("unavailable") and row["depth"] == 0, row


async def _async(value: Any) -> Any:
    return value
