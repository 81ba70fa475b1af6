"""The three identity modes over every route of the application.

The route list comes from the application's own route table, so a route
added later is covered without editing this file: in ``trusted-header`` and
``jwt`` every route but the public ones refuses a request without identity
(401), even one whose body, form or path names a user; in ``compat`` exactly
the predecessor's calls answer it. Then the signed download links of ``jwt``
mode (they open one file until they expire, nothing else), media uploads
into another user's session (refused in every mode), and a stray
``X-User-Id`` on the binary ``POST /api/v1/data`` in ``jwt`` mode (ignored).
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.routes import HTTPRoute

from eeghub.bootstrap import open_object_store
from eeghub.config import load_settings
from eeghub.core.auth import LinkSigner
from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import wait_for
from tests.e2e.test_authorization import SECRET
from tests.e2e.test_authorization import headers_for as strict_headers
from tests.e2e.test_export_hardening import query

pytestmark = pytest.mark.postgres

PUBLIC = {("GET", "/health"), ("GET", "/api/v1/health"), ("GET", "/api/v1/plugins"), ("GET", "/api/v1/analysis/plugins"),
          ("GET", "/metrics")}  # metrics: no identity by design (docs/operations.md)
INTERNAL_PREFIX = "/internal/"  # its own token (test_export_hardening)
COMPAT_CALLS = {
    ("POST", "/api/v1/auth/experiments/{experiment_id}/join"),
    ("POST", "/api/v1/data"),
    ("POST", "/api/v1/media"),
    ("GET", "/api/v1/users/{user_id}/analysis"),
    ("GET", "/api/v1/users/{user_id}/analysis/stream"),
    ("GET", "/api/v1/export-tasks/{task_id}"),
    ("GET", "/api/v1/export-tasks/{task_id}/download"),
}
"""The calls the predecessor answered without a header, and nothing else."""
OWNER, USER, OTHER = "owner-im", "user-im", "other-im"
ZIP = b"PK\x05\x06" + b"\x00" * 18
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))


def headers_for(mode: str, user: str) -> dict[str, str]:
    return strict_headers("trusted-header" if mode == "compat" else mode, user)


def routes(app: Any) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                if method not in ("HEAD", "OPTIONS") and (method, route.path_format) not in PUBLIC:
                    if not route.path_format.startswith(INTERNAL_PREFIX):
                        found.append((method, route.path_format))
    return sorted(found)


def packet_body(user: str, session_id: str | None = None) -> dict[str, Any]:
    device = SimulatedDevice(user_id=user, device_id="dev-im")
    return {**device.envelope(0, 1_764_000_000_000), "session_id": session_id,
            "payload_base64": base64.b64encode(compress_frame(device.payload(0))).decode()}


def media_form(user: str, session_id: str) -> dict[str, Any]:
    fields = {"user_id": user, "session_id": session_id, "mimetype": "image/png", "original_filename": "p.png",
              "timestamp_utc": "2026-12-03T05:20:00.123456Z"}
    return {"files": {**{k: (None, v) for k, v in fields.items()}, "file": ("p.png", PNG, "application/octet-stream")}}


class _Placeholders(dict):
    def __missing__(self, name: str) -> str:
        return str(uuid.UUID(int=0)) if name.endswith("_id") else "x"


class Study:
    """An experiment (owner OWNER, participant USER), a session of USER, a
    completed export task with its archive in the store, and two stimuli."""

    async def build(self, client: Any, env: dict[str, str], mode: str) -> Study:
        self.mode = mode
        owner = headers_for(mode, OWNER)
        r = await client.post("/api/v1/experiments", json={"name": "modes"}, headers=owner)
        assert r.status_code == 201, r.text
        self.eid = r.json()["experiment_id"]
        assert (await client.post(f"/api/v1/auth/experiments/{self.eid}/join", json={}, headers=headers_for(mode, USER))).status_code == 201
        self.sid = f"main_task-{uuid.uuid4().hex[:8]}"
        r = await client.post("/api/v1/sessions/start", headers=headers_for(mode, USER), json={
            "session_id": self.sid, "user_id": USER, "experiment_id": self.eid, "start_time": "2026-12-03T05:20:00Z",
            "session_type": "main_task"})
        assert r.status_code == 201, r.text
        files = [("stimuli_definition_csv", ("s.csv", b"file_name,trial_type\nchoco.png,target\nchips.png,other\n", "text/csv")),
                 ("stimulus_files", ("choco.png", PNG, "image/png")), ("stimulus_files", ("chips.png", PNG[::-1], "image/png"))]
        assert (await client.post(f"/api/v1/experiments/{self.eid}/stimuli", files=files, headers=owner)).status_code == 202
        # Two completed exports (the app's pool and store live in the test
        # client's event loop: the test opens its own).
        settings = load_settings(env=env)
        self.tasks = []
        async with open_object_store(settings) as (objects, _):
            for _ in range(2):
                task_id, key = uuid.uuid4(), f"exports/{uuid.uuid4().hex}.zip"
                await objects.put_bytes(settings.object_store.buckets.bids_exports, key, ZIP, content_type="application/zip")
                await query(env["EEGHUB_DATABASE__URL"],
                    """INSERT INTO export_tasks (task_id, experiment_id, status, progress, requested_by, stage, result_file_path)
                       VALUES ($1, $2, 'completed', 100, $3, 'done', $4)""", task_id, uuid.UUID(self.eid), OWNER, key)
                self.tasks.append(str(task_id))

        async def stored() -> bool:
            r = await client.get(f"/api/v1/experiments/{self.eid}/stimuli", headers=owner)
            return len(r.json()) == 2

        await wait_for(stored, timeout=30)
        return self

    def path(self, template: str) -> str:
        known = dict(experiment_id=self.eid, user_id=USER, session_id=self.sid, task_id=self.tasks[0],
                     job_id=uuid.uuid4(), filename="choco.png")
        # A parameter this study has no value for (a queue, an analysis kind,
        # an id of a route added later) gets a well-formed placeholder: the
        # identity check comes before the handler looks it up.
        return template.format_map(_Placeholders(known))

    def request(self, method: str, template: str) -> dict[str, Any]:
        """A request that names USER wherever the route reads a user, and
        that the route accepts from USER (or from anyone holding the id)."""
        if template == "/api/v1/data":
            return {"json": packet_body(USER)}
        if template == "/api/v1/media":
            return media_form(USER, self.sid)
        if method in ("POST", "PUT", "PATCH"):
            return {"json": {"user_id": USER}}
        return {}


@pytest.mark.parametrize("mode", ["compat", "trusted-header", "jwt"])
async def test_every_route_without_identity(mode: str, app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": mode, "EEGHUB_AUTH__JWT_SECRET": SECRET}
    failures = []
    async with app_client(env) as (client, app):
        table = routes(app)
        assert len(table) > 30 and COMPAT_CALLS <= set(table)
        study = await Study().build(client, env, mode)
        for method, template in table:
            if template.endswith("/analysis/stream") and mode == "compat":
                continue  # answered: an endless stream (test_analyzer_flow reads it through a real server)
            # (an SSE stream opened where it must not be never ends: pytest-timeout fails the test)
            response = await client.request(method, study.path(template), **study.request(method, template))
            answered = mode == "compat" and (method, template) in COMPAT_CALLS
            if answered and response.status_code in (401, 403):
                failures.append(f"{mode} {method} {template}: the predecessor's call was refused: {response.status_code} {response.text[:120]}")
            if not answered and response.status_code != 401:
                failures.append(f"{mode} {method} {template}: expected 401, got {response.status_code} {response.text[:120]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("mode", ["compat", "trusted-header"])
async def test_a_header_that_differs_from_the_named_user_is_403(mode: str, app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": mode}
    async with app_client(env) as (client, app):
        study = await Study().build(client, env, mode)
        other = {"X-User-Id": OTHER}
        r = await client.post(f"/api/v1/auth/experiments/{study.eid}/join", json={"user_id": USER}, headers=other)
        assert r.status_code == 403, r.text
        assert (await client.post("/api/v1/data", json=packet_body(USER), headers=other)).status_code == 403
        assert (await client.post("/api/v1/media", headers=other, **media_form(USER, study.sid))).status_code == 403
        assert (await client.get(f"/api/v1/users/{USER}/analysis", headers=other)).status_code == 403
        # a task id alone does not make a stranger with a header an owner
        assert (await client.get(f"/api/v1/export-tasks/{study.tasks[0]}/download", headers=other)).status_code == 403


@pytest.mark.parametrize("mode", ["compat", "trusted-header", "jwt"])
async def test_media_into_another_users_session_is_refused(mode: str, app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": mode, "EEGHUB_AUTH__JWT_SECRET": SECRET}
    async with app_client(env) as (client, app):
        study = await Study().build(client, env, mode)
        r = await client.post("/api/v1/media", headers=headers_for(mode, OTHER), **media_form(OTHER, study.sid))
        assert r.status_code == 403 and "another user" in r.json()["error"], r.text
        if mode == "compat":  # naming oneself in the form without a header changes nothing
            r = await client.post("/api/v1/media", **media_form(OTHER, study.sid))
            assert r.status_code == 403, r.text
        r = await client.post("/api/v1/media", headers=headers_for(mode, USER), **media_form(USER, study.sid))
        assert r.status_code == 202, r.text

        async def registered() -> Any:
            return await query(env["EEGHUB_DATABASE__URL"], "SELECT user_id FROM images WHERE session_id = $1", study.sid)

        assert [r["user_id"] for r in await wait_for(registered)] == [USER]  # never the stranger's file


async def test_jwt_signed_links(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET}
    signer = LinkSigner(load_settings(env=env).auth)
    async with app_client(env) as (client, app):
        study = await Study().build(client, env, "jwt")
        owner, user = headers_for("jwt", OWNER), headers_for("jwt", USER)
        task_a, task_b = study.tasks
        status = (await client.get(f"/api/v1/export-tasks/{task_a}", headers=owner)).json()
        link = status["download_url"]
        parts = urlsplit(link)
        query = parse_qs(parts.query)
        assert parts.path == f"/api/v1/export-tasks/{task_a}/download" and set(query) == {"expires", "signature"}
        assert 0 < int(query["expires"][0]) - time.time() <= 300
        # the link opens the archive without a token, in a browser
        r = await client.get(link)
        assert r.status_code == 200 and r.content == ZIP
        # ... and nothing else
        refused = {
            "the link on another task": link.replace(task_a, task_b),
            "the bare path": parts.path,
            "a forged signature": link[:-4] + ("0000" if not link.endswith("0000") else "1111"),
            "a later expiry": link.replace(f"expires={query['expires'][0]}", f"expires={int(query['expires'][0]) + 3600}"),
            "an expired link": signer.sign(parts.path, now=time.time() - 3600),
            "the link on the task status": f"/api/v1/export-tasks/{task_a}?{parts.query}",
            "the link on the task list": f"/api/v1/export-tasks?{parts.query}",
        }
        for what, url in refused.items():
            r = await client.get(url)
            assert r.status_code == 401, (what, r.status_code, r.text)
        # a link signed now, as the server does, works; the server's key is the test's
        assert (await client.get(signer.sign(f"/api/v1/export-tasks/{task_b}/download"))).status_code == 200

        # stimuli and calibration items: the list carries the links
        stimuli = {s["file_name"]: s["download_url"] for s in (await client.get(f"/api/v1/experiments/{study.eid}/stimuli", headers=user)).json()}
        r = await client.get(stimuli["choco.png"])
        assert r.status_code == 200 and r.content == PNG
        choco = urlsplit(stimuli["choco.png"])
        assert (await client.get(f"{choco.path.replace('choco.png', 'chips.png')}?{choco.query}")).status_code == 401
        assert (await client.get(choco.path.replace(study.eid, str(uuid.uuid4())) + "?" + choco.query)).status_code == 401
        assert (await client.get(choco.path)).status_code == 401
        # a participant sees the tasks, but gets no signed link: the archive
        # holds every participant's recordings and is the owners' to download
        listed = (await client.get(f"/api/v1/export-tasks?experiment_id={study.eid}", headers=user)).json()
        one = (await client.get(f"/api/v1/export-tasks/{task_a}", headers=user)).json()
        for task in (*listed, one):
            url = task["download_url"]
            assert url is None or "signature=" not in url, task
            if url is not None:
                assert (await client.get(url)).status_code == 401
                assert (await client.get(url, headers=user)).status_code == 403
        # the plain header modes keep plain paths
    async with app_client(local_env, EEGHUB_AUTH__MODE="trusted-header") as (client, app):
        study = await Study().build(client, {**local_env, "EEGHUB_AUTH__MODE": "trusted-header"}, "trusted-header")
        status = (await client.get(f"/api/v1/export-tasks/{study.tasks[0]}", headers={"X-User-Id": OWNER})).json()
        assert status["download_url"] == f"/api/v1/export-tasks/{study.tasks[0]}/download"


async def test_jwt_ignores_a_stray_user_header_on_binary_data(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET}
    device = SimulatedDevice(user_id=USER, device_id="dev-bin")
    envelope = device.envelope(0, 1_764_000_000_000)
    query = {k: str(v) for k, v in envelope.items() if k != "user_id" and v is not None}
    frame = compress_frame(device.payload(0))
    async with app_client(env) as (client, _):
        headers = {**headers_for("jwt", USER), "Content-Type": "application/octet-stream"}
        r = await client.post("/api/v1/data", params=query, content=frame, headers={**headers, "X-User-Id": "someone-else"})
        assert r.status_code == 202, r.text
        # the token's user is the envelope's user; a different one in the query is still a 403
        r = await client.post("/api/v1/data", params={**query, "user_id": "someone-else"}, content=frame, headers=headers)
        assert r.status_code == 403, r.text
        r = await client.post("/api/v1/data", params=query, content=frame, headers={"X-User-Id": USER, "Content-Type": "application/octet-stream"})
        assert r.status_code == 401, r.text


async def test_compat_binary_data_names_its_user_in_the_query(app_client: Any, local_env: dict[str, str]) -> None:
    device = SimulatedDevice(user_id=USER, device_id="dev-bin")
    query = {k: str(v) for k, v in device.envelope(0, 1_764_000_000_000).items() if v is not None}
    frame = compress_frame(device.payload(0))
    async with app_client(local_env) as (client, _):
        octet = {"Content-Type": "application/octet-stream"}
        assert (await client.post("/api/v1/data", params=query, content=frame, headers=octet)).status_code == 202
        no_user = {k: v for k, v in query.items() if k != "user_id"}
        r = await client.post("/api/v1/data", params=no_user, content=frame, headers=octet)
        assert r.status_code == 400 and "user_id" in r.text, r.text


@pytest.mark.parametrize("mode", ["trusted-header", "jwt"])
async def test_download_urls_of_awkward_file_names_open(mode: str, app_client: Any, local_env: dict[str, str]) -> None:
    """A file name may hold a space, ``#`` or ``?``: the listed
    ``download_url`` is a URL (percent-encoded) that opens that file, in the
    header modes as in ``jwt``."""
    env = {**local_env, "EEGHUB_AUTH__MODE": mode, "EEGHUB_AUTH__JWT_SECRET": SECRET}
    name = "a b#1?x=y.png"
    async with app_client(env) as (client, _):
        owner = headers_for(mode, OWNER)
        r = await client.post("/api/v1/experiments", json={"name": "names"}, headers=owner)
        eid = r.json()["experiment_id"]
        files = [("stimuli_definition_csv", ("s.csv", f"file_name,trial_type\n{name},target\n".encode(), "text/csv")),
                 ("stimulus_files", (name, PNG, "image/png"))]
        assert (await client.post(f"/api/v1/experiments/{eid}/stimuli", files=files, headers=owner)).status_code == 202

        async def listed() -> Any:
            rows = (await client.get(f"/api/v1/experiments/{eid}/stimuli", headers=owner)).json()
            return rows or None

        (stimulus,) = await wait_for(listed, timeout=30)
        url = stimulus["download_url"]
        assert "#" not in url and " " not in url, url
        r = await client.get(url, headers=owner if mode != "jwt" else {})
        assert r.status_code == 200 and r.content == PNG, (url, r.status_code, r.text[:200])
