"""Administrative routes the host itself serves: dead letters.

Only administrators (``auth.admin_users`` or the local administrator token,
``core/auth.py``) may call them; ``eeghub dlq`` uses them on the server's
machine, so dead letters can be inspected and replayed while the server runs,
also on the in-process broker (which lives inside the server process).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post
from litestar.params import Parameter

from .auth import identity_of, is_admin
from .context import AppContext
from .errors import Forbidden, NotFound
from .http import IdParam, error_responses
from .packet_messages import BATCH_COUNT_HEADER
from .ports import DeadLetter
from .topology import durable_queues


class QueueDeadLetters(msgspec.Struct):
    queue: str
    dead_letters: int


class DeadLetterCounts(msgspec.Struct):
    queues: list[QueueDeadLetters]


class Replayed(msgspec.Struct):
    queue: str
    replayed: int


def dead_letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """What ``eeghub dlq list QUEUE`` shows of a dead letter (the body only as a preview)."""
    m = letter.message
    return {
        "message_id": m.message_id,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at.isoformat() if letter.failed_at else None,
        "error": letter.error,
        "headers": {k: v for k, v in m.headers.items() if not k.startswith("x-eeghub-") or k == BATCH_COUNT_HEADER},
        "content_type": m.content_type,
        "body_bytes": len(m.body),
        "body_preview": m.body[:200].decode("utf-8", "replace"),
    }


async def require_admin(connection: Any, _: Any) -> None:
    """Guard: an administrator (``auth.admin_users`` or the local administrator token)."""
    identity = identity_of(connection)
    if not is_admin(identity, connection.app.state.ctx.settings.auth):
        raise Forbidden(f"Forbidden: {identity.user_id} is not an administrator (auth.admin_users)")


def _queue(ctx: AppContext, queue: str) -> str:
    known = durable_queues(ctx.settings.broker.queues)
    if queue not in known:
        raise NotFound(f"no durable queue {queue!r}; the queues are: {', '.join(known)}")
    return queue


Limit = Parameter(default=20, ge=1, le=10_000, description="at most this many dead letters (default 20)")


@get("/api/v1/admin/dlq", guards=[require_admin], tags=["admin"], responses=error_responses(401, 403, 503))
async def count_dead_letters(ctx: AppContext) -> DeadLetterCounts:
    """Dead letters waiting in each durable queue's ``.dlq`` (administrators)."""
    counts = []
    for name in durable_queues(ctx.settings.broker.queues):
        counts.append(QueueDeadLetters(queue=name, dead_letters=await ctx.broker.queue_depth(name + ".dlq")))
    return DeadLetterCounts(queues=counts)


@get(
    "/api/v1/admin/dlq/{queue:str}", guards=[require_admin], tags=["admin"], responses=error_responses(400, 401, 403, 404, 503)
)
async def list_dead_letters(ctx: AppContext, queue: IdParam, limit: int = Limit) -> list[dict[str, Any]]:
    """The first ``limit`` dead letters of a queue, without removing them (administrators)."""
    letters = await ctx.broker.dead_letters(_queue(ctx, queue), limit=limit)
    return [dead_letter_summary(letter) for letter in letters]


@post(
    "/api/v1/admin/dlq/{queue:str}/replay",
    guards=[require_admin],
    tags=["admin"],
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 503),
)
async def replay_dead_letters(ctx: AppContext, queue: IdParam, limit: int | None = Parameter(default=None, ge=1)) -> Replayed:
    """Move a queue's dead letters (the first ``limit``, or all) back to it (administrators)."""
    moved = await ctx.broker.replay_dead_letters(_queue(ctx, queue), limit=limit)
    return Replayed(queue=queue, replayed=moved)


ADMIN_ROUTES = [count_dead_letters, list_dead_letters, replay_dead_letters]
