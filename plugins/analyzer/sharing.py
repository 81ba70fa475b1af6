"""Results shared between the eeghub processes of a deployment.

The process that analyses a stream (see ``partitions.py``) publishes each
result to the fanout exchange ``results_exchange(raw exchange)``; every process follows
it with an exclusive, bounded queue and keeps the latest result per stream
and plugin, so ``GET /users/{id}/analysis`` and the event stream answer the
same on any process behind a load balancer. Values travel as JSON and are
turned back into the plugin's result type (the return annotation of its
``analyze``), so pictures and ``render`` work on every process.
"""

from __future__ import annotations

import asyncio
import logging
import typing
from typing import Any

import msgspec

from eeghub.core.errors import BrokerError, PermanentFailure
from eeghub.core.ports import Broker, Delivery, Message

from .host import AnalysisHost, Result

log = logging.getLogger("eeghub.analyzer")

def results_exchange(raw_data_exchange: str) -> str:
    """Named after the raw exchange: deployments (and tests) that share a
    broker but not a raw exchange do not see each other's results."""
    return f"{raw_data_exchange}.analysis_results"


class SharedResult(msgspec.Struct, kw_only=True):
    instance: str
    plugin_id: str
    user_id: str
    device_id: str
    session_id: str | None
    computed_at: float
    window_start_us: int
    window_end_us: int
    sequence: int
    value: Any


_decoder = msgspec.json.Decoder(SharedResult)
_encoder = msgspec.json.Encoder()


class ResultSharing:
    def __init__(self, broker: Broker, host: AnalysisHost, exchange: str, *, backlog: int = 1000) -> None:
        self.broker = broker
        self.exchange = exchange
        self.host = host
        self._queue: asyncio.Queue[Result] = asyncio.Queue(maxsize=backlog)
        self._types: dict[str, Any] = {}
        self.published = 0
        self.dropped = 0
        self.received = 0

    def offer(self, result: Result) -> None:
        """Queue a result computed here for publishing (a live view: when
        the broker lags, the oldest waiting result is dropped)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(result)

    async def run(self) -> None:
        await self.broker.declare_exchange(self.exchange)
        while True:
            result = await self._queue.get()
            body = _encoder.encode(
                SharedResult(
                    instance=result.instance or "",
                    plugin_id=result.plugin_id,
                    user_id=result.user_id,
                    device_id=result.device_id,
                    session_id=result.session_id,
                    computed_at=result.computed_at,
                    window_start_us=result.window_start_us,
                    window_end_us=result.window_end_us,
                    sequence=result.sequence,
                    value=msgspec.to_builtins(result.value),
                )
            )
            try:
                message = Message(body=body, content_type="application/json", headers={"instance": result.instance or ""})
                await self.broker.publish(message, exchange=self.exchange)
                self.published += 1
            except BrokerError as exc:
                self.dropped += 1
                log.warning("analysis results: publishing failed: %s", exc)

    def _result_type(self, plugin_id: str) -> Any:
        if plugin_id not in self._types:
            state = self.host.plugins.get(plugin_id)
            kind: Any = None
            if state is not None:
                try:
                    kind = typing.get_type_hints(state.plugin.analyze).get("return")
                except Exception:  # noqa: BLE001 - no usable annotation: keep plain JSON values
                    kind = None
            self._types[plugin_id] = kind
        return self._types[plugin_id]

    def decode_value(self, plugin_id: str, value: Any) -> Any:
        kind = self._result_type(plugin_id)
        if kind is None or kind is Any:
            return value
        try:
            return msgspec.convert(value, kind)
        except (msgspec.ValidationError, TypeError):
            return value

    async def receive(self, delivery: Delivery) -> None:
        sender = delivery.message.headers.get("instance")
        if sender and sender == self.host.instance:
            return  # computed here (not decoded at all)
        try:
            shared = _decoder.decode(delivery.message.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PermanentFailure(f"malformed analysis result: {exc}") from None
        if shared.instance == self.host.instance:
            return  # computed here
        self.received += 1
        self.host.add_remote(
            Result(
                plugin_id=shared.plugin_id,
                user_id=shared.user_id,
                device_id=shared.device_id,
                session_id=shared.session_id,
                computed_at=shared.computed_at,
                window_start_us=shared.window_start_us,
                window_end_us=shared.window_end_us,
                value=self.decode_value(shared.plugin_id, shared.value),
                sequence=shared.sequence,
                instance=shared.instance,
            )
        )
