"""Prometheus metrics (``GET /metrics``) and request ids, with ``prometheus-client``.

Every application has its own ``CollectorRegistry`` (``ctx.services["metrics"]``),
so two applications in one process (the tests) count apart. What is counted:

- ``eeghub_http_requests_total{method,route,status}`` and
  ``eeghub_http_request_duration_seconds{method,route}``: every request, by
  route template (``/api/v1/sessions/{session_id}``, never the concrete
  path, so ids do not explode the label set; ``unrouted`` when no route
  matched);
- ``eeghub_packets_accepted_total`` (202 from ``POST /api/v1/data``),
  ``eeghub_raw_messages_published_total`` (the messages carrying them) and
  ``eeghub_packets_stored_total`` (object and row written by the storage
  consumer);
- ``eeghub_queue_depth{queue}``: ready messages per durable queue and its
  dead-letter queue, read from the broker when scraped;
- ``eeghub_export_duration_seconds{status}`` and
  ``eeghub_analysis_duration_seconds{plugin}``;
- ``eeghub_analyzer_streams``: live-analysis streams held in memory;
- the process's garbage collector: ``python_gc_*`` (``GCCollector``) and
  ``eeghub_gc_frozen_objects`` (``server.gc_freeze``, ``app/server.py``).

The request-id middleware takes ``X-Request-Id`` from the request (1-128
characters of ``A-Za-z0-9._:-``) or makes one, answers it in the response's
``X-Request-Id`` and puts it on every log record written while the request
runs (``core/logs.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, GCCollector, Histogram, generate_latest

if TYPE_CHECKING:
    from .context import AppContext

log = logging.getLogger("eeghub.metrics")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("eeghub_request_id", default=None)
"""The id of the request being served (None outside a request)."""

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class RequestRecorder:
    """Counts and times answered requests in ``metrics`` (by method, route
    template and status). The labelled children are looked up once per
    (method, route, status): ``labels()`` takes a lock and builds a key on
    every call."""

    def __init__(self, metrics: Metrics) -> None:  # (the class below)
        self._metrics = metrics
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def record(self, method: str, route: str, status: int, elapsed: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self._metrics.requests.labels(method, route, str(status))
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[(method, route)] = self._metrics.latency.labels(method, route)
        counter.inc()
        histogram.observe(elapsed)


class Metrics:
    """The application's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "eeghub_http_requests", "HTTP requests by route template and status", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "eeghub_http_request_duration_seconds",
            "HTTP request latency (until the last body byte is sent), by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_recorder = RequestRecorder(self)
        """Counts and times requests into the two above (the observability
        middleware's, and that of a route's ASGI fast path)."""
        self.packets_accepted = Counter(
            "eeghub_packets_accepted", "EEG packets accepted by POST /api/v1/data (202)", registry=r
        )
        self.raw_messages_published = Counter(
            "eeghub_raw_messages_published",
            "Messages carrying accepted packets confirmed by the broker (packets per message = accepted / this)",
            registry=r,
        )
        self.packets_stored = Counter(
            "eeghub_packets_stored", "EEG packets whose object and row the storage consumer wrote", registry=r
        )
        self.queue_depth = Gauge(
            "eeghub_queue_depth", "Messages ready in a durable queue (read when scraped)", ["queue"], registry=r
        )
        self.export_duration = Histogram(
            "eeghub_export_duration_seconds", "BIDS export job durations by final status", ["status"],
            buckets=JOB_BUCKETS, registry=r,
        )
        self.analysis_duration = Histogram(
            "eeghub_analysis_duration_seconds", "Live analysis run durations by analysis plugin", ["plugin"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        # The process's garbage collector (collections and their objects per
        # generation) and how many start-up objects it no longer walks
        # (``server.gc_freeze``, ``app/server.py``).
        GCCollector(registry=r)
        Gauge(
            "eeghub_gc_frozen_objects", "Objects moved out of the garbage collector's reach after start-up", registry=r
        ).set_function(gc.get_freeze_count)
        self.analyzer_streams = Gauge(
            "eeghub_analyzer_streams", "Live-analysis streams (user, device) held in memory", registry=r
        )

    def observe_analysis(self, plugin: str, seconds: float) -> None:
        self.analysis_duration.labels(plugin).observe(seconds)

    async def refresh(self, ctx: AppContext) -> None:
        """Read the values that are sampled rather than counted."""
        from .topology import durable_queues

        analyzer = ctx.services.get("analyzer")
        if analyzer is not None:
            self.analyzer_streams.set(len(analyzer.streams))
        if not ctx.ready:
            return
        names = durable_queues(ctx.settings.broker.queues)
        names += [f"{n}.dlq" for n in names]

        async def depth(name: str) -> None:
            try:
                self.queue_depth.labels(name).set(await asyncio.wait_for(ctx.broker.queue_depth(name), 2.0))
            except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
                log.debug("queue depth of %s unavailable: %s", name, exc)

        await asyncio.gather(*(depth(n) for n in names))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_FALLBACK = Metrics()


def metrics_of(ctx: Any) -> Metrics:
    """The application's ``Metrics`` (an unexported stand-in for a context
    built without one, such as a unit test's)."""
    services = getattr(ctx, "services", None) or {}
    return services.get("metrics") or _FALLBACK  # type: ignore[no-any-return]


_PROCESS_PREFIX = uuid.uuid4().hex[:8]
_SEQUENCE = itertools.count(1)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` if it is well-formed, else a new id:
    this process's random prefix and a counter (unique without a call to the
    system's random source on every request)."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID_OK.match(text):
                return text
            break
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):08x}"


def observability_middleware(metrics: Metrics) -> Any:
    """ASGI wrapper factory: request id in and out, request metrics.

    ``app/bootstrap.py`` wraps Litestar's handler with it. Litestar's router
    writes the route template into the shared scope (``path_template``),
    read here once the request is answered; a request no route matched is
    counted as ``unrouted``. A request id already in the scope's state (put
    there by a fast path that handed the request on) is kept."""
    recorder = metrics.request_recorder

    def factory(app: Any) -> Any:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            request_id = state.get("request_id") or request_id_of(scope["headers"])
            token = REQUEST_ID.set(request_id)
            state["request_id"] = request_id
            status = [500]
            header = (b"x-request-id", request_id.encode())

            async def send_with_id(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            started = time.perf_counter()
            try:
                await app(scope, receive, send_with_id)
            finally:
                recorder.record(scope["method"], scope.get("path_template") or "unrouted", status[0], time.perf_counter() - started)
                REQUEST_ID.reset(token)

        return middleware

    return factory
