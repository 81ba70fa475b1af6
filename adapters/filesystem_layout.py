"""On-disk layout of the filesystem object store (blocking helpers).

S3 lets the keys ``a`` and ``a/b`` coexist; a filesystem cannot have a file
and a directory of the same name. So every name is encoded with a suffix that
says what it is, and file and directory names can never collide::

    <root>/<bucket>/a.o              data of key "a"
    <root>/<bucket>/a.m              sidecar of key "a" (JSON, see Sidecar)
    <root>/<bucket>/a.d/b.o          data of key "a/b"
    <root>/<bucket>/.tmp/            writes in progress (no suffix: never a key)

A segment longer than ``MAX_PLAIN_SEGMENT_BYTES`` would overflow the 255-byte
file name limit, so it is stored under its SHA-256 with the suffixes ``.ld``,
``.lo`` and ``.lm``; the real segment is kept in ``<hash>.ld/.segment`` for a
directory and in the sidecar for an object. A plain name ends with ``.d``,
``.o`` or ``.m`` (a dot before the last letter), a hashed one with ``.ld``,
``.lo`` or ``.lm`` (an ``l`` there), so the two kinds never collide either.

Everything here does blocking I/O and runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from eeghub.core.errors import StorageError

DIR_SUFFIX, OBJECT_SUFFIX, META_SUFFIX = ".d", ".o", ".m"
LONG_DIR_SUFFIX, LONG_OBJECT_SUFFIX, LONG_META_SUFFIX = ".ld", ".lo", ".lm"
SEGMENT_FILE = ".segment"
TEMP_DIR = ".tmp"
MAX_PLAIN_SEGMENT_BYTES = 200


class Sidecar(msgspec.Struct, frozen=True, kw_only=True):
    """What S3 keeps next to an object's bytes."""

    key: str
    size: int
    content_type: str
    metadata: dict[str, str]
    etag: str
    """MD5 hex of the data, as S3 reports for a single-part upload."""
    last_modified: datetime


_encode_sidecar = msgspec.json.Encoder().encode
_decode_sidecar = msgspec.json.Decoder(Sidecar).decode


def _is_long(segment: str) -> bool:
    return len(segment.encode("utf-8")) > MAX_PLAIN_SEGMENT_BYTES


def _hashed(segment: str) -> str:
    return hashlib.sha256(segment.encode("utf-8")).hexdigest()


def directory_name(segment: str) -> str:
    """Encoded name of the directory holding keys ``<segment>/…``."""
    return _hashed(segment) + LONG_DIR_SUFFIX if _is_long(segment) else segment + DIR_SUFFIX


def object_names(segment: str) -> tuple[str, str]:
    """Encoded names of an object's data file and sidecar."""
    if _is_long(segment):
        base = _hashed(segment)
        return base + LONG_OBJECT_SUFFIX, base + LONG_META_SUFFIX
    return segment + OBJECT_SUFFIX, segment + META_SUFFIX


@dataclass(frozen=True, slots=True)
class ObjectLocation:
    """Where one (already validated) key lives inside its bucket directory."""

    bucket_dir: Path
    directories: tuple[str, ...]
    """The key's directory segments, not encoded."""
    data: Path
    meta: Path

    @property
    def temp_dir(self) -> Path:
        return self.bucket_dir / TEMP_DIR


def locate(bucket_dir: Path, key: str) -> ObjectLocation:
    """Map a validated key to its paths (pure; touches no file)."""
    *directories, name = key.split("/")
    parent = bucket_dir.joinpath(*(directory_name(segment) for segment in directories))
    data_name, meta_name = object_names(name)
    return ObjectLocation(bucket_dir, tuple(directories), parent / data_name, parent / meta_name)


def ensure_inside(bucket_dir: Path, *paths: Path) -> None:
    """Refuse any path that resolves outside the bucket (defence in depth).

    Validated keys cannot name such a path; a symbolic link planted inside
    the store could still redirect one, and this catches it.
    """
    base = os.path.realpath(bucket_dir)
    for path in paths:
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            raise StorageError(f"refusing to access {path}: it resolves outside bucket directory {bucket_dir}")


def write_temp(temp_dir: Path, data: bytes, *, prefix: str) -> Path:
    """Write ``data`` to a new file in the bucket's temp directory, on disk
    (fsynced) before it is renamed into place."""
    fd, name = tempfile.mkstemp(dir=temp_dir, prefix=prefix, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def make_directories(location: ObjectLocation) -> set[Path]:
    """Create the key's encoded directories, recording hashed segments' names.

    Returns the directories whose entries changed (the parent of each
    directory created, each directory given a name record): the caller
    fsyncs them, so that a new object's path survives a power loss too."""
    changed: set[Path] = set()
    current = location.bucket_dir
    for segment in location.directories:
        parent, current = current, current / directory_name(segment)
        try:
            current.mkdir()
            changed.add(parent)
        except FileExistsError:
            pass
        if _is_long(segment) and not (current / SEGMENT_FILE).exists():
            temp = write_temp(location.temp_dir, segment.encode("utf-8"), prefix="segment-")
            os.replace(temp, current / SEGMENT_FILE)
            changed.add(current)
    return changed


def prepare_sidecar(location: ObjectLocation, sidecar: Sidecar) -> Path:
    """Write the sidecar to a temp file, ready to be renamed into place."""
    return write_temp(location.temp_dir, _encode_sidecar(sidecar), prefix="meta-")


def read_sidecar(path: Path) -> Sidecar | None:
    """The sidecar at ``path``, or None when it is missing or unreadable.

    A sidecar is missing only after a crash between the renames of a put; the
    object is then still served, with default content type and no etag.
    """
    try:
        return _decode_sidecar(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, msgspec.DecodeError):
        return None


@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded name in an encoded directory."""

    sort_key: str
    """The segment, with a trailing ``/`` for a directory: sorting siblings by
    it and walking depth-first yields keys in S3's (code point) order."""
    key: str
    """The object's key, or the directory's key prefix (ending in ``/``)."""
    path: Path
    is_dir: bool


def read_entries(directory: Path, key_prefix: str, partial: str) -> list[Entry]:
    """Sorted entries of ``directory`` whose sort key starts with ``partial``.

    Names that are not encoded keys (sidecars, ``.tmp``, ``.segment``) are
    skipped; a missing directory has no entries.
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries: list[Entry] = []
    for name in names:
        segment: str | None
        is_dir = True
        if name.endswith(LONG_DIR_SUFFIX):
            segment = _read_text(directory / name / SEGMENT_FILE)
        elif name.endswith(DIR_SUFFIX):
            segment = name[: -len(DIR_SUFFIX)]
        elif name.endswith(LONG_OBJECT_SUFFIX):
            is_dir = False
            sidecar = read_sidecar(directory / (name[: -len(LONG_OBJECT_SUFFIX)] + LONG_META_SUFFIX))
            segment = sidecar.key.rpartition("/")[2] if sidecar else None
        elif name.endswith(OBJECT_SUFFIX):
            is_dir = False
            segment = name[: -len(OBJECT_SUFFIX)]
        else:
            continue
        if segment is None:
            continue  # a hashed name whose real name was lost in a crash
        sort_key = segment + "/" if is_dir else segment
        if sort_key.startswith(partial):
            entries.append(Entry(sort_key, key_prefix + sort_key, directory / name, is_dir))
    entries.sort(key=lambda entry: entry.sort_key)
    return entries


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
