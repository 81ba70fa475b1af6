"""Authorization matrix: every route of the session and stimulus plugins as
anonymous, stranger, participant and owner, in both identity modes, with the
exact status each must get. Each cell runs against a fresh experiment."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest

from eeghub.config import load_settings
from eeghub.core.auth import mint_token

pytestmark = pytest.mark.postgres

SECRET = "a-test-secret-that-is-long-enough-1234567890"
ROLES = ("anonymous", "stranger", "participant", "owner")
START = "2025-06-01T10:00:00Z"


def headers_for(mode: str, user: str | None) -> dict[str, str]:
    if user is None:
        return {}
    if mode == "trusted-header":
        return {"X-User-Id": user}
    settings = load_settings(env={"EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET})
    return {"Authorization": f"Bearer {mint_token(settings.auth, user)}"}


class World:
    """A fresh experiment with an owner, a participant and a stranger."""

    def __init__(self, client: Any, mode: str) -> None:
        self.client, self.mode = client, mode
        tag = uuid.uuid4().hex[:8]
        self.users = {"owner": f"owner-{tag}", "participant": f"part-{tag}", "stranger": f"stranger-{tag}", "anonymous": None}
        self.eid = ""

    def h(self, role: str) -> dict[str, str]:
        return headers_for(self.mode, self.users[role])

    async def build(self) -> World:
        r = await self.client.post("/api/v1/experiments", json={"name": "m"}, headers=self.h("owner"))
        assert r.status_code == 201, r.text
        self.eid = r.json()["experiment_id"]
        r = await self.client.post(f"/api/v1/auth/experiments/{self.eid}/join", json={}, headers=self.h("participant"))
        assert r.status_code == 201, r.text
        r = await self.client.post(
            "/api/v1/sessions/start",
            json={"session_id": f"s-{self.users['participant']}", "user_id": self.users["participant"],
                  "experiment_id": self.eid, "start_time": START, "session_type": "main_task"},
            headers=self.h("participant"),
        )
        assert r.status_code == 201, r.text
        return self


def stimuli_files() -> list[Any]:
    return [
        ("stimuli_definition_csv", ("s.csv", b"file_name,trial_type\na.png,target\n", "text/csv")),
        ("stimulus_files", ("a.png", b"\x89PNG....", "image/png")),
    ]


def end_files(w: World, role: str) -> dict[str, Any]:
    caller = w.users[role] or "nobody"
    meta = {"session_id": f"s-{w.users['participant']}", "user_id": caller, "device_id": "d", "end_time": "2025-06-01T10:05:00Z"}
    return {"metadata": (None, json.dumps(meta))}


# (name, method, path template, request kwargs factory, expected statuses by role)
CASES: list[tuple[str, str, str, Any, tuple[int, int, int, int]]] = [
    ("create experiment", "POST", "/api/v1/experiments", lambda w, r: {"json": {"name": "x"}}, (401, 201, 201, 201)),
    ("list experiments", "GET", "/api/v1/experiments", None, (401, 200, 200, 200)),
    ("get experiment", "GET", "/api/v1/experiments/{eid}", None, (401, 403, 200, 200)),
    ("patch experiment", "PATCH", "/api/v1/experiments/{eid}", lambda w, r: {"json": {"name": "y"}}, (401, 403, 403, 200)),
    ("put experiment", "PUT", "/api/v1/experiments/{eid}", lambda w, r: {"json": {"name": "y"}}, (401, 403, 403, 200)),
    ("delete experiment", "DELETE", "/api/v1/experiments/{eid}", None, (401, 403, 403, 200)),
    ("join", "POST", "/api/v1/auth/experiments/{eid}/join", lambda w, r: {"json": {}}, (401, 201, 201, 201)),
    ("list participants", "GET", "/api/v1/auth/experiments/{eid}/participants", None, (401, 403, 403, 200)),
    ("change role", "PUT", "/api/v1/auth/experiments/{eid}/participants/{participant}", lambda w, r: {"json": {"role": "owner"}}, (401, 403, 403, 200)),
    ("remove participant", "DELETE", "/api/v1/auth/experiments/{eid}/participants/{participant}", None, (401, 403, 200, 200)),
    ("auth check", "POST", "/api/v1/auth/check", lambda w, r: {"json": {"user_id": w.users[r] or "x", "experiment_id": w.eid, "required_role": "participant"}}, (401, 200, 200, 200)),
    ("start session", "POST", "/api/v1/sessions/start", lambda w, r: {"json": {"session_id": f"n-{uuid.uuid4().hex}", "user_id": w.users[r] or "x", "experiment_id": w.eid, "start_time": START, "session_type": "calibration"}}, (401, 403, 201, 201)),
    ("end session", "POST", "/api/v1/sessions/end", lambda w, r: {"files": end_files(w, r)}, (401, 403, 200, 403)),
    ("get session", "GET", "/api/v1/sessions/s-{participant}", None, (401, 403, 200, 200)),
    ("list sessions", "GET", "/api/v1/experiments/{eid}/sessions", None, (401, 403, 403, 200)),
    ("upload stimuli", "POST", "/api/v1/experiments/{eid}/stimuli", lambda w, r: {"files": stimuli_files()}, (401, 403, 403, 202)),
    ("list stimuli", "GET", "/api/v1/experiments/{eid}/stimuli", None, (401, 403, 200, 200)),
    ("stimulus job", "GET", "/api/v1/experiments/{eid}/stimuli/jobs/" + str(uuid.UUID(int=1)), None, (401, 403, 403, 404)),
    ("download stimulus", "GET", "/api/v1/stimuli/{eid}/download/none.png", None, (401, 403, 404, 404)),
    ("list calibrations", "GET", "/api/v1/calibrations", None, (401, 200, 200, 200)),
    ("download calibration", "GET", "/api/v1/stimuli/calibration/download/none.png", None, (401, 404, 404, 404)),
    ("add calibration", "POST", "/api/v1/calibrations", lambda w, r: {"files": {"file": ("c.png", b"x", "image/png"), "item_type": (None, "target")}}, (401, 403, 403, 403)),
    ("health", "GET", "/health", None, (200, 200, 200, 200)),
    ("plugins", "GET", "/api/v1/plugins", None, (200, 200, 200, 200)),
]


@pytest.mark.parametrize("mode", ["trusted-header", "jwt"])
async def test_authorization_matrix(mode: str, app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": mode, "EEGHUB_AUTH__JWT_SECRET": SECRET}
    failures: list[str] = []
    async with app_client(env) as (client, _):
        for name, method, template, kwargs_for, expected in CASES:
            for role, status in zip(ROLES, expected, strict=True):
                world = await World(client, mode).build()
                path = template.format(eid=world.eid, participant=world.users["participant"])
                kwargs = kwargs_for(world, role) if kwargs_for else {}
                response = await client.request(method, path, headers=world.h(role), **kwargs)
                if response.status_code != status:
                    failures.append(f"{name} as {role}: expected {status}, got {response.status_code} {response.text[:120]}")
                elif status >= 400:
                    body = response.json()
                    if body.get("status_code") != status or not body.get("error"):
                        failures.append(f"{name} as {role}: error body is not the JSON convention: {body}")
    assert not failures, "\n".join(failures)


async def test_jwt_mode_ignores_the_trusted_header_and_checks_tokens(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": SECRET}
    now = int(time.time())
    expired = jwt.encode({"sub": "alice", "iat": now - 7200, "exp": now - 3600}, SECRET, algorithm="HS256")
    forged = jwt.encode({"sub": "alice", "exp": now + 600}, "another-secret-another-secret-0000", algorithm="HS256")
    no_exp = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    async with app_client(env) as (client, _):
        assert (await client.get("/api/v1/experiments", headers={"X-User-Id": "alice"})).status_code == 401
        for token, needle in ((expired, "expired"), (forged, "invalid token"), (no_exp, "invalid token"), ("garbage", "invalid token")):
            response = await client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401 and needle in response.json()["error"]
        assert (await client.get("/api/v1/experiments", headers={"Authorization": "Basic abc"})).status_code == 401
        ok = await client.get("/api/v1/experiments", headers=headers_for("jwt", "alice"))
        assert ok.status_code == 200 and ok.json() == []


async def test_rs256_with_a_public_key_file(app_client: Any, local_env: dict[str, str], tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(public)
    env = {**local_env, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_PUBLIC_KEY_FILE": str(tmp_path / "pub.pem"),
           "EEGHUB_AUTH__JWT_ALGORITHMS": "RS256"}
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 600}, key, algorithm="RS256")
    hs_token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    async with app_client(env) as (client, _):
        assert (await client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (await client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {hs_token}"})).status_code == 401
