"""Export of whole experiments as validated BIDS datasets (ZIP, with progress and download)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.extension import Consumer, PluginHealth
from eeghub.core.hookspecs import hookimpl

from . import routes, runner, validation

log = logging.getLogger("eeghub.exporter")


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


@hookimpl
async def eeghub_startup(ctx: AppContext) -> None:
    """Check once that the BIDS validator runs (``--version``, about 0.6 s in
    a thread): a missing one is logged and shown in the health at once, not
    only when the first export fails."""
    health = runner.validator_health(ctx)
    try:
        path = await asyncio.to_thread(validation.probe, ctx.settings.export.validator)
    except validation.ValidatorUnavailable as exc:
        log.error("the BIDS validator is unusable; exports will not be validated: %s", exc)
        health.failed(str(exc)[:1000])
        return
    health.ran(path)


@hookimpl
def eeghub_health(ctx: AppContext) -> PluginHealth:
    """``degraded`` while the BIDS validator is missing or could not run (at
    start-up or in the last export), with the reason."""
    health = runner.validator_health(ctx)
    if health.problem is not None:
        return PluginHealth(status="degraded", detail={"validator": "unavailable", "reason": health.problem})
    return PluginHealth(status="ok", detail={"validator": health.path or "not checked yet"})
