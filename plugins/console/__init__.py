"""A web console for the lab at ``/console``: pages rendered by the server,
data fetched by the browser from the same JSON API with the same guards, plus
the administrators' operations routes (queues, dead letters, recent errors)."""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.hookspecs import hookimpl

from . import admin, pages


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return [*pages.routes(ctx), *admin.ROUTES]


@hookimpl
def eeghub_startup(ctx: AppContext) -> None:
    admin.RecentErrors.install(ctx)


@hookimpl
def eeghub_shutdown(ctx: AppContext) -> None:
    admin.RecentErrors.uninstall(ctx)
