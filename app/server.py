"""Run the application under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import gc
import ipaddress
import logging
import socket
import time
from typing import Any

import uvicorn

from eeghub.config import Settings

from .bootstrap import create_app
from .http_protocol import RequestLimits, protocol_class

log = logging.getLogger("eeghub")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def public_url(settings: Settings) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host = settings.server.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{settings.server.port}"


def identity_warning(settings: Settings) -> str | None:
    """The start-up warning for an identity mode that takes the client's word
    (``compat``, ``trusted-header``) on an address beyond loopback."""
    if settings.auth.mode == "jwt" or is_loopback(settings.server.host):
        return None
    also = " or the user_id of a join, data, media or analysis request" if settings.auth.mode == "compat" else ""
    return (
        f"auth.mode is {settings.auth.mode!r} and the server listens on {settings.server.host}: anyone who can reach "
        f"it can claim any identity with the {settings.auth.user_header} header{also}. Put it behind an "
        "authenticating gateway or use auth.mode = 'jwt'."
    )


def uvicorn_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """How eeghub runs under uvicorn: uvloop, httptools with the request
    bounds of ``server.*`` (``http_protocol.py``)."""
    server = settings.server
    limits = RequestLimits(
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        header_timeout=server.header_timeout_seconds,
        body_idle_timeout=server.body_idle_timeout_seconds,
        min_body_rate=server.min_body_bytes_per_second,
    )
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        "http": protocol_class(limits, asgi_shortcuts(app)),
        "lifespan": "on",
        "access_log": server.access_log,
        "log_level": server.log_level,
        "log_config": None,  # one format: uvicorn's records go through eeghub's handler (core/logs.py)
        "server_header": False,
        "timeout_keep_alive": server.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": 20,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def asgi_shortcuts(app: Any) -> dict[tuple[str, str], Any]:
    """The routes with an ASGI fast path (``opt["asgi_fast_path"]``, the
    ingest route's), by method and path, for the HTTP protocol to call
    directly (``http_protocol.protocol_class``)."""
    shortcuts: dict[tuple[str, str], Any] = {}
    for route in getattr(app, "routes", ()):
        for handler in getattr(route, "route_handlers", ()):
            wrap = handler.opt.get("asgi_fast_path")
            if wrap is None:
                continue
            for method in handler.http_methods:
                for path in handler.paths:
                    shortcuts[(method, path)] = lambda whole, wrap=wrap: wrap(app, whole)
    return shortcuts


def settle_heap(settings: Settings) -> int:
    """Once the server has started: collect, then freeze what start-up left
    (``server.gc_freeze``) and raise the young generation's threshold
    (``server.gc_young_threshold``). Returns the number of frozen objects.

    Python's cycle collector walks every tracked object of a generation it
    collects. Start-up leaves some 150,000 of them (plugins, numba, NumPy,
    SciPy, MNE) that live as long as the process: frozen, they are never
    walked again, and a full collection costs milliseconds instead of about
    0.2 s. Objects made later (requests, buffers, lazily imported modules)
    are collected as usual. Only for the serving process: a test suite that
    builds many applications in one process must keep collecting them."""
    if settings.server.gc_freeze:
        gc.collect()
        gc.freeze()
    if settings.server.gc_young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(settings.server.gc_young_threshold, older, oldest)
    return gc.get_freeze_count()


def serve(settings: Settings) -> int:
    started = time.monotonic()
    warning = identity_warning(settings)
    if warning:
        log.warning(warning)
    url = public_url(settings)

    def on_ready(_: object) -> None:
        # Printed (not only logged) so a person running `eeghub serve` sees where to go.
        print(f"eeghub is serving at {url}  (ready in {time.monotonic() - started:.1f} s)", flush=True)
        frozen = settle_heap(settings)
        log.debug("garbage collector: %d start-up objects frozen, thresholds %s", frozen, gc.get_threshold())

    app = create_app(settings, on_ready=on_ready)
    server = uvicorn.Server(uvicorn_config(settings, app))
    server.run()
    return 0 if server.started else 1
