"""Packets accepted by ``POST /api/v1/data``, offered in-process to listeners.

The ingest route decompresses and checks every packet, publishes it and,
once the broker has confirmed the message carrying it, offers it here to
whoever registered: the live analyzer takes its packets this way rather
than from a queue of its own on ``raw_data_exchange``. That spares each
packet a second trip through the broker (a delivery and an acknowledgement
per message, the batch decoded again, the frame looked up again) and spares
RabbitMQ one copy of every message per process.

A listener is called on the event loop, inside the request, with the packet
as published (``packet``: its AMQP headers and frame), its decompressed
``payload`` and the ``layout`` the route checked. It must be quick and must
not block; what it raises is logged and does not fail the request (the
packet is stored either way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .packet import PacketLayout
from .packet_messages import RawPacket

log = logging.getLogger("eeghub.ingest")

LISTENERS = "ingest.accepted_listeners"
"""Their list in ``AppContext.services``."""


@dataclass(frozen=True, slots=True)
class AcceptedPacket:
    packet: RawPacket
    payload: bytes
    layout: PacketLayout


Listener = Callable[[AcceptedPacket], object]


def add_listener(ctx: Any, listener: Listener) -> None:
    ctx.services.setdefault(LISTENERS, []).append(listener)


def listeners_of(ctx: Any) -> list[Listener]:
    return ctx.services.get(LISTENERS) or []


def offer(listeners: list[Listener], accepted: AcceptedPacket) -> None:
    for listener in listeners:
        try:
            listener(accepted)
        except Exception:  # noqa: BLE001 - a listener's fault is not the request's
            log.exception("a listener of accepted packets failed")
