"""The application context handed to every hook.

It holds the ports and the configuration. The composition root creates it
before the HTTP application is built and fills in the connected ports during
start-up, so route handlers and consumers read ``ctx.database`` and friends at
call time, never at import time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from eeghub.config import Settings

# Imported at run time (not only for type checking): Litestar resolves the
# annotations of AppContext when it is used as a dependency.
from .host import PluginHost
from .ports import Broker, Clock, Database, ObjectStore, SystemClock


class PortNotReady(RuntimeError):
    """A port was used before start-up connected it."""


@dataclass
class AppContext:
    settings: Settings
    host: PluginHost
    clock: Clock = field(default_factory=SystemClock)
    started_at: float = field(default_factory=time.monotonic)
    backends: dict[str, str] = field(default_factory=dict)
    """Which adapter stands behind each port (for health and logs only)."""
    auth: Any = None
    """The ``Authenticator`` (``core/auth.py``) built from ``[auth]``."""
    services: dict[str, Any] = field(default_factory=dict)
    """Small public interfaces the core owns and plugins share (by name)."""
    _database: Database | None = None
    _objects: ObjectStore | None = None
    _broker: Broker | None = None

    # The ports raise a clear error when used before start-up rather than an
    # AttributeError on None deep inside a handler.
    @property
    def database(self) -> Database:
        if self._database is None:
            raise PortNotReady("the database is not connected yet")
        return self._database

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:
            raise PortNotReady("the object store is not connected yet")
        return self._objects

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise PortNotReady("the broker is not connected yet")
        return self._broker

    def attach(self, *, database: Database, objects: ObjectStore, broker: Broker) -> None:
        self._database, self._objects, self._broker = database, objects, broker

    def detach(self) -> None:
        self._database = self._objects = self._broker = None

    @property
    def ready(self) -> bool:
        return None not in (self._database, self._objects, self._broker)

    @property
    def outbox(self) -> Any:
        """The ``OutboxRelay``: call ``ctx.outbox.wake()`` after committing a
        transaction that used ``eeghub.core.outbox.enqueue``."""
        if "outbox" not in self.services:
            raise PortNotReady("the outbox relay is not running yet")
        return self.services["outbox"]

    def logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"eeghub.{name}")

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at
