"""Stimulus upload, listing and download; calibration items."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType

from eeghub.core.auth import Identity, is_admin, parse_experiment_id, require_role, require_user, require_user_or_link, signed_link
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from eeghub.core.files import content_type_for, media_kind, stream_object, validate_file_name
from eeghub.core.http import IdParam, UuidParam, body_operation, error_responses, file_schema, multipart, text_schema
from eeghub.core.outbox import enqueue_json

from .definitions import parse_definitions
from .storage import calibration_key, file_size, sha256_of, stimulus_key, store_file

log = logging.getLogger("eeghub.stimulus")


class Accepted(msgspec.Struct):
    message: str
    job_id: uuid.UUID
    status_url: str


class Stimulus(msgspec.Struct):
    stimulus_id: int
    file_name: str
    stimulus_type: str
    trial_type: str | None
    description: str | None
    item_name: str | None
    brand_name: str | None
    category: str | None
    gender: str | None
    content_type: str | None
    size_bytes: int | None
    extra: dict[str, str]
    download_url: str
    """Where to fetch the file; a short-lived signed link in ``jwt`` mode, so
    a browser can open it without the token."""


class StimulusJob(msgspec.Struct):
    job_id: uuid.UUID
    experiment_id: uuid.UUID
    status: str
    total_files: int
    processed_files: int
    progress: int
    error_message: str | None
    created_at: Any
    updated_at: Any


class CalibrationItem(msgspec.Struct):
    item_id: int
    file_name: str
    item_type: str
    description: str | None
    download_url: str | None = None
    """As for stimuli: a short-lived signed link in ``jwt`` mode."""


def _files(form: Any, field: str) -> list[UploadFile]:
    return [v for v in form.getall(field, []) if isinstance(v, UploadFile)] if hasattr(form, "getall") else []


@post(
    "/api/v1/experiments/{experiment_id:str}/stimuli",
    guards=[require_role("owner")],
    tags=["stimuli"],
    status_code=202,
    responses=error_responses(400, 401, 403, 404, 413, 503),
    operation_class=body_operation(
        "multipart/form-data: one `stimuli_definition_csv` and the `stimulus_files` it names.",
        multipart(
            {
                "stimuli_definition_csv": file_schema(
                    "UTF-8 CSV with a header row. Required columns: `file_name`, `trial_type`; known optional "
                    "columns: `description`, `item_name`, `brand_name`, `category`, `gender`; any other column is "
                    "kept as extra data. Its file_name values and the uploaded file names must match exactly."
                ),
                "stimulus_files": Schema(
                    type=OpenAPIType.ARRAY,
                    items=file_schema("A stimulus file, named as in the CSV"),
                    description="The stimulus files (repeat the part once per file)",
                ),
            },
            ["stimuli_definition_csv", "stimulus_files"],
        ),
    ),
)
async def upload_stimuli(
    experiment_id: UuidParam, request: Request[Any, Any, Any], ctx: AppContext, identity: Identity
) -> Accepted:
    """Register stimuli (owner): multipart ``stimuli_definition_csv`` (one
    file) and ``stimulus_files`` (repeated). The CSV's ``file_name`` values and
    the uploaded file names must match exactly. Files are stored at once; the
    rows are registered by a job whose progress ``status_url`` reports."""
    eid = parse_experiment_id(experiment_id)
    limits = ctx.settings.stimulus
    form = await request.form()
    csv_files = _files(form, "stimuli_definition_csv")
    uploads = _files(form, "stimulus_files")
    if len(csv_files) != 1 or not uploads:
        raise BadRequest("stimuli_definition_csv and stimulus_files are required.")
    csv_data = await csv_files[0].read(10 * 1024 * 1024 + 1)
    if len(csv_data) > 10 * 1024 * 1024:
        raise PayloadTooLarge("stimuli_definition_csv is larger than 10 MiB")
    definitions = parse_definitions(csv_data)
    if len(uploads) > limits.max_files:
        raise PayloadTooLarge(f"at most {limits.max_files} stimulus files per upload")

    by_name: dict[str, UploadFile] = {}
    total = 0
    for upload in uploads:
        name = validate_file_name(upload.filename or "", field="stimulus_files")
        if name in by_name:
            raise BadRequest(f"duplicate file name {name!r} in stimulus_files", issues=[{"field": "stimulus_files", "message": f"duplicate {name!r}"}])
        size = file_size(upload.file)
        if size == 0:
            raise BadRequest(f"stimulus file {name!r} is empty", issues=[{"field": "stimulus_files", "message": f"{name!r} is empty"}])
        if size > limits.max_file_bytes:
            raise PayloadTooLarge(f"stimulus file {name!r} is larger than {limits.max_file_bytes} bytes")
        total += size
        by_name[name] = upload
    if total > limits.max_total_bytes:
        raise PayloadTooLarge(f"stimulus files total more than {limits.max_total_bytes} bytes")
    defined = {d.file_name for d in definitions}
    missing, extra = sorted(defined - set(by_name)), sorted(set(by_name) - defined)
    if missing or extra:
        issues = [{"field": "stimulus_files", "message": f"{n!r} is in the CSV but was not uploaded"} for n in missing]
        issues += [{"field": "stimuli_definition_csv", "message": f"{n!r} was uploaded but is not in the CSV"} for n in extra]
        raise BadRequest("Mismatch between file names in CSV and uploaded files.", issues=issues[:50])

    bucket = ctx.settings.object_store.buckets.media
    items: list[dict[str, Any]] = []
    stored: list[str] = []
    try:
        for definition in definitions:
            upload = by_name[definition.file_name]
            digest = await sha256_of(upload.file)
            key = stimulus_key(eid, digest, definition.file_name)
            content_type = await store_file(
                ctx.objects, bucket, key, upload.file, file_name=definition.file_name, client_type=upload.content_type
            )
            stored.append(key)
            items.append(
                {
                    "file_name": definition.file_name,
                    "object_id": key,
                    "content_type": content_type,
                    "size_bytes": file_size(upload.file),
                    "sha256": digest,
                    "trial_type": definition.trial_type,
                    "description": definition.description,
                    "item_name": definition.item_name,
                    "brand_name": definition.brand_name,
                    "category": definition.category,
                    "gender": definition.gender,
                    "extra": definition.extra,
                }
            )
        job_id = uuid.uuid4()
        async with ctx.database.transaction() as conn:
            await conn.execute(
                """INSERT INTO stimulus_jobs (job_id, experiment_id, requested_by, total_files)
                   VALUES ($1, $2, $3, $4)""",
                job_id,
                eid,
                identity.user_id,
                len(items),
            )
            await enqueue_json(
                conn,
                {"job_id": str(job_id), "experiment_id": str(eid), "items": items},
                queue=ctx.settings.broker.queues.stimulus_asset_queue,
            )
    except BaseException:
        # Objects of an upload that was not accepted are garbage; rows that
        # already point at identical content keep it (same key).
        await _delete_unreferenced(ctx, bucket, stored)
        raise
    ctx.outbox.wake()
    return Accepted(
        message="Stimuli registration request accepted and is being processed.",
        job_id=job_id,
        status_url=f"/api/v1/experiments/{eid}/stimuli/jobs/{job_id}",
    )


async def _delete_unreferenced(ctx: AppContext, bucket: str, keys: list[str]) -> None:
    for key in keys:
        try:
            used = await ctx.database.fetchval("SELECT 1 FROM experiment_stimuli WHERE object_id = $1", key)
            if not used:
                await ctx.objects.delete(bucket, key)
        except Exception:  # noqa: BLE001 - best effort cleanup
            log.warning("could not clean up stimulus object %s", key)


@get(
    "/api/v1/experiments/{experiment_id:str}/stimuli/jobs/{job_id:str}",
    guards=[require_role("owner")],
    tags=["stimuli"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_stimulus_job(experiment_id: UuidParam, job_id: UuidParam, ctx: AppContext) -> StimulusJob:
    """Progress of a stimulus registration job (owner)."""
    try:
        jid = uuid.UUID(job_id)
    except ValueError:
        raise BadRequest("job_id must be a UUID") from None
    row = await ctx.database.fetchrow(
        "SELECT * FROM stimulus_jobs WHERE job_id = $1 AND experiment_id = $2", jid, parse_experiment_id(experiment_id)
    )
    if row is None:
        raise NotFound("Stimulus job not found")
    progress = 100 if row["status"] == "completed" else int(100 * row["processed_files"] / max(row["total_files"], 1))
    return StimulusJob(
        job_id=row["job_id"],
        experiment_id=row["experiment_id"],
        status=row["status"],
        total_files=row["total_files"],
        processed_files=row["processed_files"],
        progress=progress,
        error_message=row["error_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@get(
    "/api/v1/experiments/{experiment_id:str}/stimuli",
    guards=[require_role("participant")],
    tags=["stimuli"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_stimuli(experiment_id: UuidParam, request: Request[Any, Any, Any], ctx: AppContext) -> list[Stimulus]:
    """The experiment's stimuli by file name (members), each with its
    ``download_url``."""
    eid = parse_experiment_id(experiment_id)
    rows = await ctx.database.fetch(
        """SELECT stimulus_id, file_name, stimulus_type, trial_type, description, item_name, brand_name,
                  category, gender, content_type, size_bytes, extra
           FROM experiment_stimuli WHERE experiment_id = $1 ORDER BY file_name""",
        eid,
    )
    return [
        Stimulus(
            **{**dict(r), "extra": r["extra"] or {}},
            download_url=signed_link(request, f"/api/v1/stimuli/{eid}/download/{r['file_name']}"),
        )
        for r in rows
    ]


@get(
    "/api/v1/stimuli/{experiment_id:str}/download/{filename:str}",
    guards=[require_role("participant", or_link=True)],
    tags=["stimuli"],
    responses=error_responses(400, 401, 403, 404, 416, 503),
)
async def download_stimulus(
    experiment_id: UuidParam, filename: IdParam, request: Request[Any, Any, Any], ctx: AppContext
) -> Response[Any]:
    """Stream a stimulus (members, or a signed link from the stimulus list in
    ``jwt`` mode); falls back to a calibration item of that name, as the
    predecessor did."""
    row = await ctx.database.fetchrow(
        """SELECT object_id, content_type, stimulus_type FROM experiment_stimuli
           WHERE experiment_id = $1 AND file_name = $2
           UNION ALL
           SELECT object_id, content_type, 'image' FROM calibration_items WHERE file_name = $2
           LIMIT 1""",
        parse_experiment_id(experiment_id),
        filename,
    )
    if row is None or not row["object_id"]:
        raise NotFound("Stimulus not found")
    return await stream_object(
        ctx.objects,
        ctx.settings.object_store.buckets.media,
        row["object_id"],
        file_name=filename,
        content_type=row["content_type"] or content_type_for(filename, f"{row['stimulus_type']}/*"),
        range_header=request.headers.get("range"),
        not_found="Stimulus not found",
    )


@get("/api/v1/calibrations", guards=[require_user], tags=["calibration"], responses=error_responses(401, 503))
async def list_calibrations(request: Request[Any, Any, Any], ctx: AppContext) -> list[CalibrationItem]:
    """Calibration items (global, not per experiment) by file name, each
    with its ``download_url``."""
    rows = await ctx.database.fetch(
        "SELECT item_id, file_name, item_type, description FROM calibration_items ORDER BY file_name"
    )
    return [_with_link(request, CalibrationItem(**dict(r))) for r in rows]


def _with_link(request: Any, item: CalibrationItem) -> CalibrationItem:
    return msgspec.structs.replace(
        item, download_url=signed_link(request, f"/api/v1/stimuli/calibration/download/{item.file_name}")
    )


@get(
    "/api/v1/stimuli/calibration/download/{filename:str}",
    guards=[require_user_or_link],
    tags=["calibration"],
    responses=error_responses(400, 401, 404, 416, 503),
)
async def download_calibration(filename: IdParam, request: Request[Any, Any, Any], ctx: AppContext) -> Response[Any]:
    """Stream a calibration item."""
    row = await ctx.database.fetchrow(
        "SELECT object_id, content_type FROM calibration_items WHERE file_name = $1", filename
    )
    if row is None or not row["object_id"]:
        raise NotFound("Calibration stimulus not found")
    return await stream_object(
        ctx.objects,
        ctx.settings.object_store.buckets.media,
        row["object_id"],
        file_name=filename,
        content_type=row["content_type"] or content_type_for(filename, "image/*"),
        range_header=request.headers.get("range"),
        not_found="Calibration stimulus not found",
    )


async def register_calibration_item(
    ctx: AppContext, *, file_name: str, handle: Any, item_type: str, description: str | None, client_type: str | None = None
) -> CalibrationItem:
    """Store a calibration file and upsert its ``calibration_items`` row
    (used by the admin API and by ``eeghub calibration add``)."""
    validate_file_name(file_name, field="file")
    if not item_type or len(item_type) > 50 or any(ord(c) < 32 or ord(c) == 127 for c in item_type):
        raise BadRequest(
            "item_type is required (at most 50 characters, no control characters)",
            issues=[{"field": "item_type", "message": "required, at most 50 characters, no control characters"}],
        )
    if description is not None and "\x00" in description:
        raise BadRequest("description contains NUL", issues=[{"field": "description", "message": "contains NUL"}])
    size = file_size(handle)
    if size == 0:
        raise BadRequest("file is empty", issues=[{"field": "file", "message": "empty"}])
    if size > ctx.settings.stimulus.max_file_bytes:
        raise PayloadTooLarge(f"file is larger than {ctx.settings.stimulus.max_file_bytes} bytes")
    digest = await sha256_of(handle)
    bucket = ctx.settings.object_store.buckets.media
    key = calibration_key(digest, file_name)
    content_type = await store_file(ctx.objects, bucket, key, handle, file_name=file_name, client_type=client_type)
    old = await ctx.database.fetchval("SELECT object_id FROM calibration_items WHERE file_name = $1", file_name)
    row = await ctx.database.fetchrow(
        """INSERT INTO calibration_items (file_name, item_type, description, object_id, content_type, size_bytes, sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (file_name) DO UPDATE SET item_type = EXCLUDED.item_type, description = EXCLUDED.description,
               object_id = EXCLUDED.object_id, content_type = EXCLUDED.content_type,
               size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256
           RETURNING item_id, file_name, item_type, description""",
        file_name,
        item_type,
        description,
        key,
        content_type,
        size,
        digest,
    )
    if old and old != key:
        await ctx.objects.delete(bucket, old)
    return CalibrationItem(**dict(row))  # type: ignore[arg-type]


@post(
    "/api/v1/calibrations",
    guards=[require_user],
    tags=["calibration"],
    status_code=201,
    responses=error_responses(400, 401, 403, 413, 503),
    operation_class=body_operation(
        "multipart/form-data: the calibration item's `file` (its file name is the item's name; one with the "
        "same name is replaced), `item_type` and an optional `description`.",
        multipart(
            {
                "file": file_schema("The calibration stimulus (an image)"),
                "item_type": text_schema("What the item is in the calibration task", examples=["target", "nontarget"]),
                "description": text_schema("Free text"),
            },
            ["file", "item_type"],
        ),
    ),
)
async def add_calibration(request: Request[Any, Any, Any], ctx: AppContext, identity: Identity) -> CalibrationItem:
    """Register or replace a calibration item (administrators, listed in
    ``auth.admin_users``): multipart ``file``, ``item_type``, ``description``."""
    if not is_admin(identity, ctx.settings.auth):
        raise Forbidden(
            f"Forbidden: only administrators may register calibration items ({identity.user_id} is not in "
            "auth.admin_users; on the server's machine, `eeghub calibration add` uses the local administrator token)"
        )
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("file is required", issues=[{"field": "file", "message": "required"}])
    item_type = form.get("item_type")
    description = form.get("description")
    item = await register_calibration_item(
        ctx,
        file_name=upload.filename or "",
        handle=upload.file,
        item_type=item_type if isinstance(item_type, str) else "",
        description=description if isinstance(description, str) and description else None,
        client_type=upload.content_type,
    )
    return _with_link(request, item)


ROUTES = [
    upload_stimuli,
    get_stimulus_job,
    list_stimuli,
    download_stimulus,
    list_calibrations,
    download_calibration,
    add_calibration,
]
__all__ = ["ROUTES", "media_kind", "register_calibration_item"]
