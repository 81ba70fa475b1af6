"""Settings: defaults, TOML, legacy and EEGHUB_ environment, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeghub.config import ConfigError, Settings, load_settings, masked_dict, to_toml
from eeghub.config.loader import mask_secret


def test_defaults_need_no_configuration() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.database.url is None  # embedded PostgreSQL
    assert settings.server.host == "127.0.0.1"
    assert settings.broker.queues.data_linker_queue == "data_linker_queue"


def test_toml_file_then_env_override(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('[server]\nport = 9001\n[plugins]\ndisabled = ["analyzer"]\n')
    settings = load_settings(path, env={"EEGHUB_SERVER__PORT": "9002"})
    assert settings.server.port == 9002
    assert settings.plugins.disabled == ["analyzer"]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text("[export]\npower_line_frequency = 60.0\n")
    assert load_settings(env={"EEGHUB_CONFIG": str(path)}).export.power_line_frequency == 60.0


def test_env_lists_are_comma_separated() -> None:
    settings = load_settings(env={"EEGHUB_PLUGINS__ENABLED": "session, ingest", "EEGHUB_PLUGINS__DISABLED": ""})
    assert settings.plugins.enabled == ["session", "ingest"]
    assert settings.plugins.disabled == []


def test_env_nested_section_and_bool() -> None:
    env = {"EEGHUB_BROKER__QUEUES__PROCESSING_QUEUE": "pq", "EEGHUB_BROKER__JOURNAL": "false"}
    settings = load_settings(env=env)
    assert settings.broker.queues.processing_queue == "pq"
    assert settings.broker.journal is False


def test_predecessor_environment_names() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db:5432/eeg_data",
        "MINIO_ENDPOINT": "minio:9000",
        "MINIO_ACCESS_KEY": "ak",
        "MINIO_SECRET_KEY": "sk",
        "MINIO_USE_SSL": "true",
        "MINIO_RAW_DATA_BUCKET": "raw",
        "RABBITMQ_URL": "amqp://eeg:pw@rabbit:5672/",
        "DATA_LINKER_QUEUE": "linker_q",
        "EVENT_CORRECTION_QUEUE": "ec_q",
        "EXPORT_OUTPUT_DIR": "/export_data",
    }
    s = load_settings(env=env)
    assert s.database.url == "postgresql://u:pw@db:5432/eeg_data"
    assert s.object_store.endpoint == "https://minio:9000"
    assert (s.object_store.access_key, s.object_store.secret_key) == ("ak", "sk")
    assert s.object_store.buckets.raw_data == "raw"
    assert s.broker.url == "amqp://eeg:pw@rabbit:5672/"
    assert s.broker.queues.data_linker_queue == "linker_q"
    assert s.broker.queues.event_correction_queue == "ec_q"
    assert s.export.output_dir == "/export_data"


def test_object_storage_names_with_port() -> None:
    env = {"OBJECT_STORAGE_ENDPOINT": "object-storage", "OBJECT_STORAGE_PORT": "8333", "OBJECT_STORAGE_USE_SSL": "false"}
    assert load_settings(env=env).object_store.endpoint == "http://object-storage:8333"


def test_eeghub_env_wins_over_legacy() -> None:
    env = {"DATABASE_URL": "postgresql://a/b", "EEGHUB_DATABASE__URL": "postgresql://c/d"}
    assert load_settings(env=env).database.url == "postgresql://c/d"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EEGHUB_SERVER__PROT": "1"}, "server.prot"),
        ({"EEGHUB_NOPE__X": "1"}, "nope.x"),
        ({"EEGHUB_SERVER__PORT": "eighty"}, "server.port"),
        ({"EEGHUB_BROKER__PREFETCH": "0"}, "broker.prefetch"),
        ({"EEGHUB_INGEST__STORAGE_CONCURRENCY": "0"}, "ingest.storage_concurrency"),
        ({"EEGHUB_AUTH__MODE": "magic"}, "auth.mode"),
        ({"EEGHUB_SERVER__PORT": "70000"}, "server.port"),
    ],
)
def test_bad_env_names_the_key(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert needle in str(info.value)


def test_bad_toml_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[object_store.buckets]\nraw_data = 3\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "object_store.buckets.raw_data" in str(info.value) and "bad.toml" in str(info.value)
    path.write_text("[database]\nurll = 'x'\n")
    with pytest.raises(ConfigError, match="database.urll"):
        load_settings(path, env={})
    path.write_text("[database\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})


def test_jwt_mode_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="jwt"):
        load_settings(env={"EEGHUB_AUTH__MODE": "jwt"})
    assert load_settings(env={"EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": "s" * 32}).auth.mode == "jwt"


def test_secrets_are_masked() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:hunter2@db/x",
        "EEGHUB_OBJECT_STORE__SECRET_KEY": "topsecret",
        "EEGHUB_AUTH__JWT_SECRET": "jwtsecret",
        "RABBITMQ_URL": "amqp://g:rabbitpw@h:5672/",
    }
    text = to_toml(masked_dict(load_settings(env=env)))
    for secret in ("hunter2", "topsecret", "jwtsecret", "rabbitpw"):
        assert secret not in text
    assert 'url = "postgresql://u:***@db/x"' in text
    assert mask_secret("database.url", "postgresql://db/x") == "postgresql://db/x"


def test_toml_output_round_trips() -> None:
    import tomllib

    data = tomllib.loads(to_toml(masked_dict(Settings())))
    assert data["server"]["port"] == 8080
    assert data["broker"]["queues"]["raw_data_exchange"] == "raw_data_exchange"


def test_example_lab_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "example-lab.toml"
    settings = load_settings(example, env={})
    assert settings.auth.mode == "jwt"


def test_identity_mode_defaults_to_compat_and_warns_beyond_loopback() -> None:
    from eeghub.server import identity_warning

    assert load_settings(env={}).auth.mode == "compat"
    assert identity_warning(load_settings(env={})) is None  # 127.0.0.1
    public = {"EEGHUB_SERVER__HOST": "0.0.0.0"}
    compat = identity_warning(load_settings(env=public))
    assert compat is not None and "'compat'" in compat and "X-User-Id" in compat and "user_id" in compat
    header = identity_warning(load_settings(env={**public, "EEGHUB_AUTH__MODE": "trusted-header"}))
    assert header is not None and "'trusted-header'" in header
    jwt_mode = {**public, "EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": "x" * 40}
    assert identity_warning(load_settings(env=jwt_mode)) is None
    with pytest.raises(ConfigError, match="link_ttl_seconds"):
        load_settings(env={"EEGHUB_AUTH__LINK_TTL_SECONDS": "0"})


def test_signed_links() -> None:
    from eeghub.core.auth import LinkSigner

    settings = load_settings(env={"EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": "s" * 40}).auth
    signer = LinkSigner(settings)
    path = "/api/v1/stimuli/e1/download/a b.png"
    link = signer.sign(path, now=1000)
    assert link.startswith("/api/v1/stimuli/e1/download/a%20b.png?expires=1300&signature=")
    query = dict(part.split("=") for part in link.split("?", 1)[1].split("&"))
    assert signer.verify(path, query, now=1299)
    assert not signer.verify(path, query, now=1301)  # expired
    assert not signer.verify(path.replace("a b", "c"), query, now=1000)  # another file
    assert not signer.verify(path, {**query, "expires": "1400"}, now=1000)  # extended
    assert not signer.verify(path, {"expires": "1300"}, now=1000)
    assert not signer.verify(path, {**query, "expires": "-5"}, now=1000)
    other_key = LinkSigner(load_settings(env={"EEGHUB_AUTH__MODE": "jwt", "EEGHUB_AUTH__JWT_SECRET": "t" * 40}).auth)
    assert not other_key.verify(path, query, now=1000)
    assert LinkSigner(settings).verify(path, query, now=1000)  # the same key after a restart
