"""Console page times for a big experiment: 200 participants, 2,000 sessions.

Run by hand (never a test)::

    .venv/bin/python benchmarks/console.py [--participants 200] [--sessions 2000]
        [--events 20] [--repeat 30] [--database-url URL]

What it does:

* creates a scratch database on the PostgreSQL at ``--database-url``
  (default ``EEGHUB_TEST_DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``'s
  server) and starts ``eeghub serve`` on it (filesystem store, in-process
  broker) as a child process, so every figure is a real HTTP round trip;
* seeds one experiment with ``--participants`` participants (one owner),
  ``--sessions`` ended sessions spread over them with ``--events`` events
  each, 20 export tasks, and one 10-minute session with 600 linked packets
  (1 s each, 250 Hz) and a correction report of 200 events;
* loads each console page the way the browser does: the HTML shell, then
  each API call its script makes on load, ``--repeat`` times, and prints the
  median (and 90th percentile) of every request and of the page (the sum of
  its requests done one after the other: the browser overlaps some, so the
  page time is an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import numpy as np

from eeghub.core.correction import match_events

OWNER = "bench-owner"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(dsn: str, participants: int, sessions: int, events: int) -> tuple[str, str]:
    """The experiment's id and the id of its session with data."""
    conn = await asyncpg.connect(dsn)
    try:
        eid = uuid.uuid4()
        await conn.execute("INSERT INTO experiments (experiment_id, name, description) VALUES ($1, 'Big study', 'benchmark')", eid)
        users = [OWNER] + [f"p-{i:03d}" for i in range(1, participants)]
        await conn.executemany(
            "INSERT INTO experiment_participants (experiment_id, user_id, role) VALUES ($1, $2, $3)",
            [(eid, u, "owner" if u == OWNER else "participant") for u in users],
        )
        t0 = datetime(2026, 11, 1, 9, tzinfo=UTC)
        rows = []
        for k in range(sessions):
            start = t0 + timedelta(minutes=15 * k)
            rows.append((f"s-{k:05d}", users[1 + k % (len(users) - 1)], eid, "dev", start, start + timedelta(minutes=10),
                         "main_external", "completed", "completed"))
        await conn.copy_records_to_table(
            "sessions", records=rows,
            columns=["session_id", "user_id", "experiment_id", "device_id", "start_time", "end_time", "session_type",
                     "link_status", "event_correction_status"],
        )
        await conn.copy_records_to_table(
            "session_events",
            records=[(f"s-{k:05d}", 1.0 + 2.5 * e, 1.0, "target", 1_000) for k in range(sessions) for e in range(events)],
            columns=["session_id", "onset", "duration", "trial_type", "onset_corrected_us"],
        )
        await conn.executemany(
            "INSERT INTO export_tasks (task_id, experiment_id, status, progress) VALUES ($1, $2, 'completed', 100)",
            [(uuid.uuid4(), eid) for _ in range(20)],
        )
        # The measured session: 600 linked one-second packets and a correction report.
        sid, user = "s-00000", users[1]
        start_ms = int(t0.timestamp() * 1000)
        objects = [(f"{user}/dev/{start_ms + 1000 * i}", user, "dev", start_ms + 1000 * i, start_ms + 1000 * i + 996, 250.0,
                    1.8e-7, 250, f"{i:064x}") for i in range(600)]
        await conn.copy_records_to_table(
            "raw_data_objects", records=objects,
            columns=["object_id", "user_id", "device_id", "timestamp_start_ms", "timestamp_end_ms", "sampling_rate",
                     "lsb_to_volts", "num_samples", "content_sha256"],
        )
        await conn.copy_records_to_table("session_object_links", records=[(sid, o[0]) for o in objects], columns=["session_id", "object_id"])
        rng = np.random.default_rng(0)
        start_us = start_ms * 1000
        expected = np.sort(start_us + rng.uniform(1e6, 590e6, 200).astype(np.int64))
        triggers = expected + 40_000 + rng.normal(0, 2000, 200).astype(np.int64)
        corrected, report = match_events(expected, triggers)
        body = report.to_dict()
        body.update({"session_id": sid, "status": report.status, "unmatched_event_ids": [], "events": [
            {"event_id": i, "onset": (int(x) - start_us) / 1e6, "trial_type": "target",
             "expected_time": datetime.fromtimestamp(int(x) / 1e6, UTC).isoformat(),
             "corrected_time": None if c is None else datetime.fromtimestamp(c / 1e6, UTC).isoformat(),
             "onset_corrected_us": c, "shift_ms": None if c is None else (c - int(x)) / 1000}
            for i, (x, c) in enumerate(zip(expected, corrected, strict=True))]})
        await conn.execute("INSERT INTO session_correction_reports (session_id, report) VALUES ($1, $2::jsonb)", sid, json.dumps(body))
        await conn.execute("ANALYZE")
        return str(eid), sid
    finally:
        await conn.close()


def pages(eid: str, sid: str, user: str) -> dict[str, list[str]]:
    """Each page: its shell and the API calls its script makes on load."""
    return {
        "experiments": ["/console/experiments", "/api/v1/console/me", "/api/v1/experiments"],
        "experiment": [f"/console/experiments/{eid}", "/api/v1/console/me", f"/api/v1/experiments/{eid}",
                       f"/api/v1/auth/experiments/{eid}/participants", f"/api/v1/experiments/{eid}/stimuli"],
        "sessions (first page)": [f"/console/experiments/{eid}/sessions", "/api/v1/console/me", f"/api/v1/experiments/{eid}",
                                  f"/api/v1/experiments/{eid}/sessions?limit=50&offset=0"],
        "sessions (last page)": [f"/api/v1/experiments/{eid}/sessions?limit=50&offset=1950"],
        "sessions (one user)": [f"/api/v1/experiments/{eid}/sessions?limit=50&offset=0&user_id={user}"],
        "session (600 packets, 200 events)": [f"/console/sessions/{sid}", "/api/v1/console/me", f"/api/v1/sessions/{sid}",
                                              f"/api/v1/experiments/{eid}", f"/api/v1/sessions/{sid}/data", f"/api/v1/sessions/{sid}/correction"],
        "exports (20 tasks)": [f"/console/experiments/{eid}/exports", "/api/v1/console/me", f"/api/v1/experiments/{eid}",
                               f"/api/v1/export-tasks?experiment_id={eid}&limit=20"],
        "live (no stream)": [f"/console/live/{user}", "/api/v1/console/me", f"/api/v1/users/{user}/analysis?format=json"],
        "operations": ["/console/operations", "/api/v1/console/me", "/api/v1/health", "/api/v1/plugins",
                       "/api/v1/admin/queues", "/api/v1/admin/errors?limit=50"],
    }


def measure(base: str, eid: str, sid: str, repeat: int) -> None:
    user = "p-001"
    with httpx.Client(base_url=base, headers={"X-User-Id": OWNER}, timeout=30) as client:
        print(f"{'page / request':<72} {'median ms':>9} {'p90 ms':>8}")
        for page, paths in pages(eid, sid, user).items():
            per_path: dict[str, list[float]] = {p: [] for p in paths}
            totals: list[float] = []
            for _ in range(repeat + 2):
                total = 0.0
                for path in paths:
                    began = time.perf_counter()
                    r = client.get(path)
                    elapsed = (time.perf_counter() - began) * 1000
                    assert r.status_code in (200, 202), (path, r.status_code, r.text[:200])
                    per_path[path].append(elapsed)
                    total += elapsed
                totals.append(total)
            cut = slice(2, None)  # the first two rounds warm caches and pools
            q = lambda xs: (statistics.median(xs[cut]), np.percentile(xs[cut], 90))  # noqa: E731
            print(f"{page:<72} {q(totals)[0]:>9.1f} {q(totals)[1]:>8.1f}")
            for path, xs in per_path.items():
                shown = path.replace(eid, "{eid}")
                print(f"  {shown[:70]:<70} {q(xs)[0]:>9.1f} {q(xs)[1]:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default=os.environ.get("EEGHUB_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    name = f"eeghub_bench_console_{os.getpid()}"
    admin_dsn = args.database_url

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_")}
        env.update({"EEGHUB_DATABASE__URL": dsn, "EEGHUB_SERVER__DATA_DIR": tmp, "EEGHUB_AUTH__ADMIN_USERS": OWNER, "EEGHUB_SERVER__LOG_LEVEL": "warning"})
        log = Path(tmp) / "server.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "eeghub.cli", "serve", "--port", str(port)],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start:\n" + log.read_text()[-2000:])
                time.sleep(0.2)
            began = time.perf_counter()
            eid, sid = asyncio.run(seed(dsn, args.participants, args.sessions, args.events))
            print(f"seeded {args.participants} participants, {args.sessions} sessions x {args.events} events, "
                  f"600 packets + 200-event report for {sid} in {time.perf_counter() - began:.1f} s; "
                  f"{args.repeat} rounds, one request at a time")
            measure(base, eid, sid, args.repeat)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            asyncio.run(drop())


if __name__ == "__main__":
    main()
