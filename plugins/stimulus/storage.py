"""Putting uploaded files into the object store and registering them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from eeghub.core.files import client_media_type, content_type_for
from eeghub.core.keys import key_segment
from eeghub.core.ports import ObjectStore

CHUNK = 1024 * 1024


def file_size(handle: BinaryIO) -> int:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return size


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()


async def sha256_of(handle: BinaryIO) -> str:
    return await asyncio.to_thread(_sha256, handle)


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    handle.seek(0)
    while chunk := await asyncio.to_thread(handle.read, CHUNK):
        yield chunk


def stimulus_key(experiment_id: Any, sha256: str, file_name: str) -> str:
    """Content-addressed, so a re-upload never overwrites the object a
    registered row still points at; the old object is deleted only after the
    new row is committed."""
    return f"stimuli/{experiment_id}/{sha256[:16]}/{key_segment(file_name, max_length=200)}"


def calibration_key(sha256: str, file_name: str) -> str:
    return f"stimuli/calibration/{sha256[:16]}/{key_segment(file_name, max_length=200)}"


async def store_file(
    store: ObjectStore, bucket: str, key: str, handle: BinaryIO, *, file_name: str, client_type: str | None
) -> str:
    """Stream ``handle`` to ``bucket/key``; return the content type stored."""
    content_type = client_media_type(client_type)
    if content_type is not None and content_type.lower() == "application/octet-stream":
        content_type = None
    content_type = content_type_for(file_name, content_type)
    await store.put_stream(
        bucket,
        key,
        _chunks(handle),
        content_type=content_type,
        metadata={"original-filename": file_name.encode("ascii", "backslashreplace").decode()[:200]},
    )
    return content_type
