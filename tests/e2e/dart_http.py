"""Requests as the predecessor's mobile app builds them with Dart's
``package:http`` (``biosig-match/eeg_mobile_app``, ``lib/providers/*.dart``),
byte for byte, and the checks its Dart code applies when it parses a reply.

What ``package:http`` does that a Python client would not:

- ``http.get``/``http.post``/``http.delete`` send ``user-agent: Dart/<v>
  (dart:io)`` and ``accept-encoding: gzip``; a ``String`` body with
  ``Content-Type: application/json`` goes out as ``application/json;
  charset=utf-8`` (``Request.body`` adds the charset).
- ``jsonEncode`` is compact (no spaces) and writes a ``double`` as Dart
  prints it (``250.0``, ``0.0000057220458984375``, ``4.8828125e-7``).
- ``MultipartRequest``: boundary ``dart-http-boundary-`` plus 51 characters
  of ``[+_\\-.0-9A-Za-z]``; every text field first, in insertion order, as
  ``content-disposition: form-data; name="…"`` (with ``content-type:
  text/plain; charset=utf-8`` only for non-ASCII values), then the files as
  ``content-type: …`` + ``content-disposition: …; filename="…"``;
  ``MultipartFile.fromBytes``/``fromPath`` without a type are
  ``application/octet-stream``, ``fromString`` is ``text/plain;
  charset=utf-8``.
- ``DateTime.toUtc().toIso8601String()``: ``2026-12-03T05:20:00.123456Z``
  (milliseconds only when the microseconds are 0).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string
from typing import Any

USER_AGENT = "Dart/3.5 (dart:io)"
BASE = {"user-agent": USER_AGENT, "accept-encoding": "gzip"}
BOUNDARY_CHARACTERS = "+_-." + string.digits + string.ascii_uppercase + string.ascii_lowercase


def dart_iso(moment: dt.datetime) -> str:
    """``DateTime.toUtc().toIso8601String()``."""
    moment = moment.astimezone(dt.UTC)
    head = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{moment.microsecond // 1000:03d}"
    if moment.microsecond % 1000:
        fraction += f"{moment.microsecond % 1000:03d}"
    return f"{head}{fraction}Z"


def json_encode(value: Any) -> str:
    """``jsonEncode`` of maps, lists, strings, ints, null and bools; a
    double must be given as ``DartDouble`` (its text as Dart prints it)."""
    if isinstance(value, DartDouble):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{json_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_encode(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("write doubles as DartDouble: Dart prints them differently from Python")
    return json.dumps(value, ensure_ascii=False)


class DartDouble:
    def __init__(self, text: str) -> None:
        float(text)
        self.text = text


def get(headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``http.get(url, headers: …)``: keyword arguments for the test client."""
    return {"headers": {**BASE, **(headers or {})}}


def delete(headers: dict[str, str] | None = None) -> dict[str, Any]:
    return get(headers)


def post_json(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """``http.post(url, headers: {'Content-Type': 'application/json', …}, body: jsonEncode(payload))``."""
    out = {**BASE, "content-type": "application/json; charset=utf-8"}
    out.update({k: v for k, v in headers.items() if k.lower() != "content-type"})
    return {"headers": out, "content": json_encode(payload).encode()}


def post_empty(headers: dict[str, str]) -> dict[str, Any]:
    """``http.post(url, headers: …)`` without a body."""
    return {"headers": {**BASE, **headers, "content-length": "0"}, "content": b""}


class MultipartFile:
    def __init__(self, field: str, data: bytes, filename: str | None, content_type: str = "application/octet-stream") -> None:
        self.field, self.data, self.filename, self.content_type = field, data, filename, content_type

    @classmethod
    def from_string(cls, field: str, text: str, filename: str | None = None) -> MultipartFile:
        return cls(field, text.encode(), filename, "text/plain; charset=utf-8")


def _browser_encode(value: str) -> str:
    # package:http replaces CRLF/CR/LF by %0D%0A and escapes '"' as %22
    return value.replace("\r\n", "%0D%0A").replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


def multipart(
    fields: dict[str, str], files: list[MultipartFile], headers: dict[str, str] | None = None, seed: int = 0
) -> dict[str, Any]:
    """``http.MultipartRequest('POST', url)`` with ``fields`` and ``files``,
    ``request.send()``: keyword arguments for the test client."""
    rng = random.Random(seed)
    boundary = "dart-http-boundary-" + "".join(rng.choice(BOUNDARY_CHARACTERS) for _ in range(51))
    body = bytearray()
    for name, value in fields.items():
        header = f'content-disposition: form-data; name="{_browser_encode(name)}"'
        if not value.isascii():
            header += "\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-transfer-encoding: binary"
        body += f"--{boundary}\r\n{header}\r\n\r\n".encode() + value.encode() + b"\r\n"
    for file in files:
        header = f'content-type: {file.content_type}\r\ncontent-disposition: form-data; name="{_browser_encode(file.field)}"'
        if file.filename is not None:
            header += f'; filename="{_browser_encode(file.filename)}"'
        body += f"--{boundary}\r\n{header}\r\n\r\n".encode() + file.data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    out = {**BASE, **(headers or {}), "content-type": f"multipart/form-data; boundary={boundary}"}
    return {"headers": out, "content": bytes(body)}


BROWSER = {
    "user-agent": "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}
"""``launchUrl(url)``: the phone's browser opens the link, with no app header."""


# ---------------------------------------------------------------- Dart parsing
class DartTypeError(AssertionError):
    pass


def cast(value: Any, dart_type: str, where: str) -> Any:
    """``value as <dart_type>`` (``String``, ``String?``, ``int``, ``num?``,
    ``List?``, ``Map``…): raises as Dart would throw a TypeError."""
    nullable = dart_type.endswith("?")
    base = dart_type.rstrip("?")
    if value is None:
        if nullable:
            return None
        raise DartTypeError(f"{where}: null is not a subtype of {dart_type}")
    ok = {
        "String": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "num": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "List": lambda v: isinstance(v, list),
        "Map": lambda v: isinstance(v, dict),
        "dynamic": lambda v: True,
    }[base](value)
    if not ok:
        raise DartTypeError(f"{where}: {type(value).__name__} {value!r:.60} is not a subtype of {dart_type}")
    return value


def parse_int(value: Any, where: str) -> int:
    """``_parseInt`` of ``models/stimulus.dart``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise DartTypeError(f"FormatException: Invalid value for {where}: {value}")


def try_parse_datetime(value: Any) -> dt.datetime | None:
    """``DateTime.tryParse(value ?? '')``: ISO 8601 with an optional offset."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
