"""RabbitMQ adapter of the ``Broker`` port (aio-pika).

Topology and compatibility
    Exchanges are durable fanout exchanges. A durable queue gets a durable
    ``<name>.dlq`` next to it. Main queues are declared with **no x-arguments**:
    a deployment of the predecessor already has ``processing_queue``,
    ``data_linker_queue``… as plain durable classic queues, and redeclaring
    them with a dead-letter exchange or a TTL would fail with
    PRECONDITION_FAILED. Retries and dead-lettering are therefore done here,
    by the consumer, not by a RabbitMQ DLX:

    * a failed attempt is republished to the same queue through the default
      exchange (routing key = queue name, so the other queues bound to a
      fanout exchange get no duplicate) with ``ATTEMPT_HEADER`` + 1, and only
      once the broker confirmed the copy is the original acknowledged;
    * the last attempt (or a ``PermanentFailure``) is published, confirmed,
      to ``<queue>.dlq`` with the error, origin queue, time and attempt count
      in headers, then acknowledged;
    * when that republish fails the original is *not* acknowledged but
      returned to the queue (nack + requeue), so nothing is lost.

Reconnection
    ``aio_pika.connect_robust`` reconnects after a broker restart and restores
    the channels, QoS, exchanges, queues, bindings and consumers declared
    through it. A publish during an outage does not wait for the reconnection:
    it fails at once (closed channel) or after ``publish_timeout``, as
    ``BrokerUnavailable``. Handlers running when the connection drops are
    cancelled by aio-pika; their messages were not acknowledged, so the broker
    delivers them again (``redelivered=True``) after the reconnection.

Header values
    Only ``str``, ``int``, ``float``, ``bool`` and ``None`` are accepted.
    ``None`` travels as the AMQP field type "void" (pamqp encodes and decodes
    it), so a header set to None arrives as None, exactly as in the
    in-process broker. Headers of foreign publishers that carry other types
    (bytes, decimals, nested tables) are turned into strings on the way in.

The URL's password is never logged: only ``safe_url`` (password masked) is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)
from yarl import URL

from eeghub.core.errors import BrokerError, BrokerUnavailable, PermanentFailure
from eeghub.core.messaging import BOOKKEEPING_HEADERS, attempt_of, check_headers, dead_letter_from, error_text
from eeghub.core.ports import (
    retry_delay,
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGIN_HEADER,
    DeadLetter,
    Delivery,
    Handler,
    HeaderValue,
    Message,
    dead_letter_queue,
)

log = logging.getLogger(__name__)

_REQUEUE_PAUSE = 1.0
"""Seconds to wait before returning a message we could not retry or
dead-letter: without it a broker that refuses the republish (say the DLQ was
deleted) would make the message bounce in a hot loop."""


# ---------------------------------------------------------------- messages
def _header_value(value: Any) -> HeaderValue:
    """Make a header of a foreign publisher fit ``HeaderValue``."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _to_amqp(message: Message, *, persistent: bool, extra: dict[str, HeaderValue] | None = None) -> aio_pika.Message:
    headers: dict[str, HeaderValue] = dict(message.headers)
    check_headers(headers)
    if extra:
        headers.update(extra)
    timestamp = message.timestamp or datetime.now(UTC)
    return aio_pika.Message(
        message.body,
        headers=headers,  # type: ignore[arg-type,unused-ignore]  # HeaderValue is a subset of FieldValue
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        # aiormq matches a returned (unroutable) message to its confirm by
        # message_id and invents one when it is missing; we pick it ourselves
        # so both adapters behave alike (uuid4 hex), and retries keep it.
        message_id=message.message_id or uuid.uuid4().hex,
        # pamqp writes the AMQP timestamp as whole POSIX *seconds* (the
        # predecessor wrote milliseconds into it).
        timestamp=timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
    )


def _from_amqp(incoming: AbstractIncomingMessage) -> tuple[Message, dict[str, HeaderValue]]:
    """The message as published, and the eeghub bookkeeping headers apart."""
    headers = {str(k): _header_value(v) for k, v in (incoming.headers or {}).items()}
    bookkeeping = {k: headers.pop(k) for k in BOOKKEEPING_HEADERS if k in headers}
    timestamp = incoming.timestamp
    if timestamp is not None and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    message = Message(
        body=incoming.body,
        headers=headers,
        content_type=incoming.content_type,
        content_encoding=incoming.content_encoding,
        message_id=incoming.message_id,
        timestamp=timestamp.astimezone(UTC) if timestamp is not None else None,
    )
    return message, bookkeeping


async def _close_channel_quietly(channel: AbstractChannel, timeout: float) -> None:
    """Close a channel, never cancelling its Channel.Close midway.

    aiormq answers a cancelled RPC by closing the channel; when the RPC was
    Channel.Close itself and the broker's CloseOk was already in, it sends a
    second Close and RabbitMQ drops the whole connection (CHANNEL_ERROR -
    expected 'channel.open'). So the close runs in a task of its own that a
    cancelled caller leaves to finish.
    """
    task = asyncio.ensure_future(asyncio.wait_for(channel.close(), timeout))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    with contextlib.suppress(Exception):
        await asyncio.shield(task)


# ---------------------------------------------------------------- topology
@dataclass(frozen=True, slots=True)
class _QueueSpec:
    """How this process declared a queue, to redeclare it identically on a
    consumer's channel (which restores it after a reconnection)."""

    durable: bool
    exclusive: bool
    arguments: dict[str, Any] | None


class _RabbitSubscription:
    """One consumer on its own channel (QoS is per channel)."""

    def __init__(
        self,
        broker: RabbitMQBroker,
        channel: AbstractChannel,
        queue: AbstractQueue,
        handler: Handler,
        max_attempts: int,
        has_dlq: bool,
    ) -> None:
        self._broker = broker
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self._max_attempts = max_attempts
        self._has_dlq = has_dlq
        self._tag: ConsumerTag | None = None
        self._stopping = False
        self._cancel_rpc: asyncio.Future[None] | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._done = asyncio.Event()

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        # aio-pika runs this in a task of its own per delivery; the channel's
        # QoS bounds how many exist at once.
        if self._stopping:
            # Delivered between basic.cancel and its OK: hand it back.
            with contextlib.suppress(Exception):
                await incoming.nack(requeue=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._broker._process(
                self._queue.name, incoming, self._handler, self._max_attempts, has_dlq=self._has_dlq
            )
        finally:
            self._in_flight.discard(task)

    async def cancel(self) -> None:
        """Stop new deliveries, wait for the handlers in flight, close the
        channel. If this wait is itself cancelled, the handlers are cancelled
        too and their messages go back to the queue unacknowledged."""
        if self._done.is_set():
            return
        try:
            await asyncio.shield(self._stop_consuming())
            while self._in_flight:
                await asyncio.wait(set(self._in_flight))
        except asyncio.CancelledError:
            await asyncio.shield(self.abort())
            raise
        await self._close_channel()

    def _stop_consuming(self) -> asyncio.Future[None]:
        """basic.cancel, once. It runs in a task of its own, never cancelled
        midway: aiormq closes the channel when an RPC is cancelled, and a
        channel closing twice at once can upset the connection."""
        self._stopping = True
        if self._cancel_rpc is None:
            self._cancel_rpc = asyncio.ensure_future(self._basic_cancel())
        return self._cancel_rpc

    async def _basic_cancel(self) -> None:
        if self._tag is None:
            return
        try:
            await asyncio.wait_for(self._queue.cancel(self._tag), self._broker.publish_timeout)
        except Exception as exc:  # noqa: BLE001 - closing the channel cancels the consumer anyway
            log.debug("basic.cancel on %s failed: %s", self._queue.name, exc)

    async def abort(self) -> None:
        """Stop at once: cancel the handlers; the broker requeues their messages."""
        stopped = self._stop_consuming()
        for task in self._in_flight:
            task.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await stopped
        await self._close_channel()

    async def _close_channel(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        self._broker._subscriptions.discard(self)
        # Closing the channel returns every unacknowledged message to its queue.
        await _close_channel_quietly(self._channel, self._broker.publish_timeout)


class RabbitMQBroker:
    """The ``Broker`` port on a RabbitMQ server.

    ``publish_timeout`` bounds every wait for a publisher confirm (and for a
    ping); ``connect_timeout`` bounds the first connection in ``start``;
    after that aio-pika reconnects every ``reconnect_interval`` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        publish_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        retry_backoff: float = 0.5,
    ) -> None:
        self._url = url
        self._retry_backoff = retry_backoff
        parsed = URL(url)
        self._password = parsed.password or ""
        self.safe_url = str(parsed.with_password("***")) if parsed.password else str(parsed)
        self.publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._admin_channel: AbstractChannel | None = None
        self._queues: dict[str, _QueueSpec] = {}
        self._known_exchanges: set[str] = set()
        self._exchange_objects: dict[str, AbstractExchange] = {}
        self._subscriptions: set[_RabbitSubscription] = set()
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        try:
            self._connection = await asyncio.wait_for(
                aio_pika.connect_robust(
                    self._url, timeout=self._connect_timeout, reconnect_interval=self._reconnect_interval
                ),
                self._connect_timeout,
            )
            # Publishing (with confirms; unroutable mandatory messages raise)
            # and declaring get channels of their own: a channel error from a
            # bad declaration closes only the admin channel, never a publish
            # in flight.
            self._publish_channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._admin_channel = await self._connection.channel(publisher_confirms=False)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is "unavailable"
            await self._close_connection()
            raise BrokerUnavailable(f"cannot connect to RabbitMQ at {self.safe_url}: {self._redact(exc)}") from None
        log.info("connected to RabbitMQ at %s", self.safe_url)

    async def close(self) -> None:
        """Stop every consumer at once (their unacknowledged messages go back
        to the queues) and close the connection. Drain first with
        ``Subscription.cancel`` for a graceful stop."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            with contextlib.suppress(Exception):
                await sub.abort()
        await self._close_connection()

    async def _close_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), self.publish_timeout)
        self._connection = None

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._open_scratch_channel_and_close(), self.publish_timeout)
        except BrokerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BrokerUnavailable(f"RabbitMQ at {self.safe_url} does not answer: {self._redact(exc)}") from None

    async def _open_scratch_channel_and_close(self) -> None:
        channel = await self._plain_channel()
        await _close_channel_quietly(channel, self.publish_timeout)

    async def _plain_channel(self) -> AbstractChannel:
        """A channel that is *not* restored after a reconnection or after the
        broker closed it (a 404 on a passive declaration does): for scratch
        work only. ``connection.channel()`` would give a robust one."""
        channel = aio_pika.Channel(self._connected(), publisher_confirms=False)
        await channel.initialize()
        return channel

    # ------------------------------------------------------------ topology
    async def declare_exchange(self, name: str) -> None:
        async with self._translated(f"declare exchange {name!r}"):
            await self._admin().declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        self._known_exchanges.add(name)

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        bind_to: str | None = None,
        exclusive: bool = False,
        max_length: int | None = None,
    ) -> None:
        """Declare ``name`` (exclusive queues are never durable and have no
        DLQ: they live and die with this connection)."""
        durable = durable and not exclusive
        arguments: dict[str, Any] | None = {"x-max-length": max_length} if max_length is not None else None
        spec = _QueueSpec(durable=durable, exclusive=exclusive, arguments=arguments)
        channel = self._admin()
        async with self._translated(f"declare queue {name!r}"):
            # Exclusive but not auto-delete: RabbitMQ deletes an auto-delete
            # queue when its last consumer cancels, and a cancelled
            # subscription must not lose the queue (the in-process broker
            # keeps it). An exclusive queue still dies with the connection.
            queue = await channel.declare_queue(name, durable=durable, exclusive=exclusive, arguments=arguments)
            if durable:
                await channel.declare_queue(dead_letter_queue(name), durable=True)
            if bind_to is not None:
                await queue.bind(bind_to, routing_key="")
        self._queues[name] = spec

    # ------------------------------------------------------------ publishing
    async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
        if (queue is None) == (exchange is None):
            raise ValueError("publish needs exactly one of queue= or exchange=")
        if queue is not None:
            spec = self._queues.get(queue)
            amqp = _to_amqp(message, persistent=spec.durable if spec else True)
            await self._publish_confirmed(amqp, exchange="", routing_key=queue)
        else:
            assert exchange is not None
            await self._publish_confirmed(_to_amqp(message, persistent=True), exchange=exchange, routing_key="")

    async def _publish_confirmed(self, amqp: aio_pika.Message, *, exchange: str, routing_key: str) -> None:
        """Publish and wait for the confirm; every failure becomes a
        ``BrokerError`` (``BrokerUnavailable`` when retrying later may help)."""
        channel = self._publish()
        try:
            async with asyncio.timeout(self.publish_timeout):
                if exchange:
                    if exchange not in self._known_exchanges:
                        await self._check_exchange(exchange)
                    target = self._exchange_objects.get(exchange)
                    if target is None:
                        target = await channel.get_exchange(exchange, ensure=False)
                        self._exchange_objects[exchange] = target
                    # Not mandatory: a fanout exchange with no queue bound
                    # drops the message, as the in-process broker does.
                    await target.publish(amqp, routing_key, mandatory=False)
                else:
                    # Mandatory: a message to a queue that does not exist
                    # comes back (Basic.Return) instead of vanishing.
                    await channel.default_exchange.publish(amqp, routing_key, mandatory=True)
        except TimeoutError:
            raise BrokerUnavailable(f"RabbitMQ did not confirm the message within {self.publish_timeout:g} s") from None
        except aiormq.exceptions.PublishError:
            raise BrokerError(f"no queue named {routing_key!r} (message returned unroutable)") from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            self._known_exchanges.discard(exchange)
            raise BrokerError(f"cannot publish: {self._redact(exc)}") from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"RabbitMQ refused the message: {self._redact(exc)}") from None
        except BrokerError:
            raise
        except Exception as exc:  # noqa: BLE001 - closed channel, lost connection…
            raise BrokerUnavailable(f"cannot publish to RabbitMQ: {type(exc).__name__}: {self._redact(exc)}") from None

    async def _check_exchange(self, name: str) -> None:
        """Passive declare on a scratch channel: publishing to a missing
        exchange would close the shared publish channel under other publishers."""
        channel = await self._plain_channel()
        try:
            await channel.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise BrokerError(f"no exchange named {name!r}") from None
        finally:
            await _close_channel_quietly(channel, self.publish_timeout)
        self._known_exchanges.add(name)

    # ------------------------------------------------------------ consuming
    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int = 8, max_attempts: int = 5
    ) -> _RabbitSubscription:
        if prefetch < 1 or max_attempts < 1:
            raise ValueError("prefetch and max_attempts must be at least 1")
        connection = self._connected()
        async with self._translated(f"consume {queue!r}"):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.set_qos(prefetch_count=prefetch)
                spec = self._queues.get(queue)
                if spec is not None:
                    # Same declaration as declare_queue: the robust channel
                    # redeclares it before it resumes consuming after a
                    # reconnection (an exclusive queue is gone by then).
                    amqp_queue = await channel.declare_queue(
                        queue,
                        durable=spec.durable,
                        exclusive=spec.exclusive,
                        arguments=spec.arguments,
                    )
                    has_dlq = spec.durable
                else:
                    amqp_queue = await channel.declare_queue(queue, passive=True)
                    has_dlq = await self._queue_exists(dead_letter_queue(queue))
                sub = _RabbitSubscription(self, channel, amqp_queue, handler, max_attempts, has_dlq)
                self._subscriptions.add(sub)
                await sub.start()
            except BaseException:
                await _close_channel_quietly(channel, self.publish_timeout)
                raise
        return sub

    async def _process(
        self, queue: str, incoming: AbstractIncomingMessage, handler: Handler, max_attempts: int, *, has_dlq: bool
    ) -> None:
        """Run the handler on one delivery and settle it (ack, retry or DLQ)."""
        message, bookkeeping = _from_amqp(incoming)
        attempt = attempt_of(bookkeeping)
        delivery = Delivery(message=message, queue=queue, attempt=attempt, redelivered=bool(incoming.redelivered))
        persistent = incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        try:
            await handler(delivery)
        except asyncio.CancelledError:
            # Cancelled subscription or lost connection: leave it
            # unacknowledged, the broker delivers it again.
            raise
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the message's fate
            permanent = isinstance(exc, PermanentFailure)
            if not permanent and attempt < max_attempts:
                log.info(
                    "message %s on %s failed (attempt %d/%d): %s",
                    message.message_id,
                    queue,
                    attempt,
                    max_attempts,
                    error_text(exc),
                )
                # Back off while holding the prefetch slot, so a failing
                # dependency is not hammered and has time to recover.
                await asyncio.sleep(retry_delay(attempt, self._retry_backoff))
                settled = await self._republish(
                    _to_amqp(message, persistent=persistent, extra={ATTEMPT_HEADER: attempt + 1}), queue, "retry"
                )
            elif has_dlq:
                log.warning(
                    "message %s on %s dead-lettered after %d attempt(s): %s",
                    message.message_id,
                    queue,
                    attempt,
                    error_text(exc),
                )
                extra: dict[str, HeaderValue] = {
                    ATTEMPT_HEADER: attempt,
                    ERROR_HEADER: error_text(exc),
                    ORIGIN_HEADER: queue,
                    FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
                }
                settled = await self._republish(
                    _to_amqp(message, persistent=True, extra=extra), dead_letter_queue(queue), "dead-letter"
                )
            else:
                # Only non-durable queues (live feeds) have no DLQ.
                log.error(
                    "message %s on %s dropped after %d attempt(s), queue has no DLQ: %s",
                    message.message_id,
                    queue,
                    attempt,
                    error_text(exc),
                )
                settled = True
            if not settled:
                await asyncio.sleep(_REQUEUE_PAUSE)
                await self._settle(incoming.nack(requeue=True), queue)
                return
        await self._settle(incoming.ack(), queue)

    async def _republish(self, amqp: aio_pika.Message, target: str, purpose: str) -> bool:
        try:
            await self._publish_confirmed(amqp, exchange="", routing_key=target)
        except BrokerError as exc:
            log.warning("cannot %s a message to %s (%s); returning it to its queue", purpose, target, exc)
            return False
        return True

    @staticmethod
    async def _settle(action: Awaitable[None], queue: str) -> None:
        try:
            await action
        except Exception as exc:  # noqa: BLE001
            # The channel is gone: the broker redelivers the message.
            log.warning("cannot settle a message of %s (%s); the broker will deliver it again", queue, exc)

    # ------------------------------------------------------------ inspection
    async def queue_depth(self, queue: str) -> int:
        async with self._scratch_channel(f"queue_depth {queue!r}") as channel:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    async def _queue_exists(self, name: str) -> bool:
        try:
            await self.queue_depth(name)
        except BrokerUnavailable:
            raise
        except BrokerError:
            return False
        return True

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Peek with basic.get without ack on a scratch channel; closing the
        channel puts every message back (their order in the DLQ may change)."""
        letters: list[DeadLetter] = []
        async with self._scratch_channel(f"read dead letters of {queue!r}") as channel:
            dlq = await channel.declare_queue(dead_letter_queue(queue), passive=True)
            while len(letters) < limit:
                incoming = await dlq.get(no_ack=False, fail=False, timeout=self.publish_timeout)
                if incoming is None:
                    break
                message, bookkeeping = _from_amqp(incoming)
                letters.append(dead_letter_from(message, bookkeeping, queue))
        return letters

    async def replay_dead_letters(self, queue: str, limit: int | None = None) -> int:
        """Move dead letters back to ``queue`` one by one: publish (confirmed)
        with attempt 1, then ack the DLQ copy. At most the number present at
        the start moves, so letters that fail again are not replayed twice."""
        moved = 0
        async with self._scratch_channel(f"replay dead letters of {queue!r}") as channel:
            dlq = await channel.declare_queue(dead_letter_queue(queue), passive=True)
            present = int(dlq.declaration_result.message_count or 0)
            todo = present if limit is None else min(present, limit)
            while moved < todo:
                incoming = await dlq.get(no_ack=False, fail=False, timeout=self.publish_timeout)
                if incoming is None:
                    break
                message, _ = _from_amqp(incoming)
                await self._publish_confirmed(
                    _to_amqp(message, persistent=True, extra={ATTEMPT_HEADER: 1}), exchange="", routing_key=queue
                )
                await incoming.ack()
                moved += 1
        return moved

    # ------------------------------------------------------------ helpers
    def _connected(self) -> AbstractRobustConnection:
        if self._closed or self._connection is None:
            raise BrokerUnavailable("the RabbitMQ broker is not started or already closed")
        return self._connection

    def _admin(self) -> AbstractChannel:
        self._connected()
        assert self._admin_channel is not None
        return self._admin_channel

    def _publish(self) -> AbstractChannel:
        self._connected()
        assert self._publish_channel is not None
        return self._publish_channel

    def _redact(self, exc: BaseException | str) -> str:
        text = str(exc)
        return text.replace(self._password, "***") if self._password else text

    @contextlib.asynccontextmanager
    async def _scratch_channel(self, what: str) -> Any:
        """A short-lived channel for passive declarations and basic.get: a
        404 closes it, not a shared one."""
        async with self._translated(what):
            channel = await asyncio.wait_for(self._plain_channel(), self.publish_timeout)
            try:
                yield channel
            finally:
                await _close_channel_quietly(channel, self.publish_timeout)

    @contextlib.asynccontextmanager
    async def _translated(self, what: str) -> Any:
        """Turn aio-pika/aiormq errors into the port's errors."""
        try:
            yield
        except (BrokerError, ValueError, TypeError):
            raise
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise BrokerError(f"cannot {what}: {self._redact(exc)}") from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise BrokerError(f"cannot {what}: {self._redact(exc)}") from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise BrokerError(f"cannot {what}: {self._redact(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - timeouts, lost connection…
            raise BrokerUnavailable(f"cannot {what}: {type(exc).__name__}: {self._redact(exc)}") from None
