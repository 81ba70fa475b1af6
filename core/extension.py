"""The objects plugins hand to the host through their hooks.

They are plain data: a plugin builds them, the host (``core/host.py``) acts on
them. Each is documented with the hook that returns it in
``core/hookspecs.py`` and in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .ports import Handler


@dataclass(frozen=True, slots=True)
class Consumer:
    """A queue consumer contributed by a plugin (hook ``eeghub_consumers``).

    The host declares ``queue`` (durable, with its ``.dlq``; or exclusive to
    this process), binds it to the fanout exchange ``bind_to`` when given, and
    delivers its messages to ``handler`` until shut-down.
    """

    queue: str
    handler: Handler
    bind_to: str | None = None
    """Fanout exchange to bind the queue to (declared by the host)."""
    durable: bool = True
    exclusive: bool = False
    """A per-process queue that vanishes with the process (live feeds)."""
    max_length: int | None = None
    """Drop the oldest messages beyond this many (exclusive live feeds only)."""
    prefetch: int | None = None
    """Messages handled at once; None: ``broker.prefetch`` from configuration."""
    max_attempts: int | None = None
    """Deliveries before dead-lettering; None: ``broker.max_attempts``."""


@dataclass(frozen=True, slots=True)
class BackgroundTask:
    """A long-running coroutine contributed by a plugin (hook
    ``eeghub_background_tasks``).

    ``run`` is called once after start-up and should loop until cancelled. If
    it raises, the host logs the error and, with ``restart=True``, calls it
    again after ``restart_delay`` seconds (doubling up to 60 s).
    """

    name: str
    run: Callable[[], Awaitable[None]]
    restart: bool = True
    restart_delay: float = 1.0


HealthState = Literal["ok", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class PluginHealth:
    """A plugin's own health (hook ``eeghub_health``)."""

    status: HealthState = "ok"
    detail: dict[str, Any] | None = None
