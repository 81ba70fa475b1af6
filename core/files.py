"""File names from clients, content types, and streaming objects over HTTP.

Client file names are checked by ``validate_file_name`` before they are used
anywhere (database, object keys, BIDS paths); downloads are streamed from the
object store with a correct ``Content-Length``, HTTP ``Range`` support and a
``Content-Disposition`` that no file name can break.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from litestar import Response
from litestar.response import Stream

from .errors import BadRequest, HttpError, ObjectNotFound, PayloadTooLarge
from .packet import ZSTD_MAGIC, PacketError, decompress_frame
from .ports import ObjectStore

MAX_FILE_NAME = 255


def unwrap_zstd(data: bytes, max_bytes: int) -> bytes:
    """The file itself: ``data`` decompressed when it is a zstd frame (as
    the predecessor's app sends photos and audio), else ``data``. 413 beyond
    ``max_bytes``, 400 for a broken frame."""
    if not data.startswith(ZSTD_MAGIC):
        return data
    try:
        return decompress_frame(data, max_output_size=max_bytes)
    except PacketError as exc:
        if exc.reason == "too_large":
            raise PayloadTooLarge(f"file decompresses to more than {max_bytes} bytes") from None
        raise BadRequest(f"file is a broken zstd frame: {exc}", issues=[{"field": "file", "message": str(exc)}]) from None


# The predecessor's download table (spec §3.5).
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".bmp": "image/bmp",
    ".tiff": "image/tiff",
    ".tif": "image/tiff",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".json": "application/json",
    ".csv": "text/csv",
    ".zip": "application/zip",
}


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe file name, or None."""
    if not name:
        return "is empty"
    if len(name) > MAX_FILE_NAME:
        return f"is longer than {MAX_FILE_NAME} characters"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME:
        # File systems count bytes (NAME_MAX): the exporter writes stimuli
        # under their own names, so a longer one would fail every export.
        return f"is longer than {MAX_FILE_NAME} bytes in UTF-8"
    if name in (".", ".."):
        return "is '.' or '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return "contains control characters"
    if name != name.strip():
        return "starts or ends with whitespace"
    if ":" in name and re.match(r"^[A-Za-z]:", name):
        return "looks like a drive path"
    return None


def validate_file_name(name: str, *, field: str, row: int | None = None) -> str:
    problem = file_name_problem(name)
    if problem:
        issue: dict[str, Any] = {"field": field, "message": f"file name {name[:80]!r} {problem}"}
        if row is not None:
            issue["row"] = row
        raise BadRequest(f"unsafe file name {name[:80]!r} in {field}: {problem}", issues=[issue])
    return name


_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def client_media_type(value: str | None) -> str | None:
    """The ``type/subtype`` of a content type a client sent (a multipart
    part's ``Content-Type``), or None when it is not one (RFC 6838 names, at
    most 255 characters, parameters dropped). Such a value is stored in
    ``VARCHAR(255)`` columns and sent as an object's ``Content-Type``, so it
    must never carry control characters or run long."""
    if not value:
        return None
    media_type = value.split(";", 1)[0].strip()
    return media_type if _MEDIA_TYPE_RE.match(media_type) else None


def content_type_for(name: str, fallback: str | None = None) -> str:
    ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or fallback or "application/octet-stream"


def media_kind(content_type: str) -> str:
    """``image``/``audio``/``video``/``other`` from a MIME type."""
    major = content_type.split("/", 1)[0].lower()
    return major if major in ("image", "audio", "video") else "other"


def content_disposition(name: str, *, inline: bool = True) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name) or "download"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single-range header, None for the whole
    object; raises 416 when unsatisfiable. Multi-range requests get the whole
    object (allowed by RFC 9110)."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise HttpError("range not satisfiable", status_code=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = max(size - length, 0), size - 1
    if start >= size or start > end:
        raise HttpError("range not satisfiable", status_code=416, headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def stream_object(
    store: ObjectStore,
    bucket: str,
    key: str,
    *,
    file_name: str,
    content_type: str,
    inline: bool = True,
    range_header: str | None = None,
    not_found: str = "not found",
) -> Response[Any]:
    """Stream an object as an HTTP response. Storage errors before the first
    byte become a proper error status (404/503), never a truncated 200."""
    info = await store.head(bucket, key)
    if info is None:
        raise HttpError(not_found, status_code=404)
    byte_range = parse_range(range_header, info.size)
    start, end = byte_range if byte_range else (0, max(info.size - 1, 0))
    try:
        stream = await store.open(bucket, key, start=start, end=end if info.size else None)
    except ObjectNotFound:
        raise HttpError(not_found, status_code=404) from None

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    headers = {
        "Content-Disposition": content_disposition(file_name, inline=inline),
        "Content-Length": str(stream.length),
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        # Uploaded SVG or HTML must not run scripts in the API's origin.
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
    }
    if info.etag:
        headers["ETag"] = f'"{info.etag.strip(chr(34))}"'
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    return Stream(body(), status_code=status, headers=headers, media_type=content_type)
