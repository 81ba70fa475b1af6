"""Running experiment analyses as jobs.

``POST`` inserts an ``erp_analysis_results`` row (``pending``) and, in the
same transaction, a job message in the outbox (``core/outbox.py``) for
``experiment_analysis_queue``. The consumer (``neuro_marketing.
max_concurrent_analyses`` deliveries at once) runs the analysis's ``run``
in a worker thread; the event loop only reads data and writes progress. The
analysis pulls participants one at a time: each is read (on the loop) when
the thread asks for it, so one participant's recordings are in memory at a
time. A crash or a shut-down mid-analysis leaves the message unacknowledged:
the broker delivers it again and the analysis restarts from the beginning
(the row goes back to ``processing``). A job whose row is already
``completed`` or ``failed`` is acknowledged and skipped. An analysis that
raises is ``failed`` with the reason, never left ``processing``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from eeghub.core.context import AppContext
from eeghub.core.errors import PermanentFailure
from eeghub.core.experiment_analysis import ExperimentData, check_experiment_analysis
from eeghub.core.ports import Delivery

from . import loader

log = logging.getLogger("eeghub.erp")


class Job(msgspec.Struct):
    analysis_id: int
    experiment_id: uuid.UUID
    kind: str = "erp"


def analyses(ctx: AppContext) -> dict[str, Any]:
    """Every experiment analysis the plugins contribute, by id (malformed
    ones are logged and left out)."""
    found: dict[str, Any] = {}
    for plugin, result in ctx.host.call_each("eeghub_experiment_analyses", ctx=ctx):
        for analysis in result or []:
            problems = check_experiment_analysis(analysis)
            if problems:
                log.error("experiment analysis from plugin %s ignored: %s", plugin, "; ".join(problems))
            elif analysis.id in found:
                log.error("experiment analysis %r from plugin %s ignored: the id is taken", analysis.id, plugin)
            else:
                found[analysis.id] = analysis
    return found


async def update(ctx: AppContext, analysis_id: int, **fields: Any) -> None:
    columns = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(fields))
    await ctx.database.execute(
        f"UPDATE erp_analysis_results SET {columns}, updated_at = NOW() WHERE analysis_id = $1",  # noqa: S608 - fixed names
        analysis_id,
        *fields.values(),
    )


def recommendation_rows(files: list[str], stimuli: list[Any]) -> list[dict[str, Any]]:
    """The predecessor's recommendation objects, filled from the stimulus list."""
    by_name = {s.file_name: s for s in stimuli}
    rows = []
    for name in files:
        s = by_name.get(name)
        rows.append({
            "file_name": name,
            "item_name": getattr(s, "item_name", None),
            "brand_name": getattr(s, "brand_name", None),
            "description": getattr(s, "description", None),
            "category": getattr(s, "category", None),
            "gender": getattr(s, "gender", None),
        })
    return rows


async def run_job(ctx: AppContext, job: Job) -> None:
    row = await ctx.database.fetchrow("SELECT status FROM erp_analysis_results WHERE analysis_id = $1", job.analysis_id)
    if row is None:
        raise PermanentFailure(f"analysis {job.analysis_id} does not exist")
    if row["status"] in ("completed", "failed"):
        return  # a redelivered job that already finished
    analysis = analyses(ctx).get(job.kind)
    if analysis is None:
        await update(ctx, job.analysis_id, status="failed", error_message=f"no experiment analysis named {job.kind!r}")
        return
    await update(ctx, job.analysis_id, status="processing", stage="reading the experiment", progress=1,
                 started_at=datetime.now(UTC), error_message=None)
    loop = asyncio.get_running_loop()
    try:
        stimuli, sessions = await loader.experiment_inputs(ctx, job.experiment_id)

        def load(user_id: str) -> Any:
            # The sessions the analysis counted on when it read the experiment.
            ids = [s.session_id for s in sessions if s.user_id == user_id and loader.analysed(s)]
            return asyncio.run_coroutine_threadsafe(loader.load_participant(ctx, job.experiment_id, user_id, ids), loop).result()

        def progress(fraction: float, stage: str) -> None:
            percent = max(1, min(99, round(100 * fraction)))
            # Waited for, so that no progress lands after the final update.
            future = asyncio.run_coroutine_threadsafe(update(ctx, job.analysis_id, progress=percent, stage=stage[:200]), loop)
            try:
                future.result(timeout=30)
            except Exception as exc:  # noqa: BLE001 - progress is informative; the analysis goes on
                log.warning("analysis %s: progress not recorded: %s", job.analysis_id, exc)

        table = dict(ctx.settings.plugin.get(job.kind, {}))
        data = ExperimentData(
            experiment_id=str(job.experiment_id),
            stimuli=stimuli,
            sessions=sessions,
            participant_ids=loader.participants_of(sessions),
            load=load,
            progress=progress,
            settings=table,
        )
        outcome = await asyncio.to_thread(analysis.run, data)
        result_data = {
            "summary": outcome.summary,
            "recommendations": recommendation_rows(list(outcome.recommendations), stimuli),
            "outcome": outcome.status,
            "missing": list(outcome.missing),
            "details": outcome.result,
        }
        await update(ctx, job.analysis_id, status="completed", progress=100, stage="done", result_data=result_data,
                     completed_at=datetime.now(UTC))
        log.info("analysis %s (%s) of experiment %s: %s", job.analysis_id, job.kind, job.experiment_id, outcome.status)
    except asyncio.CancelledError:
        raise  # shut-down: the message is redelivered and the analysis restarts
    except Exception as exc:
        log.exception("analysis %s failed", job.analysis_id)
        await update(ctx, job.analysis_id, status="failed", error_message=f"{type(exc).__name__}: {exc}"[:1000],
                     completed_at=datetime.now(UTC))


def make_handler(ctx: AppContext):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> None:
        try:
            job = msgspec.json.decode(delivery.message.body, type=Job)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise PermanentFailure(f"malformed analysis job: {exc}") from None
        await run_job(ctx, job)

    return handle
