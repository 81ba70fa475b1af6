"""A stalled object store and writes killed mid-way (issue 16).

* Against a server that accepts connections and never answers (a frozen
  SeaweedFS looks like that to a client), every S3 call fails with
  ``StorageError`` within its connect/read timeouts instead of hanging.
* Multipart uploads a killed process left behind are aborted by
  ``sweep_stale_uploads`` (real SeaweedFS), and temporary files of the
  filesystem store likewise; recent ones are kept.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eeghub.adapters import filesystem_layout as layout
from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.s3_store import S3ObjectStore
from eeghub.core.errors import StorageError
from tests.integration.test_object_store_contract import raw_s3_client, s3_admin, store  # noqa: F401 - fixtures


class SilentServer:
    """Accepts TCP connections, reads what comes, never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()


async def chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 65536):
        yield b"x" * 65536


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "botocore"])
async def test_every_call_to_a_silent_store_fails_within_its_timeouts(lean: bool) -> None:
    async with SilentServer() as endpoint:
        store = S3ObjectStore(
            endpoint_url=endpoint, access_key="key-id", secret_key="secret-key", connect_timeout=1, read_timeout=1,
            max_attempts=1, lean_put=lean, lean_get=lean, multipart_threshold=5 * 2**20, part_size=5 * 2**20,
        )  # fmt: skip
        await store.start()
        try:
            calls: list[tuple[str, Any]] = [
                ("get_bytes", store.get_bytes("bkt", "k")),
                ("put_bytes", store.put_bytes("bkt", "k", b"data")),
                ("put_stream", store.put_stream("bkt", "k", chunks(6 * 2**20))),
                ("head", store.head("bkt", "k")),
                ("open", store.open("bkt", "k")),
                ("delete", store.delete("bkt", "k")),
                ("ping", store.ping()),
                ("sweep", store.sweep_stale_uploads("bkt", 0)),
            ]
            for name, call in calls:
                began = time.monotonic()
                with pytest.raises(StorageError):
                    await asyncio.wait_for(call, 30)
                assert time.monotonic() - began < 5, name  # 1 s read timeout, 1 attempt
        finally:
            await store.close()


@pytest.mark.s3
async def test_sweep_aborts_uploads_a_killed_process_left(request: pytest.FixtureRequest, unique_name: str) -> None:
    from tests.integration.test_object_store_contract import drop_bucket

    endpoint: dict[str, str] = request.getfixturevalue("s3_endpoint")
    s3 = S3ObjectStore(endpoint_url=endpoint["endpoint_url"], access_key=endpoint["access_key"], secret_key=endpoint["secret_key"])
    await s3.start()
    try:
        await s3.ensure_bucket(unique_name)
        async with raw_s3_client(endpoint) as client:
            # What a process killed during an export upload leaves: a started
            # upload with a part, never completed nor aborted.
            for n in range(3):
                created = await client.create_multipart_upload(Bucket=unique_name, Key=f"exports/e{n}.zip")
                await client.upload_part(Bucket=unique_name, Key=f"exports/e{n}.zip", UploadId=created["UploadId"], PartNumber=1, Body=b"p" * 5 * 2**20)
            assert len((await client.list_multipart_uploads(Bucket=unique_name)).get("Uploads", [])) == 3
            assert await s3.sweep_stale_uploads(unique_name, 3600) == 0  # not stale yet: kept
            assert len((await client.list_multipart_uploads(Bucket=unique_name)).get("Uploads", [])) == 3
            assert await s3.sweep_stale_uploads(unique_name, 0) == 3
            assert (await client.list_multipart_uploads(Bucket=unique_name)).get("Uploads", []) == []
            assert await s3.sweep_stale_uploads(unique_name, 0) == 0
    finally:
        await s3.close()
        await drop_bucket(endpoint, unique_name)


async def test_filesystem_sweep_removes_old_temporary_files(tmp_path: Path) -> None:
    fs = FilesystemObjectStore(tmp_path / "store")
    await fs.start()
    await fs.ensure_bucket("bkt")
    await fs.put_bytes("bkt", "kept", b"object")
    temp_dir = tmp_path / "store" / "bkt" / layout.TEMP_DIR
    temp_dir.mkdir(exist_ok=True)
    old, new = temp_dir / "put-old.part", temp_dir / "put-new.part"
    old.write_bytes(b"x" * 1000)
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert await fs.sweep_stale_uploads("bkt", 3600) == 1
    assert not old.exists() and new.exists()
    assert await fs.get_bytes("bkt", "kept") == b"object"
    assert await fs.sweep_stale_uploads("missing-bucket", 0) == 0
