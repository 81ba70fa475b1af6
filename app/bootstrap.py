"""The composition root: the one module that knows which adapters exist.

It turns ``Settings`` into connected ports (embedded or external), loads the
plugins, and builds the Litestar application whose lifespan starts and stops
everything in order:

start: ports → migrations → topology → plugin start-up hooks → consumers →
background tasks → serve. stop: the reverse.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide

from eeghub import __version__
from eeghub.config import Settings
from eeghub.core.admin_routes import ADMIN_ROUTES
from eeghub.core.auth import Authenticator, provide_identity, remove_admin_token, write_admin_token
from eeghub.core.context import AppContext
from eeghub.core.errors import ConfigurationError, EeghubError, StorageError
from eeghub.core.host import PluginHost
from eeghub.core.http import EXCEPTION_HANDLERS, SafeRequest
from eeghub.core.metrics import Metrics, observability_middleware
from eeghub.core.openapi import assets_router, declare_security, openapi_config
from eeghub.core.outbox import OutboxRelay
from eeghub.core.ports import Broker, Database, ObjectStore
from eeghub.core.system_routes import system_routes
from eeghub.core.topology import declare_topology

log = logging.getLogger("eeghub")


# ---------------------------------------------------------------- settings helpers
def data_dir(settings: Settings) -> Path:
    return Path(settings.server.data_dir).expanduser().resolve()


def object_store_backend(settings: Settings) -> str:
    backend = settings.object_store.backend
    if backend == "auto":
        return "s3" if settings.object_store.endpoint else "filesystem"
    return backend


def broker_backend(settings: Settings) -> str:
    backend = settings.broker.backend
    if backend == "auto":
        return "rabbitmq" if settings.broker.url else "inprocess"
    return backend


def buckets(settings: Settings) -> list[str]:
    b = settings.object_store.buckets
    return [b.raw_data, b.media, b.bids_exports]


async def sweep_stale_uploads(objects: ObjectStore, settings: Settings) -> None:
    """Every ``object_store.sweep_interval_seconds`` (and once at start-up),
    remove what writes killed mid-way left in every bucket (multipart uploads,
    temporary files) older than ``object_store.stale_upload_seconds``."""
    cfg = settings.object_store
    if cfg.sweep_interval_seconds <= 0:
        return
    while True:
        for bucket in buckets(settings):
            try:
                removed = await objects.sweep_stale_uploads(bucket, cfg.stale_upload_seconds)
            except StorageError as exc:
                log.warning("stale upload sweep of %s failed: %s", bucket, exc)
                continue
            if removed:
                log.info("removed %d unfinished upload(s) from %s", removed, bucket)
        await asyncio.sleep(cfg.sweep_interval_seconds)


# ---------------------------------------------------------------- ports
@dataclass
class Ports:
    database: Database
    objects: ObjectStore
    broker: Broker
    backends: dict[str, str] = field(default_factory=dict)
    dsn: str | None = None


@asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool | None = None) -> AsyncIterator[tuple[Database, str, str]]:
    """Yield ``(database, dsn, backend name)``; starts an embedded PostgreSQL
    in the data directory when no URL is configured."""
    from eeghub.adapters.postgres.database import PostgresDatabase
    from eeghub.adapters.postgres.migrate import migrate as run_migrations

    async with AsyncExitStack() as stack:
        if settings.database.url:
            dsn, backend = settings.database.url, "postgresql"
        else:
            from eeghub.adapters.postgres.embedded import EmbeddedPostgres

            root = data_dir(settings)
            root.mkdir(parents=True, exist_ok=True)
            embedded = EmbeddedPostgres(root)
            dsn = await asyncio.to_thread(embedded.start)
            stack.callback(embedded.stop)
            backend = "embedded-postgresql"
        if settings.database.migrate_on_start if migrate is None else migrate:
            applied = await run_migrations(dsn)
            if applied:
                log.info("applied %d migration(s): %s", len(applied), ", ".join(applied))
        database = PostgresDatabase(
            dsn,
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            command_timeout=settings.database.command_timeout,
        )
        await database.start()
        stack.push_async_callback(database.close)
        yield database, dsn, backend


@asynccontextmanager
async def open_object_store(settings: Settings) -> AsyncIterator[tuple[ObjectStore, str]]:
    cfg = settings.object_store
    backend = object_store_backend(settings)
    store: Any
    if backend == "s3":
        from eeghub.adapters.s3_store import S3ObjectStore

        store = S3ObjectStore(
            endpoint_url=cfg.endpoint,
            access_key=cfg.access_key,
            secret_key=cfg.secret_key,
            region=cfg.region,
            multipart_threshold=cfg.multipart_part_bytes,
            part_size=cfg.multipart_part_bytes,
            ping_bucket=cfg.buckets.raw_data,
            lean_put=cfg.lean_put,
            lean_get=cfg.lean_get,
            connect_timeout=cfg.connect_timeout_seconds,
            read_timeout=cfg.read_timeout_seconds,
            max_attempts=cfg.max_attempts,
        )
    else:
        from eeghub.adapters.filesystem_store import FilesystemObjectStore

        store = FilesystemObjectStore(Path(cfg.path).expanduser() if cfg.path else data_dir(settings) / "objects")
    await store.start()
    try:
        for bucket in buckets(settings):
            await store.ensure_bucket(bucket)
        yield store, backend
    finally:
        await store.close()


@asynccontextmanager
async def open_broker(settings: Settings) -> AsyncIterator[tuple[Broker, str]]:
    cfg = settings.broker
    backend = broker_backend(settings)
    broker: Any
    if backend == "rabbitmq":
        from eeghub.adapters.rabbitmq_broker import RabbitMQBroker

        if not cfg.url:
            raise ConfigurationError("broker.backend = 'rabbitmq' needs broker.url")
        broker = RabbitMQBroker(cfg.url, publish_timeout=cfg.publish_timeout, retry_backoff=cfg.retry_backoff_seconds)
    else:
        from eeghub.adapters.inprocess_broker import InProcessBroker

        journal = None
        if cfg.journal:
            root = data_dir(settings)
            root.mkdir(parents=True, exist_ok=True)
            journal = root / "broker.sqlite3"
        broker = InProcessBroker(journal, retry_backoff=cfg.retry_backoff_seconds, synchronous=cfg.journal_synchronous)
    await broker.start()
    try:
        yield broker, backend
    finally:
        await broker.close()


SERVER_LOCK_FILE = "eeghub-server.lock"


def single_process_adapters(settings: Settings) -> list[str]:
    """The adapters in use that keep their state in the data directory and
    serve one process only."""
    out = []
    if not settings.database.url:
        out.append("the embedded database")
    if object_store_backend(settings) == "filesystem":
        out.append("the filesystem object store")
    if broker_backend(settings) == "inprocess":
        out.append("the in-process broker")
    return out


@contextmanager
def data_dir_lock(settings: Settings) -> Iterator[None]:
    """Refuse a second ``eeghub serve`` on a data directory that an adapter
    for one process keeps its state in (an ``flock``: a killed process's
    lock goes with it). Several processes need PostgreSQL, RabbitMQ and S3."""
    users = single_process_adapters(settings)
    if not users:
        yield
        return
    root = data_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / SERVER_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"another eeghub process serves from {root} with {', '.join(users)}, which serve one process "
                "only; choose another --data-dir, or run several processes on PostgreSQL, RabbitMQ and S3 "
                "(database.url, broker.url, object_store.endpoint)"
            ) from None
        yield
    finally:
        os.close(fd)


@asynccontextmanager
async def open_ports(settings: Settings) -> AsyncIterator[Ports]:
    """Connect every port, apply migrations and declare the broker topology."""
    async with AsyncExitStack() as stack:
        stack.enter_context(data_dir_lock(settings))
        database, dsn, db_backend = await stack.enter_async_context(open_database(settings))
        objects, store_backend = await stack.enter_async_context(open_object_store(settings))
        broker, broker_name = await stack.enter_async_context(open_broker(settings))
        await declare_topology(broker, settings.broker.queues)
        yield Ports(
            database=database,
            objects=objects,
            broker=broker,
            backends={"database": db_backend, "object_store": store_backend, "broker": broker_name},
            dsn=dsn,
        )


# ---------------------------------------------------------------- plugins and app
def load_plugins(settings: Settings, *, extra: dict[str, Any] | None = None) -> PluginHost:
    host = PluginHost()
    host.load(settings.plugins.enabled, settings.plugins.disabled, extra=extra)
    return host


def create_app(
    settings: Settings,
    *,
    extra_plugins: dict[str, Any] | None = None,
    on_ready: Any = None,
) -> Litestar:
    """Build the application. Nothing connects until its lifespan starts."""
    host = load_plugins(settings, extra=extra_plugins)
    ctx = AppContext(settings=settings, host=host, auth=Authenticator(settings.auth))
    metrics = ctx.services["metrics"] = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            try:
                ports = await stack.enter_async_context(open_ports(settings))
            except EeghubError as exc:
                # One line saying which dependency and where, before uvicorn's traceback.
                log.error("start-up failed: %s", exc)
                raise
            ctx.attach(database=ports.database, objects=ports.objects, broker=ports.broker)
            ctx.backends.update(ports.backends)
            relay = OutboxRelay(ports.database, ports.broker)
            ctx.services["outbox"] = relay
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
            admin_token = None
            if settings.auth.local_admin_token:
                admin_token = ctx.services["admin_token"] = write_admin_token(data_dir(settings))
            sweeper = asyncio.create_task(sweep_stale_uploads(ports.objects, settings), name="stale-upload-sweep")
            try:
                await host.startup(ctx)
                log.info(
                    "eeghub %s ready: plugins %s; database %s, object store %s, broker %s",
                    __version__,
                    ", ".join(host.names()) or "(none)",
                    *(ports.backends[k] for k in ("database", "object_store", "broker")),
                )
                if on_ready is not None:
                    on_ready(ctx)
                yield
            finally:
                if admin_token is not None:
                    remove_admin_token(data_dir(settings), admin_token)
                    ctx.services.pop("admin_token", None)
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
                await host.shutdown(ctx)
                relay.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(relay_task), 10)
                except (TimeoutError, Exception):  # noqa: BLE001 - never block shut-down on the relay
                    relay_task.cancel()
                    await asyncio.gather(relay_task, return_exceptions=True)
                try:  # what consumers enqueued while stopping
                    await relay.publish_pending()
                except Exception:  # noqa: BLE001 - published by the next start instead
                    log.warning("outbox: final flush failed; the next start publishes the rest")
                ctx.detach()

    def provide_ctx() -> AppContext:
        return ctx

    cors = (
        CORSConfig(allow_origins=settings.server.cors_allow_origins)
        if settings.server.cors_allow_origins
        else None
    )
    app = Litestar(
        route_handlers=[*system_routes(ctx), *ADMIN_ROUTES, *host.routes(ctx), assets_router()],
        lifespan=[lifespan],
        dependencies={
            "ctx": Provide(provide_ctx, sync_to_thread=False),
            "identity": Provide(provide_identity, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=SafeRequest,
        request_max_body_size=settings.server.max_request_body_bytes,
        # A stimulus upload is stimulus.max_files files and the definitions CSV.
        multipart_form_part_limit=max(1000, settings.stimulus.max_files + 1),
        cors_config=cors,
        openapi_config=openapi_config(settings, __version__),
        logging_config=None,  # eeghub configures logging once, in one format (core/logs.py)
        debug=False,
    )
    declare_security(app.openapi_schema)
    # Around Litestar's whole handler rather than as a route middleware
    # (which Litestar wraps in one more exception layer on every route):
    # cheaper on the hot ingest route, and unrouted 404s are counted too.
    app.state.ctx = ctx
    handler = observability_middleware(metrics)(app.asgi_handler)
    for route_handler in {h for route in app.routes for h in getattr(route, "route_handlers", ())}:
        # A route's own ASGI fast path (``opt["asgi_fast_path"]``, e.g. the
        # ingest route's), outside the observability layer: it counts,
        # times and identifies the requests it answers itself (with the
        # metrics' ``request_recorder``) and hands every other one on.
        wrap = route_handler.opt.get("asgi_fast_path")
        if wrap is not None:
            handler = wrap(app, handler)
    app.asgi_handler = handler
    return app
