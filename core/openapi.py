"""The OpenAPI document's configuration: security schemes per identity mode,
and documentation pages that render offline.

``/schema`` is Swagger UI, its JavaScript and CSS served by eeghub itself at
``/schema/assets`` from the ``swagger-ui-py`` package (Litestar's default
pages load them from a CDN, so they stay blank on a lab network without
internet). ``/schema/openapi.json`` and ``/schema/openapi.yaml`` are the
document.

Security: a route that can answer 401 needs an identity (``X-User-Id`` in
``trusted-header`` mode, a bearer JWT in ``jwt`` mode; the local administrator
token is accepted too); ``/internal/`` routes need the internal token; the
rest (health, plugin lists, metrics, documentation) need none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, OpenAPI, SecurityScheme
from litestar.static_files import create_static_files_router

from eeghub.config import Settings

from .auth import LOCAL_ADMIN_HEADER

ASSETS_PATH = "/schema/assets"
DESCRIPTION = (
    "EEG research data collection: sessions, stimuli, ingest, live analysis and BIDS export.\n\n"
    "Every error (4xx, 5xx) has the body `ErrorBody`: `error` and `detail` (the same message), "
    "`status_code`, and `issues` (field, CSV row, message) when there is more to say. "
    "JSON request bodies refuse fields they do not know (400 naming the field). "
    "Times are ISO 8601 with a UTC offset; event onsets are seconds from the session's start."
)


def assets_directory() -> Path:
    import swagger_ui

    return Path(swagger_ui.__file__).parent / "static"


def security_schemes(settings: Settings) -> dict[str, SecurityScheme | Any]:
    auth = settings.auth
    if auth.mode == "jwt":
        user = SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="A JWT whose `sub` claim is the user id (`exp` required).",
        )
    else:
        user = SecurityScheme(
            type="apiKey",
            name=auth.user_header,
            security_scheme_in="header",
            description="The caller's user id, set by an authenticating gateway (trusted-header mode).",
        )
    return {
        "user": user,
        "localAdmin": SecurityScheme(
            type="apiKey",
            name=LOCAL_ADMIN_HEADER,
            security_scheme_in="header",
            description="The local administrator token (`<data_dir>/admin-token`), accepted from loopback only.",
        ),
        "internalToken": SecurityScheme(
            type="apiKey",
            name="X-Internal-Token",
            security_scheme_in="header",
            description="`[exporter] internal_token`, for analysis services.",
        ),
    }


def openapi_config(settings: Settings, version: str) -> OpenAPIConfig:
    assets = ASSETS_PATH
    swagger = SwaggerRenderPlugin(
        path="/",
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title="eeghub",
        version=version,
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[swagger],
        components=Components(security_schemes=security_schemes(settings)),
    )


def assets_router() -> Any:
    return create_static_files_router(
        path=ASSETS_PATH, directories=[assets_directory()], include_in_schema=False, name="schema-assets"
    )


def declare_security(document: OpenAPI) -> None:
    """Give each operation its security requirement (see the module's doc)."""
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            if path.startswith("/internal/"):
                operation.security = [{"internalToken": []}]
            elif operation.responses and "401" in operation.responses:
                operation.security = [{"user": []}, {"localAdmin": []}]
