"""The in-process broker's journal after a crash (issue 16): a process that
starts gives back at once what a dead process of the same data directory
held (not after the 30 s lease), never what a live one holds; the journal is
0600 and runs synchronous=FULL."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from eeghub.adapters.inprocess_broker import InProcessBroker
from eeghub.core.ports import Delivery, Message

QUEUE = "processing_queue"

CHILD = textwrap.dedent(
    """
    import asyncio, sys, pathlib
    from eeghub.adapters.inprocess_broker import InProcessBroker
    from eeghub.core.ports import Message

    async def main():
        broker = InProcessBroker(pathlib.Path(sys.argv[1]))
        await broker.start()
        await broker.declare_queue("processing_queue")
        for i in range(5):
            await broker.publish(Message(body=b"packet-%d" % i), queue="processing_queue")
        held = asyncio.Event()
        count = 0

        async def handler(delivery):
            nonlocal count
            count += 1
            if count == 5:
                held.set()
            await asyncio.Event().wait()  # never acknowledges

        await broker.consume("processing_queue", handler, prefetch=8)
        await held.wait()
        print("holding", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def start_child(journal: pathlib.Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(journal)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "holding"
    return child


async def collect(broker: InProcessBroker, want: int, timeout: float) -> list[Delivery]:
    got: list[Delivery] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        got.append(delivery)
        if len(got) >= want:
            done.set()

    sub = await broker.consume(QUEUE, handler)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    await sub.cancel()
    return got


async def test_a_killed_process_claims_come_back_at_once(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "broker.sqlite3"
    child = start_child(journal)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    began = time.monotonic()
    broker = InProcessBroker(journal)
    await broker.start()
    try:
        await broker.declare_queue(QUEUE)
        got = await collect(broker, 5, timeout=10)
    finally:
        await broker.close()
    assert sorted(d.message.body for d in got) == [b"packet-%d" % i for i in range(5)]
    assert all(d.redelivered for d in got)
    assert time.monotonic() - began < 10  # the lease is 30 s
    assert not any((tmp_path / "broker.sqlite3.instances").iterdir())  # the dead one's lock file is gone


async def test_a_live_process_keeps_its_claims(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "broker.sqlite3"
    child = start_child(journal)
    try:
        broker = InProcessBroker(journal)
        await broker.start()
        try:
            await broker.declare_queue(QUEUE)
            got = await collect(broker, 1, timeout=2)
        finally:
            await broker.close()
        assert got == []  # the child is alive and holds all five
    finally:
        child.kill()
        child.wait(10)


async def test_journal_is_private_and_fully_synchronous(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "broker.sqlite3"
    old = os.umask(0o022)
    try:
        broker = InProcessBroker(journal)
        await broker.start()
        await broker.declare_queue(QUEUE)
        await broker.publish(Message(body=b"x"), queue=QUEUE)
        for path in (journal, tmp_path / "broker.sqlite3-wal", tmp_path / "broker.sqlite3-shm"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((tmp_path / "broker.sqlite3.instances").stat().st_mode) == 0o700
        assert broker._journal is not None and broker._journal.db is not None
        # A publish commits with synchronous=FULL (2), the rest with NORMAL (1).
        modes: list[int] = []
        journal_db = broker._journal.db
        original = broker._journal._insert

        def spy(tx: sqlite3.Connection, *args: object) -> None:
            modes.append(tx.execute("PRAGMA synchronous").fetchone()[0])
            original(tx, *args)  # type: ignore[arg-type]

        broker._journal._insert = spy  # type: ignore[method-assign]
        await broker.publish(Message(body=b"y"), queue=QUEUE)
        assert modes == [2]
        assert await broker._run(lambda: journal_db.execute("PRAGMA synchronous").fetchone()[0]) == 1
        await broker.close()
    finally:
        os.umask(old)
    # An existing journal created with a wider mode is narrowed.
    os.chmod(journal, 0o644)
    broker = InProcessBroker(journal, synchronous="normal")
    await broker.start()
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    await broker.close()
    with pytest.raises(ValueError):
        InProcessBroker(journal, synchronous="off")
    assert sqlite3.connect(journal).execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_ping_does_not_wait_behind_a_busy_journal(tmp_path: pathlib.Path) -> None:
    broker = InProcessBroker(tmp_path / "broker.sqlite3")
    await broker.start()
    try:
        await broker.declare_queue(QUEUE)
        await broker.publish(Message(body=b"x"), queue=QUEUE)
        busy = asyncio.ensure_future(broker._run(time.sleep, 2.0))  # the worker thread is occupied
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await broker.ping()  # a journal call succeeded within the last second
        assert time.monotonic() - began < 0.5
        await busy
        broker._journal_ok_at -= 5  # nothing recent: the ping goes to the journal
        await broker.ping()
    finally:
        await broker.close()


async def test_concurrent_publishes_share_commits_and_fail_together(tmp_path: pathlib.Path) -> None:
    from eeghub.core.errors import BrokerUnavailable

    broker = InProcessBroker(tmp_path / "broker.sqlite3")
    await broker.start()
    try:
        await broker.declare_queue(QUEUE)
        assert broker._journal is not None
        journal = broker._journal
        commits: list[int] = []
        original = journal.insert

        def counting(publishes: list[Any]) -> None:
            commits.append(len(publishes))
            time.sleep(0.01)  # a slow fsync: later publishes pile up meanwhile
            original(publishes)

        journal.insert = counting  # type: ignore[method-assign]
        await asyncio.gather(*(broker.publish(Message(body=b"%03d" % i), queue=QUEUE) for i in range(50)))
        assert sum(commits) == 50 and len(commits) < 50, commits
        got = await collect(broker, 50, timeout=10)
        assert [d.message.body for d in got] == [b"%03d" % i for i in range(50)]  # in publish order

        def broken(publishes: list[Any]) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        journal.insert = broken  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(broker.publish(Message(body=b"x"), queue=QUEUE) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, BrokerUnavailable) for r in results), results
        journal.insert = original  # type: ignore[method-assign]
        await broker.publish(Message(body=b"after"), queue=QUEUE)  # recovers
    finally:
        await broker.close()
