"""Ingest throughput: ``POST /api/v1/data`` of a real ``eeghub serve`` against
a no-op Litestar route on the same uvicorn configuration, in one run.

Run by hand (never a test)::

    .venv/bin/python benchmarks/ingest.py [--rounds 3] [--requests 3000] [--concurrency 32]

What it needs: PostgreSQL on 127.0.0.1:5432 (database ``test`` reachable as
``postgres`` with trust auth), RabbitMQ on 127.0.0.1:5672 (guest/guest), and
an S3 server: ``EEGHUB_TEST_S3_ENDPOINT`` (+ ``_ACCESS_KEY``/``_SECRET_KEY``)
when set, else whatever ``.ci/start-seaweedfs.sh`` finds or starts (a
SeaweedFS it starts is stopped at the end). Override the first two with
``EEGHUB_TEST_DATABASE_URL`` and ``EEGHUB_TEST_RABBITMQ_URL``.

What it does:

* creates a database ``eeghub_bench_<random>``, unique queue and exchange
  names and unique buckets, and starts ``python -m eeghub serve`` on them
  (uvicorn, uvloop, httptools; every default plugin);
* starts a second server process: a Litestar app whose only route,
  ``POST /api/v1/data``, reads the body, discards it and answers 202, on the
  same uvicorn settings;
* pre-generates every request before any timing: packets of
  ``SimulatedDevice`` (8 channels, 250 Hz, 250 samples per packet, app
  variant) for several users and devices, as the predecessor's app sends
  them (JSON with ``payload_base64``, ``X-User-Id`` = the envelope's user);
* starts a third server process, the *floor* (skip it with ``--no-floor``):
  the no-op route that also publishes every body it receives to RabbitMQ
  (persistent, durable queue, publisher confirms, bodies arriving during a
  confirm batched into the next message as eeghub does) and answers 202
  once confirmed; nothing validates, stores or analyses. It is the most a
  server that answers only after a broker confirm reaches on this machine,
  and eeghub cannot beat it;
* runs the load generator in a process of its own (uvloop, raw HTTP/1.1
  keep-alive over ``--concurrency`` connections, pre-built request bytes, so
  the client costs as little CPU as possible); warms the servers up, then
  runs eeghub, no-op and floor rounds, each server first in turn (a no-op
  or floor round sends ``--noop-requests``, the round's bodies again, so
  that it lasts long enough to time); before each round it waits (at most ``--settle`` seconds) until
  the eeghub process and the machine are idle;
* during each eeghub round counts the rows of ``raw_data_objects`` over time
  until every accepted packet is stored (the stored rate), and at the end
  checks that every packet answered 202 is stored exactly once;
* samples CPU time (from /proc) of each process involved per round, and
  marks rounds during which processes outside the benchmark were busy;
* with ``--py-spy FILE``, samples the eeghub server with py-spy during the
  rounds (``uv pip install -p .venv/bin/python py-spy``), every thread;
  with ``EEGHUB_BENCH_PYSPY_GIL=1`` only samples holding the GIL (what the
  interpreter really spends, not where it waits to be scheduled);
* with ``--instances N`` (N > 1) also runs rounds of N eeghub processes
  on the same database, queues and buckets (the N-1 extra ones are started
  before each such round and stopped after it), the load generator's
  connections spread over them as a load balancer would: stored packets
  per second for one and for N processes side by side;
* with ``--compare KEY=VALUE`` (repeatable) also runs a second eeghub, *B*,
  with these settings on top of the first's, on a database, queues and
  buckets of its own, in every round right beside the first (after it in
  even rounds, before it in odd ones: use an even ``--rounds``): the two
  configurations measured side by side in one run, their CPU per stored
  packet and its ratio B/A printed at the end; ``--compare-python PATH``
  runs B with another interpreter, e.g. the virtual environment of another
  checkout (``git worktree add ../base <commit>``, its own ``.venv``): two
  versions of eeghub side by side;
* with ``--set KEY=VALUE`` (repeatable) runs eeghub with another setting,
  e.g. ``--set ingest.publish_batch_packets=1`` for the predecessor's
  one message and one object per packet;
* removes the database, queues, exchange and buckets, and stops every
  process it started, also when something fails (SIGINT and SIGTERM
  included).

Prints medians over the rounds and the ratio eeghub/no-op. Nothing is
asserted: figures depend on the machine (and on whatever else runs on it,
so the load average and the busiest other processes are printed too).
Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("EEGHUB_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("EEGHUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE_KEYS = (
    "raw_data_exchange",
    "processing_queue",
    "media_processing_queue",
    "data_linker_queue",
    "stimulus_asset_queue",
    "event_correction_queue",
    "export_queue",
)
START_MS = 1_750_000_000_000
SERVER_START_TIMEOUT = 90.0
ROUND_TIMEOUT = 120.0
STORE_TIMEOUT = 120.0
NOISY_CORES = 0.3


# =================================================================== helpers
class BenchError(Exception):
    """Something the run needs is missing or failed; the message says what."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: a server started here gets SIGTERM if this script dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def clean_env() -> dict[str, str]:
    """This environment without any eeghub or predecessor configuration."""
    drop_prefixes = ("EEGHUB_", "MINIO_", "OBJECT_STORAGE_", "POSTGRES_")
    drop = {"DATABASE_URL", "RABBITMQ_URL", "LOG_LEVEL"}
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes) and k not in drop}


async def http_get(port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status of a GET on 127.0.0.1:port, None when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        return int(head[9:12])
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# =================================================================== CPU accounting
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, CPU seconds) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> float:
    """CPU seconds spent busy by the whole machine (all cores) since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / CLK_TCK


@dataclass
class CpuSnapshot:
    at: float
    by_group: dict[str, float]
    machine: float


class CpuMeter:
    """Groups processes (eeghub, no-op server, load generator, PostgreSQL,
    RabbitMQ, SeaweedFS) and reads their CPU time, children included via
    their own entries."""

    GROUPS = ("eeghub", "no-op", "floor", "loadgen", "postgres", "rabbitmq", "seaweedfs")

    def __init__(self) -> None:
        self.roles: dict[int, str] = {}

    def snapshot(self) -> CpuSnapshot:
        out = dict.fromkeys(self.GROUPS, 0.0)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _proc_stat(pid)
            if stat is None:
                continue
            comm, _, cpu = stat
            role = self.roles.get(pid)
            if role is None:
                if comm.startswith("postgres"):
                    role = "postgres"
                elif comm in ("beam.smp", "erl_child_setup", "inet_gethost", "epmd"):
                    role = "rabbitmq"
                elif comm == "weed":
                    role = "seaweedfs"
            if role is not None:
                out[role] += cpu
        return CpuSnapshot(time.monotonic(), out, _machine_busy())


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    d = {k: max(0.0, b.by_group.get(k, 0.0) - a.by_group.get(k, 0.0)) for k in CpuMeter.GROUPS}
    d["machine"] = b.machine - a.machine
    d["other"] = max(0.0, d["machine"] - sum(d[k] for k in CpuMeter.GROUPS))
    d["wall"] = b.at - a.at
    return d


def busiest_other_processes(exclude: set[int], seconds: float = 1.0, top: int = 3) -> list[str]:
    """Processes (not ours) that used CPU during ``seconds``: noise on a 2-core machine."""
    def sample() -> dict[int, tuple[str, float]]:
        out = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None:
                    out[int(entry.name)] = (stat[0], stat[2])
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    rows = []
    for pid, (comm, cpu) in after.items():
        if pid in exclude or pid == os.getpid():
            continue
        used = cpu - before.get(pid, (comm, cpu))[1]
        if used / seconds >= 0.05:
            rows.append((used / seconds, f"{comm} (pid {pid}) {100 * used / seconds:.0f}%"))
    return [text for _, text in sorted(rows, reverse=True)[:top]]


# =================================================================== no-op server (child process)
def run_noop_server(port: int) -> None:
    """A Litestar app with one route that takes the ingest body, discards it
    and answers 202, on eeghub's uvicorn settings (app/server.py)."""
    from litestar import Request, Response, post

    @post("/api/v1/data", status_code=202)
    async def post_data(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        await request.body()
        return Response({"status": "accepted"}, status_code=202)

    serve_route(port, post_data)


def serve_route(port: int, post_data: Any, **app_options: Any) -> None:
    """Serve ``post_data`` and ``GET /health`` as a Litestar app on eeghub's
    uvicorn settings (app/server.py): the no-op and the floor server."""
    import uvicorn
    from litestar import Litestar, Request, Response, get

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = Litestar(
        route_handlers=[post_data, health],
        request_max_body_size=100 * 1024 * 1024,
        debug=False,
        signature_namespace={"Request": Request, "Response": Response, "Any": Any},
        **app_options,
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",  # as EEGHUB_SERVER__LOG_LEVEL=warning for eeghub below
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    uvicorn.Server(config).run()


# =================================================================== floor server (child process)
def run_floor_server(port: int, amqp_url: str, exchange_name: str, queue_name: str) -> None:
    """The least that any server answering ``202`` only after a broker
    confirm must do, and nothing more: the no-op's Litestar route that also
    publishes the body it received, unvalidated, as a persistent message
    to a durable fanout exchange bound to a durable queue (nothing consumes
    it), and answers once RabbitMQ confirmed. Requests that arrive while a
    publish waits for its confirm go out together in the next message, as
    eeghub's publisher does (one publish in flight, at most 64 bodies and
    1 MiB per message). No decoding, no validation, no storage, no analysis:
    eeghub's accepted rate cannot exceed this one's."""
    from collections import deque

    import aio_pika
    import msgspec
    from litestar import Request, Response, post

    state: dict[str, Any] = {"busy": False}
    pending: deque[tuple[bytes, asyncio.Future[None]]] = deque()

    async def drain() -> None:
        try:
            while pending:
                batch = [pending.popleft()]
                size = len(batch[0][0])
                while pending and len(batch) < 64 and size + len(pending[0][0]) <= 1024 * 1024:
                    size += len(pending[0][0])
                    batch.append(pending.popleft())
                message = aio_pika.Message(
                    msgspec.msgpack.encode([body for body, _ in batch]), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                try:
                    await state["exchange"].publish(message, routing_key="")
                except Exception as exc:  # noqa: BLE001 - every waiting request gets it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            state["busy"] = False

    @post("/api/v1/data", status_code=202)
    async def post_data(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        body = await request.body()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending.append((body, future))
        if not state["busy"]:
            state["busy"] = True
            asyncio.get_running_loop().create_task(drain())
        await future
        return Response({"status": "accepted"}, status_code=202)

    async def connect(app: Any) -> None:
        connection = state["connection"] = await aio_pika.connect(amqp_url, timeout=10)
        channel = await connection.channel(publisher_confirms=True)
        exchange = state["exchange"] = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange)

    async def disconnect(app: Any) -> None:
        if "connection" in state:
            await state["connection"].close()

    serve_route(port, post_data, on_startup=[connect], on_shutdown=[disconnect])


# =================================================================== load generator (child process)
def run_load(ports: list[int], bodies_path: str, first: int, count: int, concurrency: int, send: int) -> None:
    """Send lines ``first .. first+count`` of the bodies file as
    ``POST /api/v1/data`` (``send`` requests in all, cycling over those
    lines) over ``concurrency`` keep-alive connections (spread evenly over
    ``ports``); print one JSON line with the timing, status counts and
    which indices got 202."""
    import uvloop

    port = ports[0]

    requests = []
    with open(bodies_path, "rb") as f:
        for number, line in enumerate(f):
            if number < first:
                continue
            if number >= first + count:
                break
            user, _, body = line.rstrip(b"\n").partition(b"\t")
            requests.append(
                b"POST /api/v1/data HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                b"X-User-Id: %s\r\nContent-Length: %d\r\n\r\n%s" % (port, user, len(body), body)
            )
    requests = [requests[i % len(requests)] for i in range(send)]
    n = len(requests)
    statuses = [0] * n
    latencies = [0.0] * n
    errors: list[str] = []
    next_index = iter(range(n))

    async def connect(port: int = port) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], port: int) -> None:
        reader, writer = conn
        perf = time.perf_counter
        for i in next_index:
            began = perf()
            try:
                writer.write(requests[i])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    end = lower.index(b"\r\n", at + 2)
                    await reader.readexactly(int(lower[at + 17 : end]))
                if b"\r\nconnection: close" in lower:
                    writer.close()
                    reader, writer = await connect(port)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                status = -1
                writer.close()
                reader, writer = await connect(port)
            statuses[i] = status
            latencies[i] = perf() - began
        writer.close()

    async def main() -> dict[str, Any]:
        targets = [ports[k % len(ports)] for k in range(concurrency)]
        conns = [await connect(target) for target in targets]
        # Ready: the orchestrator takes its CPU snapshot, then says go.
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        t_start, cpu_start = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker(c, target) for c, target in zip(conns, targets, strict=True)))
        t_end, cpu_end = time.monotonic(), time.process_time()
        counts: dict[str, int] = {}
        for s in statuses:
            counts[str(s)] = counts.get(str(s), 0) + 1
        lat = sorted(latencies)
        return {
            "t_start": t_start,
            "t_end": t_end,
            "cpu": cpu_end - cpu_start,
            "n": n,
            "statuses": counts,
            "accepted": [i for i, s in enumerate(statuses) if s == 202],
            "p50_ms": 1000 * lat[n // 2] if n else 0,
            "p99_ms": 1000 * lat[min(n - 1, int(n * 0.99))] if n else 0,
            "errors": errors[:5],
        }

    result = uvloop.run(main())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# =================================================================== packets
@dataclass(frozen=True)
class Packet:
    user_id: str
    device_id: str
    start_ms: int


PACKET_SECONDS = 1.0
"""Each generated packet: 250 samples at 250 Hz."""


def generate_bodies(path: Path, total: int, devices: int, sizes: dict[str, int] | None = None) -> list[Packet]:
    """``total`` distinct packets spread round-robin over ``devices``
    (user, device) pairs; one line per request: ``user\\tJSON body``.
    ``sizes`` gets the total bytes of the zstd frames and of the payloads."""
    import msgspec

    from eeghub.core.packet import compress_frame
    from eeghub.core.simulator import SimulatedDevice, json_body

    sims = [
        SimulatedDevice(
            user_id=f"bench-user-{d % max(1, devices // 2)}",
            device_id=f"bench-device-{d}",
            channels=8,
            sampling_rate=250.0,
            samples_per_packet=250,
            variant="app",
            seed=d,
            session_id=str(uuid.uuid4()),
            trigger_samples=[250 * k + 40 for k in range(0, total // max(1, devices) + 1, 5)],
        )
        for d in range(devices)
    ]
    packets: list[Packet] = []
    encoder = msgspec.json.Encoder()
    with path.open("wb") as f:
        for i in range(total):
            sim = sims[i % devices]
            index = i // devices
            envelope = sim.envelope(index, START_MS)
            payload = sim.payload(index)
            frame = compress_frame(payload)
            if sizes is not None:
                sizes["frame"] = sizes.get("frame", 0) + len(frame)
                sizes["payload"] = sizes.get("payload", 0) + len(payload)
            body = encoder.encode(json_body(envelope, frame))
            f.write(sim.user_id.encode() + b"\t" + body + b"\n")
            packets.append(Packet(sim.user_id, sim.device_id, int(envelope["timestamp_start_ms"])))  # type: ignore[call-overload]
    return packets


# =================================================================== the run
@dataclass
class RoundResult:
    server: str
    round: str
    n: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    accepted: list[int]
    errors: list[str]
    cpu: dict[str, float] = field(default_factory=dict)
    stored_seconds: float | None = None
    stored_rate: float | None = None
    backlog_at_end: int | None = None
    stored_during_send_rate: float | None = None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = f"bench{uuid.uuid4().hex[:10]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="eeghub-bench-ingest-"))
        self.db_name = f"eeghub_bench_{uuid.uuid4().hex[:12]}"
        self.db_url = DATABASE_URL.rpartition("/")[0] + "/" + self.db_name
        self.db_created = False
        self.s3: dict[str, str] = {}
        self.weed_pid: int | None = None
        self.weed_dir: str | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.eeghub: subprocess.Popen[bytes] | None = None
        self.noop: subprocess.Popen[bytes] | None = None
        self.floor: subprocess.Popen[bytes] | None = None
        self.eeghub_port = 0
        self.extra: list[tuple[subprocess.Popen[bytes], int]] = []
        """The other eeghub processes of an ``--instances`` round, while it runs."""
        self.noop_port = 0
        self.floor_port = 0
        self.floor_queue = f"{self.tag}.floor"
        self.meter = CpuMeter()
        self.queue_names = {k: f"{self.tag}.{k}" for k in QUEUE_KEYS}
        self.buckets = {k: f"{self.tag}-{k.replace('_', '-')}" for k in ("raw_data", "media", "bids_exports")}
        self.bodies = self.workdir / "bodies.txt"
        self.packets: list[Packet] = []
        self.accepted_packets: list[Packet] = []
        self.non_accepted_packets: list[Packet] = []
        self.db: Any = None
        self.b: Bench | None = None
        """The ``--compare`` configuration: a second Bench, its eeghub only."""

    def variant_b(self) -> Bench:
        """The Bench of the ``--compare`` eeghub: the same S3 server and
        request bodies, its own database, queues, buckets and CPU meter."""
        args_b = argparse.Namespace(
            **{**vars(self.args), "set": [*self.args.set, *self.args.compare], "compare": [], "compare_python": None,
               "python": self.args.compare_python, "py_spy": None}
        )
        b = Bench(args_b)
        b.s3, b.packets, b.bodies, b.sizes = self.s3, self.packets, self.bodies, self.sizes
        return b

    def b_label(self) -> str:
        parts = [*(["--compare " + " ".join(self.args.compare)] if self.args.compare else []),
                 *([f"--compare-python {self.args.compare_python}"] if self.args.compare_python else [])]
        return "; ".join(parts)

    async def start_eeghub_only(self) -> None:
        self.eeghub_port = free_port()
        self.eeghub = self.spawn(
            [getattr(self.args, "python", None) or sys.executable, "-m", "eeghub", "serve", "--host", "127.0.0.1", "--port", str(self.eeghub_port)],
            self.server_env(),
            "eeghub.log",
        )
        self.meter.roles[self.eeghub.pid] = "eeghub"
        await self.wait_ready(self.eeghub, self.eeghub_port, "/health", "eeghub.log")

    # ------------------------------------------------------------ services
    def start_s3(self) -> None:
        endpoint = os.environ.get("EEGHUB_TEST_S3_ENDPOINT")
        if endpoint:
            self.s3 = {
                "endpoint": endpoint,
                "access_key": os.environ.get("EEGHUB_TEST_S3_ACCESS_KEY", "eeghub-test"),
                "secret_key": os.environ.get("EEGHUB_TEST_S3_SECRET_KEY", "eeghub-test-secret"),
            }
            return
        done = subprocess.run(
            ["bash", str(ROOT / ".ci" / "start-seaweedfs.sh")],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"cannot start SeaweedFS:\n{done.stderr}")
        started = re.search(r"\(pid (\d+), data and log in (\S+);", done.stderr)
        if started:
            self.weed_pid, self.weed_dir = int(started.group(1)), started.group(2)
        values = dict(re.findall(r"export (\w+)=(\S+)", done.stdout))
        self.s3 = {
            "endpoint": values["EEGHUB_TEST_S3_ENDPOINT"],
            "access_key": values["EEGHUB_TEST_S3_ACCESS_KEY"],
            "secret_key": values["EEGHUB_TEST_S3_SECRET_KEY"],
        }
        print(f"S3: {self.s3['endpoint']} ({'started SeaweedFS, pid %d' % self.weed_pid if self.weed_pid else 'already running'})")

    async def create_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(DATABASE_URL, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
            self.db_created = True
        finally:
            await conn.close()

    def server_env(self, instance: int = 1) -> dict[str, str]:
        env = clean_env()
        env.update(
            {
                "EEGHUB_SERVER__DATA_DIR": str(self.workdir / ("data" if instance == 1 else f"data-{instance}")),
                "EEGHUB_SERVER__LOG_LEVEL": "warning",
                "EEGHUB_DATABASE__URL": self.db_url,
                "EEGHUB_BROKER__URL": RABBITMQ_URL,
                "EEGHUB_OBJECT_STORE__ENDPOINT": self.s3["endpoint"],
                "EEGHUB_OBJECT_STORE__ACCESS_KEY": self.s3["access_key"],
                "EEGHUB_OBJECT_STORE__SECRET_KEY": self.s3["secret_key"],
            }
        )
        for key, name in self.buckets.items():
            env[f"EEGHUB_OBJECT_STORE__BUCKETS__{key.upper()}"] = name
        for key, name in self.queue_names.items():
            env[f"EEGHUB_BROKER__QUEUES__{key.upper()}"] = name
        for setting in self.args.set:
            key, _, value = setting.partition("=")
            env["EEGHUB_" + "__".join(part.upper() for part in key.split("."))] = value
        return env

    def spawn(self, command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("ab")
        proc = subprocess.Popen(  # noqa: S603 - fixed arguments
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        log.close()
        self.processes.append(proc)
        return proc

    async def wait_ready(self, proc: subprocess.Popen[bytes], port: int, path: str, log_name: str) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"{log_name} exited with status {proc.returncode}:\n{tail(self.workdir / log_name)}")
            if await http_get(port, path) == 200:
                return
            await asyncio.sleep(0.1)
        raise BenchError(f"{log_name} did not answer 200 on {path} within {SERVER_START_TIMEOUT:.0f} s:\n{tail(self.workdir / log_name)}")

    async def start_servers(self) -> None:
        env = self.server_env()
        self.eeghub_port, self.noop_port = free_port(), free_port()
        self.eeghub = self.spawn(
            [sys.executable, "-m", "eeghub", "serve", "--host", "127.0.0.1", "--port", str(self.eeghub_port)],
            env,
            "eeghub.log",
        )
        self.meter.roles[self.eeghub.pid] = "eeghub"
        self.noop = self.spawn(
            [sys.executable, str(Path(__file__).resolve()), "--_noop-server", str(self.noop_port)], clean_env(), "noop.log"
        )
        self.meter.roles[self.noop.pid] = "no-op"
        waits = [
            self.wait_ready(self.eeghub, self.eeghub_port, "/health", "eeghub.log"),
            self.wait_ready(self.noop, self.noop_port, "/health", "noop.log"),
        ]
        if self.args.floor:
            self.floor_port = free_port()
            self.floor = self.spawn(
                [sys.executable, str(Path(__file__).resolve()), "--_floor-server", str(self.floor_port), RABBITMQ_URL,
                 self.floor_queue, self.floor_queue],
                clean_env(),
                "floor.log",
            )
            self.meter.roles[self.floor.pid] = "floor"
            waits.append(self.wait_ready(self.floor, self.floor_port, "/health", "floor.log"))
        await asyncio.gather(*waits)

    async def start_extra_instances(self) -> None:
        """Instances 2..N on the same database, queues and buckets."""
        for instance in range(2, self.args.instances + 1):
            port = free_port()
            proc = self.spawn(
                [sys.executable, "-m", "eeghub", "serve", "--host", "127.0.0.1", "--port", str(port)],
                self.server_env(instance),
                f"eeghub-{instance}.log",
            )
            self.meter.roles[proc.pid] = "eeghub"
            self.extra.append((proc, port))
        await asyncio.gather(*(self.wait_ready(p, port, "/health", f"eeghub-{i + 2}.log") for i, (p, port) in enumerate(self.extra)))

    async def stop_extra_instances(self) -> None:
        for proc, _ in self.extra:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in self.extra:
            while proc.poll() is None:
                await asyncio.sleep(0.05)
            self.processes.remove(proc)
            self.meter.roles.pop(proc.pid, None)
        self.extra.clear()

    # ------------------------------------------------------------ measuring
    async def stored_count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM raw_data_objects"))

    async def load(self, server: str, first: int, count: int, label: str, send: int | None = None) -> RoundResult:
        ports = {"eeghub": [self.eeghub_port], "no-op": [self.noop_port], "floor": [self.floor_port]}.get(server)
        if ports is None:  # eeghub xN
            ports = [self.eeghub_port] + [port for _, port in self.extra]
        stores = server.startswith("eeghub")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_load",
            ",".join(map(str, ports)),
            str(self.bodies),
            str(first),
            str(count),
            str(self.args.concurrency),
            str(send or count),
        ]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.meter.roles[proc.pid] = "loadgen"
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if ready.strip() != b"ready":
            await proc.wait()
            err = await proc.stderr.read() if proc.stderr else b""
            raise BenchError(f"load generator did not start:\n{err.decode(errors='replace')[-3000:]}")
        baseline = await self.stored_count() if stores else 0
        samples: list[tuple[float, int]] = []
        before = self.meter.snapshot()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()

        async def poll() -> None:
            while True:
                samples.append((time.monotonic(), await self.stored_count()))
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll()) if stores else None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), ROUND_TIMEOUT)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
        sent_snapshot = self.meter.snapshot()
        self.meter.roles.pop(proc.pid, None)
        if proc.returncode != 0:
            raise BenchError(f"load generator failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
        data = json.loads(out.decode().strip().splitlines()[-1])
        seconds = data["t_end"] - data["t_start"]
        accepted_ids = [first + i for i in data["accepted"]] if stores else data["accepted"]
        result = RoundResult(
            server=server,
            round=label,
            n=data["n"],
            seconds=seconds,
            rate=len(accepted_ids) / seconds if seconds > 0 else 0.0,
            p50_ms=data["p50_ms"],
            p99_ms=data["p99_ms"],
            statuses=data["statuses"],
            accepted=accepted_ids,
            errors=data["errors"],
        )
        if stores:
            accepted_set = set(accepted_ids)
            for i in range(first, first + count):
                (self.accepted_packets if i in accepted_set else self.non_accepted_packets).append(self.packets[i])
            target = baseline + len(accepted_ids)
            deadline = time.monotonic() + STORE_TIMEOUT
            stored = await self.stored_count()
            while stored < target and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                stored = await self.stored_count()
            done_at = time.monotonic()
            after = self.meter.snapshot()
            if stored < target:
                print(f"  ! {label}: only {stored - baseline} of {len(accepted_ids)} accepted packets stored after {STORE_TIMEOUT:.0f} s")
            result.stored_seconds = done_at - data["t_start"]
            result.stored_rate = (stored - baseline) / result.stored_seconds
            at_end = [c for t, c in samples if t <= data["t_end"]]
            at_start = [c for t, c in samples if t <= data["t_start"]]
            stored_at_end = at_end[-1] if at_end else baseline
            stored_at_start = at_start[-1] if at_start else baseline
            result.backlog_at_end = target - stored_at_end
            result.stored_during_send_rate = (stored_at_end - stored_at_start) / seconds if seconds > 0 else None
            result.cpu = cpu_delta(before, after)
        else:
            result.cpu = cpu_delta(before, sent_snapshot)
        # The load generator has exited (its /proc entry is gone): it reports its own CPU time.
        result.cpu["loadgen"] += data["cpu"]
        result.cpu["other"] = max(0.0, result.cpu["other"] - data["cpu"])
        return result

    # ------------------------------------------------------------ quiet
    async def settle(self, what: str) -> None:
        """Before a round: wait (bounded) until the eeghub process is idle
        (start-up work such as the numba compile, or the previous round's
        tail, is over) and nothing else keeps a core busy."""
        deadline = time.monotonic() + self.args.settle
        while True:
            a = self.meter.snapshot()
            await asyncio.sleep(0.5)
            d = cpu_delta(a, self.meter.snapshot())
            ours = d["eeghub"] / d["wall"]
            others = (d["machine"] - d["eeghub"] - d["no-op"] - d["floor"]) / d["wall"]
            if ours < 0.05 and others < 0.25:
                return
            if time.monotonic() > deadline:
                print(f"  (before {what}: not quiet after {self.args.settle:.0f} s: eeghub {ours:.2f} cores, "
                      f"everything else {others:.2f} cores busy; measuring anyway)")
                return

    # ------------------------------------------------------------ profiling
    def start_py_spy(self, out: Path) -> None:
        """Sample the eeghub server with py-spy (collapsed stacks, or a flame
        graph when ``out`` ends in .svg) during the measured rounds. It costs
        some CPU, so figures of a profiled run are a little lower."""
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise BenchError("--py-spy needs py-spy (uv pip install -p .venv/bin/python py-spy)")
        assert self.eeghub is not None
        fmt = "flamegraph" if out.suffix == ".svg" else "raw"
        self.py_spy = subprocess.Popen(  # noqa: S603
            [py_spy, "record", "-p", str(self.eeghub.pid), "-o", str(out.resolve()), "--format", fmt, "--rate", "200", "--nonblocking", *(["--gil"] if os.environ.get("EEGHUB_BENCH_PYSPY_GIL") else []), "--threads"],
            stdout=(self.workdir / "py-spy.log").open("ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.processes.insert(0, self.py_spy)
        self.meter.roles[self.py_spy.pid] = "loadgen"  # counted with the measuring tools

    PROFILE_PARTS = (
        ("live analysis (decode, buffers, scheduling, results)", ("plugins/analyzer", "core/quality")),
        ("storage consumer (with its S3 and PostgreSQL calls)", ("plugins/ingest/store.py",)),
        ("publishing to RabbitMQ", ("plugins/ingest/publisher.py",)),
        ("HTTP, the route and validation", ("plugins/ingest/routes.py", "litestar/", "httptools_impl", "core/auth.py")),
        ("message delivery (aio-pika, the broker adapter)", ("adapters/rabbitmq_broker.py", "aio_pika", "aiormq", "pamqp")),
        ("database driver, elsewhere", ("asyncpg",)),
    )

    def profile_split(self, cpu_ms: float) -> None:
        """Share of the samples of a raw py-spy profile by part of eeghub
        (each sample goes to the first part whose code is on its stack),
        scaled to the measured CPU per stored packet."""
        counts = dict.fromkeys([name for name, _ in self.PROFILE_PARTS] + ["event loop and the rest"], 0)
        total = 0
        for line in Path(self.args.py_spy).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            total += int(n)
            part = next((name for name, keys in self.PROFILE_PARTS if any(k in stack for k in keys)), "event loop and the rest")
            counts[part] += int(n)
        if not total:
            return
        print(f"eeghub CPU per stored packet by part ({total} py-spy samples, scaled to {cpu_ms:.2f} ms):")
        for name, n in sorted(counts.items(), key=lambda item: -item[1]):
            print(f"  {name:<55} {100 * n / total:5.1f} %  {cpu_ms * n / total:.3f} ms")

    async def stop_py_spy(self) -> None:
        proc = getattr(self, "py_spy", None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _ in range(300):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        print(f"py-spy profile of the eeghub server written to {self.args.py_spy}")

    # ------------------------------------------------------------ verification
    async def verify(self) -> dict[str, Any]:
        rows = await self.db.fetch(
            "SELECT user_id, device_id, timestamp_start_ms, count(*) AS n FROM raw_data_objects GROUP BY 1, 2, 3"
        )
        stored = {Packet(r["user_id"], r["device_id"], int(r["timestamp_start_ms"])): int(r["n"]) for r in rows}
        accepted = set(self.accepted_packets)
        lost = [p for p in accepted if p not in stored]
        duplicated = {p: n for p, n in stored.items() if n != 1}
        unexpected = [p for p in stored if p not in accepted]
        total = int(await self.db.fetchval("SELECT count(*) FROM raw_data_objects"))
        objects = int(await self.db.fetchval("SELECT count(DISTINCT coalesce(segment_key, object_id)) FROM raw_data_objects"))
        stored_bytes = int(await self.db.fetchval("SELECT coalesce(sum(stored_bytes), 0) FROM raw_data_objects"))
        depths = await self.queue_depths([self.queue_names["processing_queue"], self.queue_names["processing_queue"] + ".dlq"])
        return {
            "accepted": len(self.accepted_packets),
            "rows": total,
            "objects": objects,
            "stored_bytes": stored_bytes,
            "lost": len(lost),
            "duplicated": len(duplicated),
            "stored_not_accepted": len(unexpected),
            "not_accepted": len(self.non_accepted_packets),
            "queue_depths": depths,
            "examples_lost": lost[:3],
        }

    async def queue_depths(self, names: list[str]) -> dict[str, int | str]:
        import aio_pika

        out: dict[str, int | str] = {}
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
        try:
            for name in names:
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                    out[name] = int(queue.declaration_result.message_count or 0)
                except Exception as exc:  # noqa: BLE001
                    out[name] = f"? ({type(exc).__name__})"
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
        finally:
            await connection.close()
        return out

    # ------------------------------------------------------------ clean-up
    async def stop_servers(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.processes:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    async def drop_database(self) -> None:
        if not self.db_created:
            return
        import asyncpg

        conn = await asyncpg.connect(DATABASE_URL, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def delete_queues(self) -> None:
        import aio_pika

        connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
        try:
            for key, name in self.queue_names.items():
                if key == "raw_data_exchange":
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.exchange_delete(name)
                    continue
                for queue in (name, name + ".dlq"):
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.queue_delete(queue)
            if self.args.floor:
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(self.floor_queue)
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(self.floor_queue)
        finally:
            await connection.close()

    async def purge_floor_queue(self) -> None:
        """What the floor server published is never consumed: drop it after
        each of its rounds, so RabbitMQ does not carry it into the next."""
        import aio_pika

        connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.floor_queue, passive=True)
            await queue.purge()
        finally:
            await connection.close()

    def delete_buckets(self) -> None:
        if not self.s3:
            return
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.s3["endpoint"],
            aws_access_key_id=self.s3["access_key"],
            aws_secret_access_key=self.s3["secret_key"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
        )
        try:
            for bucket in self.buckets.values():
                try:
                    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                    for page in pages:
                        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                        if not keys:
                            continue
                        try:
                            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                        except ClientError:
                            for k in keys:
                                client.delete_object(Bucket=bucket, Key=k["Key"])
                    client.delete_bucket(Bucket=bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "404"):
                        print(f"  ! could not delete bucket {bucket}: {exc}")
        finally:
            client.close()

    async def cleanup(self) -> None:
        steps = [
            ("stop servers", self.stop_servers()),
            ("close database connection", self.db.close() if self.db is not None else asyncio.sleep(0)),
            ("drop database", self.drop_database()),
            ("delete queues", self.delete_queues()),
            ("delete buckets", asyncio.to_thread(self.delete_buckets)),
        ]
        for what, step in steps:
            try:
                await asyncio.wait_for(step, 120)
            except BaseException as exc:  # noqa: BLE001 - carry on cleaning
                print(f"  ! clean-up: {what} failed: {type(exc).__name__}: {exc}")
        if self.weed_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.weed_pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(self.weed_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.weed_pid, signal.SIGKILL)
            if self.weed_dir:
                shutil.rmtree(self.weed_dir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------ main
    async def run(self) -> None:
        import asyncpg

        args = self.args
        print(f"nproc: {os.cpu_count()} (nproc says {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()})")
        print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        per_round = args.requests
        compare = bool(args.compare or args.compare_python)
        variants = 1 + (args.instances > 1) + compare
        total = args.warmup * (2 if compare else 1) + args.rounds * per_round * variants
        t = time.monotonic()
        self.sizes: dict[str, int] = {}
        self.packets = await asyncio.to_thread(generate_bodies, self.bodies, total, args.devices, self.sizes)
        print(f"generated {total} distinct packets ({args.devices} devices) in {time.monotonic() - t:.1f} s; "
              f"body {self.bodies.stat().st_size // total} bytes on average")
        await asyncio.to_thread(self.start_s3)
        await self.create_database()
        await self.start_servers()
        self.db = await asyncpg.connect(self.db_url)
        if compare:
            self.b = self.variant_b()
            await self.b.create_database()
            await self.b.start_eeghub_only()
            self.b.db = await asyncpg.connect(self.b.db_url)
            print(f"eeghub B ({self.b_label()}) on :{self.b.eeghub_port}")
        others = await asyncio.to_thread(
            busiest_other_processes, {p.pid for p in self.processes} | ({self.weed_pid} if self.weed_pid else set())
        )
        if others:
            print("other busy processes (noise): " + "; ".join(others))
        print(f"servers ready: eeghub on :{self.eeghub_port}, no-op on :{self.noop_port}; "
              f"{args.rounds} rounds x {per_round} requests, {args.concurrency} connections")

        # warm-up: both servers, and wait until the warm-up packets are stored
        warm_e = await self.load("eeghub", 0, args.warmup, "warm-up")
        warm_n = await self.load("no-op", 0, args.warmup, "warm-up")
        warm_f = ""
        if args.floor:
            warm = await self.load("floor", 0, args.warmup, "warm-up")
            await self.purge_floor_queue()
            warm_f = f", floor {warm.rate:.0f}/s {warm.statuses}"
        print(f"warm-up: eeghub {warm_e.rate:.0f}/s {warm_e.statuses}, no-op {warm_n.rate:.0f}/s {warm_n.statuses}{warm_f}")
        if self.b is not None:
            warm_b = await self.b.load("eeghub", args.warmup, args.warmup, "warm-up")
            print(f"warm-up: eeghub B {warm_b.rate:.0f}/s {warm_b.statuses}")
        first_round = args.warmup * (2 if self.b is not None else 1)

        if args.py_spy:
            self.start_py_spy(Path(args.py_spy))
        results: list[RoundResult] = []
        many = f"eeghub x{args.instances}"
        for r in range(args.rounds):
            servers = ["eeghub", "no-op"] + (["floor"] if args.floor else []) + ([many] if args.instances > 1 else [])
            order = servers[r % len(servers):] + servers[: r % len(servers)]  # each server leads in turn
            if self.b is not None:
                # B right beside A, after it in even rounds and before it in odd
                # ones: the second of two back-to-back rounds measured higher
                # on this machine, so each configuration is second as often.
                order.insert(order.index("eeghub") + (r % 2 == 0), "eeghub-b")
                servers.append("eeghub-b")
            eeghubs = [x for x in servers if x.startswith("eeghub")]
            for server in order:
                # Each eeghub configuration stores its own packets.
                first = first_round + (r * len(eeghubs) + eeghubs.index(server) if server in eeghubs else r * len(eeghubs)) * per_round
                if server == many:
                    await self.start_extra_instances()
                send = per_round if server.startswith("eeghub") else max(per_round, args.noop_requests)
                try:
                    if server == "eeghub-b":
                        assert self.b is not None
                        await self.b.settle(f"round {r + 1} {server}")
                        res = await self.b.load("eeghub", first, per_round, str(r + 1), send)
                        res.server = "eeghub-b"
                    else:
                        await self.settle(f"round {r + 1} {server}")
                        res = await self.load(server, first, per_round, str(r + 1), send)
                finally:
                    if server == many:
                        await self.stop_extra_instances()
                if server == "floor":
                    await self.purge_floor_queue()
                results.append(res)
                extra = ""
                if server.startswith("eeghub"):
                    extra = (f"; stored {res.stored_rate:.0f}/s (all stored {res.stored_seconds:.2f} s after the first request; "
                             f"{res.stored_during_send_rate or 0:.0f}/s while sending, backlog at the last response {res.backlog_at_end})")
                print(f"round {r + 1} {server:9s}: {res.rate:7.0f} req/s accepted in {res.seconds:.2f} s {res.statuses}{extra}")
                if res.errors:
                    print(f"  errors: {res.errors}")

        await self.stop_py_spy()
        verdict = await self.verify()
        self.report(results, verdict)
        if self.b is not None:
            self.report_compare(results, await self.b.verify())
        if args.py_spy and not args.py_spy.endswith(".svg") and Path(args.py_spy).exists():
            eeghub_rounds = [r for r in results if r.server == "eeghub"]
            self.profile_split(statistics.median([r.cpu["eeghub"] / max(1, r.n) for r in eeghub_rounds]) * 1000)

    def report(self, results: list[RoundResult], verdict: dict[str, Any]) -> None:
        e = [r for r in results if r.server == "eeghub"]
        many = [r for r in results if r.server.startswith("eeghub x")]
        n = [r for r in results if r.server == "no-op"]
        med = statistics.median

        print()
        print(f"machine: nproc {os.cpu_count()}, load average now " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        print(f"{'round':>5} {'server':<9} {'requests':>8} {'202':>6} {'secs':>6} {'202/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'stored/s':>8} {'backlog':>7}   CPU ms per request: eeghub no-op floor loadgen pg rabbit s3 other | busy cores")
        for r in results:
            c = r.cpu
            per_k = 1000 / max(1, r.n)
            cores = c["machine"] / c["wall"] if c.get("wall") else 0
            noisy = c["other"] / c["wall"] > NOISY_CORES if c.get("wall") else False
            stored = f"{r.stored_rate:8.0f}" if r.stored_rate is not None else f"{'':>8}"
            backlog = f"{r.backlog_at_end:7d}" if r.backlog_at_end is not None else f"{'':>7}"
            print(
                f"{r.round:>5} {r.server:<9} {r.n:8d} {len(r.accepted):6d} {r.seconds:6.2f} {r.rate:7.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f} "
                f"{stored} {backlog}   "
                + " ".join(f"{c[k] * per_k:5.2f}" for k in ("eeghub", "no-op", "floor", "loadgen", "postgres", "rabbitmq", "seaweedfs", "other"))
                + f" | {cores:.2f}"
                + (" *" if noisy else "")
            )
        print("(eeghub CPU columns and stored/s cover the round until every accepted packet was stored; "
              "no-op and floor rows cover the sending only; 'other' is every other process and the kernel;")
        print(f" * = processes outside this benchmark kept more than {NOISY_CORES} cores busy: that round's figures are low)")
        e_rate, n_rate = med([r.rate for r in e]), med([r.rate for r in n])
        s_rate = med([r.stored_rate or 0.0 for r in e])
        print()
        print(f"{'median over ' + str(len(e)) + ' rounds':<42} {'per second':>10}")
        print(f"{'eeghub POST /api/v1/data accepted (202)':<42} {e_rate:10.0f}")
        print(f"{'eeghub packets stored (raw_data_objects)':<42} {s_rate:10.0f}")
        print(f"{'no-op Litestar POST (202)':<42} {n_rate:10.0f}")
        print(f"{'ratio eeghub accepted / no-op':<42} {e_rate / n_rate:10.2f}   (target >= 0.50: {'met' if e_rate / n_rate >= 0.5 else 'NOT met'})")
        print(f"{'ratio eeghub stored / no-op':<42} {s_rate / n_rate:10.2f}")
        f = [r for r in results if r.server == "floor"]
        if f:
            f_rate = med([r.rate for r in f])
            f_cpu = med([r.cpu["floor"] / max(1, r.n) for r in f]) * 1000
            n_cpu = med([r.cpu["no-op"] / max(1, r.n) for r in n]) * 1000
            print(f"{'floor: no-op + publish, confirm (202)':<42} {f_rate:10.0f}")
            print(f"{'ratio floor / no-op':<42} {f_rate / n_rate:10.2f}   (the most any server answering after a confirm reaches here)")
            print(f"{'ratio eeghub accepted / floor':<42} {e_rate / f_rate:10.2f}")
            print(f"server CPU per request (median): no-op {n_cpu:.3f} ms, floor {f_cpu:.3f} ms")
            e_cpu = med([r.cpu["eeghub"] / max(1, r.n) for r in e]) * 1000
            print(
                f"target: eeghub stored/s >= half the floor's accepted/s: {s_rate:.0f} vs {f_rate / 2:.0f} "
                f"({'met' if s_rate >= f_rate / 2 else 'NOT met'}); eeghub CPU per stored packet <= 2x the floor's: "
                f"{e_cpu:.3f} ms = {e_cpu / f_cpu:.2f}x ({'met' if e_cpu <= 2 * f_cpu else 'NOT met'})"
            )
        if many:
            m_rate = med([r.rate for r in many])
            m_stored = med([r.stored_rate or 0.0 for r in many])
            m_cpu = med([r.cpu["eeghub"] / max(1, r.n) for r in many]) * 1000
            one_cpu = med([r.cpu["eeghub"] / max(1, r.n) for r in e]) * 1000
            print()
            print(f"{'':<30} {'accepted/s':>10} {'stored/s':>9} {'eeghub CPU ms/packet':>21}")
            print(f"{'1 eeghub process':<30} {e_rate:10.0f} {s_rate:9.0f} {one_cpu:21.3f}")
            print(f"{many[0].server.replace('eeghub x', '') + ' eeghub processes':<30} {m_rate:10.0f} {m_stored:9.0f} {m_cpu:21.3f}")
        # What the servers eeghub depends on cost per packet, and the rate the
        # machine could reach if eeghub itself cost nothing: the ceiling that
        # any implementation storing each packet in S3 + PostgreSQL through
        # RabbitMQ meets on these cores.
        per_packet = {k: med([r.cpu[k] / max(1, r.n) for r in e]) * 1000 for k in ("eeghub", "postgres", "rabbitmq", "seaweedfs")}
        services = per_packet["postgres"] + per_packet["rabbitmq"] + per_packet["seaweedfs"]
        cores = os.cpu_count() or 1
        print(
            f"CPU per stored packet (median): eeghub {per_packet['eeghub']:.2f} ms, PostgreSQL {per_packet['postgres']:.2f} ms, "
            f"RabbitMQ {per_packet['rabbitmq']:.2f} ms, SeaweedFS {per_packet['seaweedfs']:.2f} ms"
        )
        if services > 0:
            print(
                f"ceiling with a zero-cost eeghub on {cores} cores: {cores / services * 1000:.0f} packets/s "
                f"({cores / services * 1000 / n_rate:.2f} of the no-op); with eeghub's own cost: "
                f"{cores / (services + per_packet['eeghub']) * 1000:.0f} packets/s"
            )
        print()
        ok = verdict["lost"] == 0 and verdict["duplicated"] == 0 and verdict["rows"] == verdict["accepted"]
        print(
            f"packets answered 202: {verdict['accepted']}; rows in raw_data_objects: {verdict['rows']}; "
            f"lost: {verdict['lost']}; stored more than once: {verdict['duplicated']}; "
            f"stored without a 202: {verdict['stored_not_accepted']}; not answered 202: {verdict['not_accepted']}"
        )
        if verdict["objects"]:
            print(
                f"objects written: {verdict['objects']} ({verdict['rows'] / verdict['objects']:.1f} packets and "
                f"{verdict['stored_bytes'] / verdict['objects'] / 1024:.0f} KiB per object on average)"
            )
        if verdict["rows"]:
            per_hour = 3600 / PACKET_SECONDS / 1e6
            total = len(self.packets) or 1
            print(
                f"stored bytes per recorded hour of one device (8 channels, 250 Hz): "
                f"{verdict['stored_bytes'] / verdict['rows'] * per_hour:.1f} MB as stored in this run; "
                f"{self.sizes.get('frame', 0) / total * per_hour:.1f} MB as zstd frames, "
                f"{self.sizes.get('payload', 0) / total * per_hour:.1f} MB as decompressed payloads"
            )
        print(f"queue depths at the end: {verdict['queue_depths']}")
        print("no packet lost, each stored exactly once" if ok else f"PACKET CHECK FAILED (e.g. lost {verdict['examples_lost']})")


    def report_compare(self, results: list[RoundResult], verdict_b: dict[str, Any]) -> None:
        """eeghub A (``--set``) against B (``--compare`` on top), measured in
        the same rounds."""
        med = statistics.median
        a = [r for r in results if r.server == "eeghub"]
        b = [r for r in results if r.server == "eeghub-b"]
        f = [r for r in results if r.server == "floor"]
        a_cpu = med([r.cpu["eeghub"] / max(1, r.n) for r in a]) * 1000
        b_cpu = med([r.cpu["eeghub"] / max(1, r.n) for r in b]) * 1000
        print()
        print(f"side by side, median over {len(a)} rounds: A = {' '.join(self.args.set) or 'the defaults'}; "
              f"B = A + {self.b_label()}")
        print(f"{'':<4} {'accepted/s':>10} {'stored/s':>9} {'eeghub CPU ms/packet':>21} {'x floor':>8}")
        f_cpu = med([r.cpu["floor"] / max(1, r.n) for r in f]) * 1000 if f else None
        for name, rows, cpu in (("A", a, a_cpu), ("B", b, b_cpu)):
            vs = f"{cpu / f_cpu:8.2f}" if f_cpu else f"{'':>8}"
            print(f"{name:<4} {med([r.rate for r in rows]):10.0f} {med([r.stored_rate or 0.0 for r in rows]):9.0f} {cpu:21.3f} {vs}")
        per_round = [rb.cpu["eeghub"] / max(1, rb.n) / (ra.cpu["eeghub"] / max(1, ra.n)) for ra, rb in zip(a, b, strict=False)]
        print(f"CPU per stored packet B/A: {b_cpu / a_cpu:.3f} (per round: {', '.join(f'{x:.3f}' for x in per_round)})")
        ok = verdict_b["lost"] == 0 and verdict_b["duplicated"] == 0 and verdict_b["rows"] == verdict_b["accepted"]
        print(f"B: packets answered 202 {verdict_b['accepted']}, rows {verdict_b['rows']}: "
              + ("each stored exactly once" if ok else f"PACKET CHECK FAILED (lost {verdict_b['lost']}, duplicated {verdict_b['duplicated']})"))


async def amain(args: argparse.Namespace) -> int:
    bench = Bench(args)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await asyncio.wait_for(bench.run(), args.time_limit)
        return 0
    except (TimeoutError, asyncio.TimeoutError):
        print(f"the benchmark did not finish within {args.time_limit:.0f} s; stopping")
        return 1
    except BenchError as exc:
        print(f"benchmark failed: {exc}")
        return 1
    except asyncio.CancelledError:
        print("interrupted; cleaning up")
        return 130
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        print("cleaning up…", flush=True)
        if bench.b is not None:
            await asyncio.shield(bench.b.cleanup())
        await asyncio.shield(bench.cleanup())


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--_noop-server":
        run_noop_server(int(sys.argv[2]))
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "--_floor-server":
        run_floor_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
        return
    if len(sys.argv) >= 2 and sys.argv[1] == "--_load":
        ports, path, first, count, concurrency, send = sys.argv[2:8]
        run_load([int(x) for x in ports.split(",")], path, int(first), int(count), int(concurrency), int(send))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="requests per round and server")
    parser.add_argument(
        "--noop-requests",
        type=int,
        default=10000,
        help="requests per no-op round (at least --requests; the same bodies again, so the round lasts long enough to time)",
    )
    parser.add_argument("--warmup", type=int, default=400, help="warm-up requests per server")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections of the load generator")
    parser.add_argument("--devices", type=int, default=16, help="simulated devices (users = devices / 2)")
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait at most, before each round, for the eeghub process and the machine to be idle",
    )
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false",
        help="skip the floor server (the no-op route that also publishes each body and waits for the confirm)",
    )
    parser.add_argument("--py-spy", metavar="FILE", help="profile the eeghub server during the rounds (raw collapsed stacks; .svg: flame graph)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an eeghub setting for this run, e.g. --set ingest.publishes_in_flight=4 (repeatable)",
    )
    parser.add_argument(
        "--compare", action="append", default=[], metavar="KEY=VALUE",
        help="also run eeghub B, with this setting on top of --set, side by side in every round (repeatable)",
    )
    parser.add_argument(
        "--compare-python", metavar="PATH",
        help="also run eeghub B with this Python (another checkout's virtual environment), side by side in every round",
    )
    parser.add_argument(
        "--instances", type=int, default=1,
        help="also run rounds of this many eeghub processes on the same services, the load spread over them",
    )
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds before the run is abandoned")
    args = parser.parse_args()
    try:
        code = asyncio.run(amain(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
