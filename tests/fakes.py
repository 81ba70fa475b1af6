"""In-memory fakes of the ports, for unit tests of the host and the domain.

They never replace an adapter's own tests (``tests/integration``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from eeghub.core.ports import DeadLetter, Delivery, Handler, Message


class FakeSubscription:
    def __init__(self, broker: FakeBroker, queue: str) -> None:
        self.broker, self.queue, self.cancelled = broker, queue, False

    async def cancel(self) -> None:
        self.cancelled = True
        self.broker.handlers.pop(self.queue, None)


class FakeBroker:
    """Delivers synchronously to the one handler of a queue; records everything."""

    def __init__(self) -> None:
        self.exchanges: set[str] = set()
        self.queues: dict[str, dict[str, Any]] = {}
        self.handlers: dict[str, Handler] = {}
        self.published: list[tuple[str | None, str | None, Message]] = []
        self.up = True

    async def start(self) -> None: ...

    async def declare_exchange(self, name: str) -> None:
        self.exchanges.add(name)

    async def declare_queue(self, name: str, **options: Any) -> None:
        self.queues[name] = options

    async def publish(self, message: Message, *, queue: str | None = None, exchange: str | None = None) -> None:
        self.published.append((queue, exchange, message))
        targets = [queue] if queue else [q for q, o in self.queues.items() if o.get("bind_to") == exchange]
        for target in targets:
            if target in self.handlers:
                await self.handlers[target](Delivery(message=message, queue=target))

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 8, max_attempts: int = 5) -> FakeSubscription:
        self.handlers[queue] = handler
        return FakeSubscription(self, queue)

    async def queue_depth(self, queue: str) -> int:
        return 0

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return []

    async def replay_dead_letters(self, queue: str, limit: int | None = None) -> int:
        return 0

    async def ping(self) -> None:
        if not self.up:
            from eeghub.core.errors import BrokerUnavailable

            raise BrokerUnavailable("down")

    async def close(self) -> None: ...


class FakePing:
    """Stands in for a database or object store where only ``ping`` matters."""

    def __init__(self, error: Exception | None = None, delay: float = 0.0) -> None:
        self.error, self.delay = error, delay

    async def ping(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error


class FakeOutboxRelay:
    """Stands in for ``ctx.outbox`` where jobs are read from the outbox
    table itself: counts the wakes."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
