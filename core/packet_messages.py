"""Raw packets on ``raw_data_exchange``: one per message, or several in one.

The predecessor's collector published one message per packet: the zstd frame
as the body and the envelope as AMQP headers (spec §1.5). eeghub's ingest
route does the same whenever a packet is alone, and otherwise publishes the
packets that arrive while a publish is under way together, in one message
(``BATCH_CONTENT_TYPE``): one publisher confirm, one delivery per consumer
and one acknowledgement for the lot instead of one each, which is most of
what RabbitMQ and its client library cost per packet.

A batch body is msgpack: a list of ``[headers, frame]`` pairs, each exactly
what a single message would have carried (headers as in §1.5, the frame as
sent by the device). ``packets_of`` turns either form into the same list, so
every consumer handles both, and messages of a predecessor-compatible
publisher keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .ports import HeaderValue, Message

BATCH_CONTENT_TYPE = "application/vnd.eeghub.packet-batch+msgpack"
BATCH_COUNT_HEADER = "x-eeghub-packets"
"""How many packets a batch message carries (informational: shown in dead letters)."""


class RawPacket(msgspec.Struct, array_like=True, frozen=True):
    """One packet: its envelope headers and its frame (zstd, or the plain
    payload when ``content_encoding`` is ``identity``)."""

    headers: dict[str, HeaderValue]
    frame: bytes
    content_encoding: str = "zstd"


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[RawPacket])


class BadBatch(ValueError):
    """A message that claims to be a batch but is not a valid one."""


def batch_message(packets: Sequence[RawPacket], *, message_id: str | None = None) -> Message:
    """One message carrying ``packets``; a single packet becomes the
    predecessor's one-packet message, byte for byte."""
    if not packets:
        raise ValueError("a batch needs at least one packet")
    if len(packets) == 1:
        packet = packets[0]
        return Message(
            body=packet.frame,
            headers=dict(packet.headers),
            content_type="application/octet-stream",
            content_encoding=packet.content_encoding,
            message_id=message_id,
        )
    return Message(
        body=_encoder.encode(list(packets)),
        headers={BATCH_COUNT_HEADER: len(packets)},
        content_type=BATCH_CONTENT_TYPE,
        message_id=message_id,
    )


def is_batch(message: Message) -> bool:
    return (message.content_type or "").lower() == BATCH_CONTENT_TYPE


def packets_of(message: Message) -> list[RawPacket]:
    """The packets a message carries, whichever form it has. Raises
    ``BadBatch`` for a batch body that does not decode (the message can
    only be dead-lettered)."""
    if not is_batch(message):
        return [RawPacket(headers=dict(message.headers), frame=message.body, content_encoding=message.content_encoding or "zstd")]
    try:
        packets = _decoder.decode(message.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadBatch(f"undecodable packet batch: {exc}") from None
    if not packets:
        raise BadBatch("empty packet batch")
    return packets


_SCALAR_ROOM = 24
"""Allowed for a number, a bool or None: at least ``len(str(value))`` of any
that msgpack or AMQP can carry (64-bit integers take at most 20 characters,
a float's repr at most 24, e.g. ``-2.2250738585072014e-308``), and more than
the 9 bytes msgpack encodes one in."""
_SCALARS = frozenset((int, float, bool, type(None)))


def header_bytes(headers: dict[str, Any]) -> int:
    """A rough size of headers as encoded, for batch size limits: per header
    its name, its value (a str's or bytes' length; ``_SCALAR_ROOM`` for a
    number, bool or None; ``len(str(value))`` for anything else) and 4 bytes.
    Never less than the former ``len(k) + len(str(v)) + 4`` for str values
    and scalars, and about half the cost (no float formatting per packet)."""
    size = 4 * len(headers)
    for key, value in headers.items():
        kind = type(value)
        size += len(key) + (len(value) if kind is str or kind is bytes else _SCALAR_ROOM if kind in _SCALARS else len(str(value)))
    return size
