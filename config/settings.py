"""Typed settings: every key eeghub reads, its type and its default, in one place.

``eeghub config --defaults`` prints this file's defaults as TOML;
``config/example-lab.toml`` is a commented lab configuration.

Sources, later ones overriding earlier ones:

1. the defaults below;
2. a TOML file (``--config PATH`` or ``EEGHUB_CONFIG``);
3. the predecessor's environment names (``DATABASE_URL``, ``MINIO_*``,
   ``OBJECT_STORAGE_*``, ``RABBITMQ_URL``, queue names, ``EXPORT_OUTPUT_DIR``…),
   so an existing deployment's environment keeps working;
4. ``EEGHUB_SECTION__KEY=value`` environment variables.

An unknown key or a value of the wrong type stops start-up with a message that
names the key (see ``config/loader.py``).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every settings section: unknown keys are an error."""


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    """Address to listen on. The embedded default only listens on loopback."""
    port: int = 8080
    """TCP port (the predecessor's nginx listened on 8080)."""
    data_dir: str = "./eeghub-data"
    """Where embedded state lives: PostgreSQL cluster, object files, broker journal."""
    public_url: str | None = None
    """Base URL printed at start-up and used in links (default: http://host:port)."""
    max_request_body_bytes: int = 100 * 1024 * 1024
    """Largest request body accepted by any route (the predecessor's nginx allowed 100M)."""
    cors_allow_origins: list[str] = []
    """Origins allowed to call the API from a browser; empty means no CORS headers."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    workers_threads: int = 4
    """Threads for blocking work (file I/O, decoding of large uploads)."""


class DatabaseSettings(_Section):
    url: str | None = None
    """PostgreSQL URL. Unset: an embedded PostgreSQL in ``data_dir`` is started."""
    pool_min_size: int = 1
    pool_max_size: int = 10
    command_timeout: float = 60.0
    migrate_on_start: bool = True
    """Apply pending migrations when the server starts (``eeghub migrate`` does it by hand)."""


class BucketSettings(_Section):
    raw_data: str = "raw-data"
    media: str = "media"
    bids_exports: str = "bids-exports"


class ObjectStoreSettings(_Section):
    backend: Literal["auto", "filesystem", "s3"] = "auto"
    """``auto``: S3 when ``endpoint`` is set, else the filesystem store in ``data_dir``."""
    path: str | None = None
    """Filesystem store root (default: ``<data_dir>/objects``)."""
    endpoint: str | None = None
    """S3 endpoint URL (MinIO, SeaweedFS) or None with ``backend = "s3"`` for AWS."""
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    multipart_part_bytes: int = 8 * 1024 * 1024
    lean_put: bool = True
    """S3: send small PutObject requests (every raw packet) signed by eeghub
    itself over aiohttp instead of through botocore, about 6x less CPU per
    write. Falls back to botocore by itself when a server refuses the
    signature; set false to always use botocore."""
    lean_get: bool = True
    """S3: read whole objects (a raw packet stored alone, read by the export
    and the event correction) the same way, signed by eeghub over aiohttp;
    ranged reads, listings and the rest stay with botocore. Set false to
    read through botocore."""
    buckets: BucketSettings = msgspec.field(default_factory=BucketSettings)


class QueueSettings(_Section):
    raw_data_exchange: str = "raw_data_exchange"
    processing_queue: str = "processing_queue"
    media_processing_queue: str = "media_processing_queue"
    data_linker_queue: str = "data_linker_queue"
    stimulus_asset_queue: str = "stimulus_asset_queue"
    event_correction_queue: str = "event_correction_queue"
    export_queue: str = "bids_export_request_queue"


class BrokerSettings(_Section):
    backend: Literal["auto", "inprocess", "rabbitmq"] = "auto"
    """``auto``: RabbitMQ when ``url`` is set, else the in-process broker."""
    url: str | None = None
    """AMQP URL, e.g. ``amqp://user:pass@host:5672/``."""
    journal: bool = True
    """In-process broker: journal durable queues in ``<data_dir>/broker.sqlite3``."""
    publish_timeout: float = 5.0
    """Seconds to wait for the broker's publisher confirm before answering 503."""
    prefetch: int = 8
    max_attempts: int = 5
    """Deliveries of a failing message before it moves to the dead-letter queue."""
    retry_backoff_seconds: float = 0.5
    """Wait before retry n: this, doubled per attempt (at most 30 s)."""
    queues: QueueSettings = msgspec.field(default_factory=QueueSettings)


class PluginSettings(_Section):
    enabled: list[str] = []
    """Plugins to load; empty means every installed plugin."""
    disabled: list[str] = []
    """Plugins never to load (wins over ``enabled``)."""


class AuthSettings(_Section):
    mode: Literal["trusted-header", "jwt"] = "trusted-header"
    """``trusted-header``: identity from ``X-User-Id`` (behind an authenticating
    gateway only). ``jwt``: a bearer token signed with ``jwt_secret`` (HS256) or
    the key in ``jwt_public_key_file`` / ``jwks_file`` (RS256/ES256)."""
    user_header: str = "X-User-Id"
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwks_file: str | None = None
    jwt_algorithms: list[str] = msgspec.field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = 30
    admin_users: list[str] = []
    """User ids allowed to use administrative endpoints (calibration items, DLQ)."""


class SessionSettings(_Section):
    max_events_csv_bytes: int = 10 * 1024 * 1024


class StimulusSettings(_Section):
    max_file_bytes: int = 50 * 1024 * 1024
    max_total_bytes: int = 90 * 1024 * 1024
    """Per upload request; keep below server.max_request_body_bytes."""
    max_files: int = 1000


class IngestSettings(_Section):
    max_packet_bytes: int = 4 * 1024 * 1024
    """Largest accepted compressed packet."""
    max_decompressed_bytes: int = 16 * 1024 * 1024
    """Decompression bound (no zstd bombs)."""
    max_channels: int = 128
    max_media_bytes: int = 50 * 1024 * 1024
    storage_concurrency: int = 64
    """Messages the storage consumer handles at once (its prefetch): their
    packets are written together (``segment_*``) and their rows go to
    PostgreSQL together. Bounds its memory: at most this many messages of up
    to ``publish_batch_bytes`` each."""
    publish_batch_packets: int = 64
    """Most packets one message on ``raw_data_exchange`` carries. Packets that
    arrive while the broker confirms earlier ones leave together in one
    message. 1: every packet is its own message and its own object, as the
    predecessor published and stored them (for consumers of the exchange or
    the bucket outside eeghub); the storage consumer then groups nothing."""
    publish_batch_bytes: int = 1024 * 1024
    """Most bytes one message carries, counting each packet as its
    decompressed payload (what it costs the consumers in memory); a larger
    packet travels alone."""
    publishes_in_flight: int = 1
    """Messages awaiting the broker's confirm at once; a packet that finds
    every slot free goes out alone, at once. (With ``publish_batch_packets =
    1`` there is no limit: every packet is published as it comes.)"""
    segment_max_bytes: int = 1024 * 1024
    """Most bytes (as stored: frames, or payloads with ``store_compressed =
    false``) of one object the storage consumer writes. The packets of the messages it handles at once are written
    together, as one segment object, up to this size; a message larger than
    this is written alone. 1 MiB: larger objects cost SeaweedFS no less per
    byte, and S3 clients sign and send them in one request."""
    segment_writes_in_flight: int = 2
    """Segment objects the storage consumer writes at once."""
    segment_linger_ms: float = 100.0
    """How long a packet may wait for others to share its object. It delays
    storing, never the 202. 0: write whatever is waiting at once."""
    store_compressed: bool = True
    """Store each packet's zstd frame as received (a third of the bytes).
    false: the decompressed v4 payload, as the predecessor stored it (for
    tools outside eeghub that read the raw bucket). eeghub reads both."""


class ExportSettings(_Section):
    output_dir: str | None = None
    """Working area and internal-build output (default ``<data_dir>/exports``)."""
    power_line_frequency: float = 50.0
    internal_api_enabled: bool = True
    internal_token: str | None = None
    """Token required by ``/internal/v1/*``; unset: the internal API refuses every call."""
    max_concurrent_exports: int = 2


class ChannelQualitySettings(_Section):
    zero_ratio_threshold: float = 0.98
    flatline_ptp_threshold: int = 5
    bad_impedance_threshold: int = 200
    bad_impedance_ratio: float = 0.5
    unknown_impedance_ratio: float = 0.75


class AnalyzerSettings(_Section):
    buffer_seconds: float = 60.0
    """Recent samples kept per stream (user and device)."""
    window_seconds: float = 4.0
    """Window of the built-in PSD (the predecessor's ANALYSIS_WINDOW_SEC was 2)."""
    coherence_window_seconds: float = 20.0
    """Window of the built-in coherence: many 1 s segments, a low noise floor."""
    coherence_band: list[float] = msgspec.field(default_factory=lambda: [8.0, 13.0])
    psd_fmin: float = 1.0
    psd_fmax: float = 45.0
    quality_window_seconds: float = 10.0
    """Channel quality looks at this much recent data (not since the start)."""
    interval_seconds: float = 5.0
    """How often the built-in analyses run per stream."""
    idle_eviction_seconds: float = 300.0
    max_streams: int = 5000
    workers: int = 2
    """Threads per analysis plugin."""
    plugin_timeout_seconds: float = 30.0
    queue_max_length: int = 20000
    """Packets waiting for the analyzer beyond this are dropped, oldest first
    (it is a live view). The queue counts messages: it holds at most
    ``queue_max_length / ingest.publish_batch_packets`` of them."""
    channel_quality: ChannelQualitySettings = msgspec.field(default_factory=ChannelQualitySettings)
    partitions: int = 64
    """With RabbitMQ, streams are shared among the processes in this many
    partitions (one owner each). Must be the same in every process."""
    lease_seconds: float = 10.0
    """A process that stops renewing its analysis partitions loses them
    after this long (then another process takes its streams over)."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    object_store: ObjectStoreSettings = msgspec.field(default_factory=ObjectStoreSettings)
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    plugins: PluginSettings = msgspec.field(default_factory=PluginSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    session: SessionSettings = msgspec.field(default_factory=SessionSettings)
    stimulus: StimulusSettings = msgspec.field(default_factory=StimulusSettings)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    export: ExportSettings = msgspec.field(default_factory=ExportSettings)
    analyzer: AnalyzerSettings = msgspec.field(default_factory=AnalyzerSettings)
    plugin: dict[str, dict[str, object]] = {}
    """Free-form ``[plugin.<name>]`` tables for third-party plugins; each plugin
    validates its own table (see the plugin guide)."""


SECRET_KEYS = frozenset(
    {
        "database.url",
        "object_store.access_key",
        "object_store.secret_key",
        "broker.url",
        "auth.jwt_secret",
        "export.internal_token",
    }
)
"""Dotted keys whose values ``eeghub config`` masks (URLs: only their password)."""
