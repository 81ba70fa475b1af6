"""Per-session reports: event correction and data completeness."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from eeghub.core.auth import Identity, check_session_reader, require_user
from eeghub.core.context import AppContext
from eeghub.core.errors import NotFound
from eeghub.core.http import IdParam, error_responses
from eeghub.core.timeline import Packet, edge_gaps, plan_stream


async def _session(ctx: AppContext, session_id: str, identity: Identity) -> Any:
    session = await ctx.database.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
    if session is None:
        raise NotFound(f"Session {session_id} not found.")
    await check_session_reader(ctx.database, session, identity.user_id)
    return session


@get(
    "/api/v1/sessions/{session_id:str}/correction",
    guards=[require_user],
    tags=["sessions"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_correction(session_id: IdParam, ctx: AppContext, identity: Identity) -> dict[str, Any]:
    """The session's event correction report: events matched and unmatched
    (by event id), extra triggers, the estimated clock offset and the
    residuals in ms, and each event's logged and corrected time."""
    session = await _session(ctx, session_id, identity)
    row = await ctx.database.fetchrow("SELECT report FROM session_correction_reports WHERE session_id = $1", session_id)
    if row is None:
        raise NotFound(
            f"no correction report for session {session_id} yet "
            f"(link_status {session['link_status']}, event_correction_status {session['event_correction_status']})"
        )
    report: dict[str, Any] = row["report"]
    report["event_correction_status"] = session["event_correction_status"]
    return report


class GapOut(msgspec.Struct):
    after_object: str | None
    """The packet the stream should have continued after (None: the gap
    before the first packet)."""
    start_ms: float
    missing_ms: float
    missing_samples: int
    position: str = "between"
    """``start`` (between the session start and the first packet),
    ``between`` (between two packets) or ``end`` (after the last packet,
    before the session end)."""


class StreamReport(msgspec.Struct):
    device_id: str
    sampling_rates: list[float]
    packets: int
    duplicates_dropped: int
    samples_received: int
    samples_expected: int | None
    completeness: float | None
    gaps: list[GapOut]
    overlaps: int
    first_packet_ms: int | None
    last_packet_end_ms: int | None


class DataReport(msgspec.Struct):
    session_id: str
    link_status: str
    duration_seconds: float | None
    streams: list[StreamReport]


@get(
    "/api/v1/sessions/{session_id:str}/data",
    guards=[require_user],
    tags=["sessions"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_data_report(session_id: IdParam, ctx: AppContext, identity: Identity) -> DataReport:
    """Per device stream: packets, samples received against samples expected
    from the session's time span and sampling rate, gaps (also before the
    first packet and after the last one, once the session has ended: they
    count as missing), overlaps and duplicates dropped."""
    session = await _session(ctx, session_id, identity)
    rows = await ctx.database.fetch(
        """SELECT r.object_id, r.device_id, r.timestamp_start_ms, r.timestamp_end_ms, r.num_samples,
                  r.sampling_rate, r.content_sha256
           FROM session_object_links l JOIN raw_data_objects r ON r.object_id = l.object_id
           WHERE l.session_id = $1 ORDER BY r.device_id, r.timestamp_start_ms""",
        session_id,
    )
    duration = (
        (session["end_time"] - session["start_time"]).total_seconds() if session["end_time"] is not None else None
    )
    by_device: dict[str, list[Any]] = {}
    for row in rows:
        by_device.setdefault(row["device_id"], []).append(row)
    streams: list[StreamReport] = []
    for device, items in sorted(by_device.items()):
        packets = [
            Packet(
                object_id=r["object_id"],
                start_ms=r["timestamp_start_ms"],
                end_ms=r["timestamp_end_ms"],
                num_samples=r["num_samples"] or 0,
                sampling_rate=r["sampling_rate"],
                sha256=r["content_sha256"],
            )
            for r in items
        ]
        plan = plan_stream(packets)
        rates = sorted({p.sampling_rate for p in packets})
        expected = round(duration * rates[0]) if duration is not None and len(rates) == 1 else None
        gaps = [GapOut(g.after_object, g.start_ms, round(g.missing_ms, 3), g.missing_samples) for g in plan.gaps]
        if expected is not None:  # the edges count as missing, so they are listed
            leading, trailing = edge_gaps(
                plan, session["start_time"].timestamp() * 1000, session["end_time"].timestamp() * 1000
            )
            if leading is not None:
                gaps.insert(0, GapOut(None, leading.start_ms, round(leading.missing_ms, 3), leading.missing_samples, "start"))
            if trailing is not None:
                gaps.append(
                    GapOut(trailing.after_object, trailing.start_ms, round(trailing.missing_ms, 3), trailing.missing_samples, "end")
                )
        streams.append(
            StreamReport(
                device_id=device,
                sampling_rates=rates,
                packets=len(plan.kept),
                duplicates_dropped=len(plan.duplicates),
                samples_received=plan.samples,
                samples_expected=expected,
                completeness=round(plan.samples / expected, 4) if expected else None,
                gaps=gaps,
                overlaps=len(plan.overlaps),
                first_packet_ms=plan.kept[0].start_ms if plan.kept else None,
                last_packet_end_ms=plan.kept[-1].end_ms if plan.kept else None,
            )
        )
    return DataReport(
        session_id=session_id, link_status=session["link_status"], duration_seconds=duration, streams=streams
    )
