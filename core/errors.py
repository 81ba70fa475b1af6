"""Typed errors shared by the core, the plugins and the adapters.

Adapters translate their library's exceptions into these, so plugins never
catch an asyncpg, botocore or aio-pika exception. ``HttpError`` subclasses
carry the status code and a message a person can act on; the HTTP layer turns
them into the JSON error body (see ``core/http.py``).
"""

from __future__ import annotations

from typing import Any


class EeghubError(Exception):
    """Base class of every error raised on purpose by eeghub."""


class ConfigurationError(EeghubError):
    """The configuration is invalid; the message names the key."""


class PluginError(EeghubError):
    """A plugin could not be loaded, or implements an unknown hook."""


# ---------------------------------------------------------------- storage
class StorageError(EeghubError):
    """The object store failed (network, permissions, server error)."""


class ObjectNotFound(StorageError):
    """The requested object (or bucket) does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object {key!r} not found in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key


class InvalidObjectKey(EeghubError, ValueError):
    """An object key or bucket name is unsafe or malformed."""


# ---------------------------------------------------------------- broker
class BrokerError(EeghubError):
    """The message broker failed."""


class BrokerUnavailable(BrokerError):
    """The broker cannot take or confirm a message right now; retry later."""


class PermanentFailure(EeghubError):
    """Raised by a message handler: this message can never succeed.

    The broker sends it to the queue's dead-letter queue at once instead of
    retrying it.
    """


# ---------------------------------------------------------------- database
class DatabaseError(EeghubError):
    """The database failed or is unreachable."""


# ---------------------------------------------------------------- HTTP
class HttpError(EeghubError):
    """An error with an HTTP status and a message meant for the client."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        issues: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.issues = issues
        self.headers = headers or {}


class BadRequest(HttpError):
    status_code = 400


class Unauthorized(HttpError):
    status_code = 401


class Forbidden(HttpError):
    status_code = 403


class NotFound(HttpError):
    status_code = 404


class Conflict(HttpError):
    status_code = 409


class PayloadTooLarge(HttpError):
    status_code = 413


class TooManyRequests(HttpError):
    status_code = 429


class ServiceUnavailable(HttpError):
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs: Any) -> None:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Retry-After", str(retry_after))
        super().__init__(message, headers=headers, **kwargs)
