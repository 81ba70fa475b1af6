"""Export API, compatible with the predecessor's BIDS exporter (spec §3.9)
and with the app's task list, with authorization on every route."""

from __future__ import annotations

import hmac
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter

from eeghub.core.auth import (
    Identity,
    check_role,
    compat_mode,
    has_valid_link,
    header_identity,
    identity_of,
    parse_experiment_id,
    require_role,
    require_user,
    signed_link,
)
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, HttpError, NotFound, Unauthorized
from eeghub.core.files import stream_object
from eeghub.core.http import UuidParam, error_responses
from eeghub.core.outbox import enqueue_json


class ExportAccepted(msgspec.Struct):
    task_id: uuid.UUID
    status: str
    message: str
    status_url: str


class ExportTask(msgspec.Struct):
    task_id: uuid.UUID
    experiment_id: uuid.UUID
    status: str
    progress: int
    stage: str | None
    sessions_done: int
    sessions_total: int
    bytes_done: int
    size_bytes: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result_file_path: str | None
    error_message: str | None
    validation: dict[str, Any] | None
    download_url: str | None
    report: dict[str, Any] | None = None
    """What the export did per session: exported sessions (with undecodable
    or inconsistent objects), skipped sessions with the reason, missing
    stimuli. Only for owners, and only from ``GET /export-tasks/{id}``: it
    names every participant's sessions, and it can be large."""


def _participant_view(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validator's counts without its issues (their locations name
    subjects and sessions)."""
    if validation is None:
        return None
    return {k: v for k, v in validation.items() if k != "issues"}


def _task(request: Any, row: Any, *, owner: bool, with_report: bool = False) -> ExportTask:
    """``owner``: the owner's view. Participants see status, progress and
    counts, not the per-session detail (the validator's issue locations, an
    error message that names sessions). The report only with ``with_report``
    (an owner reading one task). ``download_url`` is a signed link in ``jwt``
    mode for owners (a browser opens it without the token), the plain path
    (owners only) for anyone else."""
    download = f"/api/v1/export-tasks/{row['task_id']}/download"
    return ExportTask(
        task_id=row["task_id"],
        experiment_id=row["experiment_id"],
        status=row["status"],
        progress=row["progress"],
        stage=row["stage"],
        sessions_done=row["sessions_done"],
        sessions_total=row["sessions_total"],
        bytes_done=row["bytes_done"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result_file_path=row["result_file_path"],
        error_message=row["error_message"]
        if owner or row["error_message"] is None
        else "The export failed; an owner of the experiment can see why.",
        validation=row["validation"] if owner else _participant_view(row["validation"]),
        # Signed only for owners: a signed link opens the archive (every
        # participant's recordings) without any identity.
        download_url=(signed_link(request, download) if owner else download) if _downloadable(row) else None,
        report=row["report"] if owner and with_report else None,
    )


def _downloadable(row: Any) -> bool:
    """Completed, or failed with its archive kept for inspection (validator
    errors, or a validator that could not run)."""
    return bool(row["result_file_path"]) and row["status"] in ("completed", "failed")


ARCHIVE_SLUG_CHARS = 60


def archive_name(experiment_name: str | None, task_id: uuid.UUID) -> str:
    """The download's file name: a slug of the experiment's name (letters and
    digits of any script, other runs as ``-``, at most 60 characters) and the
    first 8 hex digits of the task id, e.g. ``visual-oddball-2025-3f2a9c1e.zip``."""
    text = unicodedata.normalize("NFKC", experiment_name or "")
    slug = re.sub(r"-+", "-", "".join(ch if ch.isalnum() else "-" for ch in text)).strip("-").lower()
    slug = slug[:ARCHIVE_SLUG_CHARS].rstrip("-") or "experiment"
    return f"{slug}-{task_id.hex[:8]}.zip"


def _task_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest("task_id must be a UUID") from None


@post(
    "/api/v1/experiments/{experiment_id:str}/export",
    guards=[require_role("owner")],
    tags=["export"],
    status_code=202,
    responses=error_responses(400, 401, 403, 404, 503),
)
async def start_export(experiment_id: UuidParam, ctx: AppContext, identity: Identity) -> ExportAccepted:
    """Export the experiment as a BIDS dataset (owner). The task runs in the
    background; poll ``status_url``."""
    eid = parse_experiment_id(experiment_id)
    task_id = uuid.uuid4()
    async with ctx.database.transaction() as conn:
        await conn.execute(
            """INSERT INTO export_tasks (task_id, experiment_id, status, progress, requested_by, stage)
               VALUES ($1, $2, 'pending', 0, $3, 'queued')""",
            task_id,
            eid,
            identity.user_id,
        )
        await enqueue_json(
            conn, {"task_id": str(task_id), "experiment_id": str(eid)}, queue=ctx.settings.broker.queues.export_queue
        )
    ctx.outbox.wake()
    return ExportAccepted(
        task_id=task_id,
        status="pending",
        message="BIDS export task has been accepted and is running in the background.",
        status_url=f"/api/v1/export-tasks/{task_id}",
    )


async def _member_task(ctx: AppContext, task_id: str, identity: Identity, role: str = "participant") -> Any:
    row, _ = await _member_task_and_role(ctx, task_id, identity, role)
    return row


async def _member_task_and_role(
    ctx: AppContext, task_id: str, identity: Identity, role: str = "participant"
) -> tuple[Any, str]:
    row = await ctx.database.fetchrow("SELECT * FROM export_tasks WHERE task_id = $1", _task_id(task_id))
    if row is None:
        raise NotFound("Task not found")
    held = await check_role(ctx.database, row["experiment_id"], identity.user_id, role)  # type: ignore[arg-type]
    return row, held


@get(
    "/api/v1/export-tasks/{task_id:str}",
    tags=["export"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_export_task(task_id: UuidParam, request: Request[Any, Any, Any], ctx: AppContext) -> ExportTask:
    """Status and progress of an export (members of its experiment); the
    per-session ``report`` only for owners. In ``compat`` mode a request
    without ``X-User-Id`` gets the participant's view of the task it names
    (the predecessor answered anyone holding the task id)."""
    identity = header_identity(request)
    if identity is None and compat_mode(request):
        row = await ctx.database.fetchrow("SELECT * FROM export_tasks WHERE task_id = $1", _task_id(task_id))
        if row is None:
            raise NotFound("Task not found")
        return _task(request, row, owner=False)
    row, role = await _member_task_and_role(ctx, task_id, identity or identity_of(request))
    return _task(request, row, owner=role == "owner", with_report=True)


@get(
    "/api/v1/export-tasks",
    guards=[require_user],
    tags=["export"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_export_tasks(
    request: Request[Any, Any, Any],
    ctx: AppContext,
    identity: Identity,
    experiment_id: str | None = Parameter(
        default=None, description="an experiment UUID; a malformed one is a 400", schema_extra={"format": "uuid"}
    ),
    limit: int = Parameter(default=50, ge=1, le=500),
) -> list[ExportTask]:
    """Export tasks, newest first: of one experiment, or of every experiment
    the caller belongs to (the app calls ``?limit=50``)."""
    if experiment_id is not None:
        eid = parse_experiment_id(experiment_id)
        role = await check_role(ctx.database, eid, identity.user_id, "participant")
        rows = await ctx.database.fetch(
            "SELECT t.*, $3::text AS caller_role FROM export_tasks t WHERE experiment_id = $1"
            " ORDER BY created_at DESC LIMIT $2",
            eid,
            limit,
            role,
        )
    else:
        rows = await ctx.database.fetch(
            """SELECT t.*, p.role AS caller_role FROM export_tasks t JOIN experiment_participants p
                 ON p.experiment_id = t.experiment_id AND p.user_id = $1
               ORDER BY t.created_at DESC LIMIT $2""",
            identity.user_id,
            limit,
        )
    return [_task(request, r, owner=r["caller_role"] == "owner") for r in rows]


@get(
    "/api/v1/export-tasks/{task_id:str}/download",
    tags=["export"],
    responses=error_responses(400, 401, 403, 404, 416, 503),
)
async def download_export(task_id: UuidParam, request: Request[Any, Any, Any], ctx: AppContext) -> Response[Any]:
    """The export's ZIP (owner), streamed with ``Content-Length`` and HTTP
    ``Range``, named after the experiment (``<slug>-<task id prefix>.zip``);
    also a failed export's kept archive. A storage error is an error status,
    never a truncated 200. Without a header or token: the signed
    ``download_url`` of the task status (``jwt``), or, in ``compat`` mode,
    anyone holding the task id (the app opens this link in the phone's
    browser)."""
    identity = header_identity(request)
    if identity is None and (has_valid_link(request) or compat_mode(request)):
        row = await ctx.database.fetchrow("SELECT * FROM export_tasks WHERE task_id = $1", _task_id(task_id))
        if row is None:
            raise NotFound("Task not found")
    else:
        row = await _member_task(ctx, task_id, identity or identity_of(request), role="owner")
    if not _downloadable(row):
        raise BadRequest(f"Task is not complete. Current status: {row['status']}")
    name = await ctx.database.fetchval("SELECT name FROM experiments WHERE experiment_id = $1", row["experiment_id"])
    return await stream_object(
        ctx.objects,
        ctx.settings.object_store.buckets.bids_exports,
        row["result_file_path"],
        file_name=archive_name(name, row["task_id"]),
        content_type="application/zip",
        inline=False,
        range_header=request.headers.get("range"),
        not_found="the export's archive is missing from storage",
    )


class InternalBuild(msgspec.Struct):
    experiment_id: str


class InternalBuilt(msgspec.Struct):
    experiment_id: str
    bids_path: str
    message: str
    validation: dict[str, Any] | None


async def require_internal_token(connection: Any, _: Any) -> None:
    """Guard: the internal token, checked before the body is read (guards run
    before Litestar decodes ``data``)."""
    cfg = connection.app.state.ctx.settings.export
    if not cfg.internal_api_enabled:
        raise HttpError("the internal API is disabled (export.internal_api_enabled)", status_code=404)
    if not cfg.internal_token:
        raise HttpError("the internal API needs export.internal_token to be configured", status_code=403)
    supplied = connection.headers.get("x-internal-token") or ""
    authorization = connection.headers.get("authorization") or ""
    if authorization.lower().startswith("bearer "):
        supplied = supplied or authorization[7:].strip()
    if not supplied or not hmac.compare_digest(supplied.encode(), cfg.internal_token.encode()):
        raise Unauthorized("a valid internal token is required (X-Internal-Token or Authorization: Bearer)")


@post(
    "/internal/v1/create-bids-for-analysis",
    guards=[require_internal_token],
    tags=["export"],
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 413, 503),
)
async def internal_build(data: InternalBuild, ctx: AppContext) -> InternalBuilt:
    """Build the experiment's uncompressed BIDS tree in the export output
    directory for an analysis service (internal token required). Runs off
    the event loop; concurrent builds never share a directory."""
    from .runner import build_for_analysis

    eid = parse_experiment_id(data.experiment_id)
    path, validation = await build_for_analysis(ctx, eid)
    unvalidated = validation.get("validator_error")
    return InternalBuilt(
        experiment_id=str(eid),
        bids_path=str(path),
        message="BIDS dataset created successfully for analysis."
        if not unvalidated
        else "BIDS dataset created for analysis, but it could not be validated (see validation.validator_error).",
        validation=validation,
    )


ROUTES = [start_export, get_export_task, list_export_tasks, download_export, internal_build]
