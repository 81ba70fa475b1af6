"""The RabbitMQ adapter survives a broker restart.

Restarts the RabbitMQ application on this machine (``rabbitmqctl stop_app``
then ``start_app``, always restored): every other client of that server is
disconnected for a few seconds while this test runs.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter

import aio_pika
import pytest

from eeghub.adapters.rabbitmq_broker import RabbitMQBroker
from eeghub.core.errors import BrokerUnavailable
from eeghub.core.ports import Delivery, Message, dead_letter_queue
from tests.fixtures.services import unavailable

pytestmark = pytest.mark.rabbitmq

PUBLISH_TIMEOUT = 1.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def require_rabbitmqctl() -> None:
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl", "not on PATH")
    try:
        rabbitmqctl("status")
    except (subprocess.SubprocessError, OSError) as exc:
        unavailable("rabbitmqctl", exc)


async def publish_until_confirmed(
    broker: RabbitMQBroker,
    message: Message,
    *,
    queue: str | None = None,
    exchange: str | None = None,
    within: float = 60.0,
) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await broker.publish(message, queue=queue, exchange=exchange)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def test_publisher_and_consumers_survive_a_restart(rabbitmq_url: str, unique_name: str) -> None:
    require_rabbitmqctl()
    queue, live, exchange = f"{unique_name}.durable", f"{unique_name}.live", f"{unique_name}.x"
    broker = RabbitMQBroker(rabbitmq_url, publish_timeout=PUBLISH_TIMEOUT, connect_timeout=5.0, reconnect_interval=0.5)
    await broker.start()
    durable_seen: Counter[bytes] = Counter()
    live_seen: Counter[bytes] = Counter()

    redelivered: list[bytes] = []

    async def on_durable(delivery: Delivery) -> None:
        if delivery.redelivered:
            redelivered.append(delivery.message.body)
        elif delivery.message.body.startswith(b"before"):
            # Slow, so that some are in flight (unacknowledged) at the restart.
            await asyncio.sleep(1.0)
        durable_seen[delivery.message.body] += 1

    async def on_live(delivery: Delivery) -> None:
        live_seen[delivery.message.body] += 1

    try:
        await broker.declare_exchange(exchange)
        await broker.declare_queue(queue, bind_to=exchange)
        # An exclusive queue dies with the connection; it must come back.
        await broker.declare_queue(live, durable=False, exclusive=True, max_length=1000, bind_to=exchange)
        durable_sub = await broker.consume(queue, on_durable, prefetch=4)
        live_sub = await broker.consume(live, on_live, prefetch=4)

        confirmed: list[bytes] = []
        for i in range(5):
            body = b"before-%d" % i
            await broker.publish(Message(body=body), exchange=exchange)
            confirmed.append(body)

        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await broker.publish(Message(body=b"during"), exchange=exchange)
            assert time.monotonic() - started < PUBLISH_TIMEOUT + 0.5
            with pytest.raises(BrokerUnavailable):
                await broker.ping()
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")

        # aio-pika reconnects by itself; publishing works again once it has.
        await publish_until_confirmed(broker, Message(body=b"after-0"), exchange=exchange)
        confirmed.append(b"after-0")
        for i in range(1, 5):
            body = b"after-%d" % i
            await broker.publish(Message(body=body), exchange=exchange)
            confirmed.append(body)
        await broker.ping()

        # The same subscriptions keep receiving: every confirmed message
        # arrives at least once in the durable queue, and the post-restart
        # ones in the restored exclusive queue.
        deadline = time.monotonic() + 30
        while not (
            all(durable_seen[b] for b in confirmed) and all(live_seen[b] for b in confirmed if b.startswith(b"after"))
        ):
            assert time.monotonic() < deadline, (sorted(durable_seen), sorted(live_seen))
            await asyncio.sleep(0.05)
        assert b"during" not in durable_seen
        # The handlers cut off by the restart had not acknowledged: the
        # broker delivered those messages again.
        assert redelivered and all(b.startswith(b"before") for b in redelivered)
        await durable_sub.cancel()
        await live_sub.cancel()
        assert await broker.queue_depth(queue) == 0
    finally:
        await broker.close()
        with_connection = await aio_pika.connect(rabbitmq_url, timeout=10)
        try:
            channel = await with_connection.channel()
            for name in (queue, dead_letter_queue(queue), live):
                await channel.queue_delete(name)
            await channel.exchange_delete(exchange)
        finally:
            await with_connection.close()
