"""An experiment's recordings for experiment analyses, read from the
database and the object store (not through a BIDS build).

A session's linked packets are read in time order a chunk at a time
(neighbours stored in one segment by one request, ``core.raw_objects``),
decoded in a worker thread and placed in one continuous array: a packet that
starts where the previous one ended (within ``JOIN_TOLERANCE_S``, the
devices' timestamp jitter) follows it directly; a later one leaves a gap of
NaN; an earlier one (a duplicate or an overlap) is left out and counted.
Event onsets are placed with the same per-packet anchors the event
correction used to place the triggers, so a trigger-corrected onset lands on
its trigger's sample.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from eeghub.core.context import AppContext
from eeghub.core.errors import ObjectNotFound
from eeghub.core.experiment_analysis import Event, Participant, Recording, SessionInfo, Stimulus
from eeghub.core.packet import PacketError, decode_payload
from eeghub.core.raw_objects import RawLocation, RawReader, read_in_chunks

JOIN_TOLERANCE_S = 0.02
ANALYSED_TYPES = ("calibration", "main", "main_integrated", "main_external", "main_task")


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def experiment_inputs(ctx: AppContext, experiment_id: uuid.UUID) -> tuple[list[Stimulus], list[SessionInfo]]:
    """The experiment's stimuli and sessions, with their event counts."""
    db = ctx.database
    stimuli = [
        Stimulus(
            file_name=r["file_name"], trial_type=r["trial_type"], stimulus_type=r["stimulus_type"], item_name=r["item_name"],
            brand_name=r["brand_name"], description=r["description"], category=r["category"], gender=r["gender"],
        )
        for r in await db.fetch(
            """SELECT file_name, trial_type, stimulus_type, item_name, brand_name, description, category, gender
               FROM experiment_stimuli WHERE experiment_id = $1 ORDER BY file_name""",
            experiment_id,
        )
    ]
    sessions = [
        SessionInfo(r["session_id"], r["user_id"], (r["session_type"] or "").strip().lower(), r["event_correction_status"],
                    int(r["events"]), int(r["on_trigger"]), r["link_status"], r["ended"])
        for r in await db.fetch(
            """SELECT s.session_id, s.user_id, s.session_type, s.event_correction_status, s.link_status,
                      s.end_time IS NOT NULL AS ended, count(e.event_id) AS events, count(e.onset_corrected_us) AS on_trigger
               FROM sessions s LEFT JOIN session_events e ON e.session_id = s.session_id
               WHERE s.experiment_id = $1 GROUP BY s.session_id ORDER BY min(s.start_time), s.session_id""",
            experiment_id,
        )
    ]
    return stimuli, sessions


def analysed(session: SessionInfo) -> bool:
    """A calibration or main session whose event correction completed."""
    return session.session_type in ANALYSED_TYPES and session.event_correction_status == "completed"


def participants_of(sessions: list[SessionInfo]) -> list[str]:
    """Users with at least one corrected calibration or main session."""
    users: list[str] = []
    for s in sessions:
        if analysed(s) and s.user_id not in users:
            users.append(s.user_id)
    return users


async def load_participant(ctx: AppContext, experiment_id: uuid.UUID, user_id: str, session_ids: Sequence[str]) -> Participant:
    """The user's sessions ``session_ids`` (those ``analysed`` when the
    analysis read the experiment) as they are now, whatever their status: a
    session sent back to linking meanwhile keeps its corrected onsets until
    its new correction replaces them (in one transaction), and leaving it
    out would leave the participant without a session the analysis counted
    on."""
    rows = await ctx.database.fetch(
        """SELECT * FROM sessions WHERE experiment_id = $1 AND user_id = $2 AND session_id = ANY($3::text[])
           ORDER BY start_time, session_id""",
        experiment_id,
        user_id,
        list(session_ids),
    )
    recordings = []
    for row in rows:
        kind = (row["session_type"] or "").strip().lower()
        if kind in ANALYSED_TYPES:
            recordings.append(await load_recording(ctx, row, kind))
    return Participant(user_id, recordings)


def _decode_chunk(outcomes: list[bytes | BaseException], max_channels: int) -> list[Any]:
    out: list[Any] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            out.append(outcome)
            continue
        try:
            out.append(decode_payload(outcome, max_channels=max_channels))
        except PacketError as exc:
            out.append(exc)
    return out


async def load_recording(ctx: AppContext, session: Any, kind: str) -> Recording:
    db = ctx.database
    sid = session["session_id"]
    objects = await db.fetch(
        """SELECT r.object_id, r.timestamp_start_ms, r.sampling_rate, r.lsb_to_volts,
                  r.segment_key, r.segment_offset, r.stored_bytes
           FROM session_object_links l JOIN raw_data_objects r ON r.object_id = l.object_id
           WHERE l.session_id = $1 ORDER BY r.timestamp_start_ms, r.object_id""",
        sid,
    )
    events = await db.fetch(
        """SELECT e.event_id, e.onset, e.trial_type, e.onset_corrected_us, COALESCE(s.file_name, c.file_name) AS file_name
           FROM session_events e LEFT JOIN experiment_stimuli s ON s.stimulus_id = e.stimulus_id
           LEFT JOIN calibration_items c ON c.item_id = e.calibration_item_id
           WHERE e.session_id = $1 ORDER BY e.onset, e.event_id""",
        sid,
    )
    report: dict[str, Any] = {"objects": len(objects), "missing_objects": 0, "undecodable_objects": 0,
                              "inconsistent_objects": 0, "overlapping_objects": 0, "gaps": 0, "gap_seconds": 0.0}
    decoded: list[tuple[Any, Any]] = []
    reader = RawReader(ctx.objects, ctx.settings.object_store.buckets.raw_data, [RawLocation.of(r) for r in objects])
    try:
        async for first, outcomes in read_in_chunks(reader, [r["object_id"] for r in objects]):
            rows = objects[first : first + len(outcomes)]
            packets = await asyncio.to_thread(_decode_chunk, outcomes, ctx.settings.ingest.max_channels)
            for row, packet in zip(rows, packets, strict=True):
                if isinstance(packet, ObjectNotFound):
                    report["missing_objects"] += 1
                elif isinstance(packet, PacketError):
                    report["undecodable_objects"] += 1
                else:
                    decoded.append((row, packet))
    finally:
        await reader.aclose()
    return await asyncio.to_thread(_assemble, sid, kind, session["start_time"], decoded, events, report)


def _assemble(sid: str, kind: str, start_time: datetime, decoded: list[tuple[Any, Any]], events: list[Any],
              report: dict[str, Any]) -> Recording:
    if not decoded:
        report["note"] = "no decodable data"
        return Recording(sid, kind, 0.0, [], [], np.zeros((0, 0), dtype=np.float32), [], report)
    first_row, first_packet = decoded[0]
    names = list(first_packet.layout.channel_names)
    types = list(first_packet.layout.channel_types)
    rate = float(first_row["sampling_rate"])
    placed: list[tuple[int, int, np.ndarray, float]] = []  # start µs, sample index, signals, lsb
    next_index, previous_start = 0, None
    origin_us = int(first_row["timestamp_start_ms"]) * 1000
    tolerance = max(2, round(JOIN_TOLERANCE_S * rate))
    for row, packet in decoded:
        if list(packet.layout.channel_names) != names or float(row["sampling_rate"]) != rate:
            report["inconsistent_objects"] += 1
            continue
        start_us = int(row["timestamp_start_ms"]) * 1000
        by_time = round((start_us - origin_us) * rate / 1e6)
        if previous_start is None:
            index = 0
        elif abs(by_time - next_index) <= tolerance:
            index = next_index
        elif by_time > next_index:
            index = by_time
            report["gaps"] += 1
            report["gap_seconds"] += (by_time - next_index) / rate
        else:
            report["overlapping_objects"] += 1
            continue
        placed.append((start_us, index, packet.signals, float(row["lsb_to_volts"])))
        next_index, previous_start = index + packet.signals.shape[1], start_us
    data = np.full((len(names), next_index), np.nan, dtype=np.float32)
    for _, index, signals, lsb in placed:
        data[:, index : index + signals.shape[1]] = signals.astype(np.float32) * np.float32(lsb)
    report["gap_seconds"] = round(report["gap_seconds"], 3)
    anchors_us = [p[0] for p in placed]
    anchors_index = [p[1] for p in placed]
    session_start_us = _us(start_time)

    def sample_of(t_us: int) -> int | None:
        k = bisect.bisect_right(anchors_us, t_us) - 1
        if k < 0:
            return None
        sample = anchors_index[k] + round((t_us - anchors_us[k]) * rate / 1e6)
        return sample if 0 <= sample < next_index else None

    out_events = []
    for e in events:
        corrected = e["onset_corrected_us"]
        if corrected is not None:
            out_events.append(Event(sample_of(int(corrected)), "trigger", e["trial_type"], e["file_name"], e["event_id"]))
        else:
            logged = session_start_us + round(float(e["onset"]) * 1e6)
            out_events.append(Event(sample_of(logged), "logged", e["trial_type"], e["file_name"], e["event_id"]))
    return Recording(sid, kind, rate, names, types, data, out_events, report)
