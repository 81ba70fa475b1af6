"""The stimulus registration job (``stimulus_asset_queue``).

The upload request has already stored every file; the job upserts the
``experiment_stimuli`` rows in one transaction and records progress. It is
idempotent: running it twice leaves the same rows. A message that can never
succeed (malformed, or its experiment was deleted) is dead-lettered at once
instead of looping (spec §8 item 10).
"""

from __future__ import annotations

import logging
import uuid

import msgspec

from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure
from eeghub.core.files import media_kind
from eeghub.core.ports import Delivery

log = logging.getLogger("eeghub.stimulus")


class JobItem(msgspec.Struct):
    file_name: str
    object_id: str
    content_type: str
    size_bytes: int
    sha256: str
    trial_type: str
    description: str | None = None
    item_name: str | None = None
    brand_name: str | None = None
    category: str | None = None
    gender: str | None = None
    extra: dict[str, str] = {}


class Job(msgspec.Struct):
    job_id: uuid.UUID
    experiment_id: uuid.UUID
    items: list[JobItem]


UPSERT = """
INSERT INTO experiment_stimuli (experiment_id, file_name, stimulus_type, trial_type, description, item_name,
                                brand_name, category, gender, object_id, content_type, size_bytes, sha256, extra)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
ON CONFLICT (experiment_id, file_name) DO UPDATE SET
    stimulus_type = EXCLUDED.stimulus_type, trial_type = EXCLUDED.trial_type, description = EXCLUDED.description,
    item_name = EXCLUDED.item_name, brand_name = EXCLUDED.brand_name, category = EXCLUDED.category,
    gender = EXCLUDED.gender, object_id = EXCLUDED.object_id, content_type = EXCLUDED.content_type,
    size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, extra = EXCLUDED.extra, updated_at = NOW()
"""


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    max_attempts = ctx.settings.broker.max_attempts  # the consumer's (see __init__)

    async def handle(delivery: Delivery) -> None:
        try:
            job = msgspec.json.decode(delivery.message.body, type=Job)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PermanentFailure(f"malformed stimulus job: {exc}") from None
        try:
            await register(job)
        except Exception as exc:
            if isinstance(exc, PermanentFailure) or delivery.attempt >= max_attempts:
                # Its last attempt: the message goes to the dead letters, and
                # the job must not stay "pending" for whoever polls it (the
                # transaction that set "processing" was rolled back). A
                # replay of the dead letter runs it again from here.
                await mark_failed(job, exc, delivery.attempt)
            raise

    async def mark_failed(job: Job, exc: BaseException, attempts: int) -> None:
        # The owner sees this message: the kind of failure, not its text
        # (which may quote SQL or storage internals; the log has it).
        reason = str(exc) if isinstance(exc, PermanentFailure) else f"{type(exc).__name__} (after {attempts} attempts)"
        log.warning("stimulus job %s failed for good: %s", job.job_id, exc)
        try:
            await ctx.database.execute(
                "UPDATE stimulus_jobs SET status = 'failed', error_message = $2, updated_at = NOW() WHERE job_id = $1",
                job.job_id,
                f"registration failed: {reason}",
            )
        except Exception as db_exc:  # noqa: BLE001 - the dead letter is what matters
            log.warning("could not mark stimulus job %s failed: %s", job.job_id, db_exc)

    async def register(job: Job) -> None:
        bucket = ctx.settings.object_store.buckets.media
        superseded: list[str] = []
        async with ctx.database.transaction() as conn:
            exists = await conn.fetchval("SELECT 1 FROM experiments WHERE experiment_id = $1", job.experiment_id)
            if not exists:  # its jobs went with it (ON DELETE CASCADE)
                raise PermanentFailure(f"experiment {job.experiment_id} no longer exists")
            await conn.execute(
                "UPDATE stimulus_jobs SET status = 'processing', updated_at = NOW() WHERE job_id = $1", job.job_id
            )
            for item in job.items:
                old = await conn.fetchval(
                    "SELECT object_id FROM experiment_stimuli WHERE experiment_id = $1 AND file_name = $2 FOR UPDATE",
                    job.experiment_id,
                    item.file_name,
                )
                if old and old != item.object_id:
                    superseded.append(old)
                await conn.execute(
                    UPSERT,
                    job.experiment_id,
                    item.file_name,
                    media_kind(item.content_type),
                    item.trial_type,
                    item.description,
                    item.item_name,
                    item.brand_name,
                    item.category,
                    item.gender,
                    item.object_id,
                    item.content_type,
                    item.size_bytes,
                    item.sha256,
                    item.extra,
                )
            await conn.execute(
                """UPDATE stimulus_jobs SET status = 'completed', processed_files = total_files,
                          error_message = NULL, updated_at = NOW() WHERE job_id = $1""",
                job.job_id,
            )
        for key in superseded:
            still_used = await ctx.database.fetchval("SELECT 1 FROM experiment_stimuli WHERE object_id = $1", key)
            if not still_used:
                try:
                    await ctx.objects.delete(bucket, key)
                except Exception:  # noqa: BLE001 - only storage is wasted
                    log.warning("could not delete superseded stimulus object %s", key)
        log.info("stimulus job %s: %d stimuli registered", job.job_id, len(job.items))

    return handle
