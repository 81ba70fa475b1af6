"""What ``synchronous=FULL`` costs the in-process broker's journal: confirmed
publishes (what a packet's 202 waits for) and publish + claim + ack cycles,
with ``synchronous=NORMAL`` and ``FULL`` side by side in one run.

Run by hand (never a test)::

    .venv/bin/python benchmarks/broker_journal.py [--messages 2000] [--rounds 3] [--body-bytes 9844] [--concurrency 1,16]

Per mode and concurrency (publishers at once), it publishes ``--messages``
messages of ``--body-bytes`` (9,844: one packet of the app, decompressed) to a
journaled queue, then consumes and acknowledges them; it prints per mode the
median over ``--rounds`` (modes alternate within each round) of publishes per
second, the median and p99 latency of one confirmed publish, and the
consume+ack rate. The journal lives in a temporary directory on the disk that
holds ``--dir`` (default: the system's temporary directory): the figure
depends on that disk's fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import tempfile
import time

from eeghub.adapters.inprocess_broker import InProcessBroker
from eeghub.core.ports import Delivery, Message

QUEUE = "bench"


async def one_run(root: pathlib.Path, mode: str, messages: int, body: bytes, concurrency: int) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        broker = InProcessBroker(pathlib.Path(tmp) / "broker.sqlite3", synchronous=mode)
        await broker.start()
        try:
            await broker.declare_queue(QUEUE)
            latencies: list[float] = []
            sent = 0

            async def publisher() -> None:
                nonlocal sent
                while sent < messages:
                    sent += 1
                    began = time.perf_counter()
                    await broker.publish(Message(body=body), queue=QUEUE)
                    latencies.append(time.perf_counter() - began)

            began = time.perf_counter()
            await asyncio.gather(*(publisher() for _ in range(concurrency)))
            publish_rate = len(latencies) / (time.perf_counter() - began)
            done = asyncio.Event()
            acked = 0

            async def handler(_: Delivery) -> None:
                nonlocal acked
                acked += 1
                if acked >= len(latencies):
                    done.set()

            began = time.perf_counter()
            sub = await broker.consume(QUEUE, handler, prefetch=16)
            await asyncio.wait_for(done.wait(), 120)
            consume_rate = acked / (time.perf_counter() - began)
            await sub.cancel()
        finally:
            await broker.close()
    latencies.sort()
    return publish_rate, statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99) - 1] * 1000, consume_rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--body-bytes", type=int, default=9844)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    body = bytes(range(256)) * (args.body_bytes // 256) + b"x" * (args.body_bytes % 256)
    root = pathlib.Path(args.dir)
    print(f"{args.messages} messages of {args.body_bytes} bytes, median of {args.rounds} rounds, journal under {root}")
    print(f"{'synchronous':>11} {'publishers':>10} {'publish/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'consume+ack/s':>14}")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        results: dict[str, list[tuple[float, float, float, float]]] = {"NORMAL": [], "FULL": []}
        for _ in range(args.rounds):
            for mode in results:
                results[mode].append(await one_run(root, mode, args.messages, body, concurrency))
        for mode, runs in results.items():
            rate, p50, p99, consume = (statistics.median(r[i] for r in runs) for i in range(4))
            print(f"{mode:>11} {concurrency:>10} {rate:>10.0f} {p50:>8.3f} {p99:>8.3f} {consume:>14.0f}")


if __name__ == "__main__":
    asyncio.run(main())
