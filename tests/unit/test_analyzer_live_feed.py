"""``analyzer.source = "ingest"``: accepted packets reach this process's
buffers in process when it analyses their stream, and otherwise go, batched,
to the analyzer queue of the process that does (plugins/analyzer/feed.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eeghub.core.accepted import AcceptedPacket, offer
from eeghub.core.packet import compress_frame, parse_layout
from eeghub.core.packet_messages import RawPacket, packets_of
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.analyzer.feed import Forwarder, LiveFeed, analyzer_queue


class Host:
    def __init__(self) -> None:
        self.added: list[dict[str, Any]] = []
        self.skipped = 0

    def add_packet(self, **kwargs: Any) -> None:
        self.added.append(kwargs)

    def add_payload(self, **kwargs: Any) -> None:
        self.added.append(kwargs)


class Leases:
    def __init__(self, mine: set[str], owners: dict[str, str | None]) -> None:
        self.mine, self.owners = mine, owners

    def owns_stream(self, user_id: str, device_id: str) -> bool:
        return user_id in self.mine

    def owner_of_stream(self, user_id: str, device_id: str) -> str | None:
        return self.owners.get(user_id)


class Broker:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.fail = fail

    async def publish(self, message: Any, *, queue: str | None = None, exchange: str | None = None) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("broker down")
        self.sent.append((queue, message))


def accepted(user: str, i: int) -> AcceptedPacket:
    device = SimulatedDevice(user_id=user, device_id="d1", seed=1)
    payload = device.payload(i)
    headers = {k: v for k, v in device.envelope(i, 1_750_000_000_000).items() if v is not None}
    return AcceptedPacket(RawPacket(headers=headers, frame=compress_frame(payload)), payload, parse_layout(payload))


def feed(host: Host, leases: Any = None, broker: Broker | None = None) -> LiveFeed:
    forwarder = Forwarder(broker, lambda instance: analyzer_queue("raw", instance)) if broker else None
    return LiveFeed(lambda: host, impedance_threshold=200, max_channels=128, leases=leases, forwarder=forwarder, instance="me")


def test_a_single_process_analyses_every_accepted_packet_in_process() -> None:
    host = Host()
    live = feed(host)
    for i in range(3):
        offer([live.offer], accepted("u1", i))
    assert [a["start_us"] for a in host.added] == [(1_750_000_000_000 + i * 1000) * 1000 for i in range(3)]
    assert host.added[0]["layout"].num_samples == 250 and live.status()["analysed_here"] == 3


async def test_packets_of_other_processes_streams_are_forwarded_batched_per_process() -> None:
    host, broker = Host(), Broker()
    live = feed(host, Leases({"mine"}, {"theirs": "other-1", "third": "other-2", "nobody": None}), broker)
    for i in range(3):
        for user in ("mine", "theirs", "third", "nobody"):
            live.offer(accepted(user, i))
    await asyncio.sleep(0.01)
    await live.forwarder.aclose()  # type: ignore[union-attr]
    assert {a["user_id"] for a in host.added} == {"mine"} and len(host.added) == 3
    by_queue = {queue: packets_of(message) for queue, message in broker.sent}
    assert set(by_queue) == {"raw.analyzer.other-1", "raw.analyzer.other-2"}  # one message each
    assert [p.headers["user_id"] for p in by_queue["raw.analyzer.other-1"]] == ["theirs"] * 3
    assert [p.headers["timestamp_start_ms"] for p in by_queue["raw.analyzer.other-2"]] == [
        1_750_000_000_000 + i * 1000 for i in range(3)
    ]
    status = live.status()
    assert (status["forwarded"], status["forward_dropped"], status["unowned"]) == (6, 0, 3)


async def test_a_failed_forward_is_counted_and_does_not_raise() -> None:
    host, broker = Host(), Broker(fail=True)
    live = feed(host, Leases(set(), {"theirs": "other"}), broker)
    live.offer(accepted("theirs", 0))
    await asyncio.sleep(0.01)
    await live.forwarder.aclose()  # type: ignore[union-attr]
    status = live.status()
    assert status["forwarded"] == 0 and status["forward_dropped"] == 1 and "broker down" in status["forward_last_error"]


async def test_forwards_in_flight_are_bounded() -> None:
    broker = Broker()
    forwarder = Forwarder(broker, lambda instance: instance, max_packets=1, max_in_flight=2)
    for i in range(5):
        forwarder.send("other", accepted("u", i).packet)
    await asyncio.sleep(0.01)
    await forwarder.aclose()
    assert (forwarder.forwarded, forwarder.dropped) == (2, 3)


def test_a_listener_that_raises_does_not_fail_the_offer() -> None:
    host = Host()
    live = feed(host)

    def broken(_: AcceptedPacket) -> None:
        raise ValueError("boom")

    offer([broken, live.offer], accepted("u1", 0))
    assert len(host.added) == 1


def payload_of(device: SimulatedDevice, index: int, *, zero: bool) -> bytes:
    """The device's packet, its third channel zero-filled when ``zero``."""
    import numpy as np

    from eeghub.core.packet import encode_payload

    n = device.samples_per_packet
    signals, trigger = device.eeg(index * n, n), device.trigger(index * n, n)
    if zero:
        signals[2] = 0
    if device.variant == "v4":
        return encode_payload(np.vstack([signals, trigger[None, :]]), device.channel_names, device.channel_types)
    return encode_payload(signals, device.channel_names, device.channel_types, trigger=trigger, variant="app")


def quality_factory(layout: Any) -> Any:
    from eeghub.core.quality import QualityThresholds, QualityWindow

    return QualityWindow.for_seconds(layout.channel_names, layout.channel_types, layout.sampling_rate, 4.0, QualityThresholds())


@pytest.mark.parametrize("variant", ["app", "v4"])
def test_payloads_decoded_later_give_the_buffers_of_packets_decoded_at_once(variant: str) -> None:
    """``add_payload`` + ``flush`` (the ingest feed) against ``add_packet``
    of each decoded packet (the exchange consumer): the same samples, times
    and channel quality, a zero-filled channel and a new session included."""
    from eeghub.core.packet import decode_payload
    from eeghub.plugins.analyzer.host import AnalysisHost

    later = AnalysisHost([], buffer_seconds=6, quality_factory=quality_factory, pending_packets=3)
    now = AnalysisHost([], buffer_seconds=6, quality_factory=quality_factory)
    device = SimulatedDevice(user_id="u", device_id="d", seed=4, variant=variant)
    for i in range(11):
        payload = payload_of(device, i, zero=i % 4 == 1 or i >= 7)  # CH3 dead in the second session
        session = "s1" if i < 7 else "s2"  # a new session starts a new buffer
        start_us = (1_750_000_000_000 + i * 1000) * 1000
        later.add_payload(user_id="u", device_id="d", session_id=session, sampling_rate=250.0, lsb_to_volts=1e-6,
                          layout=parse_layout(payload), payload=payload, start_us=start_us)
        assert len(later.streams[("u", "d")].pending) < 3  # decoded once three wait
        decoded = decode_payload(payload)
        now.add_packet(user_id="u", device_id="d", session_id=session, sampling_rate=250.0, lsb_to_volts=1e-6,
                       channel_names=decoded.layout.channel_names, channel_types=decoded.layout.channel_types,
                       signals=decoded.signals, start_us=start_us, stats=decoded.stats)
    a, b = later.streams[("u", "d")], now.streams[("u", "d")]
    assert a.pending  # 4 packets since the new session: one still waits
    later.flush(a)
    assert a.session_id == b.session_id == "s2" and a.buffer.written == b.buffer.written == 4 * 250
    assert (a.buffer.data == b.buffer.data).all() and a.buffer.last_sample_us == b.buffer.last_sample_us
    assert a.quality.report().as_dict() == b.quality.report().as_dict()
    assert a.quality.report().as_dict()["bad_channels"] == ["CH3"]
    assert later.packets == now.packets == 11 and later.decode_failures == 0
