"""Hostile inputs and slow or stalled peers (issue 16): each must be a clear
4xx or a bounded wait, never a 500, a hang or unbounded memory."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import user
from tests.e2e.test_api_fuzz_regressions import OWNER, PART, world

pytestmark = pytest.mark.postgres

DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_LIST = b"[" * 1000 + b"]" * 1000

# Every route that takes a JSON body (the OpenAPI document lists them; the
# test below checks this list is complete).
JSON_ROUTES = [
    ("POST", "/api/v1/experiments"),
    ("PUT", "/api/v1/experiments/{eid}"),
    ("PATCH", "/api/v1/experiments/{eid}"),
    ("POST", "/api/v1/auth/experiments/{eid}/join"),
    ("PUT", "/api/v1/auth/experiments/{eid}/participants/{part}"),
    ("POST", "/api/v1/auth/check"),
    ("POST", "/api/v1/data"),
    ("POST", "/api/v1/sessions/start"),
    ("POST", "/internal/v1/create-bids-for-analysis"),
]


async def test_deeply_nested_json_is_400_on_every_json_route(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_EXPORT__INTERNAL_API_ENABLED": "true", "EEGHUB_EXPORT__INTERNAL_TOKEN": "tok"}
    async with app_client(env) as (client, _):
        eid = await world(client)
        schema = (await client.get("/schema/openapi.json")).json()
        declared = {
            (method.upper(), path)
            for path, item in schema["paths"].items()
            for method, op in item.items()
            if "application/json" in op.get("requestBody", {}).get("content", {})
        }
        listed = {(m, p.replace("{eid}", "{experiment_id}").replace("{part}", "{user_id}")) for m, p in JSON_ROUTES}
        assert declared <= listed, declared - listed
        headers = {**user(OWNER), "content-type": "application/json", "x-internal-token": "tok"}
        for method, path in JSON_ROUTES:
            url = path.format(eid=eid, part=PART)
            for body in (DEEP, DEEP_LIST):
                r = await client.request(method, url, content=body, headers=headers)
                assert r.status_code == 400, (method, path, r.status_code, r.text)
                assert r.json()["status_code"] == 400 and r.json()["error"], r.text


async def test_internal_api_checks_its_token_before_the_body(app_client: Any, local_env: dict[str, str]) -> None:
    env = {**local_env, "EEGHUB_EXPORT__INTERNAL_API_ENABLED": "true", "EEGHUB_EXPORT__INTERNAL_TOKEN": "tok"}
    async with app_client(env) as (client, _):
        url = "/internal/v1/create-bids-for-analysis"
        for body in (DEEP, b"not json", b'{"unexpected": 1}'):
            r = await client.post(url, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, r.text
            r = await client.post(url, content=body, headers={"content-type": "application/json", "x-internal-token": "wrong"})
            assert r.status_code == 401, r.text
        r = await client.post(url, content=b"not json", headers={"content-type": "application/json", "x-internal-token": "tok"})
        assert r.status_code == 400, r.text
