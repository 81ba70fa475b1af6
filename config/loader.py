"""Load ``Settings`` from defaults, a TOML file and the environment.

See ``config/settings.py`` for the keys and the order of precedence.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .settings import SECRET_KEYS, Settings

ENV_PREFIX = "EEGHUB_"
CONFIG_ENV = "EEGHUB_CONFIG"


class ConfigError(Exception):
    """The configuration is invalid. The message names the key and its source."""


# ---------------------------------------------------------------- legacy names
# The predecessor's environment variables (spec §7) and the key each sets.
_LEGACY_SIMPLE: dict[str, str] = {
    "DATABASE_URL": "database.url",
    "RABBITMQ_URL": "broker.url",
    "RAW_DATA_EXCHANGE": "broker.queues.raw_data_exchange",
    "PROCESSING_QUEUE": "broker.queues.processing_queue",
    "MEDIA_PROCESSING_QUEUE": "broker.queues.media_processing_queue",
    "DATA_LINKER_QUEUE": "broker.queues.data_linker_queue",
    "STIMULUS_ASSET_QUEUE": "broker.queues.stimulus_asset_queue",
    "EVENT_CORRECTION_QUEUE": "broker.queues.event_correction_queue",
    "BIDS_EXPORT_REQUEST_QUEUE": "broker.queues.export_queue",
    "EXPORT_OUTPUT_DIR": "export.output_dir",
    "MINIO_ACCESS_KEY": "object_store.access_key",
    "MINIO_SECRET_KEY": "object_store.secret_key",
    "OBJECT_STORAGE_ACCESS_KEY": "object_store.access_key",
    "OBJECT_STORAGE_SECRET_KEY": "object_store.secret_key",
    "MINIO_RAW_DATA_BUCKET": "object_store.buckets.raw_data",
    "MINIO_MEDIA_BUCKET": "object_store.buckets.media",
    "MINIO_BIDS_EXPORTS_BUCKET": "object_store.buckets.bids_exports",
    "MINIO_BIDS_BUCKET": "object_store.buckets.bids_exports",
    "OBJECT_STORAGE_RAW_DATA_BUCKET": "object_store.buckets.raw_data",
    "OBJECT_STORAGE_MEDIA_BUCKET": "object_store.buckets.media",
    "OBJECT_STORAGE_BIDS_EXPORTS_BUCKET": "object_store.buckets.bids_exports",
    "CHANNEL_ZERO_RATIO_THRESHOLD": "analyzer.channel_quality.zero_ratio_threshold",
    "CHANNEL_FLATLINE_PTP_THRESHOLD": "analyzer.channel_quality.flatline_ptp_threshold",
    "CHANNEL_BAD_IMPEDANCE_THRESHOLD": "analyzer.channel_quality.bad_impedance_threshold",
    "CHANNEL_BAD_IMPEDANCE_RATIO": "analyzer.channel_quality.bad_impedance_ratio",
    "CHANNEL_UNKNOWN_IMPEDANCE_RATIO": "analyzer.channel_quality.unknown_impedance_ratio",
    "ANALYSIS_WINDOW_SEC": "analyzer.window_seconds",
    "ANALYSIS_INTERVAL_SECONDS": "analyzer.interval_seconds",
}


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _s3_endpoint(host: str, port: str | None, use_ssl: str | None) -> str:
    if "://" in host:
        return host
    scheme = "https" if use_ssl and _truthy(use_ssl) else "http"
    return f"{scheme}://{host}:{port}" if port and ":" not in host else f"{scheme}://{host}"


def legacy_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Dotted key -> (value, source) from the predecessor's variable names."""
    out: dict[str, tuple[str, str]] = {}
    for name, key in _LEGACY_SIMPLE.items():
        if env.get(name):
            out[key] = (env[name], name)
    for prefix in ("OBJECT_STORAGE", "MINIO"):  # MINIO_* wins when both are set
        host = env.get(f"{prefix}_ENDPOINT")
        if host:
            endpoint = _s3_endpoint(host, env.get(f"{prefix}_PORT"), env.get(f"{prefix}_USE_SSL"))
            out["object_store.endpoint"] = (endpoint, f"{prefix}_ENDPOINT")
    if "database.url" not in out and env.get("POSTGRES_HOST"):
        user = env.get("POSTGRES_USER", "postgres")
        password = env.get("POSTGRES_PASSWORD", "")
        auth = f"{user}:{password}" if password else user
        url = f"postgresql://{auth}@{env['POSTGRES_HOST']}:{env.get('POSTGRES_PORT', '5432')}/{env.get('POSTGRES_DB', 'postgres')}"
        out["database.url"] = (url, "POSTGRES_HOST")
    if "broker.url" not in out and env.get("RABBITMQ_HOST"):
        user = env.get("RABBITMQ_USER", "guest")
        password = env.get("RABBITMQ_PASSWORD", "guest")
        url = f"amqp://{user}:{password}@{env['RABBITMQ_HOST']}:{env.get('RABBITMQ_PORT', '5672')}/"
        out["broker.url"] = (url, "RABBITMQ_HOST")
    if env.get("LOG_LEVEL"):
        level = env["LOG_LEVEL"].lower()
        out["server.log_level"] = ("warning" if level == "warn" else level, "LOG_LEVEL")
    return out


def eeghub_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Dotted key -> (value, source) from ``EEGHUB_SECTION__KEY`` variables."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if any(not part for part in parts):
            raise ConfigError(f"malformed environment variable {name}: use EEGHUB_SECTION__KEY")
        out[".".join(parts)] = (value, name)
    return out


# ---------------------------------------------------------------- coercion
def _field_type(key: str) -> msgspec.inspect.Type | None:
    """The declared type of a dotted key, or None if the key is unknown."""
    node: msgspec.inspect.Type = msgspec.inspect.type_info(Settings)
    for part in key.split("."):
        while isinstance(node, msgspec.inspect.UnionType):
            structs = [t for t in node.types if isinstance(t, msgspec.inspect.StructType)]
            if not structs:
                break
            node = structs[0]
        if isinstance(node, msgspec.inspect.StructType):
            fields = {f.name: f.type for f in node.fields}
            if part not in fields:
                return None
            node = fields[part]
        elif isinstance(node, msgspec.inspect.DictType):
            node = node.value_type
        else:
            return None
    return node


def _coerce_env(key: str, value: str) -> Any:
    """Environment values are strings; lists are comma-separated, and an empty
    value of an optional key means None."""
    kind = _field_type(key)
    if kind is None:
        return value
    types = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    if value == "" and any(isinstance(t, msgspec.inspect.NoneType) for t in types):
        return None
    if any(isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.SetType)) for t in types):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key} (from {source}): {part} is not a table")
        node = child
    node[parts[-1]] = value


_AT_RE = re.compile(r"at `\$((?:\.[\w-]+|\[\d+\])*)`")
_UNKNOWN_RE = re.compile(r"unknown field `([^`]+)`")


def _explain(error: msgspec.ValidationError, sources: dict[str, str]) -> str:
    message = str(error)
    match = _AT_RE.search(message)
    path = match.group(1).lstrip(".").replace("[", ".").replace("]", "") if match else ""
    unknown = _UNKNOWN_RE.search(message)
    if unknown:
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        source = sources.get(key, "configuration")
        return f"unknown configuration key {key!r} (from {source})"
    key = path or "(root)"
    source = sources.get(key) or sources.get(key.rsplit(".", 1)[0], "configuration")
    detail = _AT_RE.sub("", message).strip(" -")
    return f"invalid value for configuration key {key!r} (from {source}): {detail}"


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted + "."))
        out[dotted] = value
    return out


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the effective settings; raise ``ConfigError`` naming a bad key."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    config_path = path if path is not None else env.get(CONFIG_ENV) or None
    if config_path:
        file = Path(config_path)
        try:
            with file.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        sources.update({key: str(file) for key in _flatten(raw)})
    for overrides in (legacy_overrides(env), eeghub_overrides(env)):
        for key, (value, source) in overrides.items():
            if _field_type(key) is None and not key.startswith("plugin."):
                raise ConfigError(f"unknown configuration key {key!r} (from {source})")
            _set_dotted(raw, key, _coerce_env(key, value), source)
            sources[key] = source
    try:
        # strict=False lets "8080" (an environment string) become an int.
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Cross-field rules msgspec cannot express."""
    if not 0 < settings.server.port < 65536:
        raise ConfigError(f"invalid value for configuration key 'server.port': {settings.server.port} is not a TCP port")
    if settings.database.pool_min_size > settings.database.pool_max_size:
        raise ConfigError("database.pool_min_size must not exceed database.pool_max_size")
    if settings.object_store.backend == "s3" and not settings.object_store.endpoint and not settings.object_store.region:
        raise ConfigError("object_store.backend = 's3' needs object_store.endpoint or object_store.region")
    if settings.broker.backend == "rabbitmq" and not settings.broker.url:
        raise ConfigError("broker.backend = 'rabbitmq' needs broker.url")
    if settings.object_store.multipart_part_bytes < 5 * 1024 * 1024:
        raise ConfigError("object_store.multipart_part_bytes must be at least 5 MiB (S3's minimum part size)")
    if settings.server.gc_young_threshold < 0:
        raise ConfigError("invalid value for configuration key 'server.gc_young_threshold': must be 0 (Python's default) or more")
    if not 0 <= settings.ingest.segment_linger_ms <= 60_000:
        raise ConfigError("ingest.segment_linger_ms must be between 0 and 60000")
    if settings.auth.mode == "jwt" and not (
        settings.auth.jwt_secret or settings.auth.jwt_public_key_file or settings.auth.jwks_file
    ):
        raise ConfigError("auth.mode = 'jwt' needs auth.jwt_secret, auth.jwt_public_key_file or auth.jwks_file")
    for key, value in (
        ("broker.max_attempts", settings.broker.max_attempts),
        ("broker.prefetch", settings.broker.prefetch),
        ("ingest.storage_concurrency", settings.ingest.storage_concurrency),
        ("ingest.publish_batch_packets", settings.ingest.publish_batch_packets),
        ("ingest.publish_batch_bytes", settings.ingest.publish_batch_bytes),
        ("ingest.publishes_in_flight", settings.ingest.publishes_in_flight),
        ("ingest.segment_max_bytes", settings.ingest.segment_max_bytes),
        ("ingest.segment_writes_in_flight", settings.ingest.segment_writes_in_flight),
        ("auth.link_ttl_seconds", settings.auth.link_ttl_seconds),
        ("analyzer.partitions", settings.analyzer.partitions),
        ("analyzer.decode_batch_packets", settings.analyzer.decode_batch_packets),
        ("analyzer.lease_seconds", settings.analyzer.lease_seconds),
    ):
        if value < 1:
            raise ConfigError(f"invalid value for configuration key {key!r}: must be at least 1")


# ---------------------------------------------------------------- display
def mask_secret(key: str, value: Any) -> Any:
    """Mask a secret value: URLs keep everything but their password."""
    if value is None or key not in SECRET_KEYS:
        return value
    text = str(value)
    if "://" in text:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return "***"


def masked_dict(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked."""
    data = msgspec.to_builtins(settings)

    def walk(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            out[key] = walk(value, dotted + ".") if isinstance(value, dict) else mask_secret(dotted, value)
        return out

    return walk(data, "")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return msgspec.json.encode(value).decode()


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Render nested plain data as TOML; None values become comments."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is None:
            lines.append(f"# {key} = (unset)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, table in tables:
        if not table:
            continue  # an empty table (no [plugin.NAME] settings) says nothing
        name = f"{prefix}{key}"
        body = to_toml(table, name + ".").rstrip("\n")
        out += f"\n\n[{name}]\n{body}" if body.strip() else f"\n\n[{name}]"
    return out.strip("\n") + "\n"
