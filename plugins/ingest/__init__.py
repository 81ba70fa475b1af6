"""EEG packet and media ingest: validation, decoding and exactly-once storage."""

from __future__ import annotations

import asyncio
from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.extension import Consumer
from eeghub.core.hookspecs import hookimpl

from . import media, routes, store
from .publisher import PUBLISHER, publisher_of


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return [routes.post_data, media.post_media]


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    queues = ctx.settings.broker.queues
    return [
        Consumer(
            queue=queues.processing_queue,
            handler=store.make_handler(ctx),
            bind_to=queues.raw_data_exchange,
            prefetch=ctx.settings.ingest.storage_concurrency,
        ),
        Consumer(queue=queues.media_processing_queue, handler=media.make_media_handler(ctx)),
    ]


@hookimpl
def eeghub_startup(ctx: AppContext) -> None:
    from eeghub.core.packet import warm_up

    publisher_of(ctx)
    # Compile the numba kernel in a thread now rather than on the first
    # packet; start-up does not wait for it.
    asyncio.get_running_loop().run_in_executor(None, warm_up)


@hookimpl
async def eeghub_shutdown(ctx: AppContext) -> None:
    publisher = ctx.services.get(PUBLISHER)
    if publisher is not None:
        await publisher.aclose()
