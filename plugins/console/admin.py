"""Routes the console needs that the API did not have: who the caller is,
and for administrators each queue's depth and the process's recent errors
(dead letters are the host's ``/api/v1/admin/dlq`` routes). Every one is
guarded here, so the console never gets more than a curl user with the same
identity."""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import UTC, datetime
from typing import Any

from litestar import get
from litestar.params import Parameter

from eeghub.core.admin_routes import require_admin
from eeghub.core.auth import Identity, is_admin, require_user
from eeghub.core.context import AppContext
from eeghub.core.errors import BrokerError, BrokerUnavailable
from eeghub.core.http import error_responses
from eeghub.core.ports import dead_letter_queue
from eeghub.core.topology import durable_queues

ERROR_CAPACITY = 200


class RecentErrors(logging.Handler):
    """The last ``ERROR_CAPACITY`` records at ERROR or above of the ``eeghub``
    loggers: time, logger, message (cut to 500 characters) and the exception's
    type. Tracebacks stay in the server log."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=ERROR_CAPACITY)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": message[:500],
            "exception": record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None,
        }
        self.records.append(entry)  # under the handler's lock (Handler.handle)

    def newest(self, limit: int) -> list[dict[str, Any]]:
        self.acquire()
        try:
            return list(self.records)[-limit:][::-1]
        finally:
            self.release()

    @classmethod
    def install(cls, ctx: AppContext) -> None:
        handler = cls()
        logging.getLogger("eeghub").addHandler(handler)
        ctx.services["console.errors"] = handler

    @classmethod
    def uninstall(cls, ctx: AppContext) -> None:
        handler = ctx.services.pop("console.errors", None)
        if handler is not None:
            logging.getLogger("eeghub").removeHandler(handler)


@get("/api/v1/console/me", guards=[require_user], tags=["console"], responses=error_responses(401))
async def whoami(ctx: AppContext, identity: Identity) -> dict[str, Any]:
    """The caller as the server sees them: user id, identity mode, and whether
    they are an administrator (which the console uses to show its admin pages;
    the admin routes check it again)."""
    return {"user_id": identity.user_id, "auth_mode": ctx.auth.mode, "administrator": is_admin(identity, ctx.settings.auth)}


@get("/api/v1/admin/queues", guards=[require_admin], tags=["admin"], responses=error_responses(401, 403, 503))
async def list_queues(ctx: AppContext) -> dict[str, Any]:
    """Each durable queue with its depth and the depth of its dead-letter
    queue (administrators)."""
    names = durable_queues(ctx.settings.broker.queues)

    async def depth(name: str) -> int | str:
        try:
            return await ctx.broker.queue_depth(name)
        except BrokerUnavailable:
            raise
        except BrokerError as exc:  # e.g. a queue deleted by hand: shown, not a 500
            return f"unavailable: {exc}"[:300]

    depths = await asyncio.gather(*(depth(n) for n in names))
    dead = await asyncio.gather(*(depth(dead_letter_queue(n)) for n in names))
    queues = [{"queue": n, "depth": d, "dead_letters": x} for n, d, x in zip(names, depths, dead, strict=True)]
    return {"queues": queues, "backend": ctx.backends.get("broker")}


@get("/api/v1/admin/errors", guards=[require_admin], tags=["admin"], responses=error_responses(400, 401, 403))
async def recent_errors(ctx: AppContext, limit: int = Parameter(default=50, ge=1, le=ERROR_CAPACITY)) -> dict[str, Any]:
    """The newest errors this process logged (since it started), newest first (administrators)."""
    handler: RecentErrors | None = ctx.services.get("console.errors")
    return {"errors": handler.newest(limit) if handler else [], "capacity": ERROR_CAPACITY}


ROUTES = [whoami, list_queues, recent_errors]
