"""The OpenAPI schema declares what the routes really answer: the error
statuses with the shared error body, and UUID parameters as UUIDs. Generated
clients and schemathesis's conformance checks read it.

Building the schema connects to nothing, so this needs no services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from eeghub.bootstrap import create_app
from eeghub.config import load_settings
from eeghub.core.auth import require_user

ERROR_REF = "#/components/schemas/ErrorBody"
UUID_PARAMETERS = {"experiment_id", "job_id", "task_id"}
ROLE_GUARDS = {"require_owner", "require_participant"}

NOT_AN_ERROR_BODY = {
    ("GET", "/health", "503"),
    ("GET", "/api/v1/health", "503"),
}
"""Health answers 503 with its own report, not the error body."""

UNKNOWN_IS_NOT_404 = {
    ("GET", "/api/v1/users/{user_id}/analysis"),
    ("GET", "/api/v1/users/{user_id}/analysis/stream"),
}
"""Analysis of a user nobody knows is a 403 for others and an empty 202/stream
for the user themself: there is nothing to look up, so never a 404."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    data_dir: Path = tmp_path_factory.mktemp("openapi")
    return create_app(load_settings(env={"EEGHUB_SERVER__DATA_DIR": str(data_dir)}))


@pytest.fixture(scope="module")
def schema(app: Litestar) -> dict[str, Any]:
    return app.openapi_schema.to_schema()


def operations(app: Litestar) -> list[tuple[str, str, Any]]:
    """(method, OpenAPI path, handler) of every route in the schema."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                if method not in ("HEAD", "OPTIONS"):
                    found.append((method, route.path_format, handler))
    return found


def operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return schema["paths"][path][method.lower()]  # type: ignore[no-any-return]


def is_guarded(handler: Any) -> bool:
    return any(g is require_user or getattr(g, "__name__", "") in ROLE_GUARDS for g in handler.resolve_guards())


def test_the_schema_lists_every_route(app: Litestar, schema: dict[str, Any]) -> None:
    ops = operations(app)
    assert len(ops) > 30
    for method, path, _ in ops:
        assert method.lower() in schema["paths"][path], (method, path)


PUBLIC = {
    ("GET", "/health"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/plugins"),
    ("GET", "/api/v1/analysis/plugins"),
    ("GET", "/metrics"),
}
"""Routes anyone may call; every other route needs an identity (a guard, or
its handler takes the caller from the request: ``claimed_identity``)."""


def test_every_route_but_the_public_ones_declares_401(app: Litestar, schema: dict[str, Any]) -> None:
    ops = operations(app)
    assert len([h for _, _, h in ops if is_guarded(h)]) > 20
    missing = [(m, p) for m, p, _ in ops if (m, p) not in PUBLIC and "401" not in operation(schema, m, p)["responses"]]
    assert missing == []


def test_role_guarded_routes_declare_403_and_404(app: Litestar, schema: dict[str, Any]) -> None:
    for method, path, handler in operations(app):
        if any(getattr(g, "__name__", "") in ROLE_GUARDS for g in handler.resolve_guards()):
            responses = operation(schema, method, path)["responses"]
            assert {"400", "403", "404"} <= set(responses), (method, path)


def test_routes_with_path_parameters_declare_404(app: Litestar, schema: dict[str, Any]) -> None:
    missing = []
    for method, path, _ in operations(app):
        op = operation(schema, method, path)
        has_path_parameter = any(p["in"] == "path" for p in op.get("parameters", []))
        if has_path_parameter and (method, path) not in UNKNOWN_IS_NOT_404 and "404" not in op["responses"]:
            missing.append((method, path))
    assert missing == []


def test_error_responses_use_the_error_body(app: Litestar, schema: dict[str, Any]) -> None:
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "detail", "status_code"}
    wrong = []
    for method, path, _ in operations(app):
        for status, response in operation(schema, method, path)["responses"].items():
            if int(status) < 400 or (method, path, status) in NOT_AN_ERROR_BODY:
                continue
            ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
            if ref != ERROR_REF:
                wrong.append((method, path, status, ref))
    assert wrong == []


def test_statuses_the_routes_raise_are_declared(schema: dict[str, Any]) -> None:
    expect = {
        ("PUT", "/api/v1/auth/experiments/{experiment_id}/participants/{user_id}"): {"409"},
        ("DELETE", "/api/v1/auth/experiments/{experiment_id}/participants/{user_id}"): {"409"},
        ("POST", "/api/v1/sessions/start"): {"409", "413"},
        ("POST", "/api/v1/media"): {"413", "415", "503"},
        ("POST", "/api/v1/data"): {"413", "503"},
        ("GET", "/api/v1/stimuli/{experiment_id}/download/{filename}"): {"416"},
        ("GET", "/api/v1/stimuli/calibration/download/{filename}"): {"416"},
        ("GET", "/api/v1/export-tasks/{task_id}/download"): {"416"},
        ("GET", "/api/v1/users/{user_id}/analysis"): {"202", "403"},
        ("POST", "/internal/v1/create-bids-for-analysis"): {"401", "403", "404"},
        ("POST", "/api/v1/neuro-marketing/experiments/{experiment_id}/analyze"): {"200", "202", "403", "404", "503"},
        ("GET", "/api/v1/neuro-marketing/experiments/{experiment_id}/analysis-results"): {"403", "404"},
    }
    for (method, path), statuses in expect.items():
        assert statuses <= set(operation(schema, method, path)["responses"]), (method, path)


def test_uuid_parameters_are_declared_as_uuids(app: Litestar, schema: dict[str, Any]) -> None:
    seen = set()
    for method, path, _ in operations(app):
        for parameter in operation(schema, method, path).get("parameters", []):
            if parameter["name"] in UUID_PARAMETERS:
                seen.add((parameter["name"], parameter["in"]))
                assert parameter["schema"].get("format") == "uuid", (method, path, parameter["name"])
    assert {("experiment_id", "path"), ("job_id", "path"), ("task_id", "path"), ("experiment_id", "query")} <= seen


def test_the_ingest_route_declares_both_body_forms(schema: dict[str, Any]) -> None:
    """``POST /api/v1/data`` reads its body itself (for speed): its request
    body is declared by hand, from the envelope the decoder uses."""
    import msgspec

    from eeghub.plugins.ingest.envelope import DataEnvelope

    body = operation(schema, "POST", "/api/v1/data")["requestBody"]
    assert body["required"] is True
    envelope = body["content"]["application/json"]["schema"]
    decoded = msgspec.json.schema(DataEnvelope)["$defs"]["DataEnvelope"]
    assert set(envelope["properties"]) == set(DataEnvelope.__struct_fields__)
    assert envelope["required"] == decoded["required"] and "session_id" not in envelope["required"]
    assert envelope["properties"]["payload_base64"]["contentEncoding"] == "base64"
    assert envelope["properties"]["timestamp_start_ms"] == decoded["properties"]["timestamp_start_ms"]
    assert body["content"]["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    assert "X-Device-Id" in body["description"]


BODYLESS = {
    ("POST", "/api/v1/experiments/{experiment_id}/export"),
    ("POST", "/api/v1/neuro-marketing/experiments/{experiment_id}/analyze"),
    ("POST", "/api/v1/experiments/{experiment_id}/analyses/{kind}"),
    ("POST", "/api/v1/admin/dlq/{queue}/replay"),
}
"""Routes of a writing method that read no body at all."""


def test_the_document_passes_a_validator(schema: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(schema)


def test_every_body_is_declared(app: Litestar, schema: dict[str, Any]) -> None:
    """JSON and multipart bodies alike, those a route reads itself included."""
    writing = [(m, p) for m, p, _ in operations(app) if m in ("POST", "PUT", "PATCH")]
    assert len(writing) >= 12
    missing = [(m, p) for m, p in writing if (m, p) not in BODYLESS and "requestBody" not in operation(schema, m, p)]
    assert missing == []
    forms = {
        ("POST", "/api/v1/sessions/end"): {"metadata", "events_log_csv"},
        ("POST", "/api/v1/experiments/{experiment_id}/stimuli"): {"stimuli_definition_csv", "stimulus_files"},
        ("POST", "/api/v1/calibrations"): {"file", "item_type", "description"},
        ("POST", "/api/v1/media"): {"file", "user_id", "session_id", "mimetype", "timestamp_utc"},
    }
    for (method, path), fields in forms.items():
        form = operation(schema, method, path)["requestBody"]["content"]["multipart/form-data"]
        assert fields <= set(form["schema"]["properties"]), (method, path)
    metadata = operation(schema, "POST", "/api/v1/sessions/end")["requestBody"]["content"]["multipart/form-data"]
    assert metadata["encoding"]["metadata"]["contentType"] == "application/json"
    assert metadata["schema"]["properties"]["metadata"]["additionalProperties"] is False
    assert "seconds from the session" in metadata["schema"]["properties"]["events_log_csv"]["description"]


def test_session_start_declares_the_session_types(schema: dict[str, Any]) -> None:
    from eeghub.plugins.session.schemas import SESSION_TYPES

    body = operation(schema, "POST", "/api/v1/sessions/start")["requestBody"]
    start = body["content"]["application/json"]["schema"]
    assert set(start["properties"]["session_type"]["enum"]) == set(SESSION_TYPES) == {
        "main_integrated", "main_external", "main_task", "calibration"}
    assert start["additionalProperties"] is False and "Unknown fields are refused" in body["description"]
    offset = start["properties"]["clock_offset_info"]["anyOf"][0]["properties"]["offset_ms"]
    assert offset["type"] == "integer" and "milliseconds" in offset["description"]
    assert start["properties"]["start_time"]["format"] == "date-time" and start["properties"]["user_id"]["description"]


@pytest.mark.parametrize("mode", ["trusted-header", "jwt"])
def test_security_schemes_follow_the_identity_mode(tmp_path: Path, mode: str) -> None:
    env = {"EEGHUB_SERVER__DATA_DIR": str(tmp_path), "EEGHUB_AUTH__MODE": mode, "EEGHUB_AUTH__JWT_SECRET": "s" * 40}
    schema = create_app(load_settings(env=env)).openapi_schema.to_schema()
    user = schema["components"]["securitySchemes"]["user"]
    if mode == "jwt":
        assert user == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": user["description"]}
    else:
        assert user["type"] == "apiKey" and user["in"] == "header" and user["name"] == "X-User-Id"
    assert operation(schema, "POST", "/api/v1/sessions/start")["security"] == [{"user": []}, {"localAdmin": []}]
    assert operation(schema, "POST", "/internal/v1/create-bids-for-analysis")["security"] == [{"internalToken": []}]
    assert "security" not in operation(schema, "GET", "/health")


def test_the_documentation_page_loads_nothing_from_elsewhere(app: Litestar) -> None:
    import re

    from litestar.testing import TestClient

    client = TestClient(app)  # no lifespan: the pages need no port
    page = client.get("/schema")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert urls and all(u.startswith("/schema/assets/") for u in urls), urls
    assert "https://" not in page.text and "http://" not in page.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    assert client.get("/schema/assets/../../../../etc/passwd").status_code == 404
    assert client.get("/schema/openapi.json").json()["info"]["title"] == "eeghub"
