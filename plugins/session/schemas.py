"""Request and response schemas of the session plugin (they are its OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL (``\u0000``): a 400 here, not a failed INSERT."""
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=10_000, pattern=NO_NUL)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
PresentationOrder = Literal["sequential", "random"]
SessionType = Literal["main_integrated", "main_external", "main_task", "calibration"]
SESSION_TYPES: tuple[str, ...] = get_args(SessionType)
RoleName = Literal["owner", "participant"]


class Message(msgspec.Struct):
    message: str


# ---------------------------------------------------------------- experiments
class ExperimentCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description | None = None
    password: Password | None = None
    presentation_order: PresentationOrder = "random"


class ExperimentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change; a field left out keeps its value. ``password: null``
    removes the password."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | None | msgspec.UnsetType = msgspec.UNSET
    password: Password | None | msgspec.UnsetType = msgspec.UNSET
    presentation_order: PresentationOrder | msgspec.UnsetType = msgspec.UNSET


class ExperimentCreated(msgspec.Struct, omit_defaults=True):
    experiment_id: uuid.UUID
    name: str
    presentation_order: str
    description: str | None = None


class Experiment(msgspec.Struct):
    experiment_id: uuid.UUID
    name: str
    description: str | None
    presentation_order: str
    role: str | None = None
    has_password: bool = False


class ExperimentDetail(Experiment, kw_only=True):
    participant_count: int = 0
    """Members with the role ``participant`` (owners are counted in ``owner_count``)."""
    owner_count: int = 0
    session_count: int = 0
    stimulus_count: int = 0


# ---------------------------------------------------------------- participants
class JoinRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``user_id`` is optional; when given it must be the caller."""

    user_id: Identifier | None = None
    password: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Participant(msgspec.Struct):
    experiment_id: uuid.UUID
    user_id: str
    role: str
    joined_at: datetime


class ParticipantSummary(msgspec.Struct):
    user_id: str
    role: str
    joined_at: datetime


class RoleChange(msgspec.Struct, forbid_unknown_fields=True):
    role: RoleName


class AuthCheck(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Identifier
    experiment_id: str
    required_role: RoleName


class AuthCheckResult(msgspec.Struct):
    authorized: bool


# ---------------------------------------------------------------- sessions
# Described for the OpenAPI document (msgspec's schema of the body).
DATE_TIME = {"format": "date-time"}
Time = Annotated[
    datetime, msgspec.Meta(description="ISO 8601 with a UTC offset, e.g. 2025-06-01T10:00:00Z", extra_json_schema=DATE_TIME)
]
KeptTime = Annotated[
    datetime, msgspec.Meta(description="Accepted for compatibility; the stored start time is kept", extra_json_schema=DATE_TIME)
]
SessionId = Annotated[Identifier, msgspec.Meta(description="The session's id, chosen by the phone")]
UserId = Annotated[Identifier, msgspec.Meta(description="The caller's user id (another one is a 403)")]
DeviceId = Annotated[Identifier, msgspec.Meta(description="The EEG device's id, as in its packets' device_id")]
ExperimentRef = Annotated[str, msgspec.Meta(description="The experiment's UUID (the caller must be a member)")]
Type = Annotated[SessionType, msgspec.Meta(description="calibration, or one of the three main session types")]
KeptType = Annotated[SessionType, msgspec.Meta(description="Accepted for compatibility; the stored type is kept")]
OffsetMs = Annotated[int, msgspec.Meta(description="Device clock minus server clock, in milliseconds")]


class ClockOffsetInfo(msgspec.Struct, forbid_unknown_fields=True):
    """The phone's measurement of its clock against the server's."""

    offset_ms: OffsetMs
    device_time_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    server_time_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    measurement_timestamp: Time | None = None


class SessionStart(msgspec.Struct, forbid_unknown_fields=True):
    session_id: SessionId
    user_id: UserId
    start_time: Time
    session_type: Type
    experiment_id: ExperimentRef | None = None
    device_id: DeviceId | None = None
    clock_offset_info: ClockOffsetInfo | None = None


class SessionEnd(msgspec.Struct, forbid_unknown_fields=True):
    session_id: SessionId
    user_id: UserId
    device_id: DeviceId
    end_time: Time
    experiment_id: ExperimentRef | None = None
    start_time: KeptTime | None = None
    session_type: KeptType | None = None
    clock_offset_info: ClockOffsetInfo | None = None


class SessionEnded(msgspec.Struct):
    message: str
    session_id: str
    events: int | None
    """Events stored from the uploaded log (None when no log was sent)."""
    unmapped_file_names: list[str]
    """Event ``file_name`` values that match no stimulus / calibration item."""


class SessionInfo(msgspec.Struct):
    session_id: str
    user_id: str
    experiment_id: uuid.UUID | None
    device_id: str | None
    session_type: str | None
    start_time: datetime
    end_time: datetime | None
    link_status: str
    event_correction_status: str
    event_count: int
    corrected_event_count: int


class SessionPage(msgspec.Struct):
    items: list[SessionInfo]
    total: int
    limit: int
    offset: int
