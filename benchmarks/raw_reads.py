"""Reading a session's raw packets back from segments: one request per
packet against ``RawReader`` (neighbours in one segment by one request), in
one run, on a real S3 server and on the filesystem store.

Run by hand (never a test)::

    .venv/bin/python benchmarks/raw_reads.py [--packets 1800] [--devices 1,4,16] [--rounds 3]

What it does:

* stores, per device count K, ``--packets`` packets of each of K devices
  the way the storage consumer does under load: packets of all devices in
  arrival order (one per device in turn), ``--per-segment`` (94) packets per
  segment object, ``--payload-bytes`` (9,844: 8 channels, 250 samples, the
  app's layout, decompressed) each;
* then reads one device's packets, in time order, as the event correction
  and the exporter read a session:

  - ``per packet, 1 at a time``: ``read_raw_payload`` one packet after the
    other (the event correction before ``RawReader``);
  - ``per packet, 16 at a time``: the same with 16 reads under way (the
    exporter's prefetch before ``RawReader``);
  - ``RawReader, 16 at a time`` and ``RawReader, 64 at a time``: the same
    orders through ``RawReader`` (the exporter's prefetch depth, and the
    event correction's chunk);

* first, packets stored one object each (what a quiet server writes, and
  the predecessor's form) read with ``get_bytes`` 16 at a time, through the
  S3 adapter's lean signed GET and through botocore (``lean_get=False``);
* checks every payload read against what was stored, and prints per method
  the median over ``--rounds`` (methods alternate within each round) of the
  wall time, the packets per second, the requests sent and the CPU time of
  this process per packet (on S3 the client's request handling is most of
  it). S3 is ``EEGHUB_TEST_S3_ENDPOINT`` (+ ``_ACCESS_KEY``/``_SECRET_KEY``)
  when set, else whatever ``.ci/start-seaweedfs.sh`` finds or starts. The
  bucket it creates is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.s3_store import S3ObjectStore
from eeghub.core.raw_objects import RawLocation, RawReader, read_raw_payload

ROOT = Path(__file__).resolve().parent.parent


def s3_settings() -> dict[str, str]:
    if os.environ.get("EEGHUB_TEST_S3_ENDPOINT"):
        return {
            "endpoint_url": os.environ["EEGHUB_TEST_S3_ENDPOINT"],
            "access_key": os.environ.get("EEGHUB_TEST_S3_ACCESS_KEY", "eeghub-test"),
            "secret_key": os.environ.get("EEGHUB_TEST_S3_SECRET_KEY", "eeghub-test-secret"),
        }
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["bash", str(ROOT / ".ci" / "start-seaweedfs.sh")], capture_output=True, text=True, timeout=90, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot start SeaweedFS:\n{done.stderr}")
    values = dict(re.findall(r"export (\w+)=(\S+)", done.stdout))
    return {
        "endpoint_url": values["EEGHUB_TEST_S3_ENDPOINT"],
        "access_key": values["EEGHUB_TEST_S3_ACCESS_KEY"],
        "secret_key": values["EEGHUB_TEST_S3_SECRET_KEY"],
    }


async def store_segments(
    store: Any, bucket: str, devices: int, packets: int, per_segment: int, size: int
) -> tuple[list[RawLocation], dict[str, bytes]]:
    """Device 0's locations in time order, and every payload of device 0."""
    arrivals = [(d, i) for i in range(packets) for d in range(devices)]
    mine: list[RawLocation] = []
    wanted: dict[str, bytes] = {}
    for first in range(0, len(arrivals), per_segment):
        key = f"segments/date=2026-11-24/{uuid.uuid4()}.seg"
        parts, offset = [], 0
        for d, i in arrivals[first : first + per_segment]:
            payload = os.urandom(size)
            if d == 0:
                object_id = f"raw/u0/d0/{i:08d}"
                mine.append(RawLocation(object_id, key, offset, size))
                wanted[object_id] = payload
            parts.append(payload)
            offset += size
        await store.put_bytes(bucket, key, b"".join(parts))
    return mine, wanted


async def in_order(ids: Sequence[str], read: Callable[[str], Awaitable[bytes]], at_once: int) -> list[bytes]:
    out: list[bytes] = []
    for first in range(0, len(ids), at_once):
        out += await asyncio.gather(*(read(i) for i in ids[first : first + at_once]))
    return out


async def measure(store: Any, bucket: str, mine: list[RawLocation], wanted: dict[str, bytes], method: str) -> dict[str, float]:
    ids = [w.object_id for w in mine]
    where = {w.object_id: w for w in mine}
    requests = 0

    async def alone(object_id: str) -> bytes:
        nonlocal requests
        requests += 1
        return await read_raw_payload(store, bucket, where[object_id])

    reader = RawReader(store, bucket, mine, overread=OVERREAD[0])
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        if method == "per packet, 1 at a time":
            got = [await alone(i) for i in ids]
        elif method == "per packet, 16 at a time":
            got = await in_order(ids, alone, 16)
        elif method == "RawReader, 16 at a time":
            got = await in_order(ids, reader.read, 16)
        else:
            got = await in_order(ids, reader.read, 64)
    finally:
        await reader.aclose()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if got != [wanted[i] for i in ids]:
        raise SystemExit(f"{method}: payloads differ from what was stored")
    return {"wall": wall, "cpu_ms": 1000 * cpu / len(ids), "requests": requests or reader.reads, "rate": len(ids) / wall}


OVERREAD = [16.0]
METHODS = ("per packet, 1 at a time", "per packet, 16 at a time", "RawReader, 16 at a time", "RawReader, 64 at a time")


async def run_store(name: str, store: Any, bucket: str, args: argparse.Namespace) -> None:
    for devices in args.devices:
        mine, wanted = await store_segments(store, bucket, devices, args.packets, args.per_segment, args.payload_bytes)
        results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for r in range(args.rounds):
            order = METHODS[r % len(METHODS):] + METHODS[: r % len(METHODS)]
            for method in order:
                results[method].append(await measure(store, bucket, mine, wanted, method))
        print(f"\n{name}: {devices} device(s) streaming, {args.packets} packets of one device read back "
              f"({args.per_segment} packets per segment, {args.payload_bytes} bytes each); median of {args.rounds} rounds")
        print(f"  {'method':<26} {'seconds':>8} {'packets/s':>10} {'requests':>9} {'CPU ms/packet':>14}")
        base = statistics.median(x["wall"] for x in results[METHODS[0]])
        for method in METHODS:
            rows = results[method]
            wall = statistics.median(x["wall"] for x in rows)
            print(f"  {method:<26} {wall:8.2f} {statistics.median(x['rate'] for x in rows):10.0f} "
                  f"{statistics.median(x['requests'] for x in rows):9.0f} {statistics.median(x['cpu_ms'] for x in rows):14.3f}"
                  f"   ({base / wall:.1f}x the first)")


async def run_alone(settings: dict[str, str], bucket: str, args: argparse.Namespace) -> None:
    """Packets stored one object each (a quiet server's, the predecessor's):
    ``get_bytes`` per packet, through the lean signed GET and through
    botocore, 16 at a time (the exporter's prefetch)."""
    stores = {"lean GET": S3ObjectStore(**settings), "botocore GET": S3ObjectStore(**settings, lean_get=False)}
    for store in stores.values():
        await store.start()
    try:
        wanted: dict[str, bytes] = {}
        for i in range(args.packets):
            object_id = f"raw/u0/d0/start_ms={i:08d}.bin"
            wanted[object_id] = os.urandom(args.payload_bytes)
            await stores["lean GET"].put_bytes(bucket, object_id, wanted[object_id])
        ids = list(wanted)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for r in range(args.rounds):
            for name in list(stores)[r % 2 :] + list(stores)[: r % 2]:
                store = stores[name]
                cpu, wall = time.process_time(), time.perf_counter()
                got = await in_order(ids, lambda object_id, store=store: store.get_bytes(bucket, object_id), 16)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if got != [wanted[i] for i in ids]:
                    raise SystemExit(f"{name}: payloads differ from what was stored")
                results[name].append({"wall": wall, "cpu_ms": 1000 * cpu / len(ids)})
        print(f"\nS3 (SeaweedFS): {args.packets} packets stored one object each, read 16 at a time; median of {args.rounds} rounds")
        print(f"  {'method':<26} {'seconds':>8} {'packets/s':>10} {'CPU ms/packet':>14}")
        for name, rows in results.items():
            wall = statistics.median(x["wall"] for x in rows)
            print(f"  {name:<26} {wall:8.2f} {args.packets / wall:10.0f} {statistics.median(x['cpu_ms'] for x in rows):14.3f}")
        for object_id in ids:
            await stores["lean GET"].delete(bucket, object_id)
    finally:
        for store in stores.values():
            await store.close()


async def amain(args: argparse.Namespace) -> None:
    bucket = f"bench-reads-{uuid.uuid4().hex[:10]}"
    settings = s3_settings()
    s3 = S3ObjectStore(**settings)
    await s3.start()
    try:
        await s3.ensure_bucket(bucket)
        try:
            await run_alone(settings, bucket, args)
            await run_store("S3 (SeaweedFS)", s3, bucket, args)
        finally:
            keys = [info.key async for info in s3.list(bucket, "")]
            for key in keys:
                await s3.delete(bucket, key)
            with contextlib.suppress(Exception):  # the port has no bucket deletion
                await s3._require_client().delete_bucket(Bucket=bucket)
    finally:
        await s3.close()
    with tempfile.TemporaryDirectory(prefix="eeghub-reads-") as tmp:
        fs = FilesystemObjectStore(Path(tmp))
        await fs.start()
        await fs.ensure_bucket(bucket)
        try:
            await run_store("filesystem store", fs, bucket, args)
        finally:
            await fs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1800, help="packets of each device (1,800 = 30 min at one per second)")
    parser.add_argument("--devices", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--per-segment", type=int, default=94)
    parser.add_argument("--payload-bytes", type=int, default=9844)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overread", type=float, default=16.0, help="RawReader's overread (bytes read per byte wanted)")
    args = parser.parse_args()
    OVERREAD[0] = args.overread
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
