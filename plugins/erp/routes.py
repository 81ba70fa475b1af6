"""The neuro-marketing API, compatible with the predecessor's
``erp_neuro_marketing`` service (spec §3.11) and the app
(``erp_analysis_provider.dart``), plus the general experiment-analysis
routes (job status, figures). Owners only, on every route."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from eeghub.core.auth import Identity, check_role, parse_experiment_id, require_role, require_user
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, HttpError, NotFound
from eeghub.core.http import UuidParam, error_responses
from eeghub.core.outbox import enqueue_json

from . import loader, pipeline, runner

NO_RESULT = "No completed analysis result found for this experiment."
POLL_SECONDS = 0.2


class Recommendation(msgspec.Struct):
    file_name: str
    item_name: str | None = None
    brand_name: str | None = None
    description: str | None = None
    category: str | None = None
    gender: str | None = None


class AnalysisResult(msgspec.Struct):
    """The predecessor's fields first (``analysis_id`` … ``requested_by_user_id``),
    then eeghub's: ``outcome`` (``ok``, ``insufficient_data``,
    ``no_usable_participants``, ``ambiguous``), what is ``missing``, the
    numbers (``details``), the figures' URLs and the job's status URL."""

    analysis_id: int
    experiment_id: str
    summary: str
    recommendations: list[Recommendation]
    generated_at: datetime | None
    requested_by_user_id: str
    outcome: str | None
    missing: list[str]
    details: dict[str, Any] | None
    figures: dict[str, str]
    status_url: str


class AnalysisJob(msgspec.Struct):
    analysis_id: int
    experiment_id: str
    kind: str
    status: str
    progress: int
    stage: str | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    status_url: str
    result_url: str | None


ACCEPTED = ResponseSpec(
    data_container=AnalysisJob,
    description="The analysis runs in the background: the job, with its `status_url` (also in `Location`)",
    generate_examples=False,
)


def _status_url(analysis_id: int) -> str:
    return f"/api/v1/experiment-analyses/{analysis_id}"


def _job(row: Any) -> AnalysisJob:
    return AnalysisJob(
        analysis_id=row["analysis_id"], experiment_id=str(row["experiment_id"]), kind=row["kind"], status=row["status"],
        progress=row["progress"], stage=row["stage"], error_message=row["error_message"], created_at=row["created_at"],
        started_at=row["started_at"], completed_at=row["completed_at"], status_url=_status_url(row["analysis_id"]),
        result_url=f"{_status_url(row['analysis_id'])}/result" if row["status"] == "completed" else None,
    )


def _result(row: Any, figure_names: tuple[str, ...]) -> AnalysisResult:
    data = row["result_data"] or {}
    try:
        recommendations = msgspec.convert(data.get("recommendations") or [], list[Recommendation])
    except msgspec.ValidationError as exc:
        raise HttpError(f"the stored result no longer validates: {exc}", status_code=500) from None
    aid = row["analysis_id"]
    return AnalysisResult(
        analysis_id=aid,
        experiment_id=str(row["experiment_id"]),
        summary=str(data.get("summary") or ""),
        recommendations=recommendations,
        generated_at=row["completed_at"] or row["created_at"],
        requested_by_user_id=row["requested_by_user_id"],
        outcome=data.get("outcome"),
        missing=list(data.get("missing") or []),
        details=data.get("details"),
        figures={name: f"{_status_url(aid)}/figures/{name}.png" for name in figure_names},
        status_url=_status_url(aid),
    )


def _figure_names(ctx: AppContext, kind: str) -> tuple[str, ...]:
    analysis = runner.analyses(ctx).get(kind)
    return tuple(getattr(analysis, "figures", ()) or ())


async def _start(ctx: AppContext, eid: uuid.UUID, kind: str, user_id: str) -> int:
    if kind not in runner.analyses(ctx):
        raise NotFound(f"no experiment analysis named {kind!r}")
    if kind == "erp":
        # What the predecessor answered 404 for, named. Recordings without
        # trigger-corrected events are analysed: 200, insufficient_data.
        stimuli, sessions = await loader.experiment_inputs(ctx, eid)
        missing = pipeline.missing_structure_of(stimuli, sessions)
        if missing:
            raise NotFound("Cannot analyze this experiment: " + "; ".join(missing) + ".")
    async with ctx.database.transaction() as conn:
        analysis_id = int(await conn.fetchval(
            """INSERT INTO erp_analysis_results (experiment_id, requested_by_user_id, status, kind, stage)
               VALUES ($1, $2, 'pending', $3, 'queued') RETURNING analysis_id""",
            eid, user_id, kind,
        ))
        await enqueue_json(
            conn, {"analysis_id": analysis_id, "experiment_id": str(eid), "kind": kind},
            queue=ctx.settings.broker.queues.experiment_analysis_queue,
        )
    ctx.outbox.wake()
    return analysis_id


async def _wait(ctx: AppContext, analysis_id: int, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        row = await ctx.database.fetchrow("SELECT * FROM erp_analysis_results WHERE analysis_id = $1", analysis_id)
        if row["status"] in ("completed", "failed") or time.monotonic() >= deadline:
            return row
        await asyncio.sleep(POLL_SECONDS)


def _accepted(row: Any) -> Response[AnalysisJob]:
    job = _job(row)
    return Response(job, status_code=202, headers={"Location": job.status_url})


def _wants_async(request: Request[Any, Any, Any], wait: bool) -> bool:
    prefer = (request.headers.get("prefer") or "").lower()
    return not wait or "respond-async" in prefer


@post(
    "/api/v1/neuro-marketing/experiments/{experiment_id:str}/analyze",
    guards=[require_role("owner")],
    tags=["neuro-marketing"],
    status_code=200,
    responses={202: ACCEPTED, **error_responses(400, 401, 403, 404, 503)},
)
async def analyze(
    experiment_id: UuidParam,
    request: Request[Any, Any, Any],
    ctx: AppContext,
    identity: Identity,
    wait: bool = Parameter(default=True, description="false (or Prefer: respond-async): answer 202 with the status URL at once"),
) -> Response[AnalysisResult]:
    """Run the ERP analysis of the experiment (owner). Waits for the result
    up to ``neuro_marketing.wait_seconds`` and answers 200 with it, as the
    predecessor did; with ``?wait=false`` or ``Prefer: respond-async`` (or
    when the wait runs out) 202 and the job's status URL."""
    eid = parse_experiment_id(experiment_id)
    analysis_id = await _start(ctx, eid, "erp", identity.user_id)
    seconds = 0.0 if _wants_async(request, wait) else ctx.settings.neuro_marketing.wait_seconds
    row = await _wait(ctx, analysis_id, seconds)
    if row["status"] == "completed":
        return Response(_result(row, _figure_names(ctx, "erp")), status_code=200)
    if row["status"] == "failed":
        raise HttpError(f"The analysis failed: {row['error_message']}", status_code=503)
    return _accepted(row)  # type: ignore[return-value]


@get(
    "/api/v1/neuro-marketing/experiments/{experiment_id:str}/analysis-results",
    guards=[require_role("owner")],
    tags=["neuro-marketing"],
    responses=error_responses(400, 401, 403, 404, 503),
)
async def latest_result(experiment_id: UuidParam, ctx: AppContext) -> AnalysisResult:
    """The newest completed ERP analysis of the experiment (owner); 404 when there is none."""
    eid = parse_experiment_id(experiment_id)
    row = await ctx.database.fetchrow(
        """SELECT * FROM erp_analysis_results WHERE experiment_id = $1 AND kind = 'erp' AND status = 'completed'
           ORDER BY completed_at DESC NULLS LAST, analysis_id DESC LIMIT 1""",
        eid,
    )
    if row is None:
        raise NotFound(NO_RESULT)
    return _result(row, _figure_names(ctx, "erp"))


@post(
    "/api/v1/experiments/{experiment_id:str}/analyses/{kind:str}",
    guards=[require_role("owner")],
    tags=["experiment-analyses"],
    status_code=202,
    responses=error_responses(400, 401, 403, 404, 503),
)
async def start_analysis(experiment_id: UuidParam, kind: str, ctx: AppContext, identity: Identity) -> Response[AnalysisJob]:
    """Start an experiment analysis by its id (owner): 202 and the job's status URL."""
    eid = parse_experiment_id(experiment_id)
    analysis_id = await _start(ctx, eid, kind, identity.user_id)
    return _accepted(await _wait(ctx, analysis_id, 0.0))


async def _owned(ctx: AppContext, analysis_id: str, identity: Identity) -> Any:
    try:
        aid = int(analysis_id)
    except ValueError:
        raise BadRequest("analysis_id must be an integer") from None
    if not -(2**63) <= aid < 2**63:  # a BIGINT column: asyncpg would raise, a 500
        raise BadRequest("analysis_id is out of range")
    row = await ctx.database.fetchrow("SELECT * FROM erp_analysis_results WHERE analysis_id = $1", aid)
    if row is None:
        raise NotFound("Analysis not found")
    await check_role(ctx.database, row["experiment_id"], identity.user_id, "owner")
    return row


@get("/api/v1/experiment-analyses/{analysis_id:str}", guards=[require_user], tags=["experiment-analyses"],
     responses=error_responses(400, 401, 403, 404, 503))
async def analysis_status(analysis_id: str, ctx: AppContext, identity: Identity) -> AnalysisJob:
    """Status and progress of an analysis job (owners of its experiment)."""
    return _job(await _owned(ctx, analysis_id, identity))


@get("/api/v1/experiment-analyses/{analysis_id:str}/result", guards=[require_user], tags=["experiment-analyses"],
     responses=error_responses(400, 401, 403, 404, 409, 503))
async def analysis_result(analysis_id: str, ctx: AppContext, identity: Identity) -> AnalysisResult:
    """The result of a completed analysis (owners); 409 while it is not completed."""
    row = await _owned(ctx, analysis_id, identity)
    if row["status"] != "completed":
        raise HttpError(f"the analysis is {row['status']}", status_code=409)
    return _result(row, _figure_names(ctx, row["kind"]))


@get("/api/v1/experiment-analyses/{analysis_id:str}/figures/{name:str}", guards=[require_user],
     tags=["experiment-analyses"], responses=error_responses(400, 401, 403, 404, 409, 503))
async def analysis_figure(analysis_id: str, name: str, ctx: AppContext, identity: Identity) -> Response[bytes]:
    """A figure of a completed analysis as PNG (owners), drawn in a worker thread."""
    row = await _owned(ctx, analysis_id, identity)
    if row["status"] != "completed":
        raise HttpError(f"the analysis is {row['status']}", status_code=409)
    analysis = runner.analyses(ctx).get(row["kind"])
    figure = name[:-4] if name.endswith(".png") else name
    if analysis is None or figure not in (getattr(analysis, "figures", ()) or ()):
        raise NotFound(f"no figure named {name!r}")
    details = (row["result_data"] or {}).get("details") or {}
    png = await asyncio.to_thread(analysis.render, details, figure)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


ROUTES = [analyze, latest_result, start_analysis, analysis_status, analysis_result, analysis_figure]
