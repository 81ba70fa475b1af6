"""Contract of the ``Broker`` port, run against every adapter.

Three configurations: the in-process broker in memory, the in-process broker
journaled in SQLite, and RabbitMQ (unique queue and exchange names, deleted
after each test). What one adapter does here, the others must do too; the
tests at the end cover what only one configuration has (the journal across
instances, the compatibility with queues declared by the predecessor).
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eeghub.adapters.inprocess_broker import InProcessBroker
from eeghub.adapters.rabbitmq_broker import RabbitMQBroker
from eeghub.core.errors import BrokerError, BrokerUnavailable, PermanentFailure
from eeghub.core.ports import ATTEMPT_HEADER, Broker, Delivery, Message, dead_letter_queue

BACKENDS = ["memory", "journal", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


class BrokerFactory:
    """Opens brokers of one configuration and hands out names it cleans up."""

    def __init__(self, kind: str, prefix: str, *, url: str | None = None, journal: pathlib.Path | None = None) -> None:
        self.kind = kind
        self.prefix = prefix
        self.url = url
        self.journal = journal
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self._opened: list[Any] = []

    def queue(self, suffix: str) -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.append(name)
        return name

    def exchange(self, suffix: str) -> str:
        name = f"{self.prefix}.{suffix}.x"
        self.exchanges.append(name)
        return name

    async def open(self) -> Broker:
        """A new broker: on the same journal file, or a new connection."""
        broker: Any
        if self.kind == "rabbitmq":
            assert self.url is not None
            broker = RabbitMQBroker(self.url, publish_timeout=2.0, connect_timeout=5.0, retry_backoff=0.01)
        elif self.kind == "journal":
            broker = InProcessBroker(self.journal, retry_backoff=0.01)
        else:
            broker = InProcessBroker(retry_backoff=0.01)
        await broker.start()
        self._opened.append(broker)
        assert isinstance(broker, Broker)
        return broker

    async def cleanup(self) -> None:
        for broker in reversed(self._opened):
            await broker.close()
        if self.kind == "rabbitmq":
            import aio_pika

            connection = await aio_pika.connect(self.url, timeout=5)
            try:
                channel = await connection.channel()
                for name in self.queues:
                    for queue in (name, dead_letter_queue(name)):
                        await channel.queue_delete(queue)
                for name in self.exchanges:
                    await channel.exchange_delete(name)
            finally:
                await connection.close()


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest, tmp_path: pathlib.Path, unique_name: str) -> BrokerFactory:
    if request.param == "rabbitmq":
        # Skips (or fails, with EEGHUB_TEST_REQUIRE_SERVICES=1) without a server.
        url = request.getfixturevalue("rabbitmq_url")
        return BrokerFactory("rabbitmq", unique_name, url=url)
    return BrokerFactory(request.param, unique_name, journal=tmp_path / "broker.sqlite3")


@pytest.fixture
async def broker(factory: BrokerFactory) -> AsyncIterator[Broker]:
    try:
        yield await factory.open()
    finally:
        await factory.cleanup()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` is true (brokers deliver asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(seconds: float = 0.3) -> None:
    """Give a broker time to (wrongly) deliver something."""
    await asyncio.sleep(seconds)


def msg(body: bytes, **headers: Any) -> Message:
    return Message(body=body, headers=headers)


class Recorder:
    """A handler that records deliveries and can be told to fail."""

    def __init__(self, fail: Callable[[Delivery], BaseException | None] | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self.fail = fail

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.fail is not None and (exc := self.fail(delivery)) is not None:
            raise exc

    @property
    def bodies(self) -> list[bytes]:
        return [d.message.body for d in self.deliveries]


# ====================================================================== basics
async def test_roundtrip_preserves_the_message(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("roundtrip")
    await broker.declare_queue(queue)
    sent = Message(
        body=b"\x00\x01binary\xff",
        headers={"user_id": "u-1", "seq": 42, "big": 2**40, "gain": 0.5, "trigger": True, "session_id": None},
        content_type="application/octet-stream",
        content_encoding="zstd",
        message_id="m-1",
        timestamp=datetime(2024, 5, 6, 7, 8, 9, 654321, tzinfo=UTC),
    )
    await broker.publish(sent, queue=queue)
    await broker.publish(Message(body=b"no timestamp"), queue=queue)
    got = Recorder()
    sub = await broker.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 2, what="two deliveries")
    await sub.cancel()

    first, second = got.deliveries
    assert first.queue == queue
    assert (first.attempt, first.redelivered) == (1, False)
    received = first.message
    assert received.body == sent.body
    assert received.headers == sent.headers
    assert {k: type(v) for k, v in received.headers.items()} == {k: type(v) for k, v in sent.headers.items()}
    assert (received.content_type, received.content_encoding, received.message_id) == (
        "application/octet-stream",
        "zstd",
        "m-1",
    )
    # AMQP carries whole seconds (not milliseconds), in UTC.
    assert received.timestamp == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert received.timestamp is not None and received.timestamp.utcoffset() == timedelta(0)
    # Without a timestamp the broker stamps the publish time; without an id
    # it picks one.
    stamped = second.message.timestamp
    assert stamped is not None and abs(stamped - datetime.now(UTC)) < timedelta(seconds=5)
    assert second.message.headers == {}
    assert second.message.message_id and len(second.message.message_id) == 32


async def test_fanout_copies_to_every_bound_queue_only(broker: Broker, factory: BrokerFactory) -> None:
    exchange = factory.exchange("raw")
    durable, live, unbound = factory.queue("store"), factory.queue("live"), factory.queue("unbound")
    await broker.declare_exchange(exchange)
    await broker.declare_queue(durable, bind_to=exchange)
    # The live-feed shape: per-process, non-durable, bounded.
    await broker.declare_queue(live, durable=False, exclusive=True, max_length=100, bind_to=exchange)
    await broker.declare_queue(unbound)
    for i in range(3):
        await broker.publish(msg(b"p%d" % i), exchange=exchange)

    assert await broker.queue_depth(durable) == 3
    assert await broker.queue_depth(live) == 3
    assert await broker.queue_depth(unbound) == 0
    stored, fed = Recorder(), Recorder()
    subs = [await broker.consume(durable, stored), await broker.consume(live, fed)]
    await eventually(lambda: len(stored.deliveries) == 3 and len(fed.deliveries) == 3, what="3 + 3 deliveries")
    await settle()
    for sub in subs:
        await sub.cancel()
    assert stored.bodies == [b"p0", b"p1", b"p2"]
    assert fed.bodies == [b"p0", b"p1", b"p2"]


async def test_fanout_without_bound_queue_is_not_an_error(broker: Broker, factory: BrokerFactory) -> None:
    exchange = factory.exchange("lonely")
    await broker.declare_exchange(exchange)
    await broker.publish(msg(b"nobody listens"), exchange=exchange)


async def test_prefetch_bounds_concurrent_handlers(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("prefetch")
    await broker.declare_queue(queue)
    for i in range(10):
        await broker.publish(msg(b"%d" % i), queue=queue)
    running = peak = done = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done += 1

    sub = await broker.consume(queue, handler, prefetch=3)
    await eventually(lambda: done == 10, what="10 handled")
    await sub.cancel()
    assert peak == 3  # never more than prefetch, and they do run concurrently


async def test_queue_depth_counts_ready_messages_only(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("depth")
    await broker.declare_queue(queue)
    assert await broker.queue_depth(queue) == 0
    for i in range(5):
        await broker.publish(msg(b"%d" % i), queue=queue)
    assert await broker.queue_depth(queue) == 5

    release = asyncio.Event()
    started = Recorder()

    async def handler(delivery: Delivery) -> None:
        await started(delivery)
        await release.wait()

    sub = await broker.consume(queue, handler, prefetch=2)
    await eventually(lambda: len(started.deliveries) == 2, what="two in flight")
    await eventually(lambda: _depth_is(broker, queue, 3), what="depth 3 while 2 are in flight")
    release.set()
    await eventually(lambda: len(started.deliveries) == 5, what="all handled")
    await sub.cancel()
    assert await broker.queue_depth(queue) == 0


async def _depth_is(broker: Broker, queue: str, expected: int) -> bool:
    depth: int = await broker.queue_depth(queue)
    return depth == expected


async def test_max_length_drops_the_oldest(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("bounded")
    await broker.declare_queue(queue, durable=False, exclusive=True, max_length=3)
    for i in range(5):
        await broker.publish(msg(b"%d" % i), queue=queue)
    assert await broker.queue_depth(queue) == 3
    got = Recorder()
    sub = await broker.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 3, what="3 deliveries")
    await sub.cancel()
    assert got.bodies == [b"2", b"3", b"4"]


async def test_exclusive_queue_outlives_its_subscriptions(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("mine")
    await broker.declare_queue(queue, durable=False, exclusive=True)
    first = Recorder()
    sub = await broker.consume(queue, first)
    await broker.publish(msg(b"1"), queue=queue)
    await eventually(lambda: len(first.deliveries) == 1, what="first delivery")
    await sub.cancel()
    # Still there for the next consumer of this process (no auto-delete).
    await broker.publish(msg(b"2"), queue=queue)
    assert await broker.queue_depth(queue) == 1
    second = Recorder()
    sub = await broker.consume(queue, second)
    await eventually(lambda: len(second.deliveries) == 1, what="second delivery")
    await sub.cancel()
    assert second.bodies == [b"2"]


# ====================================================================== errors
async def test_publishing_to_an_undeclared_target_raises_broker_error(broker: Broker, factory: BrokerFactory) -> None:
    with pytest.raises(BrokerError) as queue_error:
        await broker.publish(msg(b"lost?"), queue=factory.queue("never-declared"))
    with pytest.raises(BrokerError) as exchange_error:
        await broker.publish(msg(b"lost?"), exchange=factory.exchange("never-declared"))
    # A mistake, not an outage: retrying would not help.
    assert not isinstance(queue_error.value, BrokerUnavailable)
    assert not isinstance(exchange_error.value, BrokerUnavailable)
    # The broker is still usable afterwards.
    queue = factory.queue("after-error")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"fine"), queue=queue)
    assert await broker.queue_depth(queue) == 1


async def test_unknown_queue_is_a_broker_error(broker: Broker, factory: BrokerFactory) -> None:
    name = factory.queue("unknown")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: broker.queue_depth(name),
        lambda: broker.dead_letters(name),
        lambda: broker.consume(name, Recorder()),
    ]
    for call in calls:
        with pytest.raises(BrokerError):
            await call()


async def test_ping_and_closed_broker(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("closed")
    await broker.declare_queue(queue)
    await broker.ping()
    await broker.close()
    with pytest.raises(BrokerUnavailable):
        await broker.ping()
    with pytest.raises(BrokerUnavailable):
        await broker.publish(msg(b"x"), queue=queue)
    await broker.close()  # closing twice is harmless


# ====================================================================== retries and dead letters
async def test_failing_handler_is_tried_max_attempts_then_dead_lettered(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("failing")
    await broker.declare_queue(queue)
    before = datetime.now(UTC).replace(microsecond=0)
    await broker.publish(Message(body=b"a", headers={"k": "v"}, message_id="id-a"), queue=queue)
    await broker.publish(Message(body=b"b", headers={"k": "w"}, message_id="id-b"), queue=queue)
    failing = Recorder(lambda d: ValueError(f"boom {d.message.body!r}"))
    sub = await broker.consume(queue, failing, max_attempts=3)
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 2), what="2 dead letters")
    await settle()
    await sub.cancel()

    attempts: dict[bytes, list[int]] = defaultdict(list)
    for d in failing.deliveries:
        attempts[d.message.body].append(d.attempt)
        assert ATTEMPT_HEADER not in d.message.headers
    assert dict(attempts) == {b"a": [1, 2, 3], b"b": [1, 2, 3]}
    assert await broker.queue_depth(queue) == 0

    letters = await broker.dead_letters(queue)
    assert sorted(letter.message.body for letter in letters) == [b"a", b"b"]
    for letter in letters:
        assert letter.queue == queue
        assert letter.attempts == 3
        assert letter.error.startswith("ValueError: boom")
        assert letter.failed_at is not None and letter.failed_at >= before
        # The message as published, without the bookkeeping headers.
        assert letter.message.headers == {"k": "v" if letter.message.body == b"a" else "w"}
        assert letter.message.message_id == "id-" + letter.message.body.decode()
    # Peeking does not remove them.
    assert len(await broker.dead_letters(queue)) == 2
    assert len(await broker.dead_letters(queue, limit=1)) == 1
    assert await broker.queue_depth(dead_letter_queue(queue)) == 2


async def test_retries_back_off(broker: Broker, factory: BrokerFactory) -> None:
    """Attempt n+1 comes no sooner than retry_delay(n) after attempt n."""
    import time

    broker._retry_backoff = 0.2  # type: ignore[attr-defined]
    queue = factory.queue("backoff")
    await broker.declare_queue(queue)
    seen: list[float] = []

    async def failing(delivery: Delivery) -> None:
        seen.append(time.monotonic())
        raise ValueError("still down")

    await broker.publish(msg(b"x"), queue=queue)
    sub = await broker.consume(queue, failing, max_attempts=3)
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 1), what="a dead letter")
    await sub.cancel()
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.19 and seen[2] - seen[1] >= 0.39


async def test_error_text_is_truncated(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("long-error")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"x"), queue=queue)
    sub = await broker.consume(queue, Recorder(lambda d: PermanentFailure("e" * 5000)))
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 1), what="a dead letter")
    await sub.cancel()
    (letter,) = await broker.dead_letters(queue)
    assert letter.error.startswith("PermanentFailure: eee")
    assert 100 < len(letter.error) <= 1000


async def test_permanent_failure_is_dead_lettered_after_one_attempt(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("permanent")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"bad"), queue=queue)
    failing = Recorder(lambda d: PermanentFailure("schema mismatch"))
    sub = await broker.consume(queue, failing, max_attempts=5)
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 1), what="a dead letter")
    await settle()
    await sub.cancel()
    assert [d.attempt for d in failing.deliveries] == [1]
    (letter,) = await broker.dead_letters(queue)
    assert (letter.attempts, letter.error) == (1, "PermanentFailure: schema mismatch")


async def test_flaky_handler_succeeds_without_dead_letter(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("flaky")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"flaky", n=1), queue=queue)
    flaky = Recorder(lambda d: ConnectionError("transient") if d.attempt < 3 else None)
    sub = await broker.consume(queue, flaky, max_attempts=5)
    await eventually(lambda: len(flaky.deliveries) == 3, what="three attempts")
    await settle()
    await sub.cancel()
    assert [d.attempt for d in flaky.deliveries] == [1, 2, 3]
    assert all(d.message.headers == {"n": 1} for d in flaky.deliveries)
    assert await broker.queue_depth(queue) == 0
    assert await broker.queue_depth(dead_letter_queue(queue)) == 0
    assert await broker.dead_letters(queue) == []


async def test_retries_go_to_the_failing_queue_only(broker: Broker, factory: BrokerFactory) -> None:
    exchange = factory.exchange("retry-fanout")
    failing_q, other_q = factory.queue("retry-a"), factory.queue("retry-b")
    await broker.declare_exchange(exchange)
    await broker.declare_queue(failing_q, bind_to=exchange)
    await broker.declare_queue(other_q, bind_to=exchange)
    await broker.publish(msg(b"once"), exchange=exchange)
    failing = Recorder(lambda d: RuntimeError("no") if d.attempt < 2 else None)
    sub = await broker.consume(failing_q, failing, max_attempts=3)
    await eventually(lambda: len(failing.deliveries) == 2, what="retry")
    await settle()
    await sub.cancel()
    assert await broker.queue_depth(other_q) == 1  # no duplicate from the retry


async def test_replay_moves_dead_letters_back(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("replay")
    await broker.declare_queue(queue)
    for i in range(3):
        await broker.publish(msg(b"job%d" % i, job=i), queue=queue)
    sub = await broker.consume(queue, Recorder(lambda d: PermanentFailure("bug")))
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 3), what="3 dead letters")
    await sub.cancel()

    assert await broker.replay_dead_letters(queue, limit=1) == 1
    assert await broker.queue_depth(queue) == 1
    assert await broker.replay_dead_letters(queue) == 2
    assert await broker.replay_dead_letters(queue) == 0
    assert await broker.queue_depth(dead_letter_queue(queue)) == 0
    assert await broker.queue_depth(queue) == 3

    fixed = Recorder()
    sub = await broker.consume(queue, fixed)
    await eventually(lambda: len(fixed.deliveries) == 3, what="3 replayed deliveries")
    await settle()
    await sub.cancel()
    assert sorted(fixed.bodies) == [b"job0", b"job1", b"job2"]
    assert [d.attempt for d in fixed.deliveries] == [1, 1, 1]  # a fresh attempt count
    assert all(d.message.headers == {"job": int(d.message.body[3:])} for d in fixed.deliveries)
    assert await broker.dead_letters(queue) == []
    assert await broker.queue_depth(queue) == 0


# ====================================================================== cancel and redelivery
async def test_cancel_waits_for_handlers_in_flight(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("cancel")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"slow"), queue=queue)
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        await asyncio.sleep(0.05)
        finished.append(delivery.message.body)

    sub = await broker.consume(queue, handler)
    await asyncio.wait_for(started.wait(), 5)
    cancelling = asyncio.create_task(sub.cancel())
    await settle(0.2)
    assert not cancelling.done()  # still waiting for the handler
    release.set()
    await asyncio.wait_for(cancelling, 5)
    assert finished == [b"slow"]
    # It was acknowledged, and the cancelled consumer takes nothing new.
    await broker.publish(msg(b"later"), queue=queue)
    await settle()
    assert await broker.queue_depth(queue) == 1


async def test_message_of_a_cancelled_consumer_is_redelivered(broker: Broker, factory: BrokerFactory) -> None:
    queue = factory.queue("redeliver")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"stuck", k="v"), queue=queue)
    started = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()  # never returns

    sub = await broker.consume(queue, stuck)
    await asyncio.wait_for(started.wait(), 5)
    # Giving up on the graceful cancel stops the handler before it acked.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.cancel(), 0.3)

    got = Recorder()
    sub = await broker.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 1, what="the redelivery")
    await settle()
    await sub.cancel()
    (again,) = got.deliveries
    assert again.message.body == b"stuck" and again.message.headers == {"k": "v"}
    assert again.redelivered is True
    assert again.attempt == 1
    assert await broker.queue_depth(queue) == 0


# ====================================================================== journal only
@pytest.fixture
async def journal_factory(tmp_path: pathlib.Path, unique_name: str) -> AsyncIterator[BrokerFactory]:
    factory = BrokerFactory("journal", unique_name, journal=tmp_path / "broker.sqlite3")
    try:
        yield factory
    finally:
        await factory.cleanup()


async def test_journal_keeps_published_messages_for_the_next_instance(journal_factory: BrokerFactory) -> None:
    factory = journal_factory
    broker = await factory.open()
    queue, live = factory.queue("kept"), factory.queue("live")
    await broker.declare_queue(queue)
    await broker.declare_queue(live, durable=False)
    for i in range(3):
        await broker.publish(msg(b"%d" % i, i=i), queue=queue)
    await broker.publish(msg(b"gone"), queue=live)
    await broker.close()

    second = await factory.open()
    await second.declare_queue(queue)
    await second.declare_queue(live, durable=False)
    assert await second.queue_depth(live) == 0  # non-durable queues are memory only
    got = Recorder()
    sub = await second.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 3, what="3 kept messages")
    await sub.cancel()
    assert got.bodies == [b"0", b"1", b"2"]
    assert [d.message.headers for d in got.deliveries] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not any(d.redelivered for d in got.deliveries)


async def test_journal_redelivers_a_message_in_flight_at_close(journal_factory: BrokerFactory) -> None:
    factory = journal_factory
    broker = await factory.open()
    queue = factory.queue("inflight")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"halfway"), queue=queue)
    started = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    await broker.consume(queue, stuck)
    await asyncio.wait_for(started.wait(), 5)
    await broker.close()  # as a process stopping mid-message

    second = await factory.open()
    await second.declare_queue(queue)
    got = Recorder()
    sub = await second.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 1, what="the redelivery")
    await sub.cancel()
    assert got.deliveries[0].message.body == b"halfway"
    assert got.deliveries[0].redelivered is True
    assert await second.queue_depth(queue) == 0


async def test_journal_second_instance_replays_into_the_running_one(journal_factory: BrokerFactory) -> None:
    factory = journal_factory
    broker = await factory.open()
    queue = factory.queue("cli")
    await broker.declare_queue(queue)
    healthy = False
    handled = Recorder(lambda d: None if healthy else PermanentFailure("not yet"))
    sub = await broker.consume(queue, handled)
    for i in range(2):
        await broker.publish(msg(b"job%d" % i), queue=queue)
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 2), what="2 dead letters")
    healthy = True

    # `eeghub dlq` in another process: another instance on the same file.
    cli = await factory.open()
    await cli.declare_queue(queue)
    letters = await cli.dead_letters(queue)
    assert sorted(letter.message.body for letter in letters) == [b"job0", b"job1"]
    assert all(letter.error == "PermanentFailure: not yet" for letter in letters)
    assert await cli.queue_depth(dead_letter_queue(queue)) == 2
    assert await cli.replay_dead_letters(queue) == 2
    await cli.close()

    # The running instance notices the rows the other one inserted.
    await eventually(lambda: len(handled.deliveries) == 4, what="the replayed messages")
    await sub.cancel()
    assert sorted(handled.bodies[2:]) == [b"job0", b"job1"]
    assert [d.attempt for d in handled.deliveries[2:]] == [1, 1]
    assert await broker.dead_letters(queue) == []
    assert await broker.queue_depth(queue) == 0


async def test_journal_failure_while_dead_lettering_keeps_the_message(
    journal_factory: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    broker = await journal_factory.open()
    queue = journal_factory.queue("stuck-journal")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"precious"), queue=queue)
    assert isinstance(broker, InProcessBroker)
    journal = broker._journal
    assert journal is not None
    real_move = journal.move

    def broken_move(*args: Any) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal, "move", broken_move)
    failing = Recorder(lambda d: PermanentFailure("bad"))
    sub = await broker.consume(queue, failing)
    # The DLQ write failed: the message went back instead of vanishing.
    await eventually(lambda: len(failing.deliveries) >= 2, what="a second delivery")
    assert failing.deliveries[1].redelivered is True
    monkeypatch.setattr(journal, "move", real_move)
    await eventually(lambda: _depth_is(broker, dead_letter_queue(queue), 1), what="the dead letter")
    await sub.cancel()
    assert await broker.queue_depth(queue) == 0


# ====================================================================== RabbitMQ only
@pytest.fixture
async def rabbit_factory(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerFactory]:
    factory = BrokerFactory("rabbitmq", unique_name, url=rabbitmq_url)
    try:
        yield factory
    finally:
        await factory.cleanup()


@pytest.mark.rabbitmq
async def test_rabbitmq_accepts_queues_declared_by_the_predecessor(rabbit_factory: BrokerFactory) -> None:
    import aio_pika

    queue = rabbit_factory.queue("processing_queue")
    # The predecessor declared its queues plain durable, without x-arguments;
    # redeclaring them with a DLX would fail with PRECONDITION_FAILED.
    connection = await aio_pika.connect(rabbit_factory.url, timeout=5)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        await channel.default_exchange.publish(aio_pika.Message(b"old"), routing_key=queue)
    finally:
        await connection.close()

    broker = await rabbit_factory.open()
    await broker.declare_queue(queue)
    got = Recorder()
    sub = await broker.consume(queue, got)
    await eventually(lambda: len(got.deliveries) == 1, what="the old message")
    await sub.cancel()
    assert got.bodies == [b"old"]
    assert await broker.queue_depth(dead_letter_queue(queue)) == 0  # its DLQ exists now


@pytest.mark.rabbitmq
async def test_rabbitmq_failed_dead_lettering_returns_the_message(rabbit_factory: BrokerFactory) -> None:
    import aio_pika

    broker = await rabbit_factory.open()
    queue = rabbit_factory.queue("no-dlq")
    await broker.declare_queue(queue)
    await broker.publish(msg(b"precious"), queue=queue)
    # Someone deleted the DLQ: the dead-letter publish comes back unroutable.
    connection = await aio_pika.connect(rabbit_factory.url, timeout=5)
    try:
        channel = await connection.channel()
        await channel.queue_delete(dead_letter_queue(queue))
    finally:
        await connection.close()
    failing = Recorder(lambda d: PermanentFailure("bad"))
    sub = await broker.consume(queue, failing)
    await eventually(lambda: len(failing.deliveries) >= 2, what="a second delivery")
    await sub.cancel()
    assert failing.deliveries[1].redelivered is True  # nacked back, not acked
    assert await broker.queue_depth(queue) == 1
