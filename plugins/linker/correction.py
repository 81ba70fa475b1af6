"""The event correction job (``event_correction_queue``).

For one session: read its linked objects in time order, a chunk at a time
(no transaction is open meanwhile, and never all of them in memory: spec §8
item 14; neighbours stored in one segment are read by one request), find the trigger rising edges across object boundaries with the trigger
line's value at each (its code), place them in absolute time, and match them
to the logged events with ``eeghub.core.correction.match_events``: the
offset is searched over everything the session allows
(``session_offset_range_ms``: the app's onsets count from when the
presentation started, not from the session start), each event's code comes
from its ``value`` or ``trial_type`` (``event_code``), then an optimal
monotone one-to-one matching within a tolerance. Then, in one transaction:
the corrected onsets (NULL for unmatched events), the correction report, and
``event_correction_status = completed``. ``completed`` therefore always
means "a report exists"; the report says what happened, including "no
triggers" and "no data". A job that finds its session ``completed`` does
nothing (a run that began after it was queued did the work), so a
redelivered or duplicate job never turns a corrected session back into one
being corrected.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from eeghub.core.cluster import job_claim
from eeghub.core.context import AppContext
from eeghub.core.correction import MatchParameters, event_code, match_events, session_offset_range_ms
from eeghub.core.errors import ObjectNotFound, PermanentFailure
from eeghub.core.packet import PacketError, decode_payload
from eeghub.core.ports import Delivery
from eeghub.core.raw_objects import MAX_PAYLOAD_BYTES, RawLocation, RawReader, payload_of, read_in_chunks

from .linking import decode_job

log = logging.getLogger("eeghub.linker")


GAP_MS = 250
"""A packet starting more than this after the previous one ended follows a
gap in the data (packets never received): the trigger line's level before
it is unknown."""

async def trigger_edges(
    ctx: AppContext, objects: list[Any]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]], int, bool | None]:
    """Absolute times (µs) of trigger rising edges over the objects (sorted,
    distinct), the trigger line's value at each (its code), the objects
    skipped (with why), how many objects had a trigger channel, and whether
    the line carries codes: True when every one of them is in the app's
    variant (its trigger block holds the stimulus class's code) and some
    pulse is not 1 (a device that writes 1 for every pulse makes a plain 0/1
    line of the block); else None (inferred from the values)."""
    bucket = ctx.settings.object_store.buckets.raw_data
    max_channels = ctx.settings.ingest.max_channels
    edges: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    with_trigger = 0
    app_blocks = 0
    previous: int | None = None  # the line's level before the next packet; None: unknown
    # Stored bytes: frames are decompressed with the decoding, in the worker thread.
    reader = RawReader(ctx.objects, bucket, [RawLocation.of(row) for row in objects], decompress=False)
    max_payload = ctx.settings.ingest.max_decompressed_bytes
    try:
        async for first, outcomes in read_in_chunks(reader, [row["object_id"] for row in objects]):
            rows = objects[first : first + len(outcomes)]
            gaps = [_after_gap(objects, first + k) for k in range(len(rows))]
            decoded, previous = await asyncio.to_thread(_decode_chunk, outcomes, gaps, previous, max_channels, max_payload)
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
                samples, values, app_block = outcome
                app_blocks += app_block
                if samples.size:
                    start_us = int(row["timestamp_start_ms"]) * 1000
                    offsets = np.rint(samples.astype(np.float64) * 1e6 / float(row["sampling_rate"]))
                    edges.append(start_us + offsets.astype(np.int64))
                    codes.append(values)
    finally:
        await reader.aclose()
    all_edges = np.concatenate(edges) if edges else np.zeros(0, dtype=np.int64)
    all_codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    times, first = np.unique(all_edges, return_index=True)
    codes = all_codes[first]
    app_line = bool(with_trigger) and app_blocks == with_trigger
    return times, codes, skipped, with_trigger, (True if app_line and bool(np.any(codes != 1)) else None)


def _after_gap(objects: list[Any], index: int) -> bool:
    """Whether object ``index`` follows a gap in time (``GAP_MS``)."""
    if index == 0:
        return True
    end = objects[index - 1].get("timestamp_end_ms")
    return end is not None and int(objects[index]["timestamp_start_ms"]) - int(end) > GAP_MS


def _decode_chunk(
    outcomes: list[bytes | BaseException],
    gaps: list[bool],
    previous: int | None,
    max_channels: int,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> tuple[list[tuple[np.ndarray, np.ndarray, bool] | BaseException | None], int | None]:
    """In a worker thread: each payload's trigger rising edges (sample
    indices), the trigger value at each and whether it is the app's trigger
    block (``None`` without a trigger channel), or what went wrong, with the trigger level carried from packet
    to packet.

    Where the level before a packet is unknown (``None``: the first packet,
    the one after a missing or undecodable packet, or after a gap in time:
    ``gaps``), a line already high
    at its first sample is not a rising edge: the pulse began where no data
    was seen (or the line is stuck high), so its time is unknown."""
    out: list[tuple[np.ndarray, np.ndarray, bool] | BaseException | None] = []
    for outcome, gap in zip(outcomes, gaps, strict=True):
        if gap:
            previous = None
        if isinstance(outcome, BaseException):
            out.append(outcome)
            previous = None
            continue
        try:
            packet = decode_payload(payload_of(outcome, max_payload), previous_trigger=previous or 0, max_channels=max_channels)
        except PacketError as exc:
            out.append(exc)
            previous = None
            continue
        if packet.trigger is None:
            out.append(None)
            continue
        edges = packet.rising_edges
        if previous is None and edges.size and edges[0] == 0:
            edges = edges[1:]
        previous = packet.last_trigger
        out.append((edges, packet.trigger[edges].astype(np.int64), packet.layout.has_trigger_block))
    return out, previous


def _epoch_us(moment: datetime) -> int:
    """Integer arithmetic: float timestamps can be a microsecond off."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _iso(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


async def correct_session(ctx: AppContext, session_id: str) -> dict[str, Any]:
    # ``completed``: a run that began after this job was queued has
    # corrected the session on the links it has now (the link that queued
    # this job set it to ``pending`` in its own transaction, and only a run
    # started after that sets it to ``completed``; see ``superseded`` below).
    # Running again would change nothing, and meanwhile the session would
    # be ``processing``: not corrected, for a client or an ERP analysis.
    session = await ctx.database.fetchrow(
        """UPDATE sessions SET event_correction_status = 'processing'
           WHERE session_id = $1 AND event_correction_status <> 'completed' RETURNING *""",
        session_id,
    )
    if session is None:
        if not await ctx.database.fetchval("SELECT 1 FROM sessions WHERE session_id = $1", session_id):
            raise PermanentFailure(f"session {session_id} not found")
        return {"session_id": session_id, "status": "up_to_date"}
    events = await ctx.database.fetch(
        "SELECT event_id, onset, trial_type, value FROM session_events WHERE session_id = $1 ORDER BY onset, event_id",
        session_id,
    )
    objects = await ctx.database.fetch(
        """SELECT r.object_id, r.timestamp_start_ms, r.timestamp_end_ms, r.sampling_rate, r.segment_key,
                  r.segment_offset, r.stored_bytes
           FROM session_object_links l
           JOIN raw_data_objects r ON r.object_id = l.object_id
           WHERE l.session_id = $1 ORDER BY r.timestamp_start_ms, r.object_id""",
        session_id,
    )
    triggers, trigger_values, skipped, with_trigger, line_has_codes = await trigger_edges(ctx, objects)
    start_us = _epoch_us(session["start_time"])
    onsets = [float(e["onset"]) for e in events]
    expected = [start_us + round(onset * 1e6) for onset in onsets]
    params = MatchParameters()
    ends = [_epoch_us(session["end_time"])] if session["end_time"] is not None else []
    ends += [int(o["timestamp_end_ms"]) * 1000 for o in objects[-1:]]
    # Hundreds of milliseconds for a long session (docs/measurements.md):
    # in a worker thread, off the event loop.
    corrected, report = await asyncio.to_thread(
        match_events,
        expected,
        triggers,
        params,
        event_codes=[event_code(e["value"], e["trial_type"]) for e in events],
        trigger_codes=[int(v) if v > 0 else None for v in trigger_values.tolist()],
        offset_range_ms=session_offset_range_ms(start_us, max(ends, default=None), onsets, params.max_offset_ms),
        line_has_codes=line_has_codes,
    )
    details = report.to_dict()
    per_event = details.pop("event_details")
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
                    **per_event[i],
                }
                for i, e in enumerate(events)
            ],
        }
    )
    async with ctx.database.transaction() as conn:
        current = await conn.fetchval(
            "SELECT event_correction_status FROM sessions WHERE session_id = $1 FOR UPDATE", session_id
        )
        if current != "processing":
            # Linked again (or its events replaced) while this ran: the links
            # it read are stale and a newer job is queued. Writing its result
            # would show "completed" with the old links until that job runs
            # (an export in between would take it as final).
            details["status"] = "superseded"
            return details
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
