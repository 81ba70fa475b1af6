"""Export of whole experiments as validated BIDS datasets (ZIP, with progress and download)."""

from __future__ import annotations

from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl

from . import routes, runner


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return list(routes.ROUTES)


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    # One export at a time per consumer slot; each runs its heavy work in threads.
    return [
        Consumer(
            queue=ctx.settings.broker.queues.export_queue,
            handler=runner.make_handler(ctx),
            prefetch=ctx.settings.export.max_concurrent_exports,
            max_attempts=2,
        )
    ]
