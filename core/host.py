"""The plugin host: finds, filters, registers and runs plugins.

Built-in features are registered exactly like third-party plugins: through
``PluginHost.register``. Third-party plugins are found in the entry-point
group ``eeghub.plugins``. Configuration (``[plugins] enabled``/``disabled``)
decides which are registered at all; a plugin that is not registered
contributes no routes, consumers, tasks or analyses.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .extension import BackgroundTask, Consumer

if TYPE_CHECKING:
    from .context import AppContext
    from .ports import Subscription

log = logging.getLogger("eeghub.host")

ENTRY_POINT_GROUP = "eeghub.plugins"

BUILTIN_PLUGINS: dict[str, str] = {
    "session": "eeghub.plugins.session",
    "stimulus": "eeghub.plugins.stimulus",
    "ingest": "eeghub.plugins.ingest",
    "linker": "eeghub.plugins.linker",
    "exporter": "eeghub.plugins.exporter",
    "analyzer": "eeghub.plugins.analyzer",
    "erp": "eeghub.plugins.erp",
    "console": "eeghub.plugins.console",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    source: str
    """``builtin`` or ``entry-point`` (with the distribution's name)."""
    module: str
    description: str
    hooks: tuple[str, ...]


@dataclass
class Candidate:
    name: str
    load: Any
    version: str
    source: str


def _version() -> str:
    from eeghub import __version__

    return __version__


def _describe(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def discover(
    *, builtins: dict[str, str] | None = None, include_entry_points: bool = True
) -> dict[str, Candidate]:
    """Every plugin that could be loaded, by name (nothing imported yet)."""
    candidates: dict[str, Candidate] = {}
    for name, module in (BUILTIN_PLUGINS if builtins is None else builtins).items():
        candidates[name] = Candidate(name, module, _version(), "builtin")
    if include_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in candidates:
                raise PluginError(
                    f"plugin name {ep.name!r} from entry point {ep.value!r} clashes with an existing plugin"
                )
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else "unknown"
            source = f"entry-point ({dist.name})" if dist is not None else "entry-point"
            candidates[ep.name] = Candidate(ep.name, ep, version, source)
    return candidates


def select(candidates: Iterable[str], enabled: Sequence[str], disabled: Sequence[str]) -> list[str]:
    """Names to load: ``enabled`` (all when empty) minus ``disabled``.

    A name in either list that no installed plugin has is an error, so a typo
    in a lab's configuration does not silently disable a feature.
    """
    available = list(candidates)
    unknown = [n for n in [*enabled, *disabled] if n not in available]
    if unknown:
        raise PluginError(
            f"unknown plugin(s) in configuration: {', '.join(sorted(set(unknown)))}; "
            f"installed: {', '.join(sorted(available))}"
        )
    chosen = [n for n in available if not enabled or n in enabled]
    return [n for n in chosen if n not in disabled]


class PluginHost:
    """Registers plugins with pluggy and drives their hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._subscriptions: list[tuple[str, Subscription]] = []
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ loading
    def register(self, name: str, plugin: Any, *, version: str | None = None, source: str = "builtin") -> None:
        """Register one plugin object (usually a module) under ``name``."""
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self._info[name] = PluginInfo(
            name=name,
            version=version or getattr(plugin, "__version__", None) or _version(),
            source=source,
            module=module,
            description=_describe(plugin),
            hooks=hooks,
        )

    def load(
        self,
        enabled: Sequence[str] = (),
        disabled: Sequence[str] = (),
        *,
        builtins: dict[str, str] | None = None,
        include_entry_points: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> list[str]:
        """Discover, select and register plugins; then ``check_pending``.

        ``extra`` registers ready-made plugin objects (tests use it). Raises
        ``PluginError`` naming the plugin that failed to import or that
        implements a hook no spec defines.
        """
        candidates = discover(builtins=builtins, include_entry_points=include_entry_points)
        for name in extra or {}:
            candidates[name] = Candidate(name, extra[name], _version(), "extra")  # type: ignore[index]
        names = select(candidates, enabled, disabled)
        for name in names:
            cand = candidates[name]
            try:
                if isinstance(cand.load, str):
                    plugin = importlib.import_module(cand.load)
                elif hasattr(cand.load, "load") and hasattr(cand.load, "group"):
                    plugin = cand.load.load()
                else:
                    plugin = cand.load
            except Exception as exc:
                raise PluginError(f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}") from exc
            self.register(name, plugin, version=cand.version, source=cand.source)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
        return names

    # ------------------------------------------------------------ introspection
    @property
    def plugins(self) -> list[PluginInfo]:
        return [self._info[name] for name in self._info]

    def names(self) -> list[str]:
        return list(self._info)

    def is_loaded(self, name: str) -> bool:
        return name in self._info

    # ------------------------------------------------------------ calling
    def call_each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook`` on every plugin that implements it, in registration
        order, and return ``(plugin name, result)`` pairs (None results kept).

        pluggy's own call returns results without saying whose they are; the
        host needs that to attribute routes, health and errors to plugins.
        """
        return [(name, call()) for name, call in self.implementations(hook, **kwargs)]

    def implementations(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin name, zero-argument callable)`` for each implementation of
        ``hook``, in registration order, so callers can guard each call."""
        caller = getattr(self.pm.hook, hook)
        out: list[tuple[str, Any]] = []
        # get_hookimpls() lists implementations in registration order (pluggy
        # itself calls them in reverse).
        for impl in caller.get_hookimpls():
            args = {name: kwargs[name] for name in impl.argnames}
            out.append((impl.plugin_name, functools.partial(impl.function, **args)))
        return out

    def routes(self, ctx: AppContext) -> list[Any]:
        handlers: list[Any] = []
        for name, result in self.call_each("eeghub_routes", ctx=ctx):
            for handler in result or []:
                handlers.append(handler)
            log.debug("plugin %s contributed %d route(s)", name, len(result or []))
        return handlers

    def analyses(self, ctx: AppContext) -> list[tuple[str, Any]]:
        return [(name, a) for name, result in self.call_each("eeghub_analyses", ctx=ctx) for a in result or []]

    # ------------------------------------------------------------ lifecycle
    async def startup(self, ctx: AppContext) -> None:
        """Run start-up hooks, then start consumers, then background tasks."""
        for name, call in self.implementations("eeghub_startup", ctx=ctx):
            try:
                result = call()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise PluginError(f"plugin {name!r} failed to start: {type(exc).__name__}: {exc}") from exc
        for name, result in self.call_each("eeghub_consumers", ctx=ctx):
            for consumer in result or []:
                await self._start_consumer(ctx, name, consumer)
        for name, result in self.call_each("eeghub_background_tasks", ctx=ctx):
            for task in result or []:
                self._tasks.append(asyncio.create_task(self._supervise(name, task), name=f"{name}:{task.name}"))

    async def _start_consumer(self, ctx: AppContext, plugin: str, consumer: Consumer) -> None:
        if not isinstance(consumer, Consumer):
            raise PluginError(f"plugin {plugin!r} returned {consumer!r} from eeghub_consumers; expected Consumer")
        broker = ctx.broker
        if consumer.bind_to:
            await broker.declare_exchange(consumer.bind_to)
        await broker.declare_queue(
            consumer.queue,
            durable=consumer.durable,
            bind_to=consumer.bind_to,
            exclusive=consumer.exclusive,
            max_length=consumer.max_length,
        )
        subscription = await broker.consume(
            consumer.queue,
            consumer.handler,
            prefetch=consumer.prefetch or ctx.settings.broker.prefetch,
            max_attempts=consumer.max_attempts or ctx.settings.broker.max_attempts,
        )
        self._subscriptions.append((plugin, subscription))
        log.info("plugin %s consumes %s", plugin, consumer.queue)

    async def _supervise(self, plugin: str, task: BackgroundTask) -> None:
        delay = task.restart_delay
        while True:
            try:
                await task.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s of plugin %s failed", task.name, plugin)
                if not task.restart:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    @property
    def consumer_count(self) -> int:
        return len(self._subscriptions)

    def consumers_of(self, plugin: str) -> int:
        """How many consumers ``plugin`` runs."""
        return sum(1 for name, _ in self._subscriptions if name == plugin)

    @property
    def task_count(self) -> int:
        return len([t for t in self._tasks if not t.done()])

    async def shutdown(self, ctx: AppContext) -> None:
        """Stop consumers (waiting for in-flight messages), cancel tasks, then
        run shut-down hooks. Errors are logged, never raised."""
        for plugin, subscription in reversed(self._subscriptions):
            try:
                await subscription.cancel()
            except Exception:
                log.exception("stopping a consumer of plugin %s failed", plugin)
        self._subscriptions.clear()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for name, call in self.implementations("eeghub_shutdown", ctx=ctx):
            try:
                result = call()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %s failed to shut down", name)
