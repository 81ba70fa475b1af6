"""The local administrator token: written 0600 at start, removed at stop,
accepted only from loopback and never through a proxy, and only the exact
token. (``tests/e2e/test_serve.py`` uses it from the CLI over real loopback.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eeghub.core.auth import LOCAL_ADMIN_HEADER, read_admin_token, remove_admin_token, write_admin_token

pytestmark = [pytest.mark.postgres]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_token_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    first = write_admin_token(tmp_path)
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
    second = write_admin_token(tmp_path)
    assert first != second and read_admin_token(tmp_path) == second and len(second) >= 40
    remove_admin_token(tmp_path, first)  # an older server's token: the newer file stays
    assert read_admin_token(tmp_path) == second
    remove_admin_token(tmp_path, second)
    assert read_admin_token(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == []


async def test_token_accepted_only_from_loopback(local_env: dict[str, str], tmp_path: Path) -> None:
    from litestar.testing import AsyncTestClient

    from eeghub.bootstrap import create_app
    from eeghub.config import load_settings

    app = create_app(load_settings(env=local_env))

    async def as_loopback(scope: Any, receive: Any, send: Any) -> None:
        """The test transport's client is "testclient"; this header makes it 127.0.0.1."""
        if scope["type"] == "http" and (b"x-test-loopback", b"1") in scope["headers"]:
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await app(scope, receive, send)

    loop = {"X-Test-Loopback": "1"}
    async with AsyncTestClient(as_loopback, timeout=60) as client:  # type: ignore[arg-type]
        token = read_admin_token(tmp_path)
        assert token is not None and app.state.ctx.services["admin_token"] == token

        async def post(headers: dict[str, str]) -> Any:
            return await client.post("/api/v1/calibrations", headers=headers,
                                     files={"file": ("cal.png", PNG, "image/png")}, data={"item_type": "target"})

        remote = await post({LOCAL_ADMIN_HEADER: token})
        assert remote.status_code == 403 and "loopback" in remote.json()["error"]
        local = await post({LOCAL_ADMIN_HEADER: token, **loop})
        assert local.status_code == 201, local.text
        assert local.json()["file_name"] == "cal.png" and local.json()["item_type"] == "target"
        proxied = await post({LOCAL_ADMIN_HEADER: token, "X-Forwarded-For": "203.0.113.9", **loop})
        assert proxied.status_code == 403
        wrong = await post({LOCAL_ADMIN_HEADER: token[:-1] + ("x" if token[-1] != "x" else "y"), **loop})
        assert wrong.status_code == 401
        # An ordinary user is told why not.
        denied = await post({"X-User-Id": "someone", **loop})
        assert denied.status_code == 403 and "auth.admin_users" in denied.json()["error"]
    assert read_admin_token(tmp_path) is None  # removed when the server stopped


async def test_no_token_when_switched_off(app_client: Any, local_env: dict[str, str], tmp_path: Path) -> None:
    async with app_client(local_env, EEGHUB_AUTH__LOCAL_ADMIN_TOKEN="false") as (client, _):
        assert read_admin_token(tmp_path) is None
        r = await client.post("/api/v1/calibrations", headers={LOCAL_ADMIN_HEADER: "anything"})
        assert r.status_code == 401 and "no local administrator token" in r.json()["error"]


async def test_dead_letters_through_the_admin_routes(app_client: Any, local_env: dict[str, str]) -> None:
    """What ``eeghub dlq`` asks a running server: counts, one queue's letters, replay."""
    from eeghub.core.ports import Message
    from tests.e2e.helpers import wait_for

    async with app_client(local_env, EEGHUB_AUTH__ADMIN_USERS="lab-admin") as (client, app):
        ctx = app.state.ctx
        queue = ctx.settings.broker.queues.data_linker_queue
        # A malformed linking job fails for good and is parked in the .dlq.
        await ctx.broker.publish(Message(body=b"not json", message_id="bad-job"), queue=queue)
        admin = {"X-User-Id": "lab-admin"}

        async def parked() -> Any:
            counts = (await client.get("/api/v1/admin/dlq", headers=admin)).json()["queues"]
            return next(c["dead_letters"] for c in counts if c["queue"] == queue) == 1

        await wait_for(parked, timeout=20)
        letters = (await client.get(f"/api/v1/admin/dlq/{queue}", headers=admin, params={"limit": 5})).json()
        assert [(le["message_id"], le["body_preview"]) for le in letters] == [("bad-job", "not json")]
        assert "malformed" in letters[0]["error"].lower() or letters[0]["error"]
        denied = await client.get("/api/v1/admin/dlq", headers={"X-User-Id": "someone"})
        assert denied.status_code == 403 and "not an administrator" in denied.json()["error"]
        unknown = await client.get("/api/v1/admin/dlq/no-such-queue", headers=admin)
        assert unknown.status_code == 404 and queue in unknown.json()["error"]
        replayed = await client.post(f"/api/v1/admin/dlq/{queue}/replay", headers=admin)
        assert replayed.status_code == 200 and replayed.json() == {"queue": queue, "replayed": 1}


async def test_a_token_claim_does_not_make_an_administrator(app_client: Any, local_env: dict[str, str]) -> None:
    """Only the local administrator token makes the local administrator: a
    bearer token whose claims say ``local_admin`` (a custom claim an identity
    provider may let users set) is an ordinary user."""
    from eeghub.config import load_settings
    from eeghub.core.auth import mint_token
    from tests.e2e.test_authorization import SECRET

    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET}
    settings = load_settings(env=env)
    forged = mint_token(settings.auth, "mallory", extra={"local_admin": True})
    async with app_client(env) as (client, _):
        headers = {"Authorization": f"Bearer {forged}"}
        for path in ("/api/v1/admin/queues", "/api/v1/admin/dlq", "/api/v1/admin/errors"):
            r = await client.get(path, headers=headers)
            assert r.status_code == 403, (path, r.status_code, r.text)
        me = await client.get("/api/v1/console/me", headers=headers)
        assert me.status_code == 200 and me.json()["administrator"] is False
        r = await client.post("/api/v1/calibrations", headers=headers,
                              files={"file": ("cal.png", PNG, "image/png")}, data={"item_type": "target"})
        assert r.status_code == 403
