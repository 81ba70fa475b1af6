"""Group publishing of packets (plugins/ingest/publisher.py) and the
one-or-many packet message format (core/packet_messages.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from eeghub.core.errors import BrokerUnavailable
from eeghub.core.packet_messages import (
    BATCH_CONTENT_TYPE,
    BATCH_COUNT_HEADER,
    BadBatch,
    RawPacket,
    batch_message,
    header_bytes,
    packets_of,
)
from eeghub.core.ports import Message
from eeghub.plugins.ingest.publisher import PacketPublisher


def packet(n: int, size: int = 100) -> RawPacket:
    return RawPacket(headers={"user_id": "u", "device_id": "d", "timestamp_start_ms": n}, frame=bytes([n % 256]) * size)


class SlowBroker:
    """Confirms each publish when the test says so."""

    def __init__(self) -> None:
        self.published: list[Message] = []
        self.gates: list[asyncio.Future[None]] = []
        self.fail_next: BaseException | None = None

    async def publish(self, message: Message, *, exchange: str | None = None, queue: str | None = None) -> None:
        assert exchange == "raw" and queue is None
        self.published.append(message)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate

    def confirm(self, index: int, error: BaseException | None = None) -> None:
        if error is None:
            self.gates[index].set_result(None)
        else:
            self.gates[index].set_exception(error)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_packet_is_the_predecessors_message() -> None:
    p = RawPacket(headers={"user_id": "u", "sampling_rate": 250.0}, frame=b"\x28\xb5\x2f\xfdzzz")
    message = batch_message([p], message_id="m1")
    assert message.body == p.frame and message.headers == p.headers
    assert message.content_type == "application/octet-stream" and message.content_encoding == "zstd"
    assert message.message_id == "m1"
    assert packets_of(message) == [p]


def test_a_batch_round_trips_in_order() -> None:
    sent = [packet(i, size=10 + i) for i in range(20)]
    message = batch_message(sent)
    assert message.content_type == BATCH_CONTENT_TYPE and message.headers == {BATCH_COUNT_HEADER: 20}
    assert packets_of(message) == sent
    identity = RawPacket(headers={"a": None, "b": 1.5, "c": True}, frame=b"x", content_encoding="identity")
    assert packets_of(batch_message([identity, identity])) == [identity, identity]


@pytest.mark.parametrize(
    "body",
    [b"", b"\xc1", b"\x90", msgspec.msgpack.encode([[{"a": [1]}, b"x"]]), msgspec.msgpack.encode([["h", b"x"]]),
     msgspec.msgpack.encode({"not": "a list"}), msgspec.msgpack.encode([[{}, "text not bytes"]])],
)
def test_a_malformed_batch_is_a_bad_batch(body: bytes) -> None:
    with pytest.raises(BadBatch):
        packets_of(Message(body=body, content_type=BATCH_CONTENT_TYPE))


def test_an_empty_batch_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        batch_message([])


async def test_a_packet_with_a_free_slot_goes_out_alone_and_at_once() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_in_flight=2)  # type: ignore[arg-type]
    first = asyncio.create_task(publisher.publish(packet(1), message_id="id-1"))
    await settle()
    assert len(broker.published) == 1 and broker.published[0].body == packet(1).frame
    assert broker.published[0].message_id == "id-1"
    assert not first.done()
    broker.confirm(0)
    await first
    assert publisher.messages == 1 and publisher.packets == 1


async def test_packets_arriving_while_slots_wait_leave_together() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_packets=64, max_in_flight=2)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(publisher.publish(packet(i))) for i in range(10)]
    await settle()
    # Two slots: packets 0 and 1 went alone; 2..9 wait for a slot.
    assert len(broker.published) == 2
    broker.confirm(0)
    await settle()
    assert len(broker.published) == 3
    assert packets_of(broker.published[2]) == [packet(i) for i in range(2, 10)]
    assert waiting[0].done() and not any(t.done() for t in waiting[1:])
    broker.confirm(2)
    await settle()
    assert all(t.done() for t in waiting[2:]) and not waiting[1].done()
    broker.confirm(1)
    await asyncio.gather(*waiting)
    assert publisher.messages == 3 and publisher.packets == 10


async def test_batches_respect_the_packet_and_byte_limits() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_packets=3, max_bytes=1000, max_in_flight=1)  # type: ignore[arg-type]
    sizes = [10, 10, 10, 10, 10, 600, 600, 10]
    waiting = [asyncio.create_task(publisher.publish(packet(i, size))) for i, size in enumerate(sizes)]
    for index in range(4):
        await settle()
        broker.confirm(index)
    await asyncio.gather(*waiting)
    counts = [len(packets_of(m)) for m in broker.published]
    # [0] alone; [1, 2, 3] (3 packets at most); [4, 5] (a third would pass
    # 1000 bytes); [6, 7].
    assert counts == [1, 3, 2, 2], counts
    assert sum(counts) == len(sizes)
    for message in broker.published:
        assert sum(len(p.frame) for p in packets_of(message)) <= 1000


async def test_a_failed_publish_fails_every_packet_it_carried_and_only_those() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(publisher.publish(packet(i))) for i in range(4)]
    await settle()
    broker.confirm(0)
    await settle()
    broker.confirm(1, BrokerUnavailable("no confirm"))
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert results[0] is None
    assert all(isinstance(r, BrokerUnavailable) for r in results[1:])
    # The publisher goes on working afterwards.
    later = asyncio.create_task(publisher.publish(packet(9)))
    await settle()
    broker.confirm(2)
    await later


async def test_a_request_that_goes_away_does_not_stop_the_others() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(publisher.publish(packet(i))) for i in range(3)]
    await settle()
    waiting[1].cancel()
    broker.confirm(0)
    await settle()
    broker.confirm(1)
    results: list[Any] = await asyncio.gather(*waiting, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], asyncio.CancelledError) and results[2] is None
    # The cancelled request's packet still went out with the others (its
    # retry would be a duplicate that storage recognises).
    assert [len(packets_of(m)) for m in broker.published] == [1, 2]


async def test_aclose_waits_for_messages_on_their_way() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(publisher.publish(packet(i))) for i in range(3)]
    await settle()
    closing = asyncio.create_task(publisher.aclose())
    await settle()
    assert not closing.done()
    broker.confirm(0)
    await settle()
    broker.confirm(1)
    await asyncio.wait_for(closing, 1)
    await asyncio.gather(*waiting)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PacketPublisher(SlowBroker(), "raw", max_packets=0)  # type: ignore[arg-type]


async def test_decompressed_size_counts_against_the_byte_limit() -> None:
    """Well-compressed packets must not add up to a huge segment."""
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_packets=64, max_bytes=100_000, max_in_flight=1)  # type: ignore[arg-type]
    waiting = [
        asyncio.create_task(publisher.publish(packet(i, size=50), payload_bytes=30_000)) for i in range(8)
    ]
    for index in range(4):
        await settle()
        broker.confirm(index)
    await asyncio.gather(*waiting)
    # 30 kB each once decompressed: three at most per 100 kB message.
    assert [len(packets_of(m)) for m in broker.published] == [1, 3, 3, 1]


async def test_a_message_that_cannot_be_built_fails_its_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    import eeghub.plugins.ingest.publisher as publisher_module

    def broken(*args: Any, **kwargs: Any) -> Message:
        raise TypeError("cannot encode a header")

    monkeypatch.setattr(publisher_module, "batch_message", broken)
    publisher = PacketPublisher(SlowBroker(), "raw")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot encode"):
        await asyncio.wait_for(publisher.publish(packet(1)), 1)


async def test_without_batching_every_packet_is_published_at_once() -> None:
    broker = SlowBroker()
    publisher = PacketPublisher(broker, "raw", max_packets=1, max_in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(publisher.publish(packet(i), message_id=f"id-{i}")) for i in range(5)]
    await settle()
    assert [m.message_id for m in broker.published] == [f"id-{i}" for i in range(5)]
    assert all(m.content_type == "application/octet-stream" for m in broker.published)
    for index in range(5):
        broker.confirm(index)
    await asyncio.gather(*waiting)


@pytest.mark.parametrize(
    "value",
    ["", "user-42", 0, -(2**63), 2**64 - 1, 250, 2.2351741790771484e-08, -2.2250738585072014e-308, 1e308, True, False, None],
)
def test_header_bytes_covers_each_value_as_text_and_as_msgpack(value: Any) -> None:
    headers = {"some_header": value}
    size = header_bytes(headers)
    assert size >= len("some_header") + len(str(value)) + 4  # the former estimate
    assert size >= len(msgspec.msgpack.encode(headers))


def test_header_bytes_adds_up_the_headers_and_falls_back_to_str() -> None:
    assert header_bytes({}) == 0
    assert header_bytes({"a": "xyz", "bb": b"12"}) == (1 + 3 + 4) + (2 + 2 + 4)
    assert header_bytes({"a": 1, "b": None}) == 2 * (1 + 24 + 4)
    assert header_bytes({"a": [1, 2]}) == 1 + len("[1, 2]") + 4
