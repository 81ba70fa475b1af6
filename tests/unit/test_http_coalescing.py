"""A response's head and body in one write (app/http_protocol.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from eeghub.http_protocol import _CoalescingTransport


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def coalescing() -> tuple[_CoalescingTransport, Recording]:
    real = Recording()
    return _CoalescingTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


async def test_head_and_body_go_out_together_and_later_chunks_as_they_come() -> None:
    proxy, real = coalescing()
    proxy.arm()
    proxy.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    assert real.writes == []
    proxy.write(b"{}")
    proxy.write(b"more")
    assert real.writes == [b"HTTP/1.1 202 Accepted\r\n\r\n{}", b"more"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing held
    assert len(real.writes) == 2


async def test_a_head_without_a_body_this_turn_goes_out_on_the_next() -> None:
    proxy, real = coalescing()
    proxy.arm()
    proxy.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream's first chunk comes later
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    proxy.write(b"5\r\nhello\r\n")
    assert real.writes[-1] == b"5\r\nhello\r\n"


async def test_interim_answers_are_not_held_and_close_flushes_first() -> None:
    proxy, real = coalescing()
    proxy.arm()
    proxy.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    proxy.write(b"HTTP/1.1 201 Created\r\nconnection: close\r\n\r\n")
    proxy.close()
    assert real.writes[-1] == b"HTTP/1.1 201 Created\r\nconnection: close\r\n\r\n" and real.closed
    assert proxy.is_closing()  # the rest is the transport's own


async def test_without_arm_nothing_is_held() -> None:
    proxy, real = coalescing()
    proxy.write(b"x")
    assert real.writes == [b"x"]
    held: Any = proxy._held  # noqa: SLF001
    assert held is None
