"""Routes the host itself serves: health and plugin introspection."""

from __future__ import annotations

import asyncio
import inspect
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from .context import AppContext
from .extension import PluginHealth
from .metrics import metrics_of

CHECK_TIMEOUT = 2.0


class ComponentHealth(msgspec.Struct, omit_defaults=True):
    status: str
    backend: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    detail: dict[str, Any] | None = None


class HealthReport(msgspec.Struct):
    status: str
    version: str
    uptime_seconds: float
    timestamp: str
    components: dict[str, ComponentHealth]
    plugins: dict[str, ComponentHealth]


class PluginDescription(msgspec.Struct):
    name: str
    version: str
    source: str
    module: str
    description: str
    hooks: list[str]


class PluginList(msgspec.Struct):
    plugins: list[PluginDescription]


async def _check(name: str, ctx: AppContext, probe: Any) -> ComponentHealth:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return ComponentHealth(status="unhealthy", backend=ctx.backends.get(name), error=reason[:300])
    latency = round((time.perf_counter() - started) * 1000, 2)
    return ComponentHealth(status="ok", backend=ctx.backends.get(name), latency_ms=latency)


async def check_ports(ctx: AppContext) -> dict[str, ComponentHealth]:
    if not ctx.ready:
        down = ComponentHealth(status="unhealthy", error="not started")
        return {"database": down, "object_store": down, "broker": down}
    names = ("database", "object_store", "broker")
    probes = (ctx.database.ping, ctx.objects.ping, ctx.broker.ping)
    results = await asyncio.gather(*(_check(n, ctx, p) for n, p in zip(names, probes, strict=True)))
    return dict(zip(names, results, strict=True))


async def _plugin_health(ctx: AppContext) -> dict[str, ComponentHealth]:
    out = {name: ComponentHealth(status="ok") for name in ctx.host.names()}
    for name, result in _safe_calls(ctx):
        if isinstance(result, Exception):
            out[name] = ComponentHealth(status="unhealthy", error=f"{type(result).__name__}: {result}"[:300])
            continue
        try:
            value = await asyncio.wait_for(result, CHECK_TIMEOUT) if inspect.isawaitable(result) else result
        except Exception as exc:  # noqa: BLE001
            out[name] = ComponentHealth(status="unhealthy", error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        if isinstance(value, PluginHealth):
            out[name] = ComponentHealth(status=value.status, detail=value.detail)
    return out


def _safe_calls(ctx: AppContext) -> list[tuple[str, Any]]:
    results: list[tuple[str, Any]] = []
    for name, call in ctx.host.implementations("eeghub_health", ctx=ctx):
        try:
            results.append((name, call()))
        except Exception as exc:  # noqa: BLE001
            results.append((name, exc))
    return results


def system_routes(ctx: AppContext) -> list[Any]:
    from eeghub import __version__

    @get(
        "/health",
        tags=["system"],
        summary="Liveness and readiness",
        responses={503: ResponseSpec(dict[str, str], description='A port is down: {"status": "unhealthy"}')},
    )
    async def health() -> Response[dict[str, str]]:
        """200 ``{"status": "ok"}`` when the database, the object store and the
        broker all answer; 503 ``{"status": "unhealthy"}`` otherwise."""
        ports = await check_ports(ctx)
        ok = all(c.status == "ok" for c in ports.values())
        return Response({"status": "ok" if ok else "unhealthy"}, status_code=200 if ok else 503)

    @get(
        "/api/v1/health",
        tags=["system"],
        summary="Component health",
        responses={503: ResponseSpec(HealthReport, description="A port is down (the same report, status unhealthy)")},
    )
    async def api_health() -> Response[HealthReport]:
        """Each port's and each plugin's status. 200 unless a port is down
        (503); an unhealthy plugin makes the overall status ``degraded``."""
        ports, plugins = await asyncio.gather(check_ports(ctx), _plugin_health(ctx))
        ports_ok = all(c.status == "ok" for c in ports.values())
        plugins_ok = all(c.status == "ok" for c in plugins.values())
        status = "ok" if ports_ok and plugins_ok else ("degraded" if ports_ok else "unhealthy")
        report = HealthReport(
            status=status,
            version=__version__,
            uptime_seconds=round(ctx.uptime, 3),
            timestamp=datetime.now(UTC).isoformat(),
            components=ports,
            plugins=plugins,
        )
        return Response(report, status_code=200 if ports_ok else 503)

    @get("/api/v1/plugins", tags=["system"], summary="Loaded plugins", sync_to_thread=False)
    def plugins() -> PluginList:
        """The loaded plugins with their versions and the hooks each implements."""
        return PluginList(
            plugins=[
                PluginDescription(
                    name=p.name,
                    version=p.version,
                    source=p.source,
                    module=p.module,
                    description=p.description,
                    hooks=list(p.hooks),
                )
                for p in ctx.host.plugins
            ]
        )

    @get(
        "/metrics",
        tags=["system"],
        summary="Prometheus metrics",
        media_type="text/plain; version=0.0.4; charset=utf-8",
        responses={200: ResponseSpec(str, description="Prometheus text exposition format", media_type="text/plain")},
    )
    async def metrics() -> Response[bytes]:
        """Request counts and latencies by route, packets accepted and
        stored, queue depths, export and analysis durations, analyzer streams
        (``core/metrics.py`` lists them). No identity is asked: keep the port
        away from the public or filter ``/metrics`` at the proxy."""
        collected = metrics_of(ctx)
        await collected.refresh(ctx)
        body, content_type = collected.exposition()
        return Response(body, media_type=content_type)

    routes = [health, api_health, plugins]
    return [*routes, metrics] if ctx.settings.server.metrics else routes
