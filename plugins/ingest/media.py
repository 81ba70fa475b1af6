"""``POST /api/v1/media``: photos and audio recorded during a session.

The file is validated, streamed to the media bucket under a content-addressed
key (two uploads in the same millisecond no longer overwrite each other, spec
§8 item 18), and a small registration message is published; 202 only after
the broker confirmed it. Only ``image/*`` and ``audio/*`` are accepted (the
predecessor filed anything else as audio). The consumer inserts the
``images``/``audio_clips`` row idempotently.

The predecessor's app zstd-compresses photos and audio before upload and
says ``image/jpeg``: a file that is one zstd frame is decompressed (bounded by
``ingest.max_media_bytes``, as packets are) and the real file is stored. A
``session_id`` that belongs to another user is refused (403).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import UploadFile
from litestar.openapi.spec.enums import OpenAPIFormat

from eeghub.core.auth import claimed_identity
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Forbidden, HttpError, PayloadTooLarge, PermanentFailure
from eeghub.core.files import unwrap_zstd
from eeghub.core.http import body_operation, error_responses, file_schema, multipart, text_schema
from eeghub.core.keys import key_segment
from eeghub.core.ports import Delivery, Message

from .routes import Accepted


class MediaJob(msgspec.Struct):
    kind: str
    object_id: str
    user_id: str
    session_id: str
    content_type: str
    size_bytes: int
    sha256: str
    original_filename: str
    timestamp_utc: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


def _field(form: Any, name: str, *, required: bool = True) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise BadRequest(f"{name} must be a text field", issues=[{"field": name, "message": "not text"}])
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required", issues=[{"field": name, "message": "required"}])
        return None
    if len(value) > 255 or any(ord(c) < 32 for c in value):
        raise BadRequest(f"{name} is too long or has control characters", issues=[{"field": name, "message": "invalid"}])
    return value


def _time(form: Any, name: str, required: bool) -> datetime | None:
    text = _field(form, name, required=required)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} is not an ISO 8601 time", issues=[{"field": name, "message": "not ISO 8601"}]) from None
    if value.tzinfo is None:
        raise BadRequest(f"{name} must include a UTC offset", issues=[{"field": name, "message": "offset required"}])
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no UTC datetime exists
        raise BadRequest(f"{name} is out of range once converted to UTC", issues=[{"field": name, "message": "out of range in UTC"}]) from None


async def check_session_owner(ctx: AppContext, session_id: str, user_id: str) -> None:
    """403 when the session exists and was recorded by someone else (its
    media would ship in that experiment's export)."""
    owner = await ctx.database.fetchval("SELECT user_id FROM sessions WHERE session_id = $1", session_id)
    if owner is not None and owner != user_id:
        raise Forbidden("session_id belongs to another user.")


def _extension(name: str) -> str:
    match = re.search(r"(\.[A-Za-z0-9]{1,8})$", name)
    return match.group(1).lower() if match else ""


@post(
    "/api/v1/media",
    tags=["ingest"],
    status_code=202,
    responses=error_responses(400, 401, 403, 413, 415, 503),
    operation_class=body_operation(
        "multipart/form-data: a photo (image/*, with `timestamp_utc`) or an audio recording (audio/*, with "
        "`start_time_utc` and `end_time_utc`) taken during a session. Times are ISO 8601 with a UTC offset.",
        multipart(
            {
                "file": file_schema("The image or audio file"),
                "user_id": text_schema("The caller's user id"),
                "session_id": text_schema("The session it belongs to (optional)"),
                "mimetype": text_schema("image/… or audio/…; anything else is a 415", examples=["image/jpeg"]),
                "original_filename": text_schema("The file's name on the phone (its extension is kept)"),
                "timestamp_utc": text_schema("When the photo was taken (images)", format=OpenAPIFormat.DATE_TIME),
                "start_time_utc": text_schema("When the recording began (audio)", format=OpenAPIFormat.DATE_TIME),
                "end_time_utc": text_schema("When the recording ended (audio)", format=OpenAPIFormat.DATE_TIME),
            },
            ["file", "user_id", "mimetype"],
        ),
    ),
)
async def post_media(request: Request[Any, Any, Any], ctx: AppContext) -> Response[Accepted]:
    """Multipart ``file`` with ``user_id``, ``session_id``, ``mimetype``,
    ``original_filename`` and ``timestamp_utc`` (images) or
    ``start_time_utc``/``end_time_utc`` (audio). The file may be one zstd
    frame (the predecessor's app compresses); the decompressed file is
    stored. In ``compat`` mode a request without ``X-User-Id`` is the form's
    ``user_id``."""
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("`file` field is required", issues=[{"field": "file", "message": "required"}])
    user_id = _field(form, "user_id")
    identity = claimed_identity(request, user_id, "the form's user_id")
    if user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    session_id = _field(form, "session_id")
    assert user_id is not None and session_id is not None
    await check_session_owner(ctx, session_id, user_id)
    mimetype = (_field(form, "mimetype") or "").lower()
    original = _field(form, "original_filename") or ""
    kind = mimetype.split("/", 1)[0]
    if kind not in ("image", "audio"):
        raise HttpError(f"unsupported media type {mimetype!r}: only image/* and audio/*", status_code=415)
    timestamp = _time(form, "timestamp_utc", required=kind == "image")
    start = _time(form, "start_time_utc", required=kind == "audio")
    end = _time(form, "end_time_utc", required=kind == "audio")
    if start and end and end < start:
        raise BadRequest("end_time_utc is before start_time_utc", issues=[{"field": "end_time_utc", "message": "before start"}])
    data = await upload.read(ctx.settings.ingest.max_media_bytes + 1)
    if len(data) > ctx.settings.ingest.max_media_bytes:
        raise PayloadTooLarge(f"file is larger than {ctx.settings.ingest.max_media_bytes} bytes")
    data = await asyncio.to_thread(unwrap_zstd, data, ctx.settings.ingest.max_media_bytes)
    if not data:
        raise BadRequest("file is empty", issues=[{"field": "file", "message": "empty"}])
    sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    when = timestamp or start
    assert when is not None
    label = "photo" if kind == "image" else "audio"
    key = (
        f"media/{key_segment(user_id)}/{key_segment(session_id or '_')}/"
        f"{int(when.timestamp() * 1000)}_{label}_{sha256[:16]}{_extension(original)}"
    )
    await ctx.objects.put_bytes(
        ctx.settings.object_store.buckets.media,
        key,
        data,
        content_type=mimetype,
        metadata={"x-user-id": key_segment(user_id), "x-session-id": key_segment(session_id or "_")},
    )
    job = MediaJob(
        kind=kind,
        object_id=key,
        user_id=user_id,
        session_id=session_id or "",
        content_type=mimetype,
        size_bytes=len(data),
        sha256=sha256,
        original_filename=original,
        timestamp_utc=timestamp,
        start_time=start,
        end_time=end,
    )
    await ctx.broker.publish(
        Message(body=msgspec.json.encode(job), content_type="application/json", message_id=f"media:{key}"),
        queue=ctx.settings.broker.queues.media_processing_queue,
    )
    return Response(Accepted(), status_code=202)


def make_media_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        try:
            job = msgspec.json.decode(delivery.message.body, type=MediaJob)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise PermanentFailure(f"malformed media job: {exc}") from None
        if job.kind == "image":
            await ctx.database.execute(
                """INSERT INTO images (object_id, user_id, session_id, timestamp_utc, content_type, size_bytes, sha256,
                                       original_filename)
                   VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8) ON CONFLICT (object_id) DO NOTHING""",
                job.object_id, job.user_id, job.session_id, job.timestamp_utc, job.content_type, job.size_bytes,
                job.sha256, job.original_filename,
            )
        elif job.kind == "audio":
            await ctx.database.execute(
                """INSERT INTO audio_clips (object_id, user_id, session_id, start_time, end_time, content_type,
                                            size_bytes, sha256, original_filename)
                   VALUES ($1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8, $9) ON CONFLICT (object_id) DO NOTHING""",
                job.object_id, job.user_id, job.session_id, job.start_time, job.end_time, job.content_type,
                job.size_bytes, job.sha256, job.original_filename,
            )
        else:
            raise PermanentFailure(f"unknown media kind {json.dumps(job.kind)}")

    return handle
