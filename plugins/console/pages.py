"""The console's pages: HTML shells rendered with Litestar's Jinja engine.

A page carries no data of its own. The browser signs in (an ``X-User-Id``
or a pasted bearer token, kept in ``sessionStorage``) and fetches everything
from the JSON API, so the console can never show what the API would refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Response, get
from litestar.enums import MediaType
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from eeghub.core.context import AppContext
from eeghub.core.http import IdParam

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Pages may load nothing from anywhere but this server (labs run offline)."""

NAV = [
    ("experiments", "/console/experiments", "Experiments"),
    ("live", "/console/live", "Live view"),
    ("calibrations", "/console/calibrations", "Calibration"),
    ("operations", "/console/operations", "Operations"),
]


def engine() -> JinjaTemplateEngine:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, auto_reload=False
    )
    return JinjaTemplateEngine(engine_instance=environment)


def routes(ctx: AppContext) -> list[Any]:
    templates = engine()
    auth = ctx.settings.auth
    header = auth.user_header if auth.mode != "jwt" else None

    def page(name: str, title: str, section: str, **data: str) -> Response[str]:
        html = templates.get_template(f"{name}.html").render(
            title=title,
            section=section,
            nav=NAV,
            page=name,
            auth_mode=auth.mode,
            user_header=header or "",
            data=data,
        )
        return Response(
            html,
            media_type=MediaType.HTML,
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    common: dict[str, Any] = {"include_in_schema": False, "sync_to_thread": False}

    @get("/console", **common)
    def console_root() -> Redirect:
        return Redirect("/console/experiments")

    @get("/console/sign-in", **common)
    def sign_in() -> Response[str]:
        return page("sign_in", "Sign in", "")

    @get("/console/experiments", **common)
    def experiments() -> Response[str]:
        return page("experiments", "Experiments", "experiments")

    @get("/console/experiments/{experiment_id:str}", **common)
    def experiment(experiment_id: IdParam) -> Response[str]:
        return page("experiment", "Experiment", "experiments", experiment_id=experiment_id)

    @get("/console/experiments/{experiment_id:str}/sessions", **common)
    def sessions(experiment_id: IdParam) -> Response[str]:
        return page("sessions", "Sessions", "experiments", experiment_id=experiment_id)

    @get("/console/experiments/{experiment_id:str}/exports", **common)
    def exports(experiment_id: IdParam) -> Response[str]:
        return page("exports", "Exports", "experiments", experiment_id=experiment_id)

    @get("/console/experiments/{experiment_id:str}/neuro-marketing", **common)
    def neuro_marketing(experiment_id: IdParam) -> Response[str]:
        return page("neuro_marketing", "Neuro-marketing results", "experiments", experiment_id=experiment_id)

    @get("/console/sessions/{session_id:str}", **common)
    def session(session_id: IdParam) -> Response[str]:
        return page("session", "Session", "experiments", session_id=session_id)

    @get("/console/live", **common)
    def live_self() -> Response[str]:
        return page("live", "Live view", "live", user_id="")

    @get("/console/live/{user_id:str}", **common)
    def live(user_id: IdParam) -> Response[str]:
        return page("live", "Live view", "live", user_id=user_id)

    @get("/console/calibrations", **common)
    def calibrations() -> Response[str]:
        return page("calibrations", "Calibration items", "calibrations")

    @get("/console/operations", **common)
    def operations() -> Response[str]:
        return page("operations", "Operations", "operations")

    assets = create_static_files_router(
        path="/console/static",
        directories=[STATIC],
        include_in_schema=False,
        cache_control=None,
        name="console-static",
    )
    return [
        console_root, sign_in, experiments, experiment, sessions, exports, neuro_marketing,
        session, live_self, live, calibrations, operations, assets,
    ]
