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

from typing import Any, Literal

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
    max_header_bytes: int = 64 * 1024
    """Largest request line plus headers of one request; more is a 431 and the
    connection is closed."""
    max_headers: int = 100
    """Most header fields in one request; more is a 431."""
    header_timeout_seconds: float = 10.0
    """A request's headers must be complete this long after its first byte (or
    after the connection opened); else 408 and the connection is closed."""
    body_idle_timeout_seconds: float = 15.0
    """A request body may pause at most this long; else 408 and close."""
    min_body_bytes_per_second: float = 1024.0
    """Once ``body_idle_timeout_seconds`` have passed, a body must have come at
    this average rate at least (time the server does not read is not
    counted); else 408 and close. 1 kB/s is slower than any phone upload."""
    keep_alive_timeout_seconds: float = 5.0
    """An idle keep-alive connection is closed after this long."""
    cors_allow_origins: list[str] = []
    """Origins allowed to call the API from a browser; empty means no CORS headers."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["plain", "json"] = "plain"
    """``plain``: one line per record; ``json``: one JSON object per line. Both carry the request id."""
    access_log: bool = False
    gc_freeze: bool = True
    """Once started, move every object of the start-up (the plugins, numba,
    NumPy, SciPy, MNE: some 150,000 objects) out of the garbage collector's
    reach with ``gc.freeze()``. The collector then no longer walks them
    whenever it looks for cycles (a full collection of them took about
    0.2 s). Under ingest load, Python's defaults cost 3-29 % more CPU per
    stored packet, measured side by side (``docs/scaling.md``)."""
    gc_young_threshold: int = 10_000
    """Allocations (net of deallocations) that trigger a young-generation
    collection; Python's default is 700. A request allocates a few hundred
    short-lived objects, nearly all freed by reference counting: at 700 the
    collector ran about once per request. 0 keeps Python's default."""
    metrics: bool = True
    """Serve Prometheus metrics at ``GET /metrics`` (no identity needed: restrict it at the network)."""
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
    connect_timeout_seconds: float = 3.0
    """S3: longest wait for a connection to the server."""
    read_timeout_seconds: float = 15.0
    """S3: longest wait for the next bytes of an answer. A stalled store
    makes a request fail after at most ``max_attempts`` × (connect + read
    timeout), and the client gets 503 with ``Retry-After``."""
    max_attempts: int = 2
    """S3: attempts per request (botocore retries throttling, 5xx and timeouts)."""
    stale_upload_seconds: float = 86400.0
    """Multipart uploads (S3) or temporary files (filesystem) older than this
    are leftovers of a killed process and are removed by the periodic sweep."""
    sweep_interval_seconds: float = 3600.0
    """How often the sweep runs (also once at start-up). 0: never."""
    buckets: BucketSettings = msgspec.field(default_factory=BucketSettings)


class QueueSettings(_Section):
    raw_data_exchange: str = "raw_data_exchange"
    processing_queue: str = "processing_queue"
    media_processing_queue: str = "media_processing_queue"
    data_linker_queue: str = "data_linker_queue"
    stimulus_asset_queue: str = "stimulus_asset_queue"
    event_correction_queue: str = "event_correction_queue"
    export_queue: str = "bids_export_request_queue"
    experiment_analysis_queue: str = "experiment_analysis_queue"


class BrokerSettings(_Section):
    backend: Literal["auto", "inprocess", "rabbitmq"] = "auto"
    """``auto``: RabbitMQ when ``url`` is set, else the in-process broker."""
    url: str | None = None
    """AMQP URL, e.g. ``amqp://user:pass@host:5672/``."""
    journal: bool = True
    """In-process broker: journal durable queues in ``<data_dir>/broker.sqlite3``."""
    journal_synchronous: Literal["full", "normal"] = "full"
    """In-process broker: SQLite ``synchronous`` of the journal. ``full``: a
    message confirmed (a packet answered 202) survives a power loss;
    ``normal`` survives a crash of eeghub but not of the machine, and is
    faster (``benchmarks/broker_journal.py`` measures both)."""
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
    mode: Literal["compat", "trusted-header", "jwt"] = "compat"
    """``compat``: the predecessor's rules: ``X-User-Id`` where it is sent, and
    without it, on the calls where the predecessor took the caller from the
    request (join, data, media, analysis poll, export task by id), that
    request's user id. ``trusted-header``: ``X-User-Id`` required on every
    call (behind an authenticating gateway only). ``jwt``: a bearer token
    signed with ``jwt_secret`` (HS256) or the key in ``jwt_public_key_file`` /
    ``jwks_file`` (RS256/ES256). See docs/identity.md."""
    user_header: str = "X-User-Id"
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwks_file: str | None = None
    jwt_algorithms: list[str] = msgspec.field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = 30
    link_secret: str | None = None
    """``jwt`` mode: key of the signed download links (default: derived from
    ``jwt_secret``; without either, random per process)."""
    link_ttl_seconds: int = 300
    """Lifetime of a signed download link."""
    admin_users: list[str] = []
    """User ids allowed to use administrative endpoints (calibration items)."""
    local_admin_token: bool = True
    """Write a fresh administrator token to ``<data_dir>/admin-token`` (mode 0600)
    at each start; the ``X-Eeghub-Admin-Token`` header with it is an administrator,
    accepted only from a loopback address and never through a proxy. The ``eeghub``
    commands on the same machine use it to administer a running server."""


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
    sample_slack_seconds: float = 2.0
    """A packet may hold at most (its time span + this) × ``sampling_rate``
    samples, plus 10 %: its timestamps stamp the arrival of its first and last
    sample, and a radio delivers samples in bursts, so fewer samples than the
    span is normal and a few seconds' worth more is tolerated; many more
    (zeros that compress to nothing) is a 400."""
    stream_bytes_per_second: int = 4 * 1024 * 1024
    """Decompressed bytes per second one device stream (user and device) may
    send, on average; more is a 429 with ``Retry-After``. A 128-channel
    device at 1 kHz sends 0.4 MB/s. 0: no limit."""
    stream_burst_bytes: int = 32 * 1024 * 1024
    """How far a stream may run ahead of ``stream_bytes_per_second`` (at
    least one packet of ``max_decompressed_bytes``)."""
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
    asgi_fast_path: bool = True
    """Serve ``POST /api/v1/data`` with a JSON body through the ingest route's
    ASGI fast path (same answers, without Litestar's routing and response
    layers); false: through Litestar like every other route."""
    segment_linger_ms: float = 100.0
    """How long a packet may wait for others to share its object. It delays
    storing, never the 202. 0: write whatever is waiting at once."""
    store_compressed: bool = True
    """Store each packet's zstd frame as received (a third of the bytes).
    false: the decompressed v4 payload, as the predecessor stored it (for
    tools outside eeghub that read the raw bucket). eeghub reads both."""


class BidsTaskSettings(_Section):
    """What the lab says about one task (one session type) in ``_eeg.json``."""

    task_description: str | None = None
    """TaskDescription (default for tasks other than calibration: the experiment's description)."""
    instructions: str | None = None
    """Instructions: the text given to the participant."""
    cog_atlas_id: str | None = None
    """CogAtlasID: a https://www.cognitiveatlas.org/task/id/… URI."""
    cog_po_id: str | None = None
    """CogPOID: a http://www.wiki.cogpo.org/… URI."""


class BidsSettings(_Section):
    """Dataset and recording metadata only the lab knows, written into every
    export (BIDS RECOMMENDED fields). What stays unset is listed in the
    export report's ``left_for_the_lab``."""

    authors: list[str] = []
    """dataset_description.json Authors, one person per entry."""
    license: str | None = None
    """License, e.g. ``CC0`` or ``CC-BY-4.0``."""
    acknowledgements: str | None = None
    how_to_acknowledge: str | None = None
    funding: list[str] = []
    ethics_approvals: list[str] = []
    references_and_links: list[str] = []
    dataset_doi: str | None = None
    institution_name: str | None = None
    institution_address: str | None = None
    institutional_department_name: str | None = None
    manufacturer: str | None = None
    """The EEG amplifier's manufacturer."""
    manufacturers_model_name: str | None = None
    software_versions: str | None = None
    """The acquisition software (app and firmware) versions."""
    cap_manufacturer: str | None = None
    cap_manufacturers_model_name: str | None = None
    eeg_placement_scheme: str | None = None
    """e.g. ``10-20``."""
    eeg_reference: str | None = None
    """e.g. ``Cz`` or ``linked mastoids``; unset: ``n/a``."""
    eeg_ground: str | None = None
    subject_artefact_description: str | None = None
    """Known artefacts of the set-up, written for every recording."""
    stimulus_presentation: dict[str, str] = {}
    """``_events.json`` StimulusPresentation: OperatingSystem, SoftwareName,
    SoftwareRRID, SoftwareVersion, Code."""
    tasks: dict[str, BidsTaskSettings] = {}
    """Per session type (``calibration``, ``main_task``, …)."""
    dataset_description: dict[str, Any] = {}
    """More dataset_description.json keys (e.g. SourceDatasets); they win over eeghub's."""
    sidecar: dict[str, Any] = {}
    """More ``_eeg.json`` keys for every recording; they win over eeghub's."""


class ExportSettings(_Section):
    output_dir: str | None = None
    """Working area and internal-build output (default ``<data_dir>/exports``)."""
    power_line_frequency: float = 50.0
    internal_api_enabled: bool = True
    internal_token: str | None = None
    """Token required by ``/internal/v1/*``; unset: the internal API refuses every call."""
    max_concurrent_exports: int = 2
    validator: str | None = None
    """The BIDS validator to run: a path, or a command looked up on PATH.
    Unset: ``bids-validator-deno`` next to the running interpreter, then on
    PATH (it is a dependency of eeghub)."""
    bids: BidsSettings = msgspec.field(default_factory=BidsSettings)


class NeuroMarketingSettings(_Section):
    """Experiment analyses (the ERP neuro-marketing analysis and any added by
    plugins through ``eeghub_experiment_analyses``)."""

    summary_language: Literal["en", "ja"] = "ja"
    """Language of the ERP summary sentence (the app is Japanese)."""
    wait_seconds: float = 120.0
    """How long ``POST .../analyze`` waits for its job before answering 202
    with a status URL (the app expects the result in the 200)."""
    max_concurrent_analyses: int = 1
    """Analyses run at once (each in a worker thread; one participant's data in memory)."""
    permutations: int = 100
    """Label permutations giving each participant's chance AUC."""
    alpha: float = 0.05
    """Significance level of the detector (vs chance) and of the products (Holm-corrected)."""


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
    coherence_min_segments: int = 9
    """The built-in coherence starts once the stream holds this many
    overlapping 1 s segments (9: 5 s of data, noise floor 0.12) and grows its
    window up to ``coherence_window_seconds``; at least 2."""
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
    source: Literal["ingest", "exchange"] = "ingest"
    """Where the analyzer takes its packets. ``ingest``: from this process's
    ``POST /api/v1/data`` once the broker confirmed them, in process (no
    second trip through the broker); with several processes, a packet of a
    stream another process analyses is forwarded to that process's queue.
    ``exchange``: from a queue of its own bound to ``raw_data_exchange``, as
    the predecessor's analyzer did: needed only when something other than
    eeghub's ingest route publishes raw packets there."""
    decode_batch_packets: int = 32
    """With ``source = "ingest"``, a stream's packets wait (decompressed,
    about 10 kB each for 8 channels) until an analysis needs them or this
    many have gathered, then are decoded together in one call: per packet,
    a list append on the request path instead of a decode. At most this
    many payloads per stream are held on top of its ring buffer. A headset
    at 2 packets a second, analysed every 5 s, gathers about 10 between
    analyses, so this bound only binds for faster streams (the ingest
    benchmark's 16 streams send ~100 packets a second each: 32 rather
    than 8 saved ~14 % of eeghub's CPU per packet there, see
    docs/scaling.md)."""
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
    neuro_marketing: NeuroMarketingSettings = msgspec.field(default_factory=NeuroMarketingSettings)
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
        "auth.link_secret",
        "export.internal_token",
    }
)
"""Dotted keys whose values ``eeghub config`` masks (URLs: only their password)."""
