"""Fixtures for driving the whole application over HTTP.

``services_env`` points eeghub at the real servers (PostgreSQL, S3 via
SeaweedFS, RabbitMQ) with a fresh database, fresh buckets and queue names of
its own, so tests never see each other's data. ``local_env`` uses a real
PostgreSQL with the filesystem store and the in-process broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from eeghub.bootstrap import create_app
from eeghub.config import load_settings

QUEUE_KEYS = (
    "raw_data_exchange",
    "processing_queue",
    "media_processing_queue",
    "data_linker_queue",
    "stimulus_asset_queue",
    "event_correction_queue",
    "export_queue",
    "experiment_analysis_queue",
)


@pytest.fixture
def local_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {"EEGHUB_SERVER__DATA_DIR": str(tmp_path), "EEGHUB_DATABASE__URL": database_url}


@pytest.fixture
async def services_env(
    tmp_path: Path, database_url: str, rabbitmq_url: str, s3_endpoint: dict[str, str], unique_name: str
) -> AsyncIterator[dict[str, str]]:
    env = {
        "EEGHUB_SERVER__DATA_DIR": str(tmp_path),
        "EEGHUB_DATABASE__URL": database_url,
        "EEGHUB_BROKER__URL": rabbitmq_url,
        "EEGHUB_OBJECT_STORE__ENDPOINT": s3_endpoint["endpoint_url"],
        "EEGHUB_OBJECT_STORE__ACCESS_KEY": s3_endpoint["access_key"],
        "EEGHUB_OBJECT_STORE__SECRET_KEY": s3_endpoint["secret_key"],
        "EEGHUB_OBJECT_STORE__BUCKETS__RAW_DATA": f"{unique_name}-raw",
        "EEGHUB_OBJECT_STORE__BUCKETS__MEDIA": f"{unique_name}-media",
        "EEGHUB_OBJECT_STORE__BUCKETS__BIDS_EXPORTS": f"{unique_name}-bids",
    }
    for key in QUEUE_KEYS:
        env[f"EEGHUB_BROKER__QUEUES__{key.upper()}"] = f"{unique_name}.{key}"
    yield env
    await _delete_queues(rabbitmq_url, [env[f"EEGHUB_BROKER__QUEUES__{k.upper()}"] for k in QUEUE_KEYS])
    await _delete_buckets(s3_endpoint, [env[f"EEGHUB_OBJECT_STORE__BUCKETS__{k}"] for k in ("RAW_DATA", "MEDIA", "BIDS_EXPORTS")])


async def _delete_buckets(s3: dict[str, str], buckets: list[str]) -> None:
    import aioboto3
    from botocore.config import Config

    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    ) as client:
        for bucket in buckets:
            try:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=bucket):
                    for item in page.get("Contents", []):
                        await client.delete_object(Bucket=bucket, Key=item["Key"])
                await client.delete_bucket(Bucket=bucket)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


async def _delete_queues(url: str, names: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        for name in names:
            for queue in (name, name + ".dlq"):
                channel = await connection.channel()
                try:
                    await channel.queue_delete(queue)
                except Exception:  # noqa: BLE001 - may not exist
                    pass
            channel = await connection.channel()
            try:
                await channel.exchange_delete(name)
            except Exception:  # noqa: BLE001
                pass
    finally:
        await connection.close()


AppFactory = Callable[..., Any]


@pytest.fixture
def app_client() -> AppFactory:
    """``async with app_client(env, **extra_env) as (client, app): ...``"""

    @asynccontextmanager
    async def factory(env: dict[str, str], extra_plugins: dict[str, Any] | None = None, **extra: str) -> AsyncIterator[Any]:
        settings = load_settings(env={**env, **extra})
        app = create_app(settings, extra_plugins=extra_plugins)
        async with AsyncTestClient(app, timeout=60) as client:
            yield client, app

    return factory
