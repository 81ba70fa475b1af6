"""Stream a directory as a ZIP archive into the object store.

``zipfile`` writes (in a worker thread) into a bounded queue; the event loop
reads the queue and feeds ``ObjectStore.put_stream`` (an S3 multipart
upload). The archive is never in memory as a whole nor on disk: at most
``max_chunks`` × ``chunk`` bytes wait in the queue, plus the chunk being
filled and the one the consumer holds. ``zipfile`` supports unseekable
outputs by writing data descriptors after each member.

What is compressed: the recordings (BrainVision ``.eeg``, EDF/BDF, FIF, …)
are int16/float samples that deflate by only ~25 % at ~20 MB/s, so they are
*stored*, as are already-compressed media and archives; the text files
(sidecars, TSV, headers, markers) are deflated at a low level
(:data:`TEXT_COMPRESSLEVEL`), where almost all of deflate's gain on text
lies. Stored data moves through with as few copies as possible: each file is
read in pieces that fill the current chunk exactly, so a full chunk read
from disk is handed on as the very ``bytes`` object ``read`` returned.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

_DONE = object()

DEFAULT_CHUNK = 1024 * 1024
DEFAULT_MAX_CHUNKS = 2

TEXT_COMPRESSLEVEL = 1
"""Deflate level for text members. On an export's sidecars (JSON, TSV, vhdr,
vmrk) level 1 gets within a few percent of level 6's size at a fraction of
its time; the text is a small part of an archive either way."""

# Stored, not deflated: binary recordings (deflate gains little on sample
# data and is the slowest step of an export by far) and files that are
# already compressed.
_STORE_SUFFIXES = {
    # recordings
    ".eeg", ".edf", ".bdf", ".fif", ".fdt", ".set", ".cnt", ".nwb", ".wav",
    # images
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic", ".avif",
    # audio and video
    ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm",
    # archives
    ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar",
}  # fmt: skip


def _compress_type(path: Path) -> int:
    return zipfile.ZIP_STORED if path.suffix.lower() in _STORE_SUFFIXES else zipfile.ZIP_DEFLATED


class _QueueWriter(io.RawIOBase):
    """The unseekable file ``zipfile`` writes to: cuts what it gets into
    ``chunk``-sized ``bytes`` and puts them on the queue.

    Pieces are collected by reference and joined once per chunk (one copy);
    a write that is exactly one whole chunk while nothing is pending goes on
    as it is (no copy)."""

    def __init__(self, out: queue.Queue[object], chunk: int, abort: threading.Event) -> None:
        self._out, self._chunk, self._abort = out, chunk, abort
        self._pieces: list[bytes | memoryview] = []
        self._pending = 0
        self.written = 0

    def writable(self) -> bool:
        return True

    def room(self) -> int:
        """Bytes until the current chunk is full (1 … chunk)."""
        return self._chunk - self._pending

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self._abort.is_set():
            raise OSError("upload aborted")
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse a mutable buffer once we return
        size = len(data)
        self.written += size
        if size == 0:
            return 0
        need = self._chunk - self._pending
        if size < need:
            self._pieces.append(data)
            self._pending += size
            return size
        if size == need and not self._pieces:
            self._put(data)  # a whole chunk: no copy
            return size
        view = memoryview(data)
        start = 0
        while size - start >= need:
            self._pieces.append(view[start : start + need])
            start += need
            self._emit()
            need = self._chunk
        if start < size:
            self._pieces.append(view[start:])
            self._pending = size - start
        return size

    def _emit(self) -> None:
        block = b"".join(self._pieces)
        self._pieces.clear()
        self._pending = 0
        self._put(block)

    def _put(self, item: object) -> None:
        while True:
            if self._abort.is_set():
                raise OSError("upload aborted")
            try:
                self._out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def flush_rest(self) -> None:
        if self._pieces:
            self._emit()


def _members(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _copy_member(archive: zipfile.ZipFile, writer: _QueueWriter, path: Path, arcname: str, chunk: int) -> None:
    info = zipfile.ZipInfo.from_file(path, arcname=arcname)
    info.compress_type = _compress_type(path)
    stored = info.compress_type == zipfile.ZIP_STORED
    if not stored:
        info._compresslevel = TEXT_COMPRESSLEVEL  # type: ignore[attr-defined] # compress_level from 3.13 on
    with open(path, "rb", buffering=0) as source, archive.open(info, "w", force_zip64=True) as target:
        while True:
            # Stored: read exactly what fills the current chunk, so whole chunks pass through uncopied.
            block = source.read(writer.room() if stored else chunk)
            if not block:
                break
            target.write(block)


async def zip_directory(
    root: Path,
    *,
    prefix: str = "",
    chunk: int = DEFAULT_CHUNK,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    on_progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """Yield the ZIP archive of ``root`` (entries under ``prefix``) in chunks
    of ``chunk`` bytes (the last one shorter); at most ``max_chunks`` wait
    between the zipping thread and the consumer. ``on_progress`` is called
    (in the zipping thread) with the archive bytes written after each member."""
    if chunk < 1 or max_chunks < 1:
        raise ValueError("chunk and max_chunks must be positive")
    out: queue.Queue[object] = queue.Queue(maxsize=max_chunks)
    abort = threading.Event()
    error: list[BaseException] = []

    def produce() -> None:
        writer = _QueueWriter(out, chunk, abort)
        try:
            with zipfile.ZipFile(writer, mode="w", allowZip64=True) as archive:  # type: ignore[arg-type]
                for path in _members(root):
                    relative = path.relative_to(root).as_posix()
                    _copy_member(archive, writer, path, f"{prefix}{relative}", chunk)
                    if on_progress is not None:
                        on_progress(writer.written)
            writer.flush_rest()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            error.append(exc)
        finally:
            try:
                out.put(_DONE, timeout=30)
            except queue.Full:
                pass

    thread = threading.Thread(target=produce, name="zip-writer", daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(out.get)
            if item is _DONE:
                break
            yield item  # type: ignore[misc]
            del item  # hold no chunk while waiting for the next
        if error:
            raise error[0]
    finally:
        abort.set()
        # Drain so the producer is never stuck on a full queue.
        while thread.is_alive():
            try:
                out.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
        thread.join(timeout=5)


def directory_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def remove_tree(root: Path) -> None:
    import shutil

    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root.parent, exist_ok=True)
