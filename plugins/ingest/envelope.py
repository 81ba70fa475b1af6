"""The envelope of an EEG packet: who, which device, when, and how to scale.

The predecessor's JSON body (spec §1.5) and a binary variant (the zstd frame
as the body, the envelope in query parameters or ``X-…`` headers) both become
an ``Envelope``; every rule is checked before the packet is accepted, and each
failure names its field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from eeghub.core.errors import BadRequest

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
MAX_EPOCH_MS = 32503680000000  # the year 3000
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]

MAX_SAMPLING_RATE = 100_000.0


class DataEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/data`` JSON body. ``session_id`` may be left out (the
    predecessor required the key, spec §8 item 23)."""

    user_id: Text
    device_id: Text
    timestamp_start_ms: EpochMs
    timestamp_end_ms: EpochMs
    sampling_rate: float
    lsb_to_volts: float
    payload_base64: Annotated[bytes, msgspec.Meta(min_length=1)]
    """The zstd frame, base64 in the JSON; msgspec decodes it (in C, strictly:
    the standard alphabet with its padding, nothing else)."""
    session_id: Text | None = None


class Envelope(msgspec.Struct, frozen=True):
    user_id: str
    device_id: str
    timestamp_start_ms: int
    timestamp_end_ms: int
    sampling_rate: float
    lsb_to_volts: float
    session_id: str | None = None

    def headers(self) -> dict[str, str | int | float | bool | None]:
        """AMQP headers as the predecessor's collector set them (spec §1.5)."""
        out: dict[str, str | int | float | bool | None] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "timestamp_start_ms": self.timestamp_start_ms,
            "timestamp_end_ms": self.timestamp_end_ms,
            "sampling_rate": self.sampling_rate,
            "lsb_to_volts": self.lsb_to_volts,
            "lsb_to_volts_str": repr(self.lsb_to_volts),
        }
        if self.session_id:
            out["session_id"] = self.session_id
        return out


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"invalid {field}: {message}", issues=[{"field": field, "message": message}])


def check(envelope: Envelope) -> Envelope:
    for field in ("timestamp_start_ms", "timestamp_end_ms"):
        # The JSON and header paths bound these already (EpochMs); messages
        # from another publisher on the exchange come through here alone.
        if not 0 <= getattr(envelope, field) <= MAX_EPOCH_MS:
            raise _bad(field, f"must be between 0 and {MAX_EPOCH_MS} (the year 3000)")
    if not math.isfinite(envelope.sampling_rate) or not 0 < envelope.sampling_rate <= MAX_SAMPLING_RATE:
        raise _bad("sampling_rate", f"must be > 0 and at most {MAX_SAMPLING_RATE:g}")
    if not math.isfinite(envelope.lsb_to_volts) or not 0 < envelope.lsb_to_volts < 1:
        raise _bad("lsb_to_volts", "must be > 0 (and below 1 V per count)")
    if envelope.timestamp_end_ms < envelope.timestamp_start_ms:
        raise _bad("timestamp_end_ms", "must not be before timestamp_start_ms")
    if envelope.timestamp_end_ms - envelope.timestamp_start_ms > 3_600_000:
        raise _bad("timestamp_end_ms", "a packet cannot span more than an hour")
    return envelope


def from_json(body: DataEnvelope) -> Envelope:
    return check(
        Envelope(
            user_id=body.user_id,
            device_id=body.device_id,
            timestamp_start_ms=body.timestamp_start_ms,
            timestamp_end_ms=body.timestamp_end_ms,
            sampling_rate=float(body.sampling_rate),
            lsb_to_volts=float(body.lsb_to_volts),
            session_id=body.session_id,
        )
    )


HEADER_NAMES = {
    "user_id": "x-user-id",
    "device_id": "x-device-id",
    "session_id": "x-session-id",
    "timestamp_start_ms": "x-timestamp-start-ms",
    "timestamp_end_ms": "x-timestamp-end-ms",
    "sampling_rate": "x-sampling-rate",
    "lsb_to_volts": "x-lsb-to-volts",
}


def from_query_or_headers(
    query: Mapping[str, Any], headers: Mapping[str, str], caller: str | None, *, user_header: bool = True
) -> Envelope:
    """The binary variant: each field from the query string, else from its
    ``X-…`` header; ``user_id`` defaults to the caller. ``user_header=False``
    (jwt mode): ``X-User-Id`` is not read, it identifies nobody there."""
    raw: dict[str, Any] = {}
    for field, header in HEADER_NAMES.items():
        value = query.get(field)
        if value is None and (user_header or field != "user_id"):
            value = headers.get(header)
        if value is not None:
            raw[field] = value
    if caller is not None:
        raw.setdefault("user_id", caller)
    raw["payload_base64"] = b"-"  # the frame is the body
    try:
        body = msgspec.convert(raw, DataEnvelope, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid envelope: {exc}", issues=[{"message": str(exc)}]) from None
    return from_json(body)


def from_amqp_headers(headers: Mapping[str, Any]) -> Envelope:
    """The envelope of a message on the raw exchange (from this or any
    predecessor-compatible publisher). Raises ``ValueError`` naming the field."""
    missing = [f for f in ("user_id", "device_id", "timestamp_start_ms", "timestamp_end_ms", "sampling_rate") if headers.get(f) in (None, "")]
    if missing:
        raise ValueError(f"missing header(s): {', '.join(missing)}")
    lsb = headers.get("lsb_to_volts")
    if lsb in (None, 0, 0.0, ""):
        lsb = headers.get("lsb_to_volts_str")
    try:
        envelope = Envelope(
            user_id=str(headers["user_id"]),
            device_id=str(headers["device_id"]),
            timestamp_start_ms=int(headers["timestamp_start_ms"]),
            timestamp_end_ms=int(headers["timestamp_end_ms"]),
            sampling_rate=float(headers["sampling_rate"]),
            lsb_to_volts=float(lsb) if lsb is not None else 0.0,
            session_id=str(headers["session_id"]) if headers.get("session_id") else None,
        )
        return check(envelope)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"bad header value: {exc}") from None
    except BadRequest as exc:
        raise ValueError(exc.message) from None
