"""How packets reach the live buffers (``analyzer.source``).

``ingest`` (the default): the ingest route offers every packet it accepted,
decompressed, in process (``core/accepted.py``). ``LiveFeed.offer`` decodes
it into this process's buffers when this process analyses its stream; with
several processes it otherwise forwards the packet to the process that
does: a message on that process's own analyzer queue (``analyzer_queue``),
batched per process and sent after the request has its answer. A packet
thus crosses the broker for live analysis only when the load balancer sent
it to another process than its stream's, and each process receives only
the packets of its own streams (no copy of the whole raw fanout per
process).

``exchange``: a queue of the process's own bound to ``raw_data_exchange``,
as the predecessor's analyzer had; each process reads every packet and
skips the streams it does not own.

Either way ``add_to_host`` turns one packet (envelope headers and payload)
into ``AnalysisHost.add_packet``. Live data may be lost (a forward that
fails, a queue that overflows, a stream that moves): it is a live view; the
stored data are complete regardless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from eeghub.core.accepted import AcceptedPacket
from eeghub.core.errors import PermanentFailure
from eeghub.core.packet import PacketError, decode_payload
from eeghub.core.packet_messages import RawPacket, batch_message
from eeghub.core.ports import Broker

log = logging.getLogger("eeghub.analyzer")


def analyzer_queue(raw_data_exchange: str, instance: str) -> str:
    """The exclusive queue of one process's analyzer. Named after the raw
    exchange (deployments sharing a broker but not a raw exchange stay
    apart) and the process, so that another process can forward to it."""
    return f"{raw_data_exchange}.analyzer.{instance}"


def stream_of(headers: Mapping[str, Any]) -> tuple[str, str]:
    try:
        return str(headers["user_id"]), str(headers["device_id"])
    except KeyError as exc:
        raise PermanentFailure(f"bad envelope: {exc}") from None


def envelope_of(headers: Mapping[str, Any]) -> tuple[float, float, int]:
    """Sampling rate, lsb_to_volts and start (ms) of a packet's headers."""
    try:
        rate = float(headers["sampling_rate"])
        lsb = float(headers.get("lsb_to_volts") or headers.get("lsb_to_volts_str") or 0)
        start_ms = int(headers["timestamp_start_ms"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise PermanentFailure(f"bad envelope: {exc}") from None
    if not (0 < rate < float("inf") and 0 < lsb < float("inf")):
        raise PermanentFailure("sampling_rate and lsb_to_volts must be positive")
    return rate, lsb, start_ms


def add_to_host(
    host: Any, headers: Mapping[str, Any], payload: bytes, *, impedance_threshold: int, max_channels: int
) -> None:
    """Decode ``payload`` into the stream its ``headers`` name. Raises
    ``PermanentFailure`` for a packet that cannot be analysed."""
    user_id, device_id = stream_of(headers)
    rate, lsb, start_ms = envelope_of(headers)
    try:
        decoded = decode_payload(payload, impedance_threshold=impedance_threshold, max_channels=max_channels)
    except PacketError as exc:
        raise PermanentFailure(f"bad packet: {exc}") from None
    session = headers.get("session_id")
    host.add_packet(
        user_id=user_id,
        device_id=device_id,
        session_id=str(session) if session else None,
        sampling_rate=rate,
        lsb_to_volts=lsb,
        channel_names=decoded.layout.channel_names,
        channel_types=decoded.layout.channel_types,
        signals=decoded.signals,
        start_us=start_ms * 1000,
        stats=decoded.stats,
    )


class Forwarder:
    """Sends packets of other processes' streams to their analyzer queues:
    collected during one turn of the event loop, then one message per
    process (at most ``max_packets`` packets each). Publishes in flight are
    bounded; beyond, packets are dropped and counted (live data)."""

    def __init__(
        self, broker: Broker, queue_of: Callable[[str], str], *, max_packets: int = 64, max_in_flight: int = 16
    ) -> None:
        self.broker = broker
        self.queue_of = queue_of
        self.max_packets = max_packets
        self.max_in_flight = max_in_flight
        self._pending: dict[str, list[RawPacket]] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0
        self.dropped = 0
        self.last_error: str | None = None

    def send(self, instance: str, packet: RawPacket) -> None:
        self._pending.setdefault(instance, []).append(packet)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for instance, packets in pending.items():
            for at in range(0, len(packets), self.max_packets):
                chunk = packets[at : at + self.max_packets]
                if len(self._tasks) >= self.max_in_flight:
                    self.dropped += len(chunk)
                    continue
                task = asyncio.get_running_loop().create_task(self._publish(instance, chunk))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _publish(self, instance: str, packets: list[RawPacket]) -> None:
        try:
            await self.broker.publish(batch_message(packets), queue=self.queue_of(instance))
        except Exception as exc:  # noqa: BLE001 - live data: counted, logged once in a while
            self.dropped += len(packets)
            if self.last_error is None:
                log.warning("live analysis: forwarding to %s failed (later failures are counted): %s", instance, exc)
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return
        self.forwarded += len(packets)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class LiveFeed:
    """The listener of accepted packets (``analyzer.source = "ingest"``)."""

    def __init__(
        self,
        host_of: Callable[[], Any],
        *,
        impedance_threshold: int,
        max_channels: int,
        leases: Any = None,
        forwarder: Forwarder | None = None,
        instance: str | None = None,
    ) -> None:
        self.host_of = host_of
        self.impedance_threshold = impedance_threshold
        self.max_channels = max_channels
        self.leases = leases
        self.forwarder = forwarder
        self.instance = instance
        self.local = 0
        self.unowned = 0
        """Packets of streams no live process was known to own (dropped)."""
        self.refused = 0

    def offer(self, accepted: AcceptedPacket) -> None:
        headers = accepted.packet.headers
        host = self.host_of()
        if host is None:
            return
        leases = self.leases
        if leases is not None:
            user_id, device_id = stream_of(headers)
            if not leases.owns_stream(user_id, device_id):
                owner = leases.owner_of_stream(user_id, device_id)
                if owner is None or owner == self.instance or self.forwarder is None:
                    # Not ours (yet, or any more) and nobody else's: a lease
                    # lapsed or is being taken over.
                    self.unowned += 1
                    host.skipped += 1
                else:
                    self.forwarder.send(owner, accepted.packet)
                return
        try:
            rate, lsb, start_ms = envelope_of(headers)
            session = headers.get("session_id")
            user_id, device_id = stream_of(headers)
            # Decoded later, with the stream's next packets (AnalysisHost.flush).
            host.add_payload(
                user_id=user_id,
                device_id=device_id,
                session_id=str(session) if session else None,
                sampling_rate=rate,
                lsb_to_volts=lsb,
                layout=accepted.layout,
                payload=accepted.payload,
                start_us=start_ms * 1000,
            )
        except PermanentFailure as exc:
            # The route checked the envelope and the frame: this is rare
            # (a layout the decoder refuses); the packet is stored anyway.
            self.refused += 1
            log.debug("live analysis skipped a packet: %s", exc)
            return
        self.local += 1

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"source": "ingest", "analysed_here": self.local, "unowned": self.unowned}
        if self.refused:
            out["refused"] = self.refused
        if self.forwarder is not None:
            out["forwarded"] = self.forwarder.forwarded
            out["forward_dropped"] = self.forwarder.dropped
            if self.forwarder.last_error:
                out["forward_last_error"] = self.forwarder.last_error
        return out
