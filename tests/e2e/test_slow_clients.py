"""The real server stack (uvicorn with eeghub's httptools protocol,
``app/http_protocol.py``) with raw sockets: huge and slow requests (too
many header bytes or fields, headers or a body sent too slowly) are
answered 431/408 and disconnected while ``/health`` keeps answering; the
protocol's one timer per connection, one write per answer, and the ingest
route answered below the application."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from eeghub.server import uvicorn_config
from eeghub.bootstrap import create_app
from eeghub.config import load_settings
from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import user

pytestmark = pytest.mark.postgres

LIMITS = {
    "EEGHUB_SERVER__MAX_HEADER_BYTES": "8192",
    "EEGHUB_SERVER__MAX_HEADERS": "50",
    "EEGHUB_SERVER__HEADER_TIMEOUT_SECONDS": "1.5",
    "EEGHUB_SERVER__BODY_IDLE_TIMEOUT_SECONDS": "2",
    "EEGHUB_SERVER__MIN_BODY_BYTES_PER_SECOND": "200",
    "EEGHUB_SERVER__KEEP_ALIVE_TIMEOUT_SECONDS": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served(local_env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    settings = load_settings(env={**local_env, **LIMITS, "EEGHUB_SERVER__PORT": str(port)})
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings), loop="asyncio", log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def exchange(host: str, port: int, chunks: Any, delay: float = 0.0, timeout: float = 15) -> tuple[bytes, float, int]:
    """Send ``chunks`` (``delay`` s apart) until the server answers and
    closes; return its answer, the seconds it took and the bytes sent."""
    reader, writer = await asyncio.open_connection(host, port)
    began = time.monotonic()
    answer = asyncio.create_task(asyncio.wait_for(reader.read(), timeout))
    sent = 0
    try:
        for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(delay)
    except (ConnectionResetError, BrokenPipeError):
        pass
    try:
        return await answer, time.monotonic() - began, sent
    finally:
        writer.close()


async def health_ok(host: str, port: int) -> float:
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=5) as client:
        r = await client.get("/health")
    assert r.status_code == 200, r.text
    return time.monotonic() - began


async def test_huge_headers_are_431_before_they_are_buffered(served: tuple[str, int]) -> None:
    host, port = served
    chunks = [b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "] + [b"a" * 65536] * 1024  # 64 MiB
    answer, _, sent = await exchange(host, port, chunks)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"8192 bytes" in answer
    assert sent < 32 * 1024 * 1024  # answered long before the client was done


async def test_too_many_header_fields_are_431(served: tuple[str, int]) -> None:
    host, port = served
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n"
    answer, _, _ = await exchange(host, port, [head])
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"more than 50 header fields" in answer


def drip(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_slow_and_silent_clients_are_timed_out_while_health_answers(served: tuple[str, int]) -> None:
    host, port = served
    slow_headers = drip(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 200 + b"\r\n\r\n")
    slow_body = [
        b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nX-User-Id: u\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n",
        *drip(b"{" + b" " * 398 + b"}"),
    ]
    clients = [asyncio.create_task(exchange(host, port, [])) for _ in range(2)]  # silent
    clients.append(asyncio.create_task(exchange(host, port, slow_headers, 0.25)))
    clients.append(asyncio.create_task(exchange(host, port, slow_body, 0.25)))
    clients += [asyncio.create_task(exchange(host, port, drip(b"GET /health HTTP/1.1\r\n" + b"X" * 100), 0.25)) for _ in range(8)]
    await asyncio.sleep(0.5)
    health = [await health_ok(host, port) for _ in range(5)]
    results = await asyncio.gather(*clients)
    for answer, took, _ in results[:2]:
        assert answer.startswith(b"HTTP/1.1 408 ") and took < 5, (answer, took)  # no headers within 1.5 s
    (headers_answer, headers_took, _), (body_answer, body_took, _) = results[2], results[3]
    assert headers_answer.startswith(b"HTTP/1.1 408 ") and b"headers took longer" in headers_answer, headers_answer
    assert headers_took < 5, headers_took
    assert body_answer.startswith(b"HTTP/1.1 408 ") and b"slower than 200 bytes per second" in body_answer, body_answer
    assert body_took < 6, body_took
    for answer, took, _ in results[4:]:
        assert answer.startswith(b"HTTP/1.1 408 ") and took < 5, (answer, took)
    assert len(health) == 5  # each answered 200 while the slow clients were connected


async def test_ordinary_requests_still_work(served: tuple[str, int]) -> None:
    host, port = served
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
        r = await client.post("/api/v1/experiments", json={"name": "e", "description": "x" * 100_000}, headers=user("owner"))
        assert r.status_code in (201, 400), r.text  # served, whatever the validation says
        for _ in range(3):  # keep-alive: several requests on one connection
            assert (await client.get("/health")).status_code == 200
    # A body that pauses less than the idle timeout, at a rate above the minimum, is fine.
    body = b'{"name": "slow but fine"}'
    head = b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nX-User-Id: owner\r\nContent-Type: application/json\r\n"
    head += b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer, _, _ = await exchange(host, port, [head, body], 1.0)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]


async def test_expect_100_continue_still_works(served: tuple[str, int]) -> None:
    host, port = served
    reader, writer = await asyncio.open_connection(host, port)
    body = b'{"name": "continued"}'
    writer.write(
        b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nX-User-Id: owner\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    writer.write(body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]


async def test_pipelined_requests_each_get_their_own_header_budget(served: tuple[str, int]) -> None:
    host, port = served
    one = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n"
    answer, _, _ = await exchange(host, port, [one * 4 + last])  # 15 kB at once; 8 kB per request allowed
    assert answer.count(b"HTTP/1.1 200 ") == 5, answer[:500]


async def test_a_slow_body_after_a_keep_alive_request_is_timed_out(served: tuple[str, int]) -> None:
    host, port = served
    quick = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    slow = [
        quick,
        b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nX-User-Id: u\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n",
        *drip(b"{" + b" " * 398 + b"}"),
    ]
    answer, took, _ = await exchange(host, port, slow, 0.25)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]  # the first request was answered
    assert b"HTTP/1.1 408 " in answer and b"slower than 200 bytes per second" in answer, answer[-300:]
    assert took < 7, took


async def test_requests_on_a_busy_connection_set_few_timers(served: tuple[str, int]) -> None:
    """The watchdog (one timer per connection, ``app/http_protocol.py``)
    rather than two timers armed and cancelled for every request."""
    host, port = served
    loop = asyncio.get_running_loop()
    armed: list[Any] = []
    call_later = loop.call_later

    def counting(delay: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        if type(getattr(callback, "__self__", None)).__name__ == "GuardedHttpToolsProtocol":  # its timers, whatever their name
            armed.append(delay)
        return call_later(delay, callback, *args, **kwargs)

    loop.call_later = counting  # type: ignore[method-assign]
    try:
        reader, writer = await asyncio.open_connection(host, port)
        body = b'{"name": ""}'
        request = (
            b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nX-User-Id: u\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        for _ in range(60):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head[9:12] in (b"201", b"400"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
    finally:
        loop.call_later = call_later  # type: ignore[method-assign]
    assert 1 <= len(armed) <= 6, armed  # 60 requests with a body: each used to arm three (headers, body, keep-alive)


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(served: tuple[str, int]) -> None:
    host, port = served
    reader, writer = await asyncio.open_connection(host, port)
    try:
        began = time.monotonic()
        for _ in range(2):  # the second request, 2 s after the first, is within the 3 s timeout
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            answered = time.monotonic()
            await asyncio.sleep(2)
        rest = await asyncio.wait_for(reader.read(), 10)  # closed by the server
        idle = time.monotonic() - answered
    finally:
        writer.close()
    assert rest == b""
    assert 2.5 < idle < 5, idle  # 3 s after the last answer, not after the first
    assert time.monotonic() - began > 4


async def test_a_response_goes_out_in_one_write(served: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The head uvicorn writes on ``http.response.start`` and the body go
    out together (``_CoalescingTransport``): one system call per answer."""
    from asyncio import selector_events

    writes: list[bytes] = []
    real_write = selector_events._SelectorSocketTransport.write

    def counting(self: Any, data: Any) -> None:
        if self.get_extra_info("sockname")[1] == port:  # the server's side
            writes.append(bytes(data))
        real_write(self, data)

    host, port = served
    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", counting)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(3):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()
    assert len(writes) == 3, [w[:40] for w in writes]
    assert all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(b"}") for w in writes), writes


def ingest_request(index: int, *, extra: bytes = b"", body: bytes | None = None) -> bytes:
    device = SimulatedDevice(user_id="u", device_id="d", seed=3)
    envelope = {**device.envelope(index, 1_750_000_000_000), "payload_base64": base64.b64encode(compress_frame(device.payload(index))).decode()}
    data = json.dumps(envelope).encode() if body is None else body
    return (
        b"POST /api/v1/data HTTP/1.1\r\nHost: x\r\nX-User-Id: u\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if line)
    return lines[0], headers, await reader.readexactly(int(headers[b"content-length"]))


async def test_the_ingest_route_is_answered_below_the_application(served: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /api/v1/data`` goes from the HTTP protocol straight to the
    route's fast path (``asgi_shortcuts``): Litestar's ``__call__`` is not
    reached for an accepted packet, the answer is the route's, in one write,
    and keep-alive, pipelining, refusals and ``Connection: close`` behave."""
    from asyncio import selector_events

    from litestar import Litestar

    host, port = served
    calls: list[str] = []
    litestar_call = Litestar.__call__

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await litestar_call(self, scope, receive, send)

    writes: list[bytes] = []
    real_write = selector_events._SelectorSocketTransport.write

    def counting(self: Any, data: Any) -> None:
        if self.get_extra_info("sockname")[1] == port:
            writes.append(bytes(data))
        real_write(self, data)

    monkeypatch.setattr(Litestar, "__call__", counted)
    monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", counting)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(ingest_request(0, extra=b"X-Request-Id: lab-1\r\n"))
        status, headers, body = await read_answer(reader)
        assert status == b"HTTP/1.1 202 Accepted" and body == b'{"status":"accepted"}'
        assert headers[b"content-type"] == b"application/json" and headers[b"x-request-id"] == b"lab-1"
        assert b"date" in headers and b"connection" not in headers
        assert len(writes) == 1 and calls == []
        # Pipelined: both answered, in order, on the same connection.
        writer.write(ingest_request(1) + ingest_request(2, extra=b"X-Request-Id: lab-3\r\n"))
        first, second = await read_answer(reader), await read_answer(reader)
        assert first[0] == second[0] == b"HTTP/1.1 202 Accepted" and second[1][b"x-request-id"] == b"lab-3"
        # A refusal is the route's, through the application, with the caller's request id.
        writer.write(ingest_request(3, extra=b"X-Request-Id: lab-4\r\n", body=b'{"user_id": "u"}'))
        status, headers, body = await read_answer(reader)
        assert status.startswith(b"HTTP/1.1 400 ") and headers[b"x-request-id"] == b"lab-4", (status, body)
        assert b"invalid envelope" in body
        assert calls == ["/api/v1/data"]
        # Connection: close is honoured after a 202.
        writer.write(ingest_request(4, extra=b"Connection: close\r\n"))
        status, headers, _ = await read_answer(reader)
        assert status == b"HTTP/1.1 202 Accepted" and headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
        metrics = (await client.get("/metrics")).text
    assert 'eeghub_http_requests_total{method="POST",route="/api/v1/data",status="202"} 4.0' in metrics
