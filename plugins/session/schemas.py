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
class ClockOffsetInfo(msgspec.Struct, forbid_unknown_fields=True):
    offset_ms: int
    device_time_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    server_time_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    measurement_timestamp: datetime | None = None


class SessionStart(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Identifier
    user_id: Identifier
    start_time: datetime
    session_type: SessionType
    experiment_id: str | None = None
    device_id: Identifier | None = None
    clock_offset_info: ClockOffsetInfo | None = None


class SessionEnd(msgspec.Struct, forbid_unknown_fields=True):
    session_id: Identifier
    user_id: Identifier
    device_id: Identifier
    end_time: datetime
    experiment_id: str | None = None
    start_time: datetime | None = None
    """Accepted for compatibility; the stored start time is kept."""
    session_type: SessionType | None = None
    """Accepted for compatibility; the stored session type is kept."""
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
