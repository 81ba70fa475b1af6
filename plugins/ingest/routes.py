"""``POST /api/v1/data``: validate a packet, publish it, answer 202 only once
the broker has confirmed it (spec §8 items 9 and 20)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from eeghub.core.accepted import AcceptedPacket, listeners_of, offer
from eeghub.core.auth import claimed_identity, compat_mode, header_identity, identity_of
from eeghub.core.context import AppContext
from eeghub.core.errors import BadRequest, Forbidden, PayloadTooLarge
from eeghub.core.http import WHOLE_RESPONSE, error_responses, openapi_schema_of, too_deeply_nested
from eeghub.core.metrics import REQUEST_ID, metrics_of, request_id_of
from eeghub.core.packet import PacketError
from eeghub.core.packet_messages import RawPacket
from eeghub.core.payload_cache import PAYLOADS, Decompressed

from .envelope import HEADER_NAMES, DataEnvelope, Envelope, from_json, from_query_or_headers
from .limits import StreamBudget, check_sample_count
from .publisher import publisher_of


class Accepted(msgspec.Struct):
    status: str = "accepted"


def validate_frame(ctx: AppContext, frame: bytes) -> Any:
    """Decompress (bounded) and check the packet header; 400 on garbage.
    Returns the layout (``checked_frame`` also gives the payload)."""
    return checked_frame(ctx, frame)[1]


def checked_frame(ctx: AppContext, frame: bytes) -> tuple[bytes, Any, Decompressed]:
    """The payload and layout of ``frame`` (and the cache's entry for it,
    which knows the payload's digest); 400 (413) on garbage."""
    limits = ctx.settings.ingest
    if len(frame) > limits.max_packet_bytes:
        raise PayloadTooLarge(f"packet is larger than {limits.max_packet_bytes} bytes")
    try:
        # Kept, with the layout and digest, for this process's storage
        # consumer (core/payload_cache.py).
        found = PAYLOADS.get(frame, max_output_size=limits.max_decompressed_bytes)
        return found.payload, found.layout(limits.max_channels), found
    except PacketError as exc:
        status = 413 if exc.reason == "too_large" else 400
        raise BadRequest(f"invalid packet: {exc}", status_code=status, issues=[{"field": "payload", "message": str(exc)}]) from None


def packet_for(envelope: Envelope, frame: bytes, layout: Any, payload_sha256: str) -> tuple[RawPacket, str]:
    """The packet as published, and a deterministic message id for it when
    it travels alone: the same packet sent twice is recognisably the same
    (by its payload's digest, which its object key and ``content_sha256``
    will carry too)."""
    digest = payload_sha256
    headers = envelope.headers()
    headers["num_samples"] = layout.num_samples
    headers["num_channels"] = len(layout.channel_names)
    message_id = f"{envelope.user_id}:{envelope.device_id}:{envelope.timestamp_start_ms}:{digest[:24]}"
    return RawPacket(headers=headers, frame=frame), message_id


ACCEPTED_BODY = msgspec.json.encode(Accepted())
BUDGET = "ingest.stream_budget"


def budget_of(ctx: AppContext) -> StreamBudget:
    """The context's per-stream byte budget, made on first use."""
    budget = ctx.services.get(BUDGET)
    if budget is None:
        limits = ctx.settings.ingest
        burst = max(limits.stream_burst_bytes, limits.max_decompressed_bytes)
        budget = ctx.services[BUDGET] = StreamBudget(limits.stream_bytes_per_second, burst)
    return budget


@dataclass
class _DataOperation(Operation):
    """The route reads its body itself (see ``post_data``): its two forms
    are declared here for the OpenAPI schema."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "The predecessor's JSON envelope, or (application/octet-stream) the zstd frame itself with "
                "the envelope's fields as query parameters or as the headers "
                + ", ".join(header.title() for header in HEADER_NAMES.values())
                + " (user_id defaults to the caller)."
            ),
            content={
                "application/json": OpenAPIMediaType(schema=openapi_schema_of(DataEnvelope)),
                "application/octet-stream": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
            },
        )


@post(
    "/api/v1/data",
    tags=["ingest"],
    status_code=202,
    responses=error_responses(400, 401, 403, 413, 429, 503),
    operation_class=_DataOperation,
    # ``app/bootstrap.py`` puts this ASGI wrapper in front of Litestar's handler.
    opt={"asgi_fast_path": lambda app, inner: fast_path(app, inner) if app.state.ctx.settings.ingest.asgi_fast_path else inner},
)
async def post_data(request: Request[Any, Any, Any]) -> Response[Accepted]:
    """Accept one EEG packet: the predecessor's JSON envelope with
    ``payload_base64``, or the zstd frame itself as an
    ``application/octet-stream`` body with the envelope in query parameters
    or ``X-Device-Id``/``X-Timestamp-Start-Ms``/… headers. 202 only after the
    broker confirmed a message carrying the packet (under load, packets
    arriving together share one: ``publisher.py``); 503 with ``Retry-After``
    when it cannot. 400 when the packet holds more samples than its span at
    its sampling rate explains; 429 with ``Retry-After`` when its device
    stream exceeds ``ingest.stream_bytes_per_second``."""
    # The hottest route: the context and the caller are read directly rather
    # than injected (Litestar resolves two dependencies in an anyio task
    # group, a measurable share of a request), and the caller is checked here
    # first, before the body is read, rather than by ``require_user`` as a
    # guard (Litestar copies the route handler for every guard call). Only
    # ``compat`` mode reads the body first: without a header, the caller is
    # the envelope's user_id, as for the predecessor.
    error = request.scope.pop(FAST_PATH_ERROR, None)
    if error is not None:
        raise error  # the fast path's refusal, answered here as the route answers it (``fast_path``)
    identity = header_identity(request)
    if identity is None and not compat_mode(request):
        identity_of(request)  # the mode's 401, before the body is read
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = await request.body()
    await accept(request, identity, content_type, body)
    return Response(ACCEPTED_BODY, status_code=202, media_type="application/json")


async def accept(request: Request[Any, Any, Any], identity: Any, content_type: str, body: bytes) -> None:
    """Everything ``post_data`` does once it has the caller (or None in
    ``compat`` mode without a header) and the body: validate, publish, count."""
    ctx: AppContext = request.app.state.ctx
    if content_type == "application/octet-stream":
        # In jwt mode X-User-Id is not an identity: a stray one is ignored
        # rather than taken for the envelope's user_id.
        envelope = from_query_or_headers(
            request.query_params,
            request.headers,
            identity.user_id if identity is not None else None,
            user_header=ctx.auth.mode != "jwt",
        )
        frame = body
        if not frame:
            raise BadRequest("the request body (the zstd frame) is empty", issues=[{"field": "body", "message": "empty"}])
    else:
        try:
            data = msgspec.json.decode(body, type=DataEnvelope)
        except msgspec.ValidationError as exc:
            if str(exc).startswith("Invalid base64") and str(exc).endswith("`$.payload_base64`"):
                raise BadRequest(
                    "payload_base64 must be valid base64", issues=[{"field": "payload_base64", "message": "not base64"}]
                ) from None
            raise BadRequest(f"invalid envelope: {exc}", issues=[{"message": str(exc)}]) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise too_deeply_nested() from None
        envelope = from_json(data)
        frame = data.payload_base64
    if identity is None:
        identity = claimed_identity(request, envelope.user_id, "the envelope's user_id")
    if envelope.user_id != identity.user_id:
        raise Forbidden("user_id does not match authenticated user.")
    payload, layout, found = checked_frame(ctx, frame)
    limits = ctx.settings.ingest
    check_sample_count(envelope, layout.num_samples, limits.sample_slack_seconds)
    packet, message_id = packet_for(envelope, frame, layout, found.sha256())
    payload_bytes = layout.header_size + layout.num_samples * layout.sample_size
    budget_of(ctx).spend((envelope.user_id, envelope.device_id), payload_bytes)
    # (envelope, frame, payload): the storage consumer of this process takes them (core/payload_cache.py)
    await publisher_of(ctx).publish(packet, message_id=message_id, payload_bytes=payload_bytes, local=(envelope, frame, found))
    metrics_of(ctx).packets_accepted.inc()
    listeners = listeners_of(ctx)
    if listeners:  # the live analyzer (core/accepted.py)
        offer(listeners, AcceptedPacket(packet, payload, layout))


DATA_PATH = "/api/v1/data"
FAST_PATH_ERROR = "eeghub.ingest.fast_path_error"
"""The scope key under which ``fast_path`` hands a refusal to ``post_data``."""
FAST_PATH_SEEN = "eeghub.ingest.fast_path_seen"
"""Set on a request the fast path has seen: one it handed on is not taken
again by the fast path inside the application (the HTTP protocol calls the
route's fast path directly, ``app/http_protocol.py``, and Litestar's handler
has one too, for other servers)."""
_ACCEPTED_HEADERS = ((b"content-type", b"application/json"), (b"content-length", str(len(ACCEPTED_BODY)).encode()))


def fast_path(app: Any, inner: Any) -> Any:
    """``POST /api/v1/data`` with a JSON body, without Litestar's routing,
    handler and response layers: an ASGI wrapper around ``inner`` (Litestar's
    handler inside the observability middleware; or, called by eeghub's HTTP
    protocol below the application, the whole application, and then it
    answers with the protocol's ``WHOLE_RESPONSE``). The request runs
    ``accept``, the route's own code, and gets the route's 202 byte for byte,
    with the request id, counted and timed as the middleware would
    (``RequestRecorder``). Anything else goes to ``inner``: another path,
    method or content type, a body without a usable Content-Length or
    larger than ``server.max_request_body_bytes``, an ``Origin`` header
    (CORS), a client gone mid-body (what was received is replayed); and
    every refusal: the exception is handed to ``post_data``, which raises it
    under Litestar's exception handlers, so errors are answered exactly as
    the route answers them (under the same request id)."""
    max_body = app.request_max_body_size
    request_class = app.request_class
    recorder = metrics_of(app.state.ctx).request_recorder

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != DATA_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or FAST_PATH_SEEN in scope
        ):
            await inner(scope, receive, send)
            return
        scope[FAST_PATH_SEEN] = True
        if "litestar_app" not in scope:  # called by the HTTP protocol, before Litestar.__call__
            scope["app"] = scope["litestar_app"] = app
        started = time.perf_counter()
        length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name in (b"transfer-encoding", b"origin", b"content-length", b"content-type"):
                length = None  # chunked, CORS or a repeated header: Litestar's way
                break
        if (
            length is None
            or not length.isdigit()
            or (max_body is not None and int(length) > max_body)
            or content_type is None
            or content_type.split(b";")[0].strip().lower() != b"application/json"
        ):
            await inner(scope, receive, send)
            return
        received: list[Any] = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                await inner(scope, _replay(received, receive), send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in received) if len(received) > 1 else received[0].get("body", b"")
        if max_body is not None and len(body) > max_body:
            await inner(scope, _replay(received, receive), send)
            return
        request_id = request_id_of(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id  # kept by the middleware if handed on
        token = REQUEST_ID.set(request_id)
        try:
            scope["path_template"] = DATA_PATH
            request = request_class(scope, _replay(received, receive))
            try:
                identity = header_identity(request)
                if identity is None and not compat_mode(request):
                    identity_of(request)
                await accept(request, identity, "application/json", body)
            except Exception as exc:  # noqa: BLE001 - answered by the route, under Litestar's handlers
                scope[FAST_PATH_ERROR] = exc
                await inner(scope, _replay(received, receive), send)
                return
            headers = [*_ACCEPTED_HEADERS, (b"x-request-id", request_id.encode())]
            try:
                whole = scope.get("extensions", {}).get(WHOLE_RESPONSE)
                if whole is not None:  # eeghub's HTTP protocol: one write, no ASGI messages
                    await whole(202, headers, ACCEPTED_BODY)
                else:
                    await send({"type": "http.response.start", "status": 202, "headers": headers})
                    await send({"type": "http.response.body", "body": ACCEPTED_BODY, "more_body": False})
            finally:
                recorder.record("POST", DATA_PATH, 202, time.perf_counter() - started)
        finally:
            REQUEST_ID.reset(token)

    return handler


def _replay(messages: list[Any], receive: Any) -> Any:
    """A ``receive`` that gives ``messages`` again, then the connection's own."""
    pending = list(messages)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed
