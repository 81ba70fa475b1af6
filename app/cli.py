"""The ``eeghub`` command line.

    eeghub serve [--host H] [--port P] [--config FILE] [--data-dir DIR]
    eeghub migrate [--config FILE]
    eeghub plugins [--config FILE] [--json]
    eeghub config [--config FILE] [--defaults]
    eeghub dlq list [QUEUE] [--limit N] [--config FILE]
    eeghub dlq replay QUEUE [--limit N] [--config FILE]
    eeghub raw sweep [--min-age-hours H] [--delete] [--config FILE]
    eeghub token --user U [--ttl SECONDS]
    eeghub calibration add FILE --type T [--description D] [--direct]
    eeghub calibration list
    eeghub simulate [--url URL] [--user U | --users N] [--device D] [--session S] [--seed N] ...
    eeghub simulate --study [--participants N] [--export FILE] ...

Every command reads the same settings as the server (``--config`` or
``EEGHUB_CONFIG``, then the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from eeghub import __version__
from eeghub.config import ConfigError, Settings, load_settings, masked_dict, to_toml


def _settings(args: argparse.Namespace) -> Settings:
    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["EEGHUB_SERVER__DATA_DIR"] = args.data_dir
    if getattr(args, "host", None):
        env["EEGHUB_SERVER__HOST"] = args.host
    if getattr(args, "port", None):
        env["EEGHUB_SERVER__PORT"] = str(args.port)
    return load_settings(args.config, env)


def _setup_logging(level: str, log_format: str = "plain") -> None:
    from eeghub.core.logs import setup_logging

    setup_logging(level, log_format)


# ---------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = _settings(args)
    _setup_logging(settings.server.log_level, settings.server.log_format)
    return serve(settings)


def cmd_migrate(args: argparse.Namespace) -> int:
    from .bootstrap import open_database

    settings = _settings(args)
    _setup_logging(settings.server.log_level)

    async def run() -> None:
        async with open_database(settings, migrate=True) as (_, _dsn, backend):
            print(f"database ({backend}) is up to date")

    asyncio.run(run())
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .bootstrap import load_plugins

    host = load_plugins(_settings(args))
    rows = [
        {"name": p.name, "version": p.version, "source": p.source, "hooks": list(p.hooks), "description": p.description}
        for p in host.plugins
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<12} {row['version']:<10} {row['source']:<12} {', '.join(row['hooks']) or '-'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = Settings() if args.defaults else _settings(args)
    print(to_toml(masked_dict(settings)), end="")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from .bootstrap import open_broker
    from eeghub.core.admin_routes import dead_letter_summary
    from eeghub.core.topology import durable_queues

    settings = _settings(args)
    _setup_logging("warning")
    if not args.direct:
        from .admin import NoServer

        try:
            return _dlq_over_http(settings, args)
        except NoServer as exc:
            if exc.stale:
                print(f"eeghub: {exc}; opening the broker directly", file=sys.stderr)

    async def run() -> int:
        async with open_broker(settings) as (broker, backend):
            if args.dlq_command == "list":
                queues = [args.queue] if args.queue else durable_queues(settings.broker.queues)
                if not args.queue:
                    for name in queues:
                        await broker.declare_queue(name)
                        print(f"{name}.dlq: {await broker.queue_depth(name + '.dlq')} message(s)")
                    return 0
                await broker.declare_queue(args.queue)
                letters = await broker.dead_letters(args.queue, limit=args.limit)
                print(f"{args.queue}.dlq ({backend}): showing {len(letters)} message(s)")
                for letter in letters:
                    print(json.dumps(dead_letter_summary(letter), ensure_ascii=False))
                return 0
            await broker.declare_queue(args.queue)
            moved = await broker.replay_dead_letters(args.queue, limit=args.limit)
            print(f"replayed {moved} message(s) from {args.queue}.dlq to {args.queue}")
            return 0

    return asyncio.run(run())


def _dlq_over_http(settings: Settings, args: argparse.Namespace) -> int:
    """``eeghub dlq`` through the running server's admin routes."""
    from urllib.parse import quote

    from .admin import admin_request, print_error

    if args.dlq_command == "list" and not args.queue:
        response = admin_request(settings, "GET", "/api/v1/admin/dlq", url=args.url)
        if response.status_code != 200:
            return print_error(response)
        for row in response.json()["queues"]:
            print(f"{row['queue']}.dlq: {row['dead_letters']} message(s)")
        return 0
    path = f"/api/v1/admin/dlq/{quote(args.queue, safe='')}"
    params = {"limit": args.limit} if args.limit else {}
    if args.dlq_command == "list":
        response = admin_request(settings, "GET", path, url=args.url, params=params)
        if response.status_code != 200:
            return print_error(response)
        letters = response.json()
        print(f"{args.queue}.dlq (running server): showing {len(letters)} message(s)")
        for letter in letters:
            print(json.dumps(letter, ensure_ascii=False))
        return 0
    response = admin_request(settings, "POST", path + "/replay", url=args.url, params=params)
    if response.status_code != 200:
        return print_error(response)
    print(f"replayed {response.json()['replayed']} message(s) from {args.queue}.dlq to {args.queue}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from eeghub.core.auth import mint_token

    settings = _settings(args)
    print(mint_token(settings.auth, args.user, ttl_seconds=args.ttl))
    return 0


def cmd_calibration(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eeghub.core.context import AppContext
    from eeghub.core.host import PluginHost
    from eeghub.plugins.stimulus.routes import register_calibration_item

    from .bootstrap import open_database, open_object_store

    settings = _settings(args)
    _setup_logging("warning")
    if args.calibration_command == "list":
        return _list_calibrations(settings, args)
    path = Path(args.file)
    if not path.is_file():
        print(f"eeghub: {path}: no such file", file=sys.stderr)
        return 2
    if not args.direct:
        from .admin import NoServer, add_calibration_over_http

        try:
            return add_calibration_over_http(
                settings, path, item_type=args.type, description=args.description, name=args.name, url=args.url
            )
        except NoServer as exc:
            if exc.stale:
                print(f"eeghub: {exc}; writing to the database and object store directly", file=sys.stderr)

    async def run() -> int:
        async with open_database(settings) as (database, _dsn, _), open_object_store(settings) as (store, _b):
            ctx = AppContext(settings=settings, host=PluginHost())
            ctx._database, ctx._objects = database, store
            with path.open("rb") as handle:
                item = await register_calibration_item(
                    ctx,
                    file_name=args.name or path.name,
                    handle=handle,
                    item_type=args.type,
                    description=args.description,
                )
        print(f"calibration item {item.item_id}: {item.file_name} ({item.item_type})")
        return 0

    return asyncio.run(run())


def _list_calibrations(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import admin_request, print_error

    response = admin_request(settings, "GET", "/api/v1/calibrations", url=args.url)
    if response.status_code != 200:
        return print_error(response)
    for item in response.json():
        print(f"{item['item_id']:>5}  {item['file_name']:<40} {item['item_type']:<12} {item['description'] or ''}")
    return 0


def cmd_raw(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from eeghub.plugins.ingest.sweep import sweep_segments

    from .bootstrap import open_database, open_object_store

    settings = _settings(args)
    _setup_logging("warning")
    if args.min_age_hours < 0:
        print("eeghub: --min-age-hours must not be negative", file=sys.stderr)
        return 2

    async def run() -> int:
        async with open_database(settings) as (database, _dsn, _), open_object_store(settings) as (store, _b):
            report = await sweep_segments(
                database,
                store,
                settings.object_store.buckets.raw_data,
                min_age=timedelta(hours=args.min_age_hours),
                delete=args.delete,
            )
        for key in report.unreferenced:
            print(key)
        verb = "deleted" if args.delete else "unreferenced (run again with --delete to remove them)"
        print(
            f"{report.segments} segment(s) older than {args.min_age_hours:g} h, {report.too_young} younger; "
            f"{len(report.unreferenced)} ({report.unreferenced_bytes} bytes) {verb}",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import run_simulation

    settings = _settings(args)
    if args.seconds is None:
        args.seconds = 20.0 if args.study else 10.0
    if args.speed is None:
        args.speed = 0.0 if args.study else 1.0
    if args.study and args.trigger_every <= 0:
        print("eeghub: --study needs --trigger-every > 0 (its trials are the trigger pulses)", file=sys.stderr)
        return 2
    return asyncio.run(run_simulation(settings, args))


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eeghub", description="eeghub: an EEG research data server.")
    parser.add_argument("--version", action="version", version=f"eeghub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="TOML configuration file (default: $EEGHUB_CONFIG)")
        p.add_argument("--data-dir", help="directory for embedded state (default: ./eeghub-data)")

    def admin_target(p: argparse.ArgumentParser) -> None:
        """Administration goes through the running server when there is one."""
        p.add_argument("--url", default=None, help="the running server (default: this configuration's, over loopback)")
        p.add_argument(
            "--direct", action="store_true",
            help="open the database, object store or broker directly instead of asking the running server",
        )

    p = sub.add_parser("serve", help="run the server")
    common(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="apply pending database migrations")
    common(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("plugins", help="list the plugins that would be loaded")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    common(p)
    p.add_argument("--defaults", action="store_true", help="print the built-in defaults instead")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("token", help="mint a development JWT (needs auth.jwt_secret)")
    common(p)
    p.add_argument("--user", required=True, help="user id (the token's sub claim)")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("calibration", help="manage calibration items")
    cal = p.add_subparsers(dest="calibration_command", required=True)
    q = cal.add_parser("add", help="register (or replace) a calibration item from a file")
    common(q)
    q.add_argument("file", help="the stimulus file")
    q.add_argument("--type", required=True, help="item type, e.g. target or nontarget")
    q.add_argument("--description", default=None)
    q.add_argument("--name", default=None, help="file name to register (default: the file's name)")
    admin_target(q)
    q.set_defaults(func=cmd_calibration)
    q = cal.add_parser("list", help="list the calibration items (asks the running server)")
    common(q)
    q.add_argument("--url", default=None, help="the running server (default: this configuration's, over loopback)")
    q.set_defaults(func=cmd_calibration)

    p = sub.add_parser("raw", help="maintain the stored raw packets")
    raw = p.add_subparsers(dest="raw_command", required=True)
    q = raw.add_parser("sweep", help="list (or --delete) segment objects no row refers to")
    common(q)
    q.add_argument("--min-age-hours", type=float, default=1.0, help="only segments older than this (default 1)")
    q.add_argument("--delete", action="store_true", help="delete them (default: only list them)")
    q.set_defaults(func=cmd_raw)

    p = sub.add_parser(
        "simulate", help="stream synthetic EEG packets to a server, or play a whole study (--study)",
        description="Stream synthetic EEG packets to a running server, or (--study) play a small study against it.",
    )
    common(p)
    p.add_argument("--url", default=None, help="server base URL (default: this configuration's server)")
    p.add_argument("--study", action="store_true",
                   help="play a whole study: calibration items, experiment, stimuli, participants, sessions with "
                        "triggers and event logs")
    p.add_argument("--user", default=None, help="send as this user id (stream mode) / the one participant (--study)")
    p.add_argument("--device", default=None, help="device id (several devices: DEVICE-1, DEVICE-2, ...)")
    p.add_argument("--session", "--session-id", dest="session_id", default=None,
                   help="session_id to put in every envelope (--study: prefix of the session ids)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first stream (default: random; printed)")
    p.add_argument("--retries", type=int, default=6, help="retries per request on connection errors and 502-504")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--devices", type=int, default=1, help="devices per user")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds of data per device (default 10; --study: per session, default 20)")
    p.add_argument("--speed", type=float, default=None,
                   help="1 = real time, 10 = ten times faster, 0 = as fast as possible (default 1; --study: 0)")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--rate", type=float, default=250.0, help="sampling rate in Hz")
    p.add_argument("--samples-per-packet", type=int, default=250)
    p.add_argument("--variant", choices=["v4", "app"], default="app", help="payload variant (app: trigger block)")
    p.add_argument("--trigger-every", type=float, default=2.0, help="seconds between trigger pulses (0: none)")
    p.add_argument("--binary", action="store_true", help="send application/octet-stream bodies instead of JSON")
    p.add_argument("--start-ms", type=int, default=None, help="first packet's timestamp (default: now)")
    p.add_argument("--user-prefix", default="sim-user", help="user ids are PREFIX-1, PREFIX-2, ...")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    study = p.add_argument_group("study mode (--study)")
    study.add_argument("--owner", default="sim-owner", help="the experiment's owner (default sim-owner)")
    study.add_argument("--participants", type=int, default=2, help="participants (default 2)")
    study.add_argument("--experiment-name", default=None)
    study.add_argument("--main-type", default="main_task",
                       choices=["main_integrated", "main_external", "main_task"], help="session type of the main sessions")
    study.add_argument("--trial-start", type=float, default=1.0, help="seconds from the session start to the first trial")
    study.add_argument("--stimulus-seconds", type=float, default=0.5, help="the duration logged for each event")
    study.add_argument("--log-lag", type=float, default=0.05,
                       help="how late the phone's event log is against the trigger, in seconds (default 0.05)")
    study.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server's jobs")
    study.add_argument("--export", default=None, metavar="FILE", help="export the study as BIDS and save the zip here")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("dlq", help="inspect and replay dead-lettered messages")
    dlq = p.add_subparsers(dest="dlq_command", required=True)
    q = dlq.add_parser("list", help="count dead letters per queue, or show those of one queue")
    common(q)
    admin_target(q)
    q.add_argument("queue", nargs="?")
    q.add_argument("--limit", type=int, default=20)
    q.set_defaults(func=cmd_dlq)
    q = dlq.add_parser("replay", help="move a queue's dead letters back to it")
    common(q)
    admin_target(q)
    q.add_argument("queue")
    q.add_argument("--limit", type=int, default=None)
    q.set_defaults(func=cmd_dlq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"eeghub: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `eeghub plugins --json | head`: the reader left. Python would print
        # a second error when it flushes stdout at exit; point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - a CLI prints, it does not dump a traceback
        from eeghub.core.errors import EeghubError

        if isinstance(exc, EeghubError):
            print(f"eeghub: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
