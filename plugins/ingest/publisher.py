"""Group publishing of accepted packets to ``raw_data_exchange``.

Each ``POST /api/v1/data`` waits here until the broker confirmed a message
carrying its packet. A packet that finds a free publish slot goes out at once,
alone, as the predecessor's one-packet message (no added latency when the
server is quiet). Packets that arrive while every slot waits for its confirm
queue up and leave together in the next message (``core.packet_messages``):
under load a packet costs a share of one publish, one confirm, one delivery
and one acknowledgement per consumer instead of one of each.

Every waiting request learns the fate of the message that carried its packet:
confirmed (202) or failed (503, the broker's error). A request that goes away
meanwhile does not take its packet out of a message already on its way; the
client's retry is then a duplicate, which storage recognises (the same key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from eeghub.core.context import AppContext
from eeghub.core.metrics import metrics_of
from eeghub.core.packet_messages import RawPacket, batch_message, header_bytes
from eeghub.core.payload_cache import PUBLISHED
from eeghub.core.ports import Broker

PUBLISHER = "ingest.publisher"
"""Its name in ``AppContext.services``."""


class PacketPublisher:
    def __init__(
        self,
        broker: Broker,
        exchange: str,
        *,
        max_packets: int = 64,
        max_bytes: int = 1024 * 1024,
        max_in_flight: int = 1,
        on_message: Callable[[], object] | None = None,
    ) -> None:
        if max_packets < 1 or max_bytes < 1 or max_in_flight < 1:
            raise ValueError("max_packets, max_bytes and max_in_flight must be positive")
        self._broker = broker
        self._exchange = exchange
        self._max_packets = max_packets
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._on_message = on_message
        """Called once per confirmed message (a metric's ``inc``)."""
        self._pending: deque[tuple[RawPacket, int, str | None, asyncio.Future[None], Any]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.messages = 0
        """Messages published (a figure for tests and benchmarks)."""
        self.packets = 0

    async def publish(
        self, packet: RawPacket, *, message_id: str | None = None, payload_bytes: int = 0, local: Any = None
    ) -> None:
        """Return once a confirmed message carries ``packet``; raise the
        broker's error otherwise. ``payload_bytes``: the packet's size once
        decompressed, which is what a message costs its consumers in memory
        (a segment object, decoded signals); ``max_bytes`` bounds the larger
        of that and the frame, so a message of well-compressed packets cannot
        become a huge segment. ``local``: what the caller knows of the
        packet, kept with the message for this process's storage consumer
        (``core/payload_cache.py``, ``PUBLISHED``) when every packet of the
        message has it."""
        if self._max_packets == 1:
            # No batching: every packet its own message, published at once
            # (waiting for a slot would only serialise the confirms).
            message = batch_message([packet], message_id=message_id)
            if local is not None and message_id:
                PUBLISHED.put(message_id, message.body, [local])
            await self._broker.publish(message, exchange=self._exchange)
            self.messages += 1
            self.packets += 1
            if self._on_message is not None:
                self._on_message()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        size = max(len(packet.frame), payload_bytes) + header_bytes(packet.headers)
        self._pending.append((packet, size, message_id, future, local))
        self._start()
        await future

    def _start(self) -> None:
        while self._pending and len(self._in_flight) < self._max_in_flight:
            # The batch is taken now: a packet finding a free slot leaves
            # alone, whatever arrives before the task runs.
            task = asyncio.create_task(self._drain(self._take()), name="eeghub-ingest-publish")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _take(self) -> list[tuple[RawPacket, int, str | None, asyncio.Future[None], Any]]:
        batch = [self._pending.popleft()]
        size = batch[0][1]
        while self._pending and len(batch) < self._max_packets and size + self._pending[0][1] <= self._max_bytes:
            entry = self._pending.popleft()
            size += entry[1]
            batch.append(entry)
        return batch

    async def _drain(self, batch: list[tuple[RawPacket, int, str | None, asyncio.Future[None], Any]]) -> None:
        """One publish slot: publish, await the confirm, and go on at once
        with the packets that arrived meanwhile (no task switch between a
        confirm and the next publish: under load that is the cycle every
        waiting request goes through)."""
        while True:
            await self._send(batch)
            if not self._pending:
                return
            batch = self._take()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start()

    async def _send(self, batch: list[tuple[RawPacket, int, str | None, asyncio.Future[None], Any]]) -> None:
        try:
            # A lone packet keeps its own deterministic message id.
            message_id = batch[0][2] if len(batch) == 1 else uuid.uuid4().hex
            message = batch_message([entry[0] for entry in batch], message_id=message_id)
            locals_ = [entry[4] for entry in batch]
            if message_id and None not in locals_:
                PUBLISHED.put(message_id, message.body, locals_)
            await self._broker.publish(message, exchange=self._exchange)
        except asyncio.CancelledError:
            for _, _, _, future, _ in batch:
                if not future.done():
                    future.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
            for _, _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.messages += 1
        self.packets += len(batch)
        if self._on_message is not None:
            self._on_message()
        for _, _, _, future, _ in batch:
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        """Wait for the messages on their way (shut-down)."""
        while self._in_flight or self._pending:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            else:
                self._start()


def publisher_of(ctx: AppContext) -> PacketPublisher:
    """The context's publisher, made on first use (the ingest plugin's
    start-up makes it; an app assembled without it still publishes)."""
    publisher = ctx.services.get(PUBLISHER)
    if publisher is None:
        limits = ctx.settings.ingest
        publisher = ctx.services[PUBLISHER] = PacketPublisher(
            ctx.broker,
            ctx.settings.broker.queues.raw_data_exchange,
            max_packets=limits.publish_batch_packets,
            max_bytes=limits.publish_batch_bytes,
            max_in_flight=limits.publishes_in_flight,
            on_message=metrics_of(ctx).raw_messages_published.inc,
        )
    return publisher
