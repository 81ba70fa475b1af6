"""Linking of raw data to sessions by time, and event onset correction from triggers."""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.extension import BackgroundTask, Consumer
from eeghub.core.hookspecs import hookimpl

from . import correction, linking, routes


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return [routes.get_correction, routes.get_data_report]


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    queues = ctx.settings.broker.queues
    return [
        Consumer(queue=queues.data_linker_queue, handler=linking.make_handler(ctx), prefetch=4),
        Consumer(queue=queues.event_correction_queue, handler=correction.make_handler(ctx), prefetch=2),
    ]


@hookimpl
def eeghub_background_tasks(ctx: AppContext) -> list[BackgroundTask]:
    return [BackgroundTask(name="linker-late-packets", run=lambda: linking.recheck_forever(ctx))]
