"""The event correction job (``event_correction_queue``).

For one session: read its linked objects in time order, a chunk at a time
(no transaction is open meanwhile, and never all of them in memory: spec §8
item 14; neighbours stored in one segment are read by one request), find the trigger rising edges across object boundaries, place them
in absolute time, and match them to the logged events with
``eeghub.core.correction.match_events`` (offset estimation, then an optimal
monotone one-to-one matching within a tolerance). Then, in one transaction:
the corrected onsets (NULL for unmatched events), the correction report, and
``event_correction_status = completed``. ``completed`` therefore always
means "a report exists"; the report says what happened, including "no
triggers" and "no data".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from eeghub.core.cluster import job_claim
from eeghub.core.context import AppContext
from eeghub.core.correction import MatchParameters, match_events
from eeghub.core.errors import ObjectNotFound, PermanentFailure
from eeghub.core.packet import PacketError, decode_payload
from eeghub.core.ports import Delivery
from eeghub.core.raw_objects import MAX_PAYLOAD_BYTES, RawLocation, RawReader, payload_of

from .linking import decode_job

log = logging.getLogger("eeghub.linker")


READ_CHUNK = 64
"""Packets read (neighbours in one segment by one request) and then decoded
(in one worker-thread call) at a time: a session is never all in memory,
whatever its length."""

READS_AT_ONCE = 8
"""Requests under way per correction job (packets stored one object each,
the predecessor's form, are one request each: the object store's connection
pool and rate limits are shared with everything else)."""


async def trigger_edges(ctx: AppContext, objects: list[Any]) -> tuple[np.ndarray, list[dict[str, str]], int]:
    """Absolute times (µs) of trigger rising edges over the objects, the
    objects skipped (with why), and how many objects had a trigger channel."""
    bucket = ctx.settings.object_store.buckets.raw_data
    max_channels = ctx.settings.ingest.max_channels
    edges: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    with_trigger = 0
    previous = 0
    # Stored bytes: frames are decompressed with the decoding, in the worker thread.
    reader = RawReader(ctx.objects, bucket, [RawLocation.of(row) for row in objects], decompress=False)
    max_payload = ctx.settings.ingest.max_decompressed_bytes
    limit = asyncio.Semaphore(READS_AT_ONCE)

    async def read(object_id: str) -> bytes:
        async with limit:
            return await reader.read(object_id)

    try:
        for first in range(0, len(objects), READ_CHUNK):
            rows = objects[first : first + READ_CHUNK]
            outcomes = await asyncio.gather(*(read(row["object_id"]) for row in rows), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, ObjectNotFound):
                    raise outcome  # a storage error: the job is retried
            decoded, previous = await asyncio.to_thread(_decode_chunk, outcomes, previous, max_channels, max_payload)
            for row, outcome in zip(rows, decoded, strict=True):
                if isinstance(outcome, ObjectNotFound):
                    skipped.append({"object_id": row["object_id"], "reason": "object missing from storage"})
                    continue
                if isinstance(outcome, PacketError):
                    skipped.append({"object_id": row["object_id"], "reason": f"undecodable: {outcome}"})
                    continue
                if outcome is None:  # no trigger channel
                    continue
                with_trigger += 1
                if outcome.size:
                    start_us = int(row["timestamp_start_ms"]) * 1000
                    offsets = np.rint(outcome.astype(np.float64) * 1e6 / float(row["sampling_rate"]))
                    edges.append(start_us + offsets.astype(np.int64))
    finally:
        await reader.aclose()
    all_edges = np.concatenate(edges) if edges else np.zeros(0, dtype=np.int64)
    return np.unique(all_edges), skipped, with_trigger


def _decode_chunk(
    outcomes: list[bytes | BaseException], previous: int, max_channels: int, max_payload: int = MAX_PAYLOAD_BYTES
) -> tuple[list[np.ndarray | BaseException | None], int]:
    """In a worker thread: each payload's trigger rising edges (sample
    indices; ``None`` without a trigger channel), or what went wrong, with
    the trigger level carried from packet to packet."""
    out: list[np.ndarray | BaseException | None] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            out.append(outcome)
            continue
        try:
            packet = decode_payload(payload_of(outcome, max_payload), previous_trigger=previous, max_channels=max_channels)
        except PacketError as exc:
            out.append(exc)
            continue
        if packet.trigger is None:
            out.append(None)
            continue
        previous = packet.last_trigger
        out.append(packet.rising_edges)
    return out, previous


def _iso(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


async def correct_session(ctx: AppContext, session_id: str) -> dict[str, Any]:
    session = await ctx.database.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
    if session is None:
        raise PermanentFailure(f"session {session_id} not found")
    await ctx.database.execute(
        "UPDATE sessions SET event_correction_status = 'processing' WHERE session_id = $1", session_id
    )
    events = await ctx.database.fetch(
        "SELECT event_id, onset, trial_type FROM session_events WHERE session_id = $1 ORDER BY onset, event_id",
        session_id,
    )
    objects = await ctx.database.fetch(
        """SELECT r.object_id, r.timestamp_start_ms, r.sampling_rate, r.segment_key, r.segment_offset, r.stored_bytes
           FROM session_object_links l
           JOIN raw_data_objects r ON r.object_id = l.object_id
           WHERE l.session_id = $1 ORDER BY r.timestamp_start_ms, r.object_id""",
        session_id,
    )
    triggers, skipped, with_trigger = await trigger_edges(ctx, objects)
    start = session["start_time"]
    # Integer arithmetic: float timestamps can be a microsecond off.
    start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    expected = [start_us + round(float(e["onset"]) * 1e6) for e in events]
    params = MatchParameters()
    corrected, report = match_events(expected, triggers, params)
    details = report.to_dict()
    status = details.get("status")
    if not objects:
        status = "no_data"
    elif with_trigger == 0:
        status = "no_trigger_channel"
    details.update(
        {
            "session_id": session_id,
            "status": status,
            "objects_total": len(objects),
            "objects_with_trigger_channel": with_trigger,
            "objects_skipped": skipped,
            "computed_at": datetime.now(UTC).isoformat(),
            "unmatched_event_ids": [events[i]["event_id"] for i in report.unmatched_events],
            "events": [
                {
                    "event_id": e["event_id"],
                    "onset": float(e["onset"]),
                    "trial_type": e["trial_type"],
                    "expected_time": _iso(expected[i]),
                    "corrected_time": _iso(corrected[i]),
                    "onset_corrected_us": corrected[i],
                    "shift_ms": None if corrected[i] is None else round((corrected[i] - expected[i]) / 1000.0, 3),
                }
                for i, e in enumerate(events)
            ],
        }
    )
    async with ctx.database.transaction() as conn:
        await conn.execute("SELECT 1 FROM sessions WHERE session_id = $1 FOR UPDATE", session_id)
        if events:
            await conn.execute(
                """UPDATE session_events e SET onset_corrected_us = v.corrected
                   FROM unnest($1::bigint[], $2::bigint[]) AS v(event_id, corrected)
                   WHERE e.event_id = v.event_id AND e.session_id = $3""",
                [e["event_id"] for e in events],
                corrected,
                session_id,
            )
        await conn.execute(
            """INSERT INTO session_correction_reports (session_id, report) VALUES ($1, $2)
               ON CONFLICT (session_id) DO UPDATE SET report = EXCLUDED.report, created_at = NOW()""",
            session_id,
            details,
        )
        await conn.execute(
            "UPDATE sessions SET event_correction_status = 'completed' WHERE session_id = $1", session_id
        )
    return details


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        job = decode_job(delivery.message.body)
        # One process at a time corrects a session (a job arriving meanwhile
        # waits, then corrects again with what was linked since).
        async with job_claim(ctx.database, "correct", job.session_id):
            try:
                details = await correct_session(ctx, job.session_id)
            except PermanentFailure:
                raise
            except Exception:
                await ctx.database.execute(
                    "UPDATE sessions SET event_correction_status = 'failed' WHERE session_id = $1", job.session_id
                )
                raise
        log.info(
            "session %s corrected: %s, %s of %s events matched",
            job.session_id,
            details["status"],
            details.get("matched"),
            details.get("events_total"),
        )

    return handle
