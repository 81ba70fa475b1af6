"""The broker topology every eeghub process declares at start-up.

The queue and exchange names are the predecessor's (spec §4), configurable in
``[broker.queues]``. They are declared by the host, not by the plugins that
consume them, so a plugin can publish to a queue whose consumer is disabled
(or runs in another process) without losing the message.
"""

from __future__ import annotations

from eeghub.config.settings import QueueSettings

from .ports import Broker


def durable_queues(queues: QueueSettings) -> list[str]:
    return [
        queues.processing_queue,
        queues.media_processing_queue,
        queues.data_linker_queue,
        queues.stimulus_asset_queue,
        queues.event_correction_queue,
        queues.export_queue,
    ]


async def declare_topology(broker: Broker, queues: QueueSettings) -> None:
    await broker.declare_exchange(queues.raw_data_exchange)
    for name in durable_queues(queues):
        bind_to = queues.raw_data_exchange if name == queues.processing_queue else None
        await broker.declare_queue(name, durable=True, bind_to=bind_to)
