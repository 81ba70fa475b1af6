"""Live per-stream analysis (PSD, alpha coherence, channel quality) and the analysis plugin API."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from eeghub.core.accepted import add_listener
from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure, PluginError
from eeghub.core.extension import BackgroundTask, Consumer, PluginHealth
from eeghub.core.hookspecs import hookimpl
from eeghub.core.metrics import metrics_of
from eeghub.core.ports import Delivery

from . import routes
from .builtin import builtin_analyses
from .contract import check_plugin
from .feed import Forwarder, LiveFeed, add_to_host, analyzer_queue, stream_of
from .host import AnalysisHost
from .partitions import PartitionLeases, partition_of
from .sharing import ResultSharing, results_exchange

log = logging.getLogger("eeghub.analyzer")


def partitioned(ctx: AppContext) -> bool:
    """Several processes may share the raw fanout only through a network
    broker; with the in-process broker this process analyses everything."""
    return ctx.backends.get("broker") == "rabbitmq"


@hookimpl
def eeghub_analyses(ctx: AppContext) -> list[Any]:
    return builtin_analyses(ctx.settings.analyzer)


@hookimpl
def eeghub_routes(ctx: AppContext) -> list[Any]:
    return list(routes.ROUTES)


def _quality_factory(ctx: AppContext) -> Any:
    from eeghub.core.quality import QualityThresholds, QualityWindow

    cfg = ctx.settings.analyzer
    thresholds = QualityThresholds.from_settings(cfg.channel_quality)

    def make(layout: Any) -> Any:
        return QualityWindow.for_seconds(
            layout.channel_names, layout.channel_types, layout.sampling_rate, cfg.quality_window_seconds, thresholds
        )

    return make


@hookimpl
async def eeghub_startup(ctx: AppContext) -> None:
    cfg = ctx.settings.analyzer
    plugins = []
    for owner, plugin in ctx.host.analyses(ctx):
        problems = check_plugin(plugin)
        if problems:
            raise PluginError(f"analysis plugin from {owner!r} is invalid: {'; '.join(problems)}")
        plugins.append(plugin)
    ctx.services["analyzer"] = AnalysisHost(
        plugins,
        buffer_seconds=cfg.buffer_seconds,
        idle_eviction_seconds=cfg.idle_eviction_seconds,
        max_streams=cfg.max_streams,
        threads_per_plugin=cfg.workers,
        quality_factory=_quality_factory(ctx),
        plugin_timeout=cfg.plugin_timeout_seconds,
        on_run=metrics_of(ctx).observe_analysis,
        impedance_threshold=cfg.channel_quality.bad_impedance_threshold,
        pending_packets=cfg.decode_batch_packets,
    )
    host: AnalysisHost = ctx.services["analyzer"]
    if partitioned(ctx):
        from eeghub.core.cluster import INSTANCE_ID

        host.instance = INSTANCE_ID
        leases = PartitionLeases(
            ctx.database,
            INSTANCE_ID,
            partitions=cfg.partitions,
            lease_seconds=cfg.lease_seconds,
            on_lost=lambda lost: host.drop_streams(lambda key: partition_of(*key, cfg.partitions) in lost),
        )
        ctx.services["analyzer.leases"] = leases
        await leases.refresh()  # a lone process owns everything from the start
        sharing = ResultSharing(ctx.broker, host, results_exchange(ctx.settings.broker.queues.raw_data_exchange))
        ctx.services["analyzer.sharing"] = sharing
        host.on_result = sharing.offer
    if cfg.source == "ingest":
        from eeghub.core.cluster import INSTANCE_ID

        leases_ = ctx.services.get("analyzer.leases")
        raw = ctx.settings.broker.queues.raw_data_exchange
        feed = LiveFeed(
            lambda: ctx.services.get("analyzer"),
            impedance_threshold=cfg.channel_quality.bad_impedance_threshold,
            max_channels=ctx.settings.ingest.max_channels,
            leases=leases_,
            forwarder=Forwarder(ctx.broker, lambda instance: analyzer_queue(raw, instance)) if leases_ is not None else None,
            instance=INSTANCE_ID,
        )
        ctx.services["analyzer.feed"] = feed
        add_listener(ctx, feed.offer)
    log.info("analyzer: %d analysis plugin(s): %s", len(plugins), ", ".join(p.id for p in plugins))


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    """The analyzer queue's consumer: packets forwarded by another process
    (``analyzer.source = "ingest"``) or the raw fanout (``"exchange"``)."""
    from eeghub.core.packet_messages import BadBatch, RawPacket, packets_of
    from eeghub.core.payload_cache import PAYLOADS

    limits = ctx.settings.ingest
    quality_threshold = ctx.settings.analyzer.channel_quality.bad_impedance_threshold

    leases: PartitionLeases | None = ctx.services.get("analyzer.leases")

    def add(packet: RawPacket) -> None:
        from eeghub.core.packet import PacketError

        host: AnalysisHost = ctx.services["analyzer"]
        if leases is not None and not leases.owns_stream(*stream_of(packet.headers)):
            host.skipped += 1  # another process analyses this stream
            return
        try:
            if packet.content_encoding == "identity":
                payload = packet.frame
            else:
                payload = PAYLOADS.decompress(packet.frame, max_output_size=limits.max_decompressed_bytes)
        except PacketError as exc:
            raise PermanentFailure(f"bad packet: {exc}") from None
        add_to_host(host, packet.headers, payload, impedance_threshold=quality_threshold, max_channels=limits.max_channels)

    async def handle(delivery: Delivery) -> None:
        try:
            packets = packets_of(delivery.message)
        except BadBatch as exc:
            raise PermanentFailure(str(exc)) from None
        failures: list[str] = []
        for index, packet in enumerate(packets):
            try:
                add(packet)
            except PermanentFailure as exc:
                # The others of the message still reach the buffers.
                failures.append(f"packet {index}: {exc}")
        if failures:
            raise PermanentFailure(f"{len(failures)} of {len(packets)} packet(s) skipped: {'; '.join(failures[:3])}")

    return handle


@hookimpl
def eeghub_consumers(ctx: AppContext) -> list[Consumer]:
    from eeghub.core.cluster import INSTANCE_ID

    queues = ctx.settings.broker.queues
    from_exchange = ctx.settings.analyzer.source == "exchange"
    # With analyzer.source = "ingest" the queue only receives what other
    # processes forward (feed.py): none with a single process.
    live = from_exchange or "analyzer.leases" in ctx.services
    return [
        *(
            [
                Consumer(
                    queue=analyzer_queue(queues.raw_data_exchange, INSTANCE_ID),
                    handler=make_handler(ctx),
                    bind_to=queues.raw_data_exchange if from_exchange else None,
                    durable=False,
                    exclusive=True,
                    # A message carries up to publish_batch_packets packets:
                    # the bound stays one in packets.
                    max_length=max(
                        1, ctx.settings.analyzer.queue_max_length // max(1, ctx.settings.ingest.publish_batch_packets)
                    ),
                    prefetch=64,
                    max_attempts=1,
                )
            ]
            if live
            else []
        ),
        *(
            [
                Consumer(
                    queue=f"eeghub.analysis-results.{socket.gethostname()}.{os.getpid()}",
                    handler=ctx.services["analyzer.sharing"].receive,
                    bind_to=ctx.services["analyzer.sharing"].exchange,
                    durable=False,
                    exclusive=True,
                    max_length=10_000,
                    prefetch=256,
                    max_attempts=1,
                )
            ]
            if "analyzer.sharing" in ctx.services
            else []
        ),
    ]


@hookimpl
def eeghub_background_tasks(ctx: AppContext) -> list[BackgroundTask]:
    async def schedule() -> None:
        host: AnalysisHost = ctx.services["analyzer"]
        ticks = 0
        while True:
            await host.run_due()
            ticks += 1
            if ticks % 40 == 0:
                host.evict_idle()
            await asyncio.sleep(0.25)

    tasks = [BackgroundTask(name="analysis-scheduler", run=schedule)]
    leases: PartitionLeases | None = ctx.services.get("analyzer.leases")
    if leases is not None:

        async def keep_leases() -> None:
            try:
                while True:
                    try:
                        await leases.refresh()
                    except Exception as exc:  # noqa: BLE001 - leases lapse; retried
                        log.warning("analysis partitions: refresh failed: %s", exc)
                    await asyncio.sleep(leases.lease_seconds / 3)
            finally:
                try:
                    await asyncio.shield(leases.leave())
                except Exception as exc:  # noqa: BLE001 - the leases expire instead
                    log.warning("analysis partitions: leaving failed: %s", exc)

        tasks.append(BackgroundTask(name="analysis-partitions", run=keep_leases))
        tasks.append(BackgroundTask(name="analysis-results-publisher", run=ctx.services["analyzer.sharing"].run))
    return tasks


@hookimpl
def eeghub_health(ctx: AppContext) -> PluginHealth:
    host: AnalysisHost | None = ctx.services.get("analyzer")
    if host is None:
        return PluginHealth(status="unhealthy", detail={"error": "not started"})
    status, detail = host.health()
    leases: PartitionLeases | None = ctx.services.get("analyzer.leases")
    if leases is not None:
        detail["partitions"] = leases.status()
    feed: LiveFeed | None = ctx.services.get("analyzer.feed")
    detail["feed"] = feed.status() if feed is not None else {"source": "exchange"}
    return PluginHealth(status=status, detail=detail)  # type: ignore[arg-type]


@hookimpl
async def eeghub_shutdown(ctx: AppContext) -> None:
    feed: LiveFeed | None = ctx.services.get("analyzer.feed")
    if feed is not None and feed.forwarder is not None:
        await feed.forwarder.aclose()
    host: AnalysisHost | None = ctx.services.pop("analyzer", None)
    if host is not None:
        host.close()
