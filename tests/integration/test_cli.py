"""The command line: config, plugins, migrate and dlq, as a person runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eeghub.adapters.inprocess_broker import InProcessBroker
from eeghub.core.errors import PermanentFailure
from eeghub.core.ports import Delivery, Message

ENV = {k: v for k, v in os.environ.items() if not k.startswith("EEGHUB_") and k not in ("DATABASE_URL", "RABBITMQ_URL")}


def eeghub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eeghub", *args], env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_config_masks_secrets_and_names_bad_keys() -> None:
    done = eeghub("config", env={"DATABASE_URL": "postgresql://u:hunter2@db/x", "EEGHUB_AUTH__JWT_SECRET": "s" * 40})
    assert done.returncode == 0 and "hunter2" not in done.stdout and "s" * 40 not in done.stdout
    assert 'url = "postgresql://u:***@db/x"' in done.stdout
    bad = eeghub("config", env={"EEGHUB_SERVER__PORT": "eighty"})
    assert bad.returncode == 2 and "server.port" in bad.stderr and "EEGHUB_SERVER__PORT" in bad.stderr
    defaults = eeghub("config", "--defaults")
    assert "[broker.queues]" in defaults.stdout and 'data_linker_queue = "data_linker_queue"' in defaults.stdout


def test_plugins_lists_the_builtins() -> None:
    done = eeghub("plugins", "--json")
    assert done.returncode == 0
    names = [p["name"] for p in json.loads(done.stdout)]
    assert names == ["session", "stimulus", "ingest", "linker", "exporter", "analyzer", "erp", "console"]
    done = eeghub("plugins", "--json", env={"EEGHUB_PLUGINS__DISABLED": "analyzer"})
    assert "analyzer" not in [p["name"] for p in json.loads(done.stdout)]
    assert eeghub("plugins", env={"EEGHUB_PLUGINS__ENABLED": "nope"}).returncode != 0


def test_a_reader_that_leaves_early_is_no_error() -> None:
    """``eeghub plugins --json | head``: the pipe closes before the output is
    written; no BrokenPipeError traceback, exit status 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first byte
    try:
        done = subprocess.run([sys.executable, "-m", "eeghub", "plugins", "--json"], env=ENV, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_config_prints_no_empty_tables() -> None:
    done = eeghub("config")
    assert done.returncode == 0 and "[plugin]" not in done.stdout and "[plugins]" in done.stdout


@pytest.mark.postgres
def test_migrate(database_url: str) -> None:
    done = eeghub("migrate", env={"EEGHUB_DATABASE__URL": database_url})
    assert done.returncode == 0 and "up to date" in done.stdout
    again = eeghub("migrate", env={"EEGHUB_DATABASE__URL": database_url})
    assert again.returncode == 0


def test_dlq_list_and_replay_on_the_embedded_journal(tmp_path: Path) -> None:
    journal = tmp_path / "broker.sqlite3"

    async def park_a_message() -> None:
        broker = InProcessBroker(journal, retry_backoff=0)
        await broker.start()
        await broker.declare_queue("data_linker_queue")
        await broker.publish(Message(body=b'{"session_id": "s1"}', message_id="m1"), queue="data_linker_queue")

        async def fail(delivery: Delivery) -> None:
            raise PermanentFailure("session s1 not found")

        sub = await broker.consume("data_linker_queue", fail)
        for _ in range(100):
            if await broker.queue_depth("data_linker_queue.dlq") == 1:
                break
            await asyncio.sleep(0.02)
        await sub.cancel()
        await broker.close()

    asyncio.run(park_a_message())
    env = {"EEGHUB_SERVER__DATA_DIR": str(tmp_path)}
    listed = eeghub("dlq", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "data_linker_queue.dlq: 1 message(s)" in listed.stdout
    shown = eeghub("dlq", "list", "data_linker_queue", env=env)
    assert "session s1 not found" in shown.stdout and '"message_id": "m1"' in shown.stdout
    replayed = eeghub("dlq", "replay", "data_linker_queue", env=env)
    assert "replayed 1 message(s)" in replayed.stdout
    assert "data_linker_queue.dlq: 0 message(s)" in eeghub("dlq", "list", env=env).stdout

    async def depth() -> int:
        broker = InProcessBroker(journal)
        await broker.start()
        await broker.declare_queue("data_linker_queue")
        try:
            return await broker.queue_depth("data_linker_queue")
        finally:
            await broker.close()

    assert asyncio.run(depth()) == 1


def test_simulate_without_a_server_reports_instead_of_a_traceback() -> None:
    with __import__("socket").socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    args = ("simulate", "--url", url, "--user", "alice", "--device", "dev-a", "--session", "s-1", "--seconds", "2",
            "--speed", "0", "--retries", "1")
    first, second = eeghub(*args), eeghub(*args)
    for done in (first, second):
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "user alice  device dev-a  session s-1  seed " in done.stdout
        assert "packets sent 2, accepted 0, refused 0, 2 unanswered (ConnectError" in done.stdout
        assert "retrying" in done.stderr and f"no server answered at {url}" in done.stderr
    seeds = [done.stdout.split(" seed ")[1].split()[0] for done in (first, second)]
    assert seeds[0] != seeds[1], "two runs without --seed send different data"
    fixed = eeghub(*args, "--seed", "42")
    assert "seed 42" in fixed.stdout
    study = eeghub("simulate", "--study", "--url", url, "--retries", "0")
    assert study.returncode == 1 and "Traceback" not in study.stderr and "is `eeghub serve` running?" in study.stderr
