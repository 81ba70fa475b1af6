"""Time from `eeghub serve` to the first 200 on /health, and idle memory.

Run by hand: `.venv/bin/python benchmarks/startup.py [--runs 5]`. Uses the
embedded defaults (no configuration) in a fresh data directory: the first
start includes creating the PostgreSQL cluster, later starts reuse it.
Prints medians (with min and max) measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().split(") ")[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def postgres_pids(data_dir: Path) -> list[int]:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return []
    main = int(pid_file.read_text().splitlines()[0])
    return [main, *children(main)]


def one_run(data_dir: Path) -> tuple[float, int, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_")}
    for name in ("DATABASE_URL", "RABBITMQ_URL", "MINIO_ENDPOINT"):
        env.pop(name, None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eeghub", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        time.sleep(3)  # idle
        server_rss = rss_kib(proc.pid)
        pg_rss = sum(rss_kib(p) for p in postgres_pids(data_dir))
        return elapsed, server_rss, pg_rss
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eeghub-startup-"))
    root.chmod(0o711)
    try:
        data_dir = root / "data"
        first = one_run(data_dir)
        later = [one_run(data_dir) for _ in range(args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def fmt(values: list[float], unit: str, scale: float = 1.0) -> str:
        v = [x * scale for x in values]
        return f"median {statistics.median(v):.2f} {unit} (min {min(v):.2f}, max {max(v):.2f}, n={len(v)})"

    print(f"first start (creates the cluster): {first[0]:.2f} s to first 200 on /health")
    print("later starts:                      " + fmt([r[0] for r in later], "s"))
    print("eeghub process RSS at idle:        " + fmt([r[1] for r in [first, *later]], "MiB", 1 / 1024))
    print("embedded PostgreSQL RSS (all procs): " + fmt([r[2] for r in [first, *later]], "MiB", 1 / 1024))


if __name__ == "__main__":
    main()
