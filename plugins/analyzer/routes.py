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
from litestar.params import Parameter

from eeghub.core.auth import Identity, require_user
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Forbidden
from eeghub.core.http import IdParam

from .host import AnalysisHost, Result, Stream
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


def _valid_images(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"render must return a dict of str to base64 str, not {type(value).__name__}")
    return value


async def _plugin_images(host: AnalysisHost, result: Result) -> dict[str, Any]:
    """The optional ``render`` of a plugin's contract, called only when a
    client asks for images, in a thread, once per result (cached). A render
    that fails, hangs past the plugin timeout or returns something else than
    ``{name: base64}`` gives ``images_error`` instead, never a 500."""
    state = host.plugins.get(result.plugin_id)
    render = getattr(state.plugin, "render", None) if state is not None else None
    if not callable(render) or result.plugin_id in BUILTIN_PICTURES:
        return {}
    if result.images is None:
        info = {
            "plugin_id": result.plugin_id,
            "user_id": result.user_id,
            "device_id": result.device_id,
            "session_id": result.session_id,
            "window_start_us": result.window_start_us,
            "window_end_us": result.window_end_us,
        }
        try:
            images = await asyncio.wait_for(asyncio.to_thread(render, result.value, info), host.plugin_timeout)
            result.images = _valid_images(images)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported, not raised
            message = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
            return {"images": {}, "images_error": message}
    return {"images": result.images}


def _summaries(host: AnalysisHost) -> list[dict[str, Any]]:
    return [
        {
            "id": state.plugin.id,
            "display_name": state.plugin.display_name,
            "description": state.plugin.description,
            "window_seconds": state.plugin.window_seconds,
            "interval_seconds": state.plugin.interval_seconds,
            "channel_types": list(state.plugin.channel_types),
        }
        for state in host.plugins.values()
    ]


async def _compat_entry(stream: Stream, results: dict[str, Result], with_images: bool) -> dict[str, Any]:
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


@get("/api/v1/users/{user_id:str}/analysis", guards=[require_user], tags=["analysis"])
async def get_analysis(
    user_id: IdParam,
    ctx: AppContext,
    identity: Identity,
    format: str = Parameter(default="images", pattern="^(images|json)$", description="json: skip the PNG images"),  # noqa: A002
    device_id: str | None = Parameter(default=None),
) -> Response[dict[str, Any]]:
    """The latest results of a user's most recently active stream (or of
    ``device_id``). 202 while nothing is ready. ``applications.psd_coherence``
    is the predecessor's entry (base64 PNGs unless ``format=json``); every
    plugin's numeric result is under ``results``."""
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
    applications: dict[str, Any] = {"psd_coherence": await _compat_entry(stream, results, format == "images")}
    for pid, result in results.items():
        applications[pid] = msgspec.to_builtins(result.value)
    body = {
        "user_id": user_id,
        "device_id": stream.device_id,
        "session_id": stream.session_id,
        "applications": applications,
        "available_applications": [{"id": "psd_coherence", "display_name": "PSD & Coherence", "description": "Power spectral density and coherence visualisation."}, *_summaries(host)],
        "results": {
            pid: {**_result_json(r), **(await _plugin_images(host, r) if format == "images" else {})}
            for pid, r in results.items()
        },
        "streams": [{"device_id": s.device_id, "session_id": s.session_id, "plugins": sorted(r)} for s, r in streams],
    }
    return Response(body, status_code=200)


@get("/api/v1/users/{user_id:str}/analysis/stream", guards=[require_user], tags=["analysis"])
async def stream_analysis(user_id: IdParam, request: Request[Any, Any, Any], ctx: AppContext, identity: Identity) -> ServerSentEvent:
    """Server-sent events: one ``result`` event (JSON) per new result of any
    of the user's streams, and a ``ping`` comment every 15 s."""
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
