"""Recording sessions: ``/api/v1/sessions/start`` and ``/end`` as the
predecessor's app calls them, plus reading a session and listing an
experiment's sessions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import Parameter

from eeghub.core.auth import (
    Identity,
    check_role,
    check_session_reader,
    parse_experiment_id,
    require_role,
    require_user,
)
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from eeghub.core.http import (
    NO_CONTROL_CHARACTERS,
    IdParam,
    UuidParam,
    body_operation,
    error_responses,
    file_schema,
    json_content,
    multipart,
    openapi_schema_of,
    too_deeply_nested,
    validation_field,
)
from eeghub.core.outbox import enqueue_json

from .events import LoggedEvent, parse_events
from .schemas import SESSION_TYPES, Message, SessionEnd, SessionEnded, SessionInfo, SessionPage, SessionStart

MAX_CLOCK_OFFSET_JSON = 4096
MAX_OFFSET = 2**63 - 1
"""PostgreSQL's OFFSET is a bigint."""


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadRequest(
            f"{field} must include a UTC offset (e.g. 2025-01-01T10:00:00Z or +09:00)",
            issues=[{"field": field, "message": "timezone offset required"}],
        )
    try:
        # 0001-01-01T00:00+01:00 or 9999-12-31T23:00-12:00 parse, but their
        # UTC instant is outside what a datetime (and PostgreSQL's driver)
        # can hold.
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequest(
            f"{field} is out of range once converted to UTC",
            issues=[{"field": field, "message": "out of range in UTC"}],
        ) from None


def _clock_offset(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    data = msgspec.to_builtins(info)
    if len(msgspec.json.encode(data)) > MAX_CLOCK_OFFSET_JSON:
        raise BadRequest("clock_offset_info is larger than 4096 characters", issues=[{"field": "clock_offset_info", "message": "too large"}])
    return data


def _decode(model: type[Any], raw: bytes | str, field: str) -> Any:
    """Decode JSON into ``model`` with a 400 naming the field on any error
    (the JSON path of the bad value when msgspec gives one; the allowed
    values of an enum field)."""
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        message, where = validation_field(exc, field)
        if where == "session_type" or where.endswith(".session_type"):
            message += f"; allowed values: {', '.join(SESSION_TYPES)}"
        raise BadRequest(f"Invalid data format: {message}", issues=[{"field": where, "message": message}]) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{field} is not valid JSON: {exc}", issues=[{"field": field, "message": str(exc)}]) from None
    except RecursionError:
        raise too_deeply_nested(field) from None


@post(
    "/api/v1/sessions/start",
    guards=[require_user],
    tags=["sessions"],
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 409, 413, 503),
    operation_class=body_operation(
        "The session to start. `session_type` is one of " + ", ".join(f"`{t}`" for t in SESSION_TYPES)
        + "; times are ISO 8601 with a UTC offset. Unknown fields are refused (400).",
        json_content(SessionStart),
    ),
)
async def start_session(request: Request[Any, Any, Any], ctx: AppContext, identity: Identity) -> Response[Message]:
    """Record a session's start. 201 when created, 200 when the caller already
    started it, 409 when the id belongs to someone else."""
    data: SessionStart = _decode(SessionStart, await request.body(), "body")
    start_time = _aware(data.start_time, "start_time")
    if data.user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    experiment_id = parse_experiment_id(data.experiment_id) if data.experiment_id else None
    if experiment_id is not None:
        await check_role(ctx.database, experiment_id, identity.user_id, "participant")
    clock = _clock_offset(data.clock_offset_info)
    inserted = await ctx.database.fetchval(
        """INSERT INTO sessions (session_id, user_id, experiment_id, device_id, start_time, session_type, clock_offset_info)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING RETURNING session_id""",
        data.session_id,
        identity.user_id,
        experiment_id,
        data.device_id,
        start_time,
        data.session_type,
        clock,
    )
    if inserted is not None:
        return Response(Message(message="Session started successfully."), status_code=201)
    owner = await ctx.database.fetchval("SELECT user_id FROM sessions WHERE session_id = $1", data.session_id)
    if owner != identity.user_id:
        raise Conflict("Session ID already exists and belongs to another user.")
    return Response(Message(message="Session already exists."), status_code=200)


async def _read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{field} is larger than {limit} bytes")
    return data


async def _map_events(conn: Any, events: list[LoggedEvent], session: Any) -> tuple[list[tuple[Any, ...]], list[str]]:
    names = sorted({e.file_name for e in events if e.file_name})
    mapping: dict[str, int] = {}
    if names:
        if session["session_type"] == "calibration":
            rows = await conn.fetch(
                "SELECT file_name, item_id AS id FROM calibration_items WHERE file_name = ANY($1::text[])", names
            )
        elif session["experiment_id"] is not None:
            rows = await conn.fetch(
                """SELECT file_name, stimulus_id AS id FROM experiment_stimuli
                   WHERE experiment_id = $1 AND file_name = ANY($2::text[])""",
                session["experiment_id"],
                names,
            )
        else:
            rows = []
        mapping = {r["file_name"]: r["id"] for r in rows}
    calibration = session["session_type"] == "calibration"
    records = [
        (
            session["session_id"],
            None if calibration else mapping.get(e.file_name or ""),
            mapping.get(e.file_name or "") if calibration else None,
            e.onset,
            e.duration,
            e.trial_type,
            e.description,
            e.value,
        )
        for e in events
    ]
    return records, [n for n in names if n not in mapping]


@post(
    "/api/v1/sessions/end",
    guards=[require_user],
    tags=["sessions"],
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 413, 503),
    operation_class=body_operation(
        "multipart/form-data: `metadata` (a JSON document, see its schema; unknown fields are refused) and an "
        "optional `events_log_csv` file.",
        multipart(
            {
                "metadata": openapi_schema_of(SessionEnd),
                "events_log_csv": file_schema(
                    "The session's event log, UTF-8 CSV with a header row. Required columns: `onset` (seconds "
                    "from the session's start_time) and `trial_type`; optional: `duration` (seconds, default 0), "
                    "`file_name` (a stimulus of the experiment, or a calibration item in a calibration session), "
                    "`description`, `value`; other columns are ignored. Replaces the session's stored events."
                ),
            },
            ["metadata"],
            json_parts=("metadata",),
        ),
    ),
)
async def end_session(request: Request[Any, Any, Any], ctx: AppContext, identity: Identity) -> SessionEnded:
    """Record a session's end (multipart: ``metadata`` JSON and an optional
    ``events_log_csv``). Replaces the session's events when a log is sent,
    resets its link and correction status, and queues linking after commit."""
    form = await request.form()
    metadata = form.get("metadata")
    for field in ("metadata", "events_log_csv"):
        if hasattr(form, "getall") and len(form.getall(field, [])) > 1:
            raise BadRequest(f"{field} must be sent once", issues=[{"field": field, "message": "sent more than once"}])
    if isinstance(metadata, UploadFile):
        metadata = await _read_upload(metadata, 64 * 1024, "metadata")
    if not metadata:
        raise BadRequest("metadata field is required.", issues=[{"field": "metadata", "message": "required"}])
    data: SessionEnd = _decode(SessionEnd, metadata, "metadata")
    end_time = _aware(data.end_time, "end_time")
    if data.user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    upload = form.get("events_log_csv")
    events: list[LoggedEvent] | None = None
    if upload is not None:
        if not isinstance(upload, UploadFile):
            raise BadRequest("events_log_csv must be a file", issues=[{"field": "events_log_csv", "message": "not a file"}])
        events = parse_events(await _read_upload(upload, ctx.settings.session.max_events_csv_bytes, "events_log_csv"))
    session = await ctx.database.fetchrow("SELECT * FROM sessions WHERE session_id = $1", data.session_id)
    if session is None:
        raise NotFound(f"Session {data.session_id} not found.")
    if session["user_id"] != identity.user_id:
        raise Forbidden("You are not allowed to modify this session.")
    new_experiment = parse_experiment_id(data.experiment_id) if data.experiment_id else None
    experiment_id = new_experiment or session["experiment_id"]
    if experiment_id is not None:
        await check_role(ctx.database, experiment_id, identity.user_id, "participant")
    if end_time < session["start_time"]:
        raise BadRequest("end_time is before the session's start_time", issues=[{"field": "end_time", "message": "before start_time"}])
    clock = _clock_offset(data.clock_offset_info)
    unmapped: list[str] = []
    async with ctx.database.transaction() as conn:
        session = await conn.fetchrow(
            """UPDATE sessions SET end_time = $2, device_id = $3,
                      clock_offset_info = COALESCE($4, clock_offset_info),
                      experiment_id = COALESCE($5, experiment_id),
                      link_status = 'pending', event_correction_status = 'pending'
               WHERE session_id = $1 RETURNING *""",
            data.session_id,
            end_time,
            data.device_id,
            clock,
            new_experiment,
        )
        if events is not None:
            await conn.execute("DELETE FROM session_events WHERE session_id = $1", data.session_id)
            records, unmapped = await _map_events(conn, events, session)
            await conn.executemany(
                """INSERT INTO session_events (session_id, stimulus_id, calibration_item_id, onset, duration,
                                               trial_type, description, value)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                records,
            )
        await enqueue_json(conn, {"session_id": data.session_id}, queue=ctx.settings.broker.queues.data_linker_queue)
    ctx.outbox.wake()
    return SessionEnded(
        message="Session ended and processed successfully",
        session_id=data.session_id,
        events=len(events) if events is not None else None,
        unmapped_file_names=unmapped,
    )


SESSION_QUERY = """
    SELECT s.*, (SELECT count(*) FROM session_events e WHERE e.session_id = s.session_id) AS event_count,
           (SELECT count(*) FROM session_events e WHERE e.session_id = s.session_id
                AND e.onset_corrected_us IS NOT NULL) AS corrected_event_count
    FROM sessions s
"""


def _session_info(row: Any) -> SessionInfo:
    return SessionInfo(
        session_id=row["session_id"],
        user_id=row["user_id"],
        experiment_id=row["experiment_id"],
        device_id=row["device_id"],
        session_type=row["session_type"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        link_status=row["link_status"],
        event_correction_status=row["event_correction_status"],
        event_count=row["event_count"],
        corrected_event_count=row["corrected_event_count"],
    )


@get(
    "/api/v1/sessions/{session_id:str}",
    guards=[require_user],
    tags=["sessions"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_session(session_id: IdParam, ctx: AppContext, identity: Identity) -> SessionInfo:
    """A session's times, statuses and event counts: for the user who recorded
    it and for owners of its experiment."""
    row = await ctx.database.fetchrow(SESSION_QUERY + " WHERE s.session_id = $1", session_id)
    if row is None:
        raise NotFound(f"Session {session_id} not found.")
    await check_session_reader(ctx.database, row, identity.user_id)
    return _session_info(row)


@get(
    "/api/v1/experiments/{experiment_id:str}/sessions",
    guards=[require_role("owner")],
    tags=["sessions"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_sessions(
    experiment_id: UuidParam,
    ctx: AppContext,
    limit: int = Parameter(default=50, ge=1, le=500),
    offset: int = Parameter(default=0, ge=0, le=MAX_OFFSET),
    user_id: str | None = Parameter(default=None, max_length=255, pattern=NO_CONTROL_CHARACTERS),
    session_type: str | None = Parameter(default=None, max_length=50, pattern=NO_CONTROL_CHARACTERS),
) -> SessionPage:
    """An experiment's sessions in start order, paginated (owner)."""
    eid: uuid.UUID = parse_experiment_id(experiment_id)
    where = "WHERE s.experiment_id = $1 AND ($2::text IS NULL OR s.user_id = $2) AND ($3::text IS NULL OR s.session_type = $3)"
    total = await ctx.database.fetchval(f"SELECT count(*) FROM sessions s {where}", eid, user_id, session_type)
    rows = await ctx.database.fetch(
        SESSION_QUERY + f" {where} ORDER BY s.start_time, s.session_id LIMIT $4 OFFSET $5",
        eid,
        user_id,
        session_type,
        limit,
        offset,
    )
    return SessionPage(items=[_session_info(r) for r in rows], total=total, limit=limit, offset=offset)


ROUTES = [start_session, end_session, get_session, list_sessions]
