"""Several eeghub processes on one PostgreSQL, broker and object store.

- ``INSTANCE_ID`` names this process (host, pid and a random suffix: a
  restarted process with a reused pid is a new instance).
- ``job_claim`` lets one process at a time run a job (link or correct a
  session, build an export): a row in ``eeghub_job_claims`` refreshed by a
  heartbeat while the job runs. No connection is held meanwhile (a job
  uses the pool like any other code), and a claim of a process that stopped
  expires after ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from .errors import DatabaseError
from .ports import Database

log = logging.getLogger("eeghub.cluster")

INSTANCE_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

CLAIM_TTL_SECONDS = 30.0
"""A claim not refreshed for this long belongs to a stopped process."""


async def try_claim(database: Database, kind: str, key: str, owner: str, *, ttl: float = CLAIM_TTL_SECONDS) -> bool:
    """Claim ``(kind, key)`` for ``owner`` unless a live claim of another owner holds it."""
    got = await database.fetchval(
        """INSERT INTO eeghub_job_claims AS c (kind, job_key, owner) VALUES ($1, $2, $3)
           ON CONFLICT (kind, job_key) DO UPDATE
               SET owner = EXCLUDED.owner, claimed_at = NOW(), heartbeat_at = NOW()
               WHERE c.owner = EXCLUDED.owner OR c.heartbeat_at < NOW() - make_interval(secs => $4)
           RETURNING owner""",
        kind,
        key,
        owner,
        ttl,
    )
    return got == owner


async def release_claim(database: Database, kind: str, key: str, owner: str) -> None:
    await database.execute(
        "DELETE FROM eeghub_job_claims WHERE kind = $1 AND job_key = $2 AND owner = $3", kind, key, owner
    )


class ClaimBusy(Exception):
    """Another process runs the job (``job_claim`` with ``wait=False``)."""


@asynccontextmanager
async def job_claim(
    database: Database,
    kind: str,
    key: str,
    *,
    wait: bool = True,
    ttl: float = CLAIM_TTL_SECONDS,
    poll: float = 0.5,
) -> AsyncIterator[None]:
    """Run the body while holding the claim of ``(kind, key)``.

    ``wait=True``: wait until no other process runs the job (its run may
    have missed what this delivery announces, so the job runs again after
    it). ``wait=False``: raise ``ClaimBusy`` at once."""
    owner = f"{INSTANCE_ID}:{uuid.uuid4().hex[:8]}"
    while not await try_claim(database, kind, key, owner, ttl=ttl):
        if not wait:
            raise ClaimBusy(f"{kind} {key} is being run by another process")
        await asyncio.sleep(poll)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                held = await database.execute(
                    """UPDATE eeghub_job_claims SET heartbeat_at = NOW()
                       WHERE kind = $1 AND job_key = $2 AND owner = $3""",
                    kind,
                    key,
                    owner,
                )
            except (DatabaseError, OSError) as exc:
                log.warning("claim of %s %s: heartbeat failed: %s", kind, key, exc)
                continue
            if held.endswith(" 0"):
                log.warning("claim of %s %s was taken over (this process stalled for %.0f s)", kind, key, ttl)

    beat = asyncio.create_task(heartbeat(), name=f"claim-{kind}")
    try:
        yield
    finally:
        beat.cancel()
        with suppress(asyncio.CancelledError):
            await beat
        try:
            await asyncio.shield(release_claim(database, kind, key, owner))
        except (DatabaseError, OSError) as exc:  # expires after ttl instead
            log.warning("claim of %s %s: release failed: %s", kind, key, exc)
