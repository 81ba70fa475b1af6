"""``eeghub serve`` as a person runs it: no configuration at all, an empty
data directory, then /health, /api/v1/plugins and /schema; SIGTERM stops it
and its embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import httpx
import pytest

from eeghub.core.host import BUILTIN_PLUGINS
from tests.e2e.test_predecessor_app import JPEG, M4A, app_study, exported_media

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    return int(pid_file.read_text().splitlines()[0]) if pid_file.exists() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_serve(port: int, data_dir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``eeghub serve`` on ``port`` with ``data_dir``, once /health answers 200."""
    command = [sys.executable, "-m", "eeghub.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    status = None
    while time.monotonic() - started < 90:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read() if proc.stdout else "server exited")
        try:
            status, _ = get(f"http://127.0.0.1:{port}/health")
        except OSError:
            status = None
        if status == 200:
            break
        time.sleep(0.1)
    if status != 200:
        proc.kill()
        raise AssertionError("server never became healthy")
    print(f"time to first 200 on /health: {time.monotonic() - started:.2f} s")
    return proc


def defaults_env() -> dict[str, str]:
    """The environment without any eeghub or predecessor setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_") and k not in ("DATABASE_URL", "RABBITMQ_URL")}


async def test_the_predecessor_app_against_eeghub_serve(open_tmp_dir: Path) -> None:
    """Every call of the predecessor's app, the two neuro-marketing ones
    included, over HTTP against ``eeghub serve`` on its embedded defaults
    (``test_predecessor_app.app_study``), through a downloaded export; the
    calibration item registered by the local administrator."""
    port, data_dir = free_port(), open_tmp_dir / "data"
    proc = start_serve(port, data_dir, defaults_env())
    try:
        admin = {"X-Eeghub-Admin-Token": (data_dir / "admin-token").read_text().strip()}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            download = await app_study(client, admin)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    media, index = exported_media(download)
    assert media == sorted([JPEG, M4A], key=len) and "image/jpeg" in index and "audio/m4a" in index
    assert "Traceback" not in output, output[-3000:]


def test_serve_with_embedded_defaults(open_tmp_dir: Path) -> None:
    port = free_port()
    env = defaults_env()
    data_dir = open_tmp_dir / "data"
    proc = start_serve(port, data_dir, env)
    try:
        base = f"http://127.0.0.1:{port}"
        _, body = get(base + "/api/v1/plugins")
        assert [p["name"] for p in json.loads(body)["plugins"]] == list(BUILTIN_PLUGINS)
        status, body = get(base + "/schema/openapi.json")
        assert status == 200 and json.loads(body)["info"]["title"] == "eeghub"
        # Start-up's objects are frozen out of the garbage collector's walks (server.gc_freeze).
        _, body = get(base + "/metrics")
        frozen = [line for line in body.decode().splitlines() if line.startswith("eeghub_gc_frozen_objects ")]
        assert frozen and float(frozen[0].split()[1]) > 10_000, frozen
        assert 'python_gc_collections_total{generation="0"}' in body.decode()
        # The device simulator against the running server: 2 users x 3 s, both variants.
        for variant, extra in (("app", []), ("v4", ["--binary"])):
            sim = subprocess.run(
                [sys.executable, "-m", "eeghub", "simulate", "--url", base, "--users", "2", "--seconds", "3",
                 "--speed", "0", "--variant", variant, "--data-dir", str(data_dir), *extra],
                env=env, capture_output=True, text=True, timeout=120,
            )
            assert sim.returncode == 0, sim.stdout + sim.stderr
            assert "packets sent 6, accepted 6, refused 0 from 2 device(s)" in sim.stdout, sim.stdout
            assert "user sim-user-2  device sim-device-2-1" in sim.stdout, sim.stdout
        # Administration while the server holds the embedded database: through its API.
        token = data_dir / "admin-token"
        assert token.stat().st_mode & 0o777 == 0o600
        image = open_tmp_dir / "target.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        added = subprocess.run(
            [sys.executable, "-m", "eeghub", "calibration", "add", str(image), "--type", "target",
             "--data-dir", str(data_dir), "--url", base],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert added.returncode == 0 and "via the running server" in added.stdout, added.stdout + added.stderr
        status, body = get(base + "/api/v1/calibrations")
        assert status == 401  # the API still wants an identity; the CLI used the local administrator token
        dlq = subprocess.run(
            [sys.executable, "-m", "eeghub", "dlq", "list", "--data-dir", str(data_dir), "--url", base],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert dlq.returncode == 0 and "data_linker_queue.dlq: 0 message(s)" in dlq.stdout, dlq.stdout + dlq.stderr
        # A whole (short) study, exported and validated.
        study = subprocess.run(
            [sys.executable, "-m", "eeghub", "simulate", "--study", "--url", base, "--participants", "1",
             "--seconds", "10", "--trigger-every", "1", "--data-dir", str(data_dir),
             "--export", str(open_tmp_dir / "study.zip")],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert study.returncode == 0, study.stdout + study.stderr
        # 8 trials per session: with very few events the matcher may rightly
        # find the evidence for an offset too weak (3 events: "no_match").
        assert "packets sent 20, accepted 20, refused 0" in study.stdout, study.stdout
        assert study.stdout.count("events 8, corrected to a trigger 8") == 2 and "0 error(s)" in study.stdout, study.stdout
        names = zipfile.ZipFile(open_tmp_dir / "study.zip").namelist()
        assert sum(n.endswith("_eeg.vhdr") for n in names) == 2
        pg_pid = postmaster_pid(data_dir)
        assert pg_pid is not None and alive(pg_pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"eeghub is serving at http://127.0.0.1:{port}" in output
    deadline = time.monotonic() + 10
    while alive(pg_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pg_pid), "embedded PostgreSQL kept running after the server stopped"
    assert not (data_dir / "admin-token").exists(), "the administrator token outlived the server"
