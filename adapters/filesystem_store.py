"""Filesystem adapter of the ``ObjectStore`` port: the zero-setup default.

Each bucket is a directory under ``root``; ``filesystem_layout`` explains how
keys map to files. It behaves like the S3 adapter (the contract suite in
``tests/integration/test_object_store_contract.py`` runs against both), so a
lab can start on a laptop and move to S3 without surprises.

Guarantees and their mechanisms:

- Atomic replacement: bytes go to a temp file inside the bucket (same file
  system), then ``os.replace`` moves it into place. Data file and sidecar are
  swapped under a per-key lock, and readers take the same lock while they open
  the data file and read the sidecar, so a reader sees the old object or the
  new one, never a mix. The open file descriptor pins the old bytes while a
  stream is being read. The lock is per process: one process owns a root.
- Durable once written: the data file is fsynced before it is moved into
  place, and its directory after, so an object whose ``put_*`` returned
  survives a power loss (rows that refer to it are written after it). The
  sidecar is fsynced too, and so is the parent of every directory created
  for a new key prefix.
- No blocking I/O on the event loop: every file operation runs in
  ``asyncio.to_thread``; streams move in chunks, never as one whole file.
- No escape: keys are validated first, and every final path is resolved and
  checked to lie inside its bucket directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from eeghub.core.errors import ObjectNotFound, StorageError
from eeghub.core.keys import validate_bucket, validate_key, validate_prefix
from eeghub.core.ports import ObjectInfo

from . import filesystem_layout as layout
from .object_store_support import check_range, normalize_metadata, resolve_range

P = ParamSpec("P")
T = TypeVar("T")

WRITE_BUFFER_BYTES = 1024 * 1024
"""put_stream gathers small chunks up to this size before a worker thread
writes them: one thread hop per chunk of a few bytes would dominate."""
STALE_TEMP_SECONDS = 3600
"""start() removes temp files older than this: leftovers of a crash."""
_LOCK_STRIPES = 64

_Listing = list[ObjectInfo | layout.Entry]
"""One directory's sorted entries: objects as ObjectInfo, directories to descend
into as Entry. (An alias because the class's own ``list`` method would shadow
the builtin in its annotations.)"""


async def _run(action: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking file I/O in a worker thread; ``OSError`` becomes ``StorageError``."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except OSError as exc:
        raise StorageError(f"filesystem object store could not {action}: {exc}") from exc


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _TempObject:
    """A new object's bytes being written, with their size and MD5 (the etag)."""

    def __init__(self, temp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=temp_dir, prefix="put-", suffix=".part")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._md5.update(data)
        self.size += len(data)

    def finish(self) -> str:
        """Flush the bytes to disk and close the file; return the MD5 hex
        digest. Durable before the object appears: callers write a database
        row that refers to an object only after ``put_*`` returned (the raw
        packets' storage relies on it), so the object must survive a power
        loss that the committed row survives."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._md5.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self.path.unlink(missing_ok=True)


class _FileObjectStream:
    """An ``ObjectStream`` over an open file descriptor."""

    def __init__(self, file: BinaryIO, info: ObjectInfo, start: int, length: int, chunk_size: int) -> None:
        self._file: BinaryIO | None = file
        self.info = info
        self.start = start
        self.length = length
        self._chunk_size = chunk_size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        file = self._file
        if file is None:
            raise StorageError(f"stream of {self.info.key!r} is closed")
        try:
            remaining = self.length
            while remaining > 0:
                data = await _run("read", file.read, min(self._chunk_size, remaining))
                if not data:
                    # Cannot happen while the descriptor pins an immutable file;
                    # a short stream must never pass for a whole one.
                    raise StorageError(f"object {self.info.key!r} ended {remaining} bytes early")
                remaining -= len(data)
                yield data
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)


class FilesystemObjectStore:
    """``ObjectStore`` on a local directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create the root directory (idempotent) and sweep crash leftovers."""
        await _run("create the store root", self._start_sync)

    def _start_sync(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for temp_dir in self._root.glob(f"*/{layout.TEMP_DIR}"):
            self._sweep_sync(temp_dir, STALE_TEMP_SECONDS)

    @staticmethod
    def _sweep_sync(temp_dir: Path, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for leftover in temp_dir.iterdir():
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < cutoff:
                        leftover.unlink()
                        removed += 1
        return removed

    async def sweep_stale_uploads(self, bucket: str, older_than_seconds: float) -> int:
        """Remove temporary files of writes that never finished (a killed
        process) older than ``older_than_seconds``."""
        validate_bucket(bucket)
        return await _run(f"sweep {bucket!r}", self._sweep_sync, self._root / bucket / layout.TEMP_DIR, older_than_seconds)

    async def close(self) -> None:
        """Nothing to release: files are opened per operation."""

    async def ping(self) -> None:
        await _run("write to its root directory", self._ping_sync)

    def _ping_sync(self) -> None:
        if not self._root.is_dir():
            raise StorageError(f"filesystem object store root {self._root} is not a directory")
        # Creating a file is the only honest test of writability (read-only
        # mounts, full disks, ACLs): os.access answers for the wrong user as root.
        with tempfile.TemporaryFile(dir=self._root):
            pass

    async def ensure_bucket(self, bucket: str) -> None:
        validate_bucket(bucket)
        await _run(f"create bucket {bucket!r}", self._ensure_bucket_sync, bucket)

    def _ensure_bucket_sync(self, bucket: str) -> None:
        if not self._root.is_dir():
            raise StorageError(f"filesystem object store root {self._root} does not exist: call start() first")
        bucket_dir = self._root / bucket
        try:
            bucket_dir.mkdir()
            _fsync_directory(self._root)
        except FileExistsError:
            pass
        (bucket_dir / layout.TEMP_DIR).mkdir(exist_ok=True)

    # ------------------------------------------------------------ helpers
    def _lock(self, bucket: str, key: str) -> threading.Lock:
        return self._locks[hash((bucket, key)) % _LOCK_STRIPES]

    def _location(self, bucket: str, key: str) -> layout.ObjectLocation | None:
        """The key's location, or None when the bucket does not exist."""
        bucket_dir = self._root / bucket
        if not bucket_dir.is_dir():
            return None
        location = layout.locate(bucket_dir, key)
        layout.ensure_inside(bucket_dir, location.data, location.meta)
        return location

    def _writable_location(self, bucket: str, key: str) -> layout.ObjectLocation:
        location = self._location(bucket, key)
        if location is None:
            raise StorageError(f"bucket {bucket!r} does not exist")
        location.temp_dir.mkdir(exist_ok=True)
        return location

    @staticmethod
    def _info(bucket: str, key: str, size: int, sidecar: layout.Sidecar | None, mtime: float) -> ObjectInfo:
        if sidecar is None:
            return ObjectInfo(
                bucket=bucket,
                key=key,
                size=size,
                content_type="application/octet-stream",
                last_modified=datetime.fromtimestamp(mtime, UTC),
            )
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            content_type=sidecar.content_type,
            etag=sidecar.etag,
            last_modified=sidecar.last_modified,
            metadata=dict(sidecar.metadata),
        )

    # ------------------------------------------------------------ writes
    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        clean_metadata = normalize_metadata(metadata)
        return await _run(
            f"write {key!r}", self._put_bytes_sync, bucket, key, bytes(data), content_type, clean_metadata
        )

    def _put_bytes_sync(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        location = self._writable_location(bucket, key)
        temp = _TempObject(location.temp_dir)
        try:
            temp.write(data)
            etag = temp.finish()
            return self._commit(bucket, key, location, temp, etag, content_type, metadata)
        except BaseException:
            temp.discard()
            raise

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write chunks to a temp file as they come; rename it into place at
        the end. If the source raises, the temp file is removed, any old object
        stays as it was, and the source's exception propagates unchanged."""
        validate_bucket(bucket)
        validate_key(key)
        clean_metadata = normalize_metadata(metadata)
        location = await _run(f"write {key!r}", self._writable_location, bucket, key)
        temp = await _run(f"write {key!r}", _TempObject, location.temp_dir)
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER_BYTES:
                    await _run(f"write {key!r}", temp.write, bytes(buffer))
                    buffer.clear()
            await _run(f"write {key!r}", temp.write, bytes(buffer))
            etag = await _run(f"write {key!r}", temp.finish)
            return await _run(
                f"write {key!r}", self._commit, bucket, key, location, temp, etag, content_type, clean_metadata
            )
        except BaseException:
            # Shielded: the temp file must go even when the task is cancelled.
            with contextlib.suppress(OSError):
                await asyncio.shield(asyncio.to_thread(temp.discard))
            raise

    def _commit(
        self,
        bucket: str,
        key: str,
        location: layout.ObjectLocation,
        temp: _TempObject,
        etag: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> ObjectInfo:
        """Move a finished temp file and its sidecar into place."""
        sidecar = layout.Sidecar(
            key=key,
            size=temp.size,
            content_type=content_type,
            metadata=metadata,
            etag=etag,
            last_modified=datetime.now(UTC),
        )
        sidecar_temp = layout.prepare_sidecar(location, sidecar)
        try:
            with self._lock(bucket, key):
                changed = layout.make_directories(location)
                layout.ensure_inside(location.bucket_dir, location.data, location.meta)
                # Sidecar out first: a crash between the renames leaves new
                # bytes without a sidecar (served with defaults), never new
                # bytes described by the old object's etag and content type.
                location.meta.unlink(missing_ok=True)
                os.replace(temp.path, location.data)
                os.replace(sidecar_temp, location.meta)
                for directory in sorted(changed | {location.data.parent}, key=lambda d: len(d.parts), reverse=True):
                    _fsync_directory(directory)  # the renames, and any directory created for the key
        except BaseException:
            sidecar_temp.unlink(missing_ok=True)
            raise
        return self._info(bucket, key, temp.size, sidecar, 0.0)

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        await _run(f"delete {key!r}", self._delete_sync, bucket, key)

    def _delete_sync(self, bucket: str, key: str) -> None:
        location = self._location(bucket, key)
        if location is None:
            return
        with self._lock(bucket, key):
            # Data first: a crash in between leaves an invisible orphan sidecar
            # rather than a visible object that lost its metadata.
            location.data.unlink(missing_ok=True)
            location.meta.unlink(missing_ok=True)

    # ------------------------------------------------------------ reads
    async def open(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = 256 * 1024,
    ) -> _FileObjectStream:
        validate_bucket(bucket)
        validate_key(key)
        check_range(start, end)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        file, info = await _run(f"read {key!r}", self._open_sync, bucket, key)
        try:
            first, length = resolve_range(start, end, info.size)
            await _run(f"read {key!r}", file.seek, first)
        except BaseException:
            await asyncio.to_thread(file.close)
            raise
        return _FileObjectStream(file, info, first, length, chunk_size)

    def _open_sync(self, bucket: str, key: str) -> tuple[BinaryIO, ObjectInfo]:
        location = self._location(bucket, key)
        if location is None:
            raise ObjectNotFound(bucket, key)
        with self._lock(bucket, key):
            try:
                file: BinaryIO = open(location.data, "rb", buffering=0)  # noqa: SIM115 - closed by the stream
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFound(bucket, key) from None
            try:
                stat = os.fstat(file.fileno())
                sidecar = layout.read_sidecar(location.meta)
            except BaseException:
                file.close()
                raise
        return file, self._info(bucket, key, stat.st_size, sidecar, stat.st_mtime)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        stream = await self.open(bucket, key, chunk_size=WRITE_BUFFER_BYTES)
        try:
            return b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        validate_bucket(bucket)
        validate_key(key)
        return await _run(f"read {key!r}", self._head_sync, bucket, key)

    def _head_sync(self, bucket: str, key: str) -> ObjectInfo | None:
        location = self._location(bucket, key)
        if location is None:
            return None
        with self._lock(bucket, key):
            try:
                stat = location.data.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            sidecar = layout.read_sidecar(location.meta)
        return self._info(bucket, key, stat.st_size, sidecar, stat.st_mtime)

    async def exists(self, bucket: str, key: str) -> bool:
        return await self.head(bucket, key) is not None

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Keys under ``prefix`` in code point order (S3's order for UTF-8).

        Like S3's ListObjectsV2, entries carry size, etag and last_modified
        but no content type or metadata: ``head`` an object for those.
        Validation happens here, at the call, not at the first iteration.
        """
        validate_bucket(bucket)
        validate_prefix(prefix)
        return self._list(bucket, prefix)

    async def _list(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        bucket_dir = self._root / bucket
        if not await _run(f"list bucket {bucket!r}", bucket_dir.is_dir):
            raise ObjectNotFound(bucket, prefix)
        *directories, partial = prefix.split("/")
        start_dir = bucket_dir.joinpath(*(layout.directory_name(segment) for segment in directories))
        key_prefix = "".join(segment + "/" for segment in directories)
        await _run(f"list bucket {bucket!r}", layout.ensure_inside, bucket_dir, start_dir)
        # Depth-first over sorted siblings, with an explicit stack: keys may
        # nest hundreds of levels deep, too deep for recursive generators.
        stack = [iter(await self._read_listing(bucket, start_dir, key_prefix, partial))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, ObjectInfo):
                yield item
            else:
                stack.append(iter(await self._read_listing(bucket, item.path, item.key, "")))

    async def _read_listing(self, bucket: str, directory: Path, key_prefix: str, partial: str) -> _Listing:
        return await _run(f"list bucket {bucket!r}", self._read_listing_sync, bucket, directory, key_prefix, partial)

    def _read_listing_sync(self, bucket: str, directory: Path, key_prefix: str, partial: str) -> _Listing:
        result: _Listing = []
        for entry in layout.read_entries(directory, key_prefix, partial):
            if entry.is_dir:
                result.append(entry)
                continue
            try:
                stat = entry.path.stat()
            except FileNotFoundError:
                continue  # deleted while we listed
            sidecar = layout.read_sidecar(layout.locate(self._root / bucket, entry.key).meta)
            full = self._info(bucket, entry.key, stat.st_size, sidecar, stat.st_mtime)
            result.append(
                ObjectInfo(
                    bucket=bucket, key=entry.key, size=full.size, etag=full.etag, last_modified=full.last_modified
                )
            )
        return result
