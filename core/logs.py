"""One log format for eeghub, uvicorn and the libraries, plain or JSON.

``[server] log_format``: ``plain`` (one line: time, level, logger, message,
``[request <id>]`` when written while serving a request) or ``json`` (one JSON
object per line with ``time``, ``level``, ``logger``, ``message`` and
``request_id``; an exception's traceback in ``exc_info``), written with
``python-json-logger``. Uvicorn is started without a logging configuration of
its own (``log_config=None``), so its messages and its access log go through
the same handler.
"""

from __future__ import annotations

import logging
import re
import sys

from .metrics import REQUEST_ID

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s%(request_suffix)s"
NOISY = ("aiormq", "aio_pika", "botocore", "aiobotocore", "numba", "asyncio")
"""Third-party chatter at info level hides eeghub's own messages."""


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record: ``request_id``, and for
    the plain format ``request_suffix``."""

    def __init__(self, plain: bool = True) -> None:
        super().__init__()
        self.plain = plain

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        record.request_id = request_id
        if self.plain:
            record.request_suffix = f" [request {request_id}]" if request_id else ""
        return True


_SIGNATURE = re.compile(r"(signature=)[^&\s\"']+")


class RedactLinkSignatures(logging.Filter):
    """Masks the ``signature`` of a signed download link (``core/auth.py``)
    wherever a record carries one, as uvicorn's access log does with every
    request's path and query: until it expires, the link opens its file
    without any other credential. Such a record is formatted here once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "signature=" in str(record.msg) or any(isinstance(a, str) and "signature=" in a for a in record.args or ()):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string: logging reports it as usual
                return True
            record.msg, record.args = _SIGNATURE.sub(r"\1[redacted]", message), None
        return True


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's coloured copy of the message
            timestamp=False,
        )
    return logging.Formatter(PLAIN_FORMAT)


def setup_logging(level: str, log_format: str = "plain") -> None:
    """Configure the root logger once: one stderr handler, one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter(plain=log_format != "json"))
    handler.addFilter(RedactLinkSignatures())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
