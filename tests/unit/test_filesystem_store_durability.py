"""The filesystem object store makes a new object's whole path durable: the
data file and its sidecar are fsynced before they are renamed into place,
and so is every directory whose entries a put changed (the object's own,
and the parent of each directory created for its key)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from eeghub.adapters import filesystem_store
from eeghub.adapters.filesystem_store import FilesystemObjectStore


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = filesystem_store._fsync_directory

    def record(path: Path) -> None:
        calls.append(Path(path))
        real(path)

    monkeypatch.setattr(filesystem_store, "_fsync_directory", record)
    return calls


@pytest.fixture
def file_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def record(fd: Any) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls


async def test_a_put_under_new_directories_fsyncs_each_parent(tmp_path: Path, synced: list[Path]) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    await store.start()
    await store.ensure_bucket("raw")
    bucket = (tmp_path / "objects" / "raw").resolve()
    assert (tmp_path / "objects").resolve() in [p.resolve() for p in synced], "the new bucket's entry"
    synced.clear()
    await store.put_bytes("raw", "segments/date=2026-11-24/a.seg", b"x" * 100)
    data = next(p for p in bucket.rglob("*") if p.is_file() and p.read_bytes() == b"x" * 100)
    dirs = [p.resolve() for p in synced]
    # The object's directory (its renames) and the parents of the two new ones.
    assert data.parent.resolve() in dirs
    assert data.parent.parent.resolve() in dirs
    assert bucket in dirs
    assert len(dirs) == len(set(dirs)) == 3
    synced.clear()
    await store.put_bytes("raw", "segments/date=2026-11-24/b.seg", b"y" * 100)
    assert [p.resolve() for p in synced] == [data.parent.resolve()], "nothing new but the renames"
    await store.close()


async def test_the_sidecar_is_on_disk_before_it_is_renamed(tmp_path: Path, file_syncs: list[int]) -> None:
    store = FilesystemObjectStore(tmp_path / "objects")
    await store.start()
    await store.ensure_bucket("raw")
    file_syncs.clear()
    await store.put_bytes("raw", "k", b"payload", content_type="application/x-test")
    # The data file, the sidecar, and the object's directory.
    assert len(file_syncs) >= 3
    info = await store.head("raw", "k")
    assert info is not None and info.content_type == "application/x-test"
    await store.close()
