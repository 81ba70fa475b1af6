"""Every hook a plugin can implement.

A plugin is a module (or any object) with functions named after these hooks
and decorated with ``eeghub.core.hookspecs.hookimpl``. An implementation may
take any subset of the hook's arguments. The built-in features (session,
stimulus, ingest, linker, exporter, analyzer, erp) are plugins written this
way.

Each hook has a section in ``docs/plugins.md`` and a test in
``tests/unit/test_hooks.py``; ``tests/unit/test_plugin_docs.py`` fails when
either is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .context import AppContext
    from .extension import BackgroundTask, Consumer, PluginHealth

PROJECT = "eeghub"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def eeghub_routes(ctx: AppContext) -> Sequence[Any] | None:
    """Called once while the HTTP application is built, before start-up.

    Return Litestar route handlers, controllers or routers to mount at the
    root of the application (paths are absolute, e.g. ``/api/v1/sessions``).
    Handlers reach the ports at request time through ``ctx`` (its database,
    object store and broker are connected by the time a request arrives).
    A disabled plugin's routes are not mounted, so they answer 404.
    """


@hookspec
def eeghub_consumers(ctx: AppContext) -> Sequence[Consumer] | None:
    """Called once at start-up, after every ``eeghub_startup``.

    Return ``Consumer`` objects: the host declares each queue (binding it to
    a fanout exchange if asked), then delivers its messages to the consumer's
    handler until shut-down. Handler failures are retried and finally
    dead-lettered by the broker (see ``Broker`` in ``core/ports.py``).
    """


@hookspec
def eeghub_background_tasks(ctx: AppContext) -> Sequence[BackgroundTask] | None:
    """Called once at start-up, after consumers have started.

    Return ``BackgroundTask`` objects; each ``run`` coroutine is started as an
    asyncio task, restarted if it fails, and cancelled at shut-down.
    """


@hookspec
def eeghub_startup(ctx: AppContext) -> Awaitable[None] | None:
    """Called once at start-up, after the ports are connected and migrations
    applied, before consumers and background tasks start and before the first
    request is served.

    May return an awaitable, which the host awaits. An exception here stops
    start-up with the plugin's name in the message.
    """


@hookspec
def eeghub_shutdown(ctx: AppContext) -> Awaitable[None] | None:
    """Called once at shut-down, after consumers and background tasks have
    stopped and before the ports are closed.

    May return an awaitable, which the host awaits. Exceptions are logged and
    do not stop the other plugins' shut-down.
    """


@hookspec
def eeghub_health(ctx: AppContext) -> PluginHealth | Awaitable[PluginHealth] | None:
    """Called for every ``GET /api/v1/health``.

    Return the plugin's own ``PluginHealth`` (or an awaitable of it); None
    means "ok". A hook that raises or takes longer than 2 s reports the plugin
    as unhealthy.
    """


@hookspec
def eeghub_analyses(ctx: AppContext) -> Sequence[Any] | None:
    """Called by the analyzer plugin when it starts.

    Return analysis plugin objects for the live analyzer (the contract is
    defined by the analyzer: an id, a display name, the window it needs, the
    channel types it uses, how often it runs, and a pure function from a
    window to a result). Other plugins never call this hook.
    """


@hookspec
def eeghub_experiment_analyses(ctx: AppContext) -> Sequence[Any] | None:
    """Called by the experiment-analysis runner (the built-in ``erp`` plugin)
    when it starts, and again when a job or a figure names an analysis.

    Return experiment analysis objects: offline analyses of a whole
    experiment (every participant's recordings with corrected events, and
    the stimuli with their metadata), run as jobs in worker threads. The
    contract (an id, a display name, a description, ``run(data)`` returning
    an ``ExperimentAnalysisResult``, optional ``figures`` and ``render``) is
    in ``core/experiment_analysis.py``. The built-in ERP neuro-marketing
    analysis (id ``erp``) is one of them.
    """
