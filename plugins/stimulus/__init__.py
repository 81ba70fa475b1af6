"""Stimulus and calibration item registration, listing and download."""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl

from . import jobs, routes


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return list(routes.ROUTES)


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    return [Consumer(queue=ctx.settings.broker.queues.stimulus_asset_queue, handler=jobs.make_handler(ctx))]
