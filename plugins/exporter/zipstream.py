"""Stream a directory as a ZIP archive into the object store.

``zipfile`` writes (in a worker thread) into a bounded queue; the event loop
reads the queue and feeds ``ObjectStore.put_stream`` (an S3 multipart
upload). The archive is never in memory as a whole nor on disk: at most
``max_chunks`` × ``chunk`` bytes are in flight. ``zipfile`` supports
unseekable outputs by writing data descriptors after each member.
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

# Already-compressed or incompressible files are stored, text is deflated.
_STORE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp3", ".m4a", ".mp4", ".ogg", ".flac", ".zip", ".webm"}


class _QueueWriter(io.RawIOBase):
    def __init__(self, out: queue.Queue[object], chunk: int, abort: threading.Event) -> None:
        self._out, self._chunk, self._abort = out, chunk, abort
        self._buffer = bytearray()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self._abort.is_set():
            raise OSError("upload aborted")
        self._buffer += data
        self.written += len(data)
        while len(self._buffer) >= self._chunk:
            self._put(bytes(self._buffer[: self._chunk]))
            del self._buffer[: self._chunk]
        return len(data)

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
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()


def _members(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


async def zip_directory(
    root: Path,
    *,
    prefix: str = "",
    chunk: int = 8 * 1024 * 1024,
    max_chunks: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """Yield the ZIP archive of ``root`` (entries under ``prefix``) in chunks."""
    out: queue.Queue[object] = queue.Queue(maxsize=max_chunks)
    abort = threading.Event()
    error: list[BaseException] = []

    def produce() -> None:
        writer = _QueueWriter(out, chunk, abort)
        try:
            with zipfile.ZipFile(writer, mode="w", allowZip64=True) as archive:  # type: ignore[arg-type]
                for path in _members(root):
                    relative = path.relative_to(root).as_posix()
                    method = zipfile.ZIP_STORED if path.suffix.lower() in _STORE_SUFFIXES else zipfile.ZIP_DEFLATED
                    info = zipfile.ZipInfo.from_file(path, arcname=f"{prefix}{relative}")
                    info.compress_type = method
                    with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as target:
                        while block := source.read(1024 * 1024):
                            target.write(block)
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
