"""Results API: the predecessor's ``/users/{id}/analysis`` plus JSON results,
server-sent events and the list of analysis plugins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.response import ServerSentEvent
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from eeghub.core.auth import claimed_identity
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Forbidden
from eeghub.core.http import IdParam, error_responses

from .host import AnalysisHost, RemoteStream, Result, Stream
from .render import coherence_png, psd_png


def _host(ctx: AppContext) -> AnalysisHost:
    return ctx.services["analyzer"]  # type: ignore[no-any-return]


async def check_reader(ctx: AppContext, caller: str, user_id: str) -> None:
    """The user themself, or an owner of an experiment the user takes part in."""
    if caller == user_id:
        return
    allowed = await ctx.database.fetchval(
        """SELECT 1 FROM experiment_participants o JOIN experiment_participants p ON p.experiment_id = o.experiment_id
           WHERE o.user_id = $1 AND o.role = 'owner' AND p.user_id = $2 LIMIT 1""",
        caller,
        user_id,
    )
    if not allowed:
        raise Forbidden("Forbidden: only the user or an owner of one of their experiments may read their analysis")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _result_json(result: Result) -> dict[str, Any]:
    return {
        "plugin": result.plugin_id,
        "device_id": result.device_id,
        "session_id": result.session_id,
        "timestamp": _iso(result.computed_at),
        "window_start": _iso(result.window_start_us / 1e6),
        "window_end": _iso(result.window_end_us / 1e6),
        "result": msgspec.to_builtins(result.value),
        "instance": result.instance,
    }


async def _images(results: dict[str, Result]) -> tuple[str, str]:
    """PSD and coherence pictures, rendered once per result and cached."""
    psd, coherence = results.get("psd"), results.get("coherence")
    psd_image = coherence_image = ""
    if psd is not None:
        if psd.images is None:
            psd.images = {"psd": await asyncio.to_thread(psd_png, psd.value)}
        psd_image = psd.images["psd"]
    if coherence is not None:
        if coherence.images is None:
            coherence.images = {"coherence": await asyncio.to_thread(coherence_png, coherence.value)}
        coherence_image = coherence.images["coherence"]
    return psd_image, coherence_image


BUILTIN_PICTURES = frozenset({"psd", "coherence"})
"""Drawn by ``_images`` for the predecessor's entry, not by a ``render``."""


async def _plugin_images(host: AnalysisHost, results: dict[str, Result]) -> dict[str, dict[str, Any]]:
    """Images of every plugin with a ``render`` (see ``AnalysisHost.render``),
    rendered concurrently; ``images_error`` instead when it failed."""
    wanted = {
        pid: r
        for pid, r in results.items()
        if pid not in BUILTIN_PICTURES
        and pid in host.plugins
        and callable(getattr(host.plugins[pid].plugin, "render", None))
    }
    await asyncio.gather(*(host.render(r) for r in wanted.values()))
    return {
        pid: {"images": r.images} if r.images is not None else {"images": {}, "images_error": r.images_error}
        for pid, r in wanted.items()
    }


def _summaries(host: AnalysisHost) -> list[dict[str, Any]]:
    return [
        {
            "id": state.plugin.id,
            "display_name": state.plugin.display_name,
            "description": state.plugin.description,
            "window_seconds": state.plugin.window_seconds,
            "min_window_seconds": getattr(state.plugin, "min_window_seconds", state.plugin.window_seconds),
            "interval_seconds": state.plugin.interval_seconds,
            "channel_types": list(state.plugin.channel_types),
        }
        for state in host.plugins.values()
    ]


async def _compat_entry(stream: Stream | RemoteStream, results: dict[str, Result], with_images: bool) -> dict[str, Any]:
    quality = results.get("channel_quality")
    psd = results.get("psd")
    newest = max(r.computed_at for r in results.values())
    entry: dict[str, Any] = {
        "timestamp": _iso(newest),
        "bad_channels": quality.value.bad_channels if quality else [],
        "analysis_channels": psd.value.channels if psd else [],
        "channel_quality": quality.value.channel_quality if quality else {},
    }
    if with_images:
        entry["psd_image"], entry["coherence_image"] = await _images(results)
    return entry


NOT_READY = ResponseSpec(
    data_container=dict[str, Any],
    description="No results for the user yet: `status` and `available_applications`",
    generate_examples=False,
)


@get(
    "/api/v1/users/{user_id:str}/analysis",
    tags=["analysis"],
    responses={202: NOT_READY, **error_responses(400, 401, 403, 503)},
)
async def get_analysis(
    user_id: IdParam,
    request: Request[Any, Any, Any],
    ctx: AppContext,
    format: str = Parameter(default="images", pattern="^(images|json)$", description="json: skip the PNG images"),  # noqa: A002
    device_id: str | None = Parameter(default=None),
) -> Response[dict[str, Any]]:
    """The latest results of a user's most recently active stream (or of
    ``device_id``). 202 while nothing is ready. ``applications.psd_coherence``
    is the predecessor's entry (base64 PNGs unless ``format=json``); every
    plugin's numeric result is under ``results``. In ``compat`` mode a
    request without ``X-User-Id`` reads the path's user (the app polls so)."""
    identity = claimed_identity(request, user_id, "the path's user_id")
    await check_reader(ctx, identity.user_id, user_id)
    host = _host(ctx)
    streams = host.results_for_user(user_id)
    if device_id is not None:
        streams = [(s, r) for s, r in streams if s.device_id == device_id]
    if not streams:
        return Response(
            {"status": f"No analysis results for user ({user_id}) yet; keep streaming.", "available_applications": _summaries(host)},
            status_code=202,
        )
    stream, results = streams[0]
    images = await _plugin_images(host, results) if format == "images" else {}
    applications: dict[str, Any] = {"psd_coherence": await _compat_entry(stream, results, format == "images")}
    for pid, result in results.items():
        applications[pid] = msgspec.to_builtins(result.value)
    body = {
        "user_id": user_id,
        "device_id": stream.device_id,
        "session_id": stream.session_id,
        "applications": applications,
        "available_applications": [{"id": "psd_coherence", "display_name": "PSD & Coherence", "description": "Power spectral density and coherence visualisation."}, *_summaries(host)],
        "results": {pid: {**_result_json(r), **images.get(pid, {})} for pid, r in results.items()},
        "streams": [{"device_id": s.device_id, "session_id": s.session_id, "plugins": sorted(r)} for s, r in streams],
    }
    return Response(body, status_code=200)


@get(
    "/api/v1/users/{user_id:str}/analysis/stream",
    tags=["analysis"],
    responses=error_responses(400, 401, 403, 503),
)
async def stream_analysis(user_id: IdParam, request: Request[Any, Any, Any], ctx: AppContext) -> ServerSentEvent:
    """Server-sent events: one ``result`` event (JSON) per new result of any
    of the user's streams, and a ``ping`` comment every 15 s. Identity as for
    the poll: the same results, live (a browser's ``EventSource`` cannot send
    a header)."""
    identity = claimed_identity(request, user_id, "the path's user_id")
    await check_reader(ctx, identity.user_id, user_id)
    host = _host(ctx)
    queue = host.listen(user_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                try:
                    result = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    yield {"comment": "ping"}
                    continue
                yield {"event": "result", "data": json.dumps(_result_json(result)), "id": str(result.sequence)}
        finally:
            host.unlisten(user_id, queue)

    return ServerSentEvent(events())


@get("/api/v1/analysis/plugins", tags=["analysis"])
async def list_plugins(ctx: AppContext) -> dict[str, Any]:
    """The analysis plugins this server runs, with their run statistics."""
    host = _host(ctx)
    stats = host.stats()["plugins"]
    return {"plugins": [{**summary, "stats": stats[summary["id"]]} for summary in _summaries(host)]}


ROUTES = [get_analysis, stream_analysis, list_plugins]
__all__ = ["ROUTES", "BadRequest"]
