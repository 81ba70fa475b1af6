"""Validation of object keys, bucket names and key segments.

Every object store adapter calls ``validate_key`` and ``validate_bucket``
before touching storage, so no key, whatever a client sent, can escape its
bucket on S3 or its directory on the filesystem store. Code that builds a key
from client data (user ids, device ids, file names) uses ``key_segment`` to
turn each value into one safe path segment.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import InvalidObjectKey

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SAFE_SEGMENT_RE = re.compile(r"[^A-Za-z0-9._=+-]")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name, else raise."""
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidObjectKey(f"invalid bucket name {bucket!r}: use 3-63 lower-case letters, digits, '.' and '-'")
    return bucket


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``InvalidObjectKey``.

    A safe key is non-empty, at most 1024 UTF-8 bytes, has no control
    characters and no backslash, does not start with ``/``, and has no empty,
    ``.`` or ``..`` segment between its ``/`` separators.
    """
    if not isinstance(key, str) or not key:
        raise InvalidObjectKey("object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"object key longer than {MAX_KEY_BYTES} bytes")
    if _has_control(key):
        raise InvalidObjectKey(f"object key {key!r} contains control characters")
    if "\\" in key:
        raise InvalidObjectKey(f"object key {key!r} contains a backslash")
    if key.startswith("/"):
        raise InvalidObjectKey(f"object key {key!r} starts with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidObjectKey(f"object key {key!r} has an empty, '.' or '..' segment")
        # MinIO and SeaweedFS refuse longer segments; keys must be portable.
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise InvalidObjectKey(f"object key {key[:80]!r}… has a segment longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key (it may end with ``/``)."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def key_segment(value: str, *, max_length: int = 96) -> str:
    """Turn any client-supplied value into one safe key segment.

    Characters outside ``[A-Za-z0-9._=+-]`` become ``_``; values that had to
    change, or that are too long, get a short hash suffix so that two
    different values never map to the same segment. ``.``/``..`` and the
    empty string are never returned.
    """
    text = str(value)
    cleaned = _SAFE_SEGMENT_RE.sub("_", text)
    if cleaned.strip(".") == "":
        cleaned = "_" + cleaned
    if cleaned != text or len(cleaned) > max_length:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        cleaned = f"{cleaned[: max_length - 11]}~{digest}"
    return cleaned
