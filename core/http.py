"""The HTTP conventions every route shares: one JSON error body, and the
exception handlers that produce it.

Error body (every 4xx and 5xx)::

    {"error": "human-readable message", "detail": "same message",
     "status_code": 400, "issues": [{"field": "...", "row": 3, "message": "..."}]}

``error`` is what the predecessor's session manager returned, ``detail`` what
its FastAPI services returned, so clients of either keep working. ``issues``
is present when there is more than one thing to fix (validation errors, CSV
rows). A 500 never carries an exception's text: it is logged with a request
id that the body repeats.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Encoding, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from .context import PortNotReady
from .errors import BadRequest, BrokerUnavailable, DatabaseError, HttpError, ObjectNotFound, PayloadTooLarge, StorageError
from .metrics import REQUEST_ID

log = logging.getLogger("eeghub.http")

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"

WHOLE_RESPONSE = "eeghub.whole_response"
"""An ASGI scope extension (``scope["extensions"]``) that eeghub's HTTP
protocol offers to a route's ASGI fast path (``app/http_protocol.py``):
``await extension(status, headers, body)`` sends a complete response, its
``content-length`` among ``headers``, in one write, in place of the
``http.response.start`` and ``http.response.body`` messages."""
"""What a user, session, device id or a stored file name may be: the rule
the request bodies that create them already apply (``Identifier``). PostgreSQL
text cannot hold NUL at all, so a path or query value that breaks this rule
can match nothing and is a 400 before it reaches a query."""

IdParam = Annotated[
    str, Parameter(min_length=1, max_length=255, pattern=NO_CONTROL_CHARACTERS, description="1-255 characters, no control characters")
]
"""A path parameter naming a user, a session or a file (as stored: at most 255
characters, no control characters)."""

UuidParam = Annotated[
    str, Parameter(description="a UUID; a malformed one is a 400", schema_extra={"format": "uuid"})
]
"""A path parameter holding a UUID (an experiment, a job, an export task).
Declared ``format: uuid`` in the schema, but parsed by the route (or its
guard) so that a malformed id stays a 400 naming the field, as it always was;
Litestar's ``{x:uuid}`` path type would answer differently."""


class Issue(msgspec.Struct, omit_defaults=True):
    message: str
    field: str | None = None
    row: int | None = None
    source: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    detail: str
    status_code: int
    issues: list[Issue] | None = None
    request_id: str | None = None


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (the body names the field or the CSV row)",
    401: "No identity, or an invalid one (the X-User-Id header or a bearer token)",
    403: "The caller lacks the role, or a user_id in the request is not the caller",
    404: "Not found (or a member of it is not)",
    409: "Conflicts with the current state",
    413: "Request body or an uploaded file is too large",
    415: "Unsupported media type",
    416: "Range not satisfiable (Content-Range: bytes */size)",
    429: "Too many bytes or requests; retry after Retry-After",
    503: "A dependency (database, object store or broker) is unavailable; retry after Retry-After",
}


_SCHEMA_KEYS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "contentEncoding": "content_encoding",
    "anyOf": "any_of",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
}


def openapi_schema_of(struct: type) -> Schema:
    """The OpenAPI schema of a msgspec Struct, for a route that reads its
    body itself (the hot ingest route, multipart forms holding JSON: Litestar
    then knows no body type). Built from ``msgspec.json.schema``, so it says
    exactly what the decoder accepts, ``additionalProperties: false`` for a
    struct that refuses unknown fields included; nested structs are inlined."""
    document = msgspec.json.schema(struct)
    definitions = document.get("$defs", {})
    root = definitions[document["$ref"].rsplit("/", 1)[-1]] if "$ref" in document else document
    return _schema(root, definitions)


def _schema(node: dict[str, Any], definitions: dict[str, Any]) -> Schema:
    if "$ref" in node:
        return _schema(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            fields["type"] = OpenAPIType(value)
        elif key == "properties":
            fields["properties"] = {name: _schema(child, definitions) for name, child in value.items()}
        elif key == "anyOf":
            fields["any_of"] = [_schema(child, definitions) for child in value]
        elif key == "items":
            fields["items"] = _schema(value, definitions)
        elif key == "additionalProperties":
            fields["additional_properties"] = value if isinstance(value, bool) else _schema(value, definitions)
        elif key in ("required", "title", "description", "pattern", "minimum", "maximum", "default", "format", "enum", "examples"):
            fields[key] = value
        elif key in _SCHEMA_KEYS:
            fields[_SCHEMA_KEYS[key]] = value
        else:
            raise ValueError(f"openapi_schema_of: JSON schema keyword {key!r} is not translated")
    return Schema(**fields)


def file_schema(description: str) -> Schema:
    """A multipart file part."""
    return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=description)


def text_schema(description: str, **extra: Any) -> Schema:
    """A multipart text part."""
    return Schema(type=OpenAPIType.STRING, description=description, **extra)


def body_operation(description: str, content: dict[str, OpenAPIMediaType]) -> type[Operation]:
    """An ``operation_class=`` declaring the request body of a route that
    reads its body itself (multipart forms, the hot ingest route), so the
    OpenAPI document declares every body."""

    @dataclass
    class _BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(required=True, description=description, content=content)

    return _BodyOperation


def multipart(properties: dict[str, Schema], required: list[str], json_parts: tuple[str, ...] = ()) -> dict[str, OpenAPIMediaType]:
    """The ``content`` of a ``multipart/form-data`` body; ``json_parts`` are
    text parts that hold a JSON document."""
    encoding = {name: Encoding(content_type="application/json") for name in json_parts}
    return {
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.OBJECT, properties=properties, required=required),
            encoding=encoding or None,
        )
    }


def json_content(struct: type) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=openapi_schema_of(struct))}


_JSON_PATH = re.compile(r" - at `\$((?:\.[^`.\[]+|\[\d+\])*)`$")


def validation_field(exc: Exception, default: str) -> tuple[str, str]:
    """(message, field) of a msgspec ``ValidationError``: the field is the
    JSON path msgspec names (``clock_offset_info.offset_ms``), else
    ``default`` (the body or form field that held the JSON)."""
    text = str(exc)
    match = _JSON_PATH.search(text)
    if match is None or not match.group(1):
        return text, default
    return text[: match.start()], match.group(1).lstrip(".")


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The ``responses=`` of a route: each error status it can return, with
    the ``ErrorBody`` every error carries, e.g. ``error_responses(400, 401, 404)``."""
    return {
        status: ResponseSpec(data_container=ErrorBody, description=ERROR_DESCRIPTIONS[status], generate_examples=False)
        for status in statuses
    }


def error_response(
    status_code: int,
    message: str,
    *,
    issues: list[dict[str, Any]] | list[Issue] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> Response[ErrorBody]:
    parsed = None
    if issues:
        parsed = [i if isinstance(i, Issue) else msgspec.convert(i, Issue) for i in issues]
    body = ErrorBody(error=message, detail=message, status_code=status_code, issues=parsed, request_id=request_id)
    return Response(content=body, status_code=status_code, headers=headers, media_type="application/json")


def too_deeply_nested(field: str = "body") -> BadRequest:
    """The 400 for JSON nested deeper than the decoder recurses (about a
    thousand levels: msgspec raises ``RecursionError`` there, which is the
    client's fault, not a 500)."""
    return BadRequest(
        f"{field} is JSON nested too deeply", issues=[{"field": field, "message": "nested too deeply"}]
    )


class SafeRequest(Request[Any, Any, Any]):
    """The application's request class. ``json()`` (what Litestar uses to
    decode every typed ``data`` body) answers 400 for JSON nested too deeply
    instead of letting ``RecursionError`` become a 500; ``form()`` answers a
    form with more parts than the application allows with a 413 that says
    so (Litestar's is a 400 "Request Entity Too Large")."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise too_deeply_nested() from None

    async def form(self) -> Any:
        try:
            return await super().form()
        except ClientException as exc:
            if exc.detail != "Request Entity Too Large":
                raise
            limit = self.app.multipart_form_part_limit
            files = self.app.state.ctx.settings.stimulus.max_files
            raise PayloadTooLarge(
                f"the form has more than {limit} parts (a stimulus upload: at most {files} files, "
                "stimulus.max_files, and the definitions CSV)",
                issues=[{"field": "body", "message": f"more than {limit} parts"}],
            ) from None


def _http_error(_: Request[Any, Any, Any], exc: HttpError) -> Response[ErrorBody]:
    return error_response(exc.status_code, exc.message, issues=exc.issues, headers=exc.headers)


def _validation_issues(extra: Any) -> list[Issue]:
    issues: list[Issue] = []
    if isinstance(extra, list):
        for item in extra:
            if isinstance(item, dict):
                issues.append(
                    Issue(
                        message=str(item.get("message", "invalid value")),
                        field=item.get("key") and str(item.get("key")),
                        source=item.get("source") and str(item.get("source")),
                    )
                )
    return issues


def _litestar_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    message = exc.detail or "error"
    issues = _validation_issues(exc.extra)
    if isinstance(exc, ValidationException) and issues:
        # "Validation failed for POST /x" says nothing a person can act on; the
        # first issue does ("Expected `int`, got `str` - at `$.port`").
        first = issues[0]
        where = f" ({first.field})" if first.field else ""
        message = f"invalid request: {first.message}{where}"
    return error_response(status, message, issues=issues or None, headers=exc.headers)


def _unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    what = {
        BrokerUnavailable: "message broker",
        DatabaseError: "database",
        StorageError: "object storage",
        PortNotReady: "server",
    }
    name = next((v for k, v in what.items() if isinstance(exc, k)), "a dependency")
    log.warning("503: %s unavailable: %s", name, exc)
    return error_response(503, f"{name} is unavailable, try again later", headers={"Retry-After": "5"})


def _not_found(_: Request[Any, Any, Any], exc: ObjectNotFound) -> Response[ErrorBody]:
    return error_response(404, "not found")


def _bad_encoding(_: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ErrorBody]:
    return error_response(400, f"request body is not valid UTF-8 (byte {exc.start})")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    request_id = REQUEST_ID.get() or uuid.uuid4().hex[:16]
    log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, request_id, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error", request_id=request_id)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    HttpError: _http_error,
    HTTPException: _litestar_error,
    BrokerUnavailable: _unavailable,
    DatabaseError: _unavailable,
    StorageError: _unavailable,
    ObjectNotFound: _not_found,
    PortNotReady: _unavailable,
    UnicodeDecodeError: _bad_encoding,
    Exception: _internal_error,
}
