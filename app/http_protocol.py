"""uvicorn's httptools protocol with the bounds it lacks: the size and count
of a request's headers, and how long a client may take to send them and its
body (issue 16).

httptools (llhttp) keeps a header until its end arrives, however long it is,
and uvicorn arms no timer before a connection's first request nor while a
request arrives: one request with 200 MiB of headers held 177 MiB, and
connections sending a byte a second stayed open indefinitely. Here:

* the request line and headers of one request may take at most
  ``max_header_bytes`` and ``max_headers`` fields, else 431 and the
  connection is closed (the bytes are counted as they arrive, before
  httptools buffers them);
* the headers must be complete within ``header_timeout`` of the request's
  first byte (or of the connection's opening), else 408 and close;
* a body must keep coming: no pause longer than ``body_idle_timeout`` and, once
  that long has passed, at least ``min_body_rate`` bytes per second on
  average, else 408 and close. Time while the application does not read
  (uvicorn paused reading) is not counted against the client.

Two things are cheaper than in uvicorn, for the ingest route's sake (a few
per cent of its CPU each, ``benchmarks/ingest.py``): the deadlines of a
connection (headers, body, keep-alive) share one watchdog timer instead of
three timers armed and cancelled per request, and a response's head and
body leave in one ``write`` (``_CoalescingTransport``): uvloop writes to the
socket at once, so uvicorn's two writes were two system calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from eeghub.core.http import WHOLE_RESPONSE

log = logging.getLogger("eeghub.http")

TICK_SECONDS = 1.0
"""How often a body being received is checked."""
LINGER_SECONDS = 1.0
"""How long a refused connection stays open, discarding input, so that the
client reads the answer before the connection closes."""


@dataclass(frozen=True)
class RequestLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_idle_timeout: float = 15.0
    min_body_rate: float = 1024.0


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing this connection."""


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class _CoalescingTransport:
    """The connection's transport as a request's ``RequestResponseCycle``
    sees it: the response head that uvicorn writes on
    ``http.response.start`` is held until the first body write, and the two
    go out in one ``write``, one system call instead of two (uvloop writes
    to the socket at once). A head whose body does not follow in the same
    step (a stream that sends its first chunk later) goes out on the loop's
    next turn. Everything else is the transport's own."""

    __slots__ = ("_transport", "_loop", "_hold_next", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._hold_next = False
        self._held: bytes | None = None

    def arm(self) -> None:
        """A new response begins: hold its first write."""
        self._hold_next = True

    def write_whole(self, data: bytes) -> None:
        """A whole response: written at once, after anything held."""
        self._hold_next = False
        self.write(data)

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._hold_next and not data.startswith(b"HTTP/1.1 100 "):  # an interim answer goes at once
            self._hold_next = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, …
        return getattr(self._transport, name)


Shortcut = Callable[[Any], Any]
"""Given the whole application (as uvicorn runs it), an ASGI handler for one
route that answers what it can and hands the rest to that application."""


async def _whole_response(cycle: Any, transport: _CoalescingTransport, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """uvicorn's ``RequestResponseCycle.send`` of a start and a final body
    message, in one: the same checks, head, state and completion."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    if cycle.response_started:
        raise RuntimeError("a whole response after the response started")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    content = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *headers):
        content.extend((name, b": ", value, b"\r\n"))
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content.extend((b"\r\n", body))
    transport.write_whole(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def protocol_class(limits: RequestLimits, shortcuts: Mapping[tuple[str, str], Shortcut] | None = None) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass enforcing ``limits``; pass it to
    ``uvicorn.Config(http=...)``.

    ``shortcuts`` maps ``(method, path)`` to a route's ASGI fast path
    (``Shortcut``): such a request goes straight to it, below the
    application's middleware (uvicorn's proxy headers) and Litestar's
    ``__call__``, and is offered the ``WHOLE_RESPONSE`` extension; what the
    fast path does not answer itself it hands to the whole application."""
    built_for: list[Any] = [None, {}]  # [the application, its shortcut handlers]: one per uvicorn config

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_headers = True
            self._header_room = limits.max_header_bytes
            self._header_count = 0
            self._refusal: bytes | None = None
            self._watch: asyncio.TimerHandle | None = None
            self._header_deadline: float | None = None
            self._idle_deadline: float | None = None
            self._body_active = False
            self._body_bytes = 0
            self._body_seconds = 0.0
            self._body_last = 0.0
            self._body_checked = 0.0
            self._request_ended = False
            self._coalescing: _CoalescingTransport | None = None

        # ---- connection
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._coalescing = _CoalescingTransport(transport, self.loop)
            self._header_deadline = time.monotonic() + limits.header_timeout
            self._ensure_watch(limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None or self.transport.is_closing():
                return
            self._idle_deadline = None  # uvicorn's keep-alive timeout, kept by the watchdog
            if self._in_headers and len(data) > self._header_room:
                # Feed only what the headers may still take: if they end
                # within it, the rest is the body (or the next request).
                head, rest = data[: self._header_room], data[self._header_room :]
                self._header_room = 0
                self._request_ended = False
                super().data_received(head)
                if self._refusal is not None or self.transport.is_closing():
                    return
                if self._in_headers and not self._request_ended:
                    self._refuse(431, "Request Header Fields Too Large", f"the request line and headers exceed {limits.max_header_bytes} bytes")
                    return
                # The headers ended within ``head`` (or a pipelined request
                # did, and the next one's budget starts afresh).
                self.data_received(rest)
                return
            if self._in_headers:
                self._header_room -= len(data)
            elif self._body_active:
                self._body_bytes += len(data)
                self._body_last = time.monotonic()
            super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers any parser error with a 400; a refusal raised in
            # a callback below has its own answer.
            if self._coalescing is not None:
                self._coalescing.flush()
            if self._refusal is not None:
                self._answer_and_close()
            else:
                super().send_400_response(msg)

        # ---- parser callbacks
        def on_message_begin(self) -> None:
            # The header byte budget was reset when the previous request
            # ended: the bytes fed since count against this one.
            super().on_message_begin()
            self._in_headers = True
            self._header_count = 0
            if self._header_deadline is None:
                self._header_deadline = time.monotonic() + limits.header_timeout
                self._ensure_watch(limits.header_timeout)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > limits.max_headers:
                self._refusal = _response(431, "Request Header Fields Too Large", f"more than {limits.max_headers} header fields")
                raise _Refused
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_deadline = None
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport and self._coalescing is not None:
                # Before the request's task first runs (uvicorn only created it).
                cycle.transport = self._coalescing  # type: ignore[assignment]
                self._coalescing.arm()
            if _has_body(self.headers):
                self._body_active = True
                self._body_bytes = 0
                self._body_seconds = 0.0
                self._body_last = self._body_checked = time.monotonic()
                self._ensure_watch(TICK_SECONDS)

        def on_message_complete(self) -> None:
            self._body_active = False
            # What follows on this connection is the next request's headers.
            self._in_headers = True
            self._header_room = limits.max_header_bytes
            self._request_ended = True
            super().on_message_complete()

        def on_response_complete(self) -> None:
            # uvicorn's, but the keep-alive timeout is the watchdog's rather
            # than a timer armed after every response and cancelled by the
            # next request's first bytes.
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_deadline = time.monotonic() + self.timeout_keep_alive
                self._ensure_watch(self.timeout_keep_alive)

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            if shortcuts and app is self.app:  # (not uvicorn's 503 for too many requests)
                scope = cycle.scope
                if built_for[0] is not app:
                    built_for[:] = [app, {key: make(app) for key, make in shortcuts.items()}]
                shortcut = built_for[1].get((scope["method"], scope["path"]))
                if shortcut is not None:
                    if not self.access_log and self._coalescing is not None:  # (the access log is uvicorn's send's)
                        transport = self._coalescing

                        async def whole(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
                            await _whole_response(cycle, transport, status, headers, body)

                        scope["extensions"] = {**scope.get("extensions", {}), WHOLE_RESPONSE: whole}
                    app = shortcut
            super()._start_asgi_task(cycle, app)

        # ---- the watchdog
        # One timer per connection rather than one per request and phase:
        # arming and cancelling three timers for every request (the headers',
        # the body's and uvicorn's keep-alive timeout) cost a few per cent of
        # the ingest route's CPU under load. The watchdog is armed when a
        # deadline begins (a connection opens, a request's first byte, a
        # body) unless it is armed already, and re-arms itself only while
        # something is being watched: a busy keep-alive connection sets about
        # one timer a second, an idle one none (uvicorn's keep-alive timeout
        # closes it).
        def _ensure_watch(self, delay: float) -> None:
            """Have the watchdog fire within ``delay`` seconds."""
            watch = self._watch
            if watch is not None:
                if watch.when() <= self.loop.time() + delay:
                    return
                watch.cancel()
            self._watch = self.loop.call_later(delay, self._on_watch)

        def _on_watch(self) -> None:
            self._watch = None
            if self.transport.is_closing() or self._refusal is not None:
                return
            now = time.monotonic()
            if self._idle_deadline is not None and now >= self._idle_deadline:
                self._idle_deadline = None
                self.timeout_keep_alive_handler()  # idle on a keep-alive connection: closed
                return
            if self._header_deadline is not None and now >= self._header_deadline:
                if self.cycle is not None and not self.cycle.response_complete:
                    self._header_deadline = now + limits.header_timeout  # a pipelined request waits for the one before
                else:
                    self._refuse(408, "Request Timeout", f"the request headers took longer than {limits.header_timeout:g} s")
                    return
            if self._body_active and self._body_too_slow(now):
                return
            delay = TICK_SECONDS if self._body_active else None
            for deadline in (self._header_deadline, self._idle_deadline):
                if deadline is not None:
                    until = max(0.0, deadline - now)
                    delay = until if delay is None else min(delay, until)
            if delay is not None:
                self._watch = self.loop.call_later(delay, self._on_watch)

        def _body_too_slow(self, now: float) -> bool:
            """Check the body's progress since the last check; refuse (and
            say so) if it paused too long or arrives too slowly."""
            elapsed, self._body_checked = now - self._body_checked, now
            if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
                # The application is not reading (or the client waits for
                # its "100 Continue"): not the client's fault.
                self._body_last = now
                return False
            self._body_seconds += elapsed
            idle = now - self._body_last
            slow = self._body_seconds >= limits.body_idle_timeout and self._body_bytes < limits.min_body_rate * self._body_seconds
            if not (idle >= limits.body_idle_timeout or slow):
                return False
            why = (
                f"no body bytes for {limits.body_idle_timeout:g} s"
                if idle >= limits.body_idle_timeout
                else f"the body arrives slower than {limits.min_body_rate:g} bytes per second"
            )
            log.info("closing a connection from %s: %s", self.client, why)
            self._refuse(408, "Request Timeout", why)
            return True

        def _refuse(self, status: int, reason: str, message: str) -> None:
            self._refusal = _response(status, reason, message)
            self._answer_and_close(write=self.cycle is None or not self.cycle.response_started)

        def _answer_and_close(self, *, write: bool = True) -> None:
            """Send the refusal, then close after a short linger that discards
            what the client still sends (``data_received`` drops it): closing
            a socket with unread input resets the connection, and the client
            would lose the answer."""
            self._cancel_timers()
            if self._coalescing is not None:
                self._coalescing.flush()  # a response head held this very turn goes first
            if write and self._refusal is not None:
                self.transport.write(self._refusal)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def _cancel_timers(self) -> None:
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None

    return GuardedHttpToolsProtocol


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False
