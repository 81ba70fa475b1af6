"""Bookkeeping every broker adapter shares: header checks, attempt counts,
error texts and dead letters, so the adapters cannot drift apart on what a
retry or a dead letter looks like (their contract suite checks the result)."""

from __future__ import annotations

import contextlib
from datetime import datetime

from .ports import ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER, ORIGIN_HEADER, DeadLetter, HeaderValue, Message

BOOKKEEPING_HEADERS = (ATTEMPT_HEADER, ERROR_HEADER, ORIGIN_HEADER, FAILED_AT_HEADER)
MAX_ERROR_CHARS = 1000


def check_headers(headers: dict[str, HeaderValue]) -> None:
    """Raise TypeError unless every header is str → str/int/float/bool/None."""
    for key, value in headers.items():
        if not isinstance(key, str):
            raise TypeError(f"header names must be str, not {type(key).__name__}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"header {key!r}: {type(value).__name__} is not a str, int, float, bool or None")


def error_text(exc: BaseException) -> str:
    """``Type: message``, cut to ``MAX_ERROR_CHARS``."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def attempt_of(bookkeeping: dict[str, HeaderValue]) -> int:
    """The delivery attempt recorded in the bookkeeping headers (1 if none)."""
    value = bookkeeping.get(ATTEMPT_HEADER)
    try:
        return max(1, int(value)) if value is not None else 1
    except (TypeError, ValueError):
        return 1


def dead_letter_from(message: Message, bookkeeping: dict[str, HeaderValue], queue: str) -> DeadLetter:
    """A ``DeadLetter`` from a message (without bookkeeping) and its bookkeeping headers."""
    failed_at: datetime | None = None
    raw = bookkeeping.get(FAILED_AT_HEADER)
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            failed_at = datetime.fromisoformat(raw)
    origin = bookkeeping.get(ORIGIN_HEADER)
    return DeadLetter(
        message=message,
        queue=origin if isinstance(origin, str) and origin else queue,
        error=str(bookkeeping.get(ERROR_HEADER) or ""),
        attempts=attempt_of(bookkeeping),
        failed_at=failed_at,
    )
