"""The link job (``data_linker_queue``): attach a session's raw objects and media.

Improvements on the predecessor (spec §5.1, §8 items 11-13):

- objects are matched by user AND device (when the session knows its device);
- an object that overlaps two sessions of the same stream goes to the one it
  overlaps most (the nearest, when it only touches their padding), so
  adjacent sessions never steal each other's data; a session linked later
  may take over objects an earlier one only held through its padding;
- the whole link is one transaction, and the correction job is queued
  through the outbox, i.e. published only after COMMIT;
- ``link_status`` moves visibly pending → processing → completed | failed;
- objects that arrive while or after the job runs are linked too: the job
  loops while new objects appear, and the storage consumer queues the job
  again for a packet of an already linked session;
- which session an object belongs to is one rule in SQL
  (``core/ownership.py``), which the late-packet triggers share: a packet
  that belongs to a neighbouring session never sends this one back to
  linking;
- a job that finds its session ``completed`` does nothing: a run that
  started after whatever queued it (a late packet, a redelivered message)
  has linked it already. Every change that needs a new link sets the
  session back to ``pending`` first;
- a job for a session that does not exist is dead-lettered, not retried
  forever.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from eeghub.core.cluster import job_claim
from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure
from eeghub.core.outbox import enqueue_json
from eeghub.core.ownership import PAD_MS, in_reach, owned_by, session_spans
from eeghub.core.ports import Delivery

log = logging.getLogger("eeghub.linker")

MAX_ROUNDS = 5


class Job(msgspec.Struct):
    session_id: str


def decode_job(body: bytes) -> Job:
    try:
        job = msgspec.json.decode(body, type=Job)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise PermanentFailure(f"malformed job: {exc}") from None
    if not job.session_id:
        raise PermanentFailure("malformed job: empty session_id")
    return job


OWNED = f"""
WITH s AS MATERIALIZED (
    SELECT * FROM sessions WHERE session_id = $1
), reach AS MATERIALIZED (
    SELECT r.object_id, r.session_id, r.user_id, r.device_id, r.timestamp_start_ms, r.timestamp_end_ms
    FROM s JOIN raw_data_objects r ON {in_reach("s", "r")}
), rivals AS MATERIALIZED (
    {session_spans(
        "user_id = (SELECT user_id FROM s)"
        f" AND start_time <= to_timestamp(((SELECT max(timestamp_end_ms) FROM reach) + {PAD_MS + 1}) / 1000.0)"
        f" AND COALESCE(end_time, 'infinity') >= to_timestamp(((SELECT min(timestamp_start_ms) FROM reach) - {PAD_MS + 1}) / 1000.0)"
    )}
)
SELECT r.object_id, r.session_id FROM s JOIN reach r ON {owned_by("s", "r", rivals="rivals")}
"""
"""The objects the session's link consists of: those of its stream within
its reach that belong to it rather than to another session. The sessions
that may compete for them are looked up once, around all of them."""


async def link_once(ctx: AppContext, session_id: str) -> dict[str, int]:
    """One linking transaction; returns counts for the log."""
    queues = ctx.settings.broker.queues
    async with ctx.database.transaction() as conn:
        session = await conn.fetchrow("SELECT * FROM sessions WHERE session_id = $1 FOR UPDATE", session_id)
        if session is None:
            raise PermanentFailure(f"session {session_id} not found")
        chosen: list[str] = []
        taken_from: set[str] = set()
        for obj in await conn.fetch(OWNED, session_id):
            chosen.append(obj["object_id"])
            if obj["session_id"] and obj["session_id"] != session_id:
                taken_from.add(obj["session_id"])
        current = {r["object_id"] for r in await conn.fetch(
            "SELECT object_id FROM session_object_links WHERE session_id = $1", session_id
        )}
        dropped = sorted(current - set(chosen))
        if dropped:
            await conn.execute(
                "DELETE FROM session_object_links WHERE session_id = $1 AND object_id = ANY($2::text[])", session_id, dropped
            )
            await conn.execute(
                "UPDATE raw_data_objects SET session_id = NULL WHERE session_id = $1 AND object_id = ANY($2::text[])",
                session_id,
                dropped,
            )
        if chosen:
            await conn.execute(
                """UPDATE raw_data_objects SET session_id = $1,
                          start_time = to_timestamp(timestamp_start_ms / 1000.0),
                          end_time = to_timestamp(timestamp_end_ms / 1000.0)
                   WHERE object_id = ANY($2::text[])""",
                session_id,
                chosen,
            )
            await conn.execute(
                "DELETE FROM session_object_links WHERE object_id = ANY($2::text[]) AND session_id <> $1", session_id, chosen
            )
            await conn.execute(
                """INSERT INTO session_object_links (session_id, object_id)
                   SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING""",
                session_id,
                chosen,
            )
        # Media: attach by session id, and by time for media sent without one.
        for table, time_column in (("images", "timestamp_utc"), ("audio_clips", "start_time")):
            await conn.execute(
                f"""UPDATE {table} SET session_id = $1
                    WHERE session_id IS NULL AND user_id = $2 AND {time_column} BETWEEN $3 AND $4""",  # noqa: S608
                session_id,
                session["user_id"],
                session["start_time"],
                session["end_time"],
            )
            if session["experiment_id"] is not None:
                await conn.execute(
                    f"UPDATE {table} SET experiment_id = $2 WHERE session_id = $1 AND experiment_id IS NULL",  # noqa: S608
                    session_id,
                    session["experiment_id"],
                )
        await conn.execute(
            """UPDATE sessions SET link_status = 'completed', linked_at = NOW(), link_error = NULL,
                      event_correction_status = 'pending' WHERE session_id = $1""",
            session_id,
        )
        if taken_from:
            # Their links changed too: a correction of theirs that is running
            # now is superseded, and the one queued below is not skipped.
            await conn.execute(
                "UPDATE sessions SET event_correction_status = 'pending' WHERE session_id = ANY($1::text[])",
                sorted(taken_from),
            )
        for sid in [session_id, *sorted(taken_from)]:
            await enqueue_json(conn, {"session_id": sid}, queue=queues.event_correction_queue)
    ctx.outbox.wake()
    return {"linked": len(chosen), "unlinked": len(dropped), "taken_over": len(taken_from)}


async def pending_objects(ctx: AppContext, session_id: str) -> int:
    """Unclaimed objects that belong to the session (arrived during the job)."""
    return int(await ctx.database.fetchval(PENDING, session_id))


PENDING = f"SELECT count(*) FROM ({OWNED}) owned WHERE session_id IS NULL"


RECHECK_SECONDS = 5.0
RECHECK_WINDOW_SECONDS = 600
"""Sessions that ended within this window are checked for late packets."""

RECHECK = f"""
WITH due AS (
    SELECT s.session_id FROM sessions s
    WHERE s.end_time IS NOT NULL AND s.end_time > NOW() - make_interval(secs => $1)
      AND s.link_status = 'completed'
      AND EXISTS (
          SELECT 1 FROM raw_data_objects r
          WHERE r.session_id IS NULL AND {owned_by("s", "r")})
    FOR UPDATE OF s SKIP LOCKED
), moved AS (
    UPDATE sessions s SET link_status = 'pending', event_correction_status = 'pending'
    FROM due WHERE s.session_id = due.session_id
    RETURNING s.session_id
)
INSERT INTO eeghub_outbox (target_kind, target, body, content_type)
SELECT 'queue', $2, convert_to(json_build_object('session_id', session_id)::text, 'UTF8'), 'application/json'
FROM moved
RETURNING convert_from(body, 'UTF8')
"""
"""Unclaimed objects count only when the linker would link them to the
session (``core/ownership.py``): a packet left to a neighbouring session
(one still recording, say) is not a late packet of this one. Counted, it
would send the session back to linking every ``RECHECK_SECONDS``, each time
with its event correction to redo, for as long as it stays unclaimed."""


async def recheck_late_packets(ctx: AppContext, window_seconds: float = RECHECK_WINDOW_SECONDS) -> int:
    """Queue linking again for recently ended, linked sessions that have
    unclaimed packets that belong to them; returns how many.

    The storage consumer already does this for packets that arrive after a
    session was linked, but a packet whose row was being written while the
    linker read (the linker cannot see a row before it is committed, and the
    row's statement saw the session not yet linked) is caught only here."""
    rows = await ctx.database.fetch(RECHECK, float(window_seconds), ctx.settings.broker.queues.data_linker_queue)
    if rows:
        log.info("late packets: %d recently ended session(s) queued for linking again", len(rows))
        ctx.outbox.wake()
    return len(rows)


async def recheck_forever(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        await recheck_late_packets(ctx)


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        job = decode_job(delivery.message.body)
        row = await ctx.database.fetchrow("SELECT end_time FROM sessions WHERE session_id = $1", job.session_id)
        if row is None:
            raise PermanentFailure(f"session {job.session_id} not found")
        if row["end_time"] is None:
            log.warning("session %s has not ended; nothing to link yet", job.session_id)
            return
        # One process at a time links a session; a job arriving meanwhile
        # waits and then runs again (it may announce objects the running
        # one missed).
        async with job_claim(ctx.database, "link", job.session_id):
            await link_claimed(ctx, job.session_id)

    return handle


async def link_claimed(ctx: AppContext, session_id: str) -> None:
    """Link the session unless it is linked already.

    ``completed`` here means a run that began after this job was queued has
    linked the session: whatever queued the job (a late packet, the session's
    end) set it to ``pending`` in the same transaction, and only a later run
    sets it back to ``completed``, under the session's row lock and with
    everything committed before in sight. Linking again would change no link
    and only send the event correction back to ``pending`` (a client, or an
    ERP analysis, would find the session uncorrected meanwhile)."""
    started = await ctx.database.fetchval(
        """UPDATE sessions SET link_status = 'processing'
           WHERE session_id = $1 AND link_status <> 'completed' RETURNING session_id""",
        session_id,
    )
    if started is None:
        log.info("session %s is linked already (nothing arrived since): job skipped", session_id)
        return
    try:
        previous = -1
        for _ in range(MAX_ROUNDS):
            counts = await link_once(ctx, session_id)
            log.info("session %s linked: %s", session_id, counts)
            waiting = await pending_objects(ctx, session_id)
            # Stop when nothing new arrived (objects left unclaimed belong
            # to a neighbouring session).
            if waiting == 0 or waiting == previous:
                break
            previous = waiting
    except PermanentFailure:
        raise
    except Exception as exc:
        await ctx.database.execute(
            "UPDATE sessions SET link_status = 'failed', link_error = $2 WHERE session_id = $1",
            session_id,
            f"{type(exc).__name__}: {exc}"[:1000],
        )
        raise
