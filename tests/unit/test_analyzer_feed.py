"""The analyzer's consumer takes both message forms on raw_data_exchange: a
packet alone, and packets published together; a bad packet of a batch does
not keep the others from the live buffers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from eeghub.config import Settings
from eeghub.core.errors import PermanentFailure
from eeghub.core.packet import compress_frame
from eeghub.core.packet_messages import BATCH_CONTENT_TYPE, RawPacket, batch_message
from eeghub.core.ports import Delivery, Message
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.analyzer import make_handler


class Recorder:
    def __init__(self) -> None:
        self.added: list[dict[str, Any]] = []

    def add_packet(self, **kwargs: Any) -> None:
        self.added.append(kwargs)


def raw_packets(user: str, count: int) -> list[RawPacket]:
    device = SimulatedDevice(user_id=user, device_id="d1")
    out = []
    for i in range(count):
        headers = {k: v for k, v in device.envelope(i, 1_750_000_000_000).items() if v is not None}
        out.append(RawPacket(headers=headers, frame=compress_frame(device.payload(i))))
    return out


def handler() -> tuple[Any, Recorder]:
    recorder = Recorder()
    ctx = SimpleNamespace(settings=Settings(), services={"analyzer": recorder})
    return make_handler(ctx), recorder


async def test_a_lone_packet_and_a_batch_both_reach_the_buffers() -> None:
    handle, recorder = handler()
    sent = raw_packets("u", 5)
    await handle(Delivery(message=batch_message(sent[:1]), queue="live"))
    await handle(Delivery(message=batch_message(sent[1:]), queue="live"))
    assert [a["start_us"] for a in recorder.added] == [p.headers["timestamp_start_ms"] * 1000 for p in sent]
    assert all(a["signals"].shape == (9, 250) for a in recorder.added)


async def test_a_bad_packet_of_a_batch_is_reported_and_the_others_kept() -> None:
    handle, recorder = handler()
    sent = raw_packets("u", 4)
    broken = RawPacket(headers=sent[1].headers, frame=b"not zstd")
    odd = RawPacket(headers={**sent[2].headers, "timestamp_start_ms": float("inf")}, frame=sent[2].frame)
    with pytest.raises(PermanentFailure, match="2 of 4"):
        await handle(Delivery(message=batch_message([sent[0], broken, odd, sent[3]]), queue="live"))
    assert [a["start_us"] for a in recorder.added] == [sent[0].headers["timestamp_start_ms"] * 1000, sent[3].headers["timestamp_start_ms"] * 1000]


async def test_an_undecodable_batch_is_a_permanent_failure() -> None:
    handle, recorder = handler()
    with pytest.raises(PermanentFailure, match="undecodable"):
        await handle(Delivery(message=Message(body=b"\xc1", content_type=BATCH_CONTENT_TYPE), queue="live"))
    assert recorder.added == []
