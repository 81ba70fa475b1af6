"""Contract of the ``ObjectStore`` port, run against every adapter.

The filesystem store (the zero-setup default) and the S3 store (production)
must behave the same; every test here runs against both. The few tests at
the end cover what only one adapter has (an endpoint, a root directory).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aioboto3
import pytest
from botocore.config import Config

from eeghub.adapters.filesystem_store import FilesystemObjectStore
from eeghub.adapters.s3_store import S3ObjectStore
from eeghub.core.errors import InvalidObjectKey, ObjectNotFound, StorageError
from eeghub.core.ports import ObjectStore, ObjectStream

MiB = 1024 * 1024
PART_SIZE = 5 * MiB


class SourceFailed(Exception):
    """Raised by a test's chunk source midway through a put_stream."""


# ---------------------------------------------------------------- fixtures
def raw_s3_client(endpoint: dict[str, str]) -> AbstractAsyncContextManager[Any]:
    """A plain aioboto3 client, to look behind the adapter's back."""
    client = aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint["endpoint_url"],
        aws_access_key_id=endpoint["access_key"],
        aws_secret_access_key=endpoint["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    return cast(AbstractAsyncContextManager[Any], client)


async def drop_bucket(endpoint: dict[str, str], bucket: str) -> None:
    """Remove a test bucket with everything in it (servers outlive sessions)."""
    async with raw_s3_client(endpoint) as client:
        uploads = await client.list_multipart_uploads(Bucket=bucket)
        for upload in uploads.get("Uploads", []):
            await client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                await client.delete_object(Bucket=bucket, Key=item["Key"])
        await client.delete_bucket(Bucket=bucket)


@pytest.fixture
def bucket(unique_name: str) -> str:
    return unique_name


@pytest.fixture(
    params=["filesystem", pytest.param("s3", marks=pytest.mark.s3), pytest.param("s3-botocore", marks=pytest.mark.s3)]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path, bucket: str) -> AsyncIterator[ObjectStore]:
    """A started store with an empty bucket ``bucket``.

    The S3 store gets 5 MiB parts and threshold, so a 20 MiB stream needs
    several parts and a multipart upload is really exercised. ``s3`` writes
    small objects and reads whole ones through the lean signed requests (the
    default), ``s3-botocore`` through botocore only (``lean_put=False``,
    ``lean_get=False``): both paths keep the contract.
    """
    if request.param == "filesystem":
        fs_store = FilesystemObjectStore(tmp_path / "outer" / "store")
        await fs_store.start()
        await fs_store.ensure_bucket(bucket)
        yield fs_store
        await fs_store.close()
        return
    endpoint: dict[str, str] = request.getfixturevalue("s3_endpoint")
    s3_store = S3ObjectStore(
        endpoint_url=endpoint["endpoint_url"],
        access_key=endpoint["access_key"],
        secret_key=endpoint["secret_key"],
        multipart_threshold=PART_SIZE,
        part_size=PART_SIZE,
        lean_put=request.param == "s3",
        lean_get=request.param == "s3",
    )
    await s3_store.start()
    assert (s3_store._signer is not None) == (request.param == "s3")
    await s3_store.ensure_bucket(bucket)
    try:
        yield s3_store
    finally:
        await s3_store.close()
        await drop_bucket(endpoint, bucket)


@pytest.fixture
async def s3_admin(request: pytest.FixtureRequest, store: ObjectStore) -> AsyncIterator[Any]:
    """A raw S3 client on the S3 store's server; None for other stores."""
    if not isinstance(store, S3ObjectStore):
        yield None
        return
    async with raw_s3_client(request.getfixturevalue("s3_endpoint")) as client:
        yield client


# ---------------------------------------------------------------- helpers
async def read_all(stream: ObjectStream) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


async def listed_keys(store: ObjectStore, bucket: str, prefix: str = "") -> list[str]:
    return [info.key async for info in store.list(bucket, prefix)]


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """Yield ``data`` in pieces whose sizes cycle through ``sizes``."""
    position, index = 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        yield data[position : position + size]
        position += size
        index += 1
        await asyncio.sleep(0)


async def failing_source(prefix: bytes) -> AsyncIterator[bytes]:
    yield prefix
    raise SourceFailed("the device went away")


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def tree(path: Path) -> list[str]:
    return sorted(str(entry.relative_to(path)) for entry in path.rglob("*"))


# ---------------------------------------------------------------- writes and reads
async def test_put_bytes_roundtrip_with_content_type_and_metadata(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(4000)
    key = "sessions/s01/raw/0001.bin"

    info = await store.put_bytes(
        bucket, key, data, content_type="application/x-eeg", metadata={"Subject-ID": "s01", "run": "2"}
    )

    assert (info.key, info.size, info.etag) == (key, len(data), md5_hex(data))
    assert await store.get_bytes(bucket, key) == data
    assert await store.exists(bucket, key)
    head = await store.head(bucket, key)
    assert head is not None
    assert (head.bucket, head.key, head.size) == (bucket, key, len(data))
    assert head.content_type == "application/x-eeg"
    assert head.metadata == {"subject-id": "s01", "run": "2"}
    assert head.etag == md5_hex(data)
    assert isinstance(head.last_modified, datetime)
    assert head.last_modified.tzinfo is not None


async def test_put_stream_of_20_mib_in_odd_chunks_roundtrips(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(20 * MiB + 12345)
    key = "exports/big.zip"

    info = await store.put_stream(
        bucket, key, chunked(data, [1, 777, 65537, 1_000_003, 3 * MiB + 1]), content_type="application/zip"
    )

    assert info.size == len(data)
    stream = await store.open(bucket, key, chunk_size=MiB)
    digest = hashlib.sha256()
    async for chunk in stream:
        digest.update(chunk)
    await stream.aclose()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    head = await store.head(bucket, key)
    assert head is not None
    assert (head.size, head.content_type) == (len(data), "application/zip")
    if isinstance(store, S3ObjectStore):  # a multipart etag is "<md5 of md5s>-<parts>"
        assert info.etag is not None
        assert info.etag.endswith(f"-{-(-len(data) // PART_SIZE)}")


async def test_put_stream_below_threshold_and_empty(store: ObjectStore, bucket: str) -> None:
    data = b"header" + os.urandom(1000)
    info = await store.put_stream(bucket, "small", chunked(data, [3, 100]), metadata={"kind": "small"})
    assert info.etag == md5_hex(data)
    assert await store.get_bytes(bucket, "small") == data

    empty = await store.put_stream(bucket, "empty", chunked(b"", [1]))
    assert empty.size == 0
    stream = await store.open(bucket, "empty")
    assert (stream.start, stream.length, stream.info.size) == (0, 0, 0)
    assert await read_all(stream) == b""
    with pytest.raises(ValueError, match="range not satisfiable"):
        await store.open(bucket, "empty", start=0, end=5)


@pytest.mark.parametrize("sent", [100, 6 * MiB], ids=["single-put", "multipart"])
async def test_put_stream_whose_source_fails_leaves_nothing(
    store: ObjectStore, bucket: str, s3_admin: Any, tmp_path: Path, sent: int
) -> None:
    await store.put_bytes(bucket, "kept", b"old bytes")

    with pytest.raises(SourceFailed):
        await store.put_stream(bucket, "fresh", failing_source(os.urandom(sent)))
    with pytest.raises(SourceFailed):
        await store.put_stream(bucket, "kept", failing_source(os.urandom(sent)))

    assert not await store.exists(bucket, "fresh")
    assert await store.get_bytes(bucket, "kept") == b"old bytes"
    assert await listed_keys(store, bucket) == ["kept"]
    if s3_admin is not None:
        uploads = await s3_admin.list_multipart_uploads(Bucket=bucket)
        assert uploads.get("Uploads", []) == []
    if isinstance(store, FilesystemObjectStore):
        assert list((tmp_path / "outer" / "store" / bucket / ".tmp").iterdir()) == []


async def test_overwrite_replaces_bytes_content_type_and_metadata(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "k", b"version one", content_type="text/plain", metadata={"v": "1"})
    await store.put_bytes(bucket, "k", b'{"version": 2}', content_type="application/json")

    assert await store.get_bytes(bucket, "k") == b'{"version": 2}'
    head = await store.head(bucket, "k")
    assert head is not None
    assert (head.size, head.content_type, head.metadata) == (14, "application/json", {})
    assert await listed_keys(store, bucket) == ["k"]


# ---------------------------------------------------------------- ranges and streams
@pytest.mark.parametrize(
    ("start", "end", "first", "last"),
    [(0, 9, 0, 9), (100, 199, 100, 199), (1023, 1023, 1023, 1023), (1000, 5000, 1000, 1023), (512, None, 512, 1023)],
    ids=["first-bytes", "middle", "last-byte", "end-clamped", "open-ended"],
)
async def test_range_reads(store: ObjectStore, bucket: str, start: int, end: int | None, first: int, last: int) -> None:
    data = bytes(range(256)) * 4
    await store.put_bytes(bucket, "r", data)

    stream = await store.open(bucket, "r", start=start, end=end, chunk_size=7)
    assert (stream.start, stream.length, stream.info.size) == (first, last - first + 1, 1024)
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    assert b"".join(chunks) == data[first : last + 1]
    assert max(len(chunk) for chunk in chunks) <= 7


@pytest.mark.parametrize(("start", "end"), [(1024, None), (1024, 2000), (5000, 6000), (-1, None), (10, 5)])
async def test_unsatisfiable_or_invalid_ranges_raise_value_error(
    store: ObjectStore, bucket: str, start: int, end: int | None
) -> None:
    await store.put_bytes(bucket, "r", bytes(1024))
    with pytest.raises(ValueError, match="range"):
        await store.open(bucket, "r", start=start, end=end)


async def test_open_of_missing_object_raises_before_returning(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound):
        await store.open(bucket, "no/such/key")
    with pytest.raises(ObjectNotFound):
        await store.open(bucket, "no/such/key", start=5, end=10)
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(bucket, "no/such/key")
    with pytest.raises(ObjectNotFound):
        await store.open("no-such-bucket-eeghub", "k")


async def test_stream_can_be_closed_early_and_twice(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "s", os.urandom(100_000))

    unread = await store.open(bucket, "s")
    await unread.aclose()
    await unread.aclose()
    with pytest.raises(StorageError):
        [chunk async for chunk in unread]

    partly_read = await store.open(bucket, "s", chunk_size=1000)
    async for _chunk in partly_read:
        break
    await partly_read.aclose()
    assert len(await store.get_bytes(bucket, "s")) == 100_000  # nothing leaked or locked


async def test_head_and_exists_of_missing_object(store: ObjectStore, bucket: str) -> None:
    assert await store.head(bucket, "missing") is None
    assert await store.exists(bucket, "missing") is False
    assert await store.head("no-such-bucket-eeghub", "missing") is None
    assert await store.exists("no-such-bucket-eeghub", "missing") is False


# ---------------------------------------------------------------- listing and deleting
async def test_list_by_prefix_returns_exact_keys_in_order(store: ObjectStore, bucket: str) -> None:
    keys = ["z", "a/b/c", "ab", "a", "a0", "stimuli/exp/画像 1.png", "a/b", "b/x"]
    for key in keys:
        await store.put_bytes(bucket, key, key.encode())

    everything = [info async for info in store.list(bucket)]
    assert [info.key for info in everything] == ["a", "a/b", "a/b/c", "a0", "ab", "b/x", "stimuli/exp/画像 1.png", "z"]
    assert all(info.bucket == bucket and info.size == len(info.key.encode()) for info in everything)
    assert all(info.etag == md5_hex(info.key.encode()) for info in everything)
    assert await listed_keys(store, bucket, "a/") == ["a/b", "a/b/c"]
    assert await listed_keys(store, bucket, "a/b") == ["a/b", "a/b/c"]
    assert await listed_keys(store, bucket, "a") == ["a", "a/b", "a/b/c", "a0", "ab"]
    assert await listed_keys(store, bucket, "stimuli/exp/画") == ["stimuli/exp/画像 1.png"]
    assert await listed_keys(store, bucket, "nope/") == []
    assert await listed_keys(store, bucket, "a/b/c/d") == []


async def test_list_order_is_code_point_order_around_the_slash(store: ObjectStore, bucket: str, s3_admin: Any) -> None:
    """Plus, minus and dot sort before the slash: S3 lists "a-c" before "a/b"."""
    if s3_admin is not None:
        server = (await s3_admin.list_buckets())["ResponseMetadata"]["HTTPHeaders"].get("server", "")
        if server.startswith("SeaweedFS"):
            pytest.xfail("SeaweedFS lists a 'directory' a/… right after the key a, unlike AWS and MinIO")
    for key in ["a/b", "a.txt", "a", "a-c", "a+b"]:
        await store.put_bytes(bucket, key, b"x")
    assert await listed_keys(store, bucket) == ["a", "a+b", "a-c", "a.txt", "a/b"]
    assert await listed_keys(store, bucket, "a") == ["a", "a+b", "a-c", "a.txt", "a/b"]


async def test_list_of_missing_bucket_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await listed_keys(store, "no-such-bucket-eeghub")


async def test_delete(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "a", b"file")
    await store.put_bytes(bucket, "a/b", b"beneath")

    await store.delete(bucket, "a")

    assert not await store.exists(bucket, "a")
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(bucket, "a")
    assert await store.get_bytes(bucket, "a/b") == b"beneath"
    assert await listed_keys(store, bucket) == ["a/b"]
    await store.delete(bucket, "a")
    await store.delete(bucket, "never/was")
    await store.delete("no-such-bucket-eeghub", "k")


# ---------------------------------------------------------------- keys
async def test_unicode_keys(store: ObjectStore, bucket: str) -> None:
    keys = ["stimuli/exp/画像 1.png", "données/été.csv", "😀/ünï cödé (1)"]
    for key in keys:
        await store.put_bytes(bucket, key, key.encode(), content_type="image/png")
    for key in keys:
        assert await store.get_bytes(bucket, key) == key.encode()
        head = await store.head(bucket, key)
        assert head is not None
        assert (head.key, head.content_type) == (key, "image/png")
    assert await listed_keys(store, bucket) == sorted(keys)


async def test_longest_portable_keys(store: ObjectStore, bucket: str) -> None:
    """Up to 1024 bytes, up to 512 segments, segments up to 255 bytes.

    (Longer segments are valid keys for AWS and the filesystem store, but
    MinIO and SeaweedFS refuse them, so they are not portable.)"""
    four_long_segments = "/".join(letter * 255 for letter in "efgh")  # 1023 bytes
    deep = "a/" * 511 + "b"  # 1023 bytes, 512 segments
    keys = sorted(["d" * 255, "d" * 254 + "/g", "画" * 85, four_long_segments, deep])
    for key in keys:
        await store.put_bytes(bucket, key, key.encode()[-50:])
    for key in keys:
        assert await store.get_bytes(bucket, key) == key.encode()[-50:]
    assert await listed_keys(store, bucket) == keys
    assert await listed_keys(store, bucket, "e" * 255 + "/") == [four_long_segments]
    assert await listed_keys(store, bucket, "a/a/a/") == [deep]
    await store.delete(bucket, four_long_segments)
    assert not await store.exists(bucket, four_long_segments)
    assert await listed_keys(store, bucket, "e") == []


BAD_KEYS = ["", "../escape", "a/../../escape", "a/./b", "/etc/passwd", "a//b", "a/", "a\\b", "a\x00b", "a\nb",
            "tab\there", "bidi\u202eoverride", "x" * 1025, "画" * 342]  # fmt: skip
BAD_BUCKETS = ["", "ab", "UPPER", "-abc", "abc-", "a..b", "../etc", "a/b", "x" * 64, "bu\x00cket", "bu_cket"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_rejected_and_write_nothing(
    store: ObjectStore, bucket: str, tmp_path: Path, key: str
) -> None:
    before = tree(tmp_path)
    consumed = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = True
        yield b"x"

    with pytest.raises(InvalidObjectKey):
        await store.put_bytes(bucket, key, b"x")
    with pytest.raises(InvalidObjectKey):
        await store.put_stream(bucket, key, source())
    with pytest.raises(InvalidObjectKey):
        await store.open(bucket, key)
    with pytest.raises(InvalidObjectKey):
        await store.get_bytes(bucket, key)
    with pytest.raises(InvalidObjectKey):
        await store.head(bucket, key)
    with pytest.raises(InvalidObjectKey):
        await store.exists(bucket, key)
    with pytest.raises(InvalidObjectKey):
        await store.delete(bucket, key)

    assert not consumed
    assert await listed_keys(store, bucket) == []
    assert tree(tmp_path) == before


@pytest.mark.parametrize("prefix", ["../", "/a", "a//", "a/../b", "a\\", "a\x00", "x" * 1025])
async def test_invalid_list_prefixes_are_rejected_at_the_call(store: ObjectStore, bucket: str, prefix: str) -> None:
    with pytest.raises(InvalidObjectKey):
        store.list(bucket, prefix)  # before any iteration, so before any I/O


@pytest.mark.parametrize("bad_bucket", BAD_BUCKETS)
async def test_invalid_buckets_are_rejected_and_write_nothing(
    store: ObjectStore, tmp_path: Path, bad_bucket: str
) -> None:
    before = tree(tmp_path)
    with pytest.raises(InvalidObjectKey):
        await store.ensure_bucket(bad_bucket)
    with pytest.raises(InvalidObjectKey):
        await store.put_bytes(bad_bucket, "k", b"x")
    with pytest.raises(InvalidObjectKey):
        await store.put_stream(bad_bucket, "k", chunked(b"x", [1]))
    with pytest.raises(InvalidObjectKey):
        await store.open(bad_bucket, "k")
    with pytest.raises(InvalidObjectKey):
        await store.head(bad_bucket, "k")
    with pytest.raises(InvalidObjectKey):
        await store.delete(bad_bucket, "k")
    with pytest.raises(InvalidObjectKey):
        store.list(bad_bucket)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "metadata",
    [{"bad name": "x"}, {"k": "é"}, {"k": "line\nbreak"}, {"k": ""}, {"k": "  "}, {"K": "1", "k": "2"},
     {"k": "v" * 2100}],
    ids=["space-in-name", "non-ascii", "newline", "empty", "blank", "case-duplicate", "too-large"],
)  # fmt: skip
async def test_invalid_metadata_is_rejected_and_writes_nothing(
    store: ObjectStore, bucket: str, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidObjectKey):
        await store.put_bytes(bucket, "k", b"x", metadata=metadata)
    with pytest.raises(InvalidObjectKey):
        await store.put_stream(bucket, "k", chunked(b"x", [1]), metadata=metadata)
    assert not await store.exists(bucket, "k")


async def test_metadata_values_lose_surrounding_whitespace_like_http_headers(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "k", b"x", metadata={"original-filename": "  my photo (1).png "})
    head = await store.head(bucket, "k")
    assert head is not None
    assert head.metadata == {"original-filename": "my photo (1).png"}


async def test_put_into_missing_bucket_fails_and_creates_nothing(store: ObjectStore) -> None:
    for put in (
        store.put_bytes("no-such-bucket-eeghub", "k", b"x"),
        store.put_stream("no-such-bucket-eeghub", "k", chunked(b"x", [1])),
    ):
        with pytest.raises(StorageError) as raised:
            await put
        assert not isinstance(raised.value, ObjectNotFound)  # a setup fault, not the caller's 404
    assert not await store.exists("no-such-bucket-eeghub", "k")


# ---------------------------------------------------------------- concurrency and health
async def test_concurrent_puts_of_different_keys_all_land(store: ObjectStore, bucket: str) -> None:
    keys = [f"packets/{index:03d}.bin" for index in range(20)]
    await asyncio.gather(*(store.put_bytes(bucket, key, key.encode() * 100) for key in keys))

    assert await listed_keys(store, bucket, "packets/") == keys
    contents = await asyncio.gather(*(store.get_bytes(bucket, key) for key in keys))
    assert contents == [key.encode() * 100 for key in keys]


async def test_concurrent_overwrites_never_mix_bytes_and_metadata(store: ObjectStore, bucket: str) -> None:
    payloads = {str(index): f"payload {index} ".encode() * (1000 + index) for index in range(10)}
    await asyncio.gather(*(store.put_bytes(bucket, "hot", data, metadata={"n": n}) for n, data in payloads.items()))

    head = await store.head(bucket, "hot")
    assert head is not None
    data = await store.get_bytes(bucket, "hot")
    assert data == payloads[head.metadata["n"]]
    assert head.etag == md5_hex(data)


async def test_ping(store: ObjectStore) -> None:
    await store.ping()


# ---------------------------------------------------------------- adapter-specific
def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_s3_ping_of_dead_endpoint_raises_storage_error_without_secrets() -> None:
    secret = "not-a-real-secret-4f9a"
    store = S3ObjectStore(
        endpoint_url=f"http://127.0.0.1:{_dead_port()}",
        access_key="key",
        secret_key=secret,
        connect_timeout=1,
        max_attempts=1,
    )
    await store.start()
    try:
        with pytest.raises(StorageError) as raised:
            await store.ping()
        assert secret not in str(raised.value)
        with pytest.raises(StorageError):
            await store.put_bytes("some-bucket", "k", b"x")
        with pytest.raises(StorageError):
            await store.head("some-bucket", "k")
    finally:
        await store.close()


@pytest.mark.s3
async def test_s3_wrong_secret_raises_storage_error_without_secrets(s3_endpoint: dict[str, str]) -> None:
    secret = "wrong-secret-7c1e"
    store = S3ObjectStore(
        endpoint_url=s3_endpoint["endpoint_url"], access_key=s3_endpoint["access_key"], secret_key=secret
    )
    await store.start()
    try:
        error: StorageError | None = None
        try:
            await store.ping()
        except StorageError as exc:
            error = exc
        if error is None:
            pytest.skip("this S3 server does not check signatures")
        assert secret not in str(error)
    finally:
        await store.close()


async def test_s3_store_refuses_use_before_start() -> None:
    store = S3ObjectStore(endpoint_url="http://127.0.0.1:1", access_key=None, secret_key=None)
    with pytest.raises(StorageError):
        await store.ping()


async def test_filesystem_ping_fails_when_root_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = FilesystemObjectStore(tmp_path / "file")
    with pytest.raises(StorageError):
        await store.ping()
    with pytest.raises(StorageError):
        await store.start()


async def test_filesystem_start_is_idempotent_and_keeps_objects(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "root")
    await store.start()
    await store.ensure_bucket("bucket")
    await store.put_bytes("bucket", "k", b"kept")
    await store.start()
    await store.ensure_bucket("bucket")
    assert await store.get_bytes("bucket", "k") == b"kept"


async def test_filesystem_refuses_paths_redirected_outside_the_bucket(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path / "root")
    await store.start()
    await store.ensure_bucket("bucket")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root" / "bucket" / "evil.d").symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError):
        await store.put_bytes("bucket", "evil/k", b"x")
    with pytest.raises(StorageError):
        await store.get_bytes("bucket", "evil/k")
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------- the lean S3 PUT
async def _lean_store(s3_endpoint: dict[str, str], bucket: str) -> S3ObjectStore:
    store = S3ObjectStore(
        endpoint_url=s3_endpoint["endpoint_url"],
        access_key=s3_endpoint["access_key"],
        secret_key=s3_endpoint["secret_key"],
    )
    await store.start()
    await store.ensure_bucket(bucket)
    return store


@pytest.mark.s3
async def test_s3_small_puts_do_not_go_through_botocore(s3_endpoint: dict[str, str], bucket: str) -> None:
    store = await _lean_store(s3_endpoint, bucket)

    async def botocore_put(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("botocore PutObject used for a small object")

    try:
        store._put_object = botocore_put  # type: ignore[method-assign]
        info = await store.put_bytes(bucket, "raw/u 1/ü+%/x.bin", b"\x00" * 1000, metadata={"x-user-id": "u1"})
        assert info.etag == hashlib.md5(b"\x00" * 1000).hexdigest()
        head = await store.head(bucket, "raw/u 1/ü+%/x.bin")
        assert head is not None and head.metadata == {"x-user-id": "u1"} and head.size == 1000
    finally:
        await store.close()
        await drop_bucket(s3_endpoint, bucket)


@pytest.mark.s3
async def test_s3_lean_put_falls_back_to_botocore_when_the_server_refuses_its_signature(
    s3_endpoint: dict[str, str], bucket: str
) -> None:
    """A server whose signature rules differ gets botocore from then on,
    and the write that found out is not lost."""
    store = await _lean_store(s3_endpoint, bucket)
    signer = store._signer
    assert signer is not None
    real_sign = signer.sign

    def bad_sign(*args: Any, **kwargs: Any) -> dict[str, str]:
        headers = real_sign(*args, **kwargs)
        headers["authorization"] = headers["authorization"][:-8] + "00000000"
        return headers

    try:
        signer.sign = bad_sign  # type: ignore[method-assign]
        await store.put_bytes(bucket, "k1", b"first")
        assert store._signer is None
        await store.put_bytes(bucket, "k2", b"second")
        assert await store.get_bytes(bucket, "k1") == b"first"
        assert await store.get_bytes(bucket, "k2") == b"second"
    finally:
        await store.close()
        await drop_bucket(s3_endpoint, bucket)


@pytest.mark.s3
async def test_s3_lean_put_with_wrong_secret_fails_without_the_secret(s3_endpoint: dict[str, str], bucket: str) -> None:
    store = await _lean_store(s3_endpoint, bucket)
    await store.close()
    secret = "wrong-secret-0b5d"
    wrong = S3ObjectStore(
        endpoint_url=s3_endpoint["endpoint_url"], access_key=s3_endpoint["access_key"], secret_key=secret
    )
    await wrong.start()
    try:
        with pytest.raises(StorageError) as raised:
            await wrong.put_bytes(bucket, "k", b"x")
        assert secret not in str(raised.value)
    finally:
        await wrong.close()
        await drop_bucket(s3_endpoint, bucket)


@pytest.mark.s3
async def test_s3_behind_a_proxy_writes_through_botocore(
    s3_endpoint: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore honours HTTP(S)_PROXY; the lean path then stays off."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    store = S3ObjectStore(endpoint_url=s3_endpoint["endpoint_url"], access_key="k", secret_key="s")
    await store.start()
    try:
        assert store._signer is None
    finally:
        await store.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    store = S3ObjectStore(endpoint_url="http://127.0.0.1:1", access_key="k", secret_key="s")
    await store.start()
    try:
        assert store._signer is not None
    finally:
        await store.close()
