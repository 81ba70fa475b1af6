"""Rules shared by every ObjectStore adapter: user metadata and byte ranges.

Both adapters apply exactly these rules so that an object written through one
reads back the same through the other. S3 carries user metadata as HTTP
headers (``x-amz-meta-<name>: <value>``), which is why names are limited to
header-safe tokens, values to printable ASCII and the whole to 2 KiB (AWS's
limit): the filesystem store could keep anything, but must not accept what S3
would reject or silently change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from eeghub.core.errors import InvalidObjectKey

MAX_METADATA_BYTES = 2048
_METADATA_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return the metadata with lower-case names, or raise ``InvalidObjectKey``.

    Names are lower-cased because S3 servers return header names lower-cased.
    Values lose surrounding whitespace, as HTTP header values do on the way
    through S3, and must then be non-empty printable ASCII: anything else S3
    would refuse or mangle.
    """
    if not metadata:
        return {}
    result: dict[str, str] = {}
    for raw_name, value in metadata.items():
        name = raw_name.lower() if isinstance(raw_name, str) else raw_name
        if not isinstance(name, str) or not _METADATA_NAME_RE.match(name):
            raise InvalidObjectKey(
                f"invalid metadata name {raw_name!r}: use letters, digits, '-' and '_', starting with a letter or digit"
            )
        if name in result:
            raise InvalidObjectKey(f"metadata name {raw_name!r} is given twice (names are case-insensitive)")
        if not isinstance(value, str):
            raise InvalidObjectKey(f"metadata {name!r} must be a string")
        value = value.strip(" \t")
        if not value or not value.isascii() or not value.isprintable():
            raise InvalidObjectKey(f"metadata {name!r} must be non-empty printable ASCII")
        result[name] = value
    if sum(len(name) + len(value) for name, value in result.items()) > MAX_METADATA_BYTES:
        raise InvalidObjectKey(f"metadata larger than {MAX_METADATA_BYTES} bytes")
    return result


def check_range(start: int, end: int | None) -> bool:
    """Validate a requested inclusive byte range; return whether it is partial.

    ``start=0, end=None`` is the whole object, which is readable even when the
    object is empty; any other range must start inside the object.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"range start must be an integer >= 0, not {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
        raise ValueError(f"range end must be an integer >= start ({start}), not {end!r}")
    return start != 0 or end is not None


def resolve_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """Clamp a checked range to an object of ``size`` bytes: ``(start, length)``.

    Raises ``ValueError("range not satisfiable")`` when a partial range starts
    at or beyond the end of the object (HTTP 416), like S3 does.
    """
    if not check_range(start, end):
        return 0, size
    if start >= size:
        raise ValueError("range not satisfiable")
    last = size - 1 if end is None else min(end, size - 1)
    return start, last - start + 1
