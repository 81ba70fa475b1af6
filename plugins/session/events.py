"""The event log a phone uploads when it ends a session (``events_log_csv``).

Columns: ``onset`` (seconds from the session start) and ``trial_type`` are
required; ``duration`` (seconds, default 0), ``file_name``, ``description``
and ``value`` are optional; other columns are ignored, as the predecessor
did. Empty ``onset``/``duration`` cells become 0 as in the predecessor; a
value that is not a finite number, or whose magnitude exceeds
``MAX_EVENT_SECONDS``, is a 400 naming its line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

from eeghub.core.csvtable import parse_csv, parse_number
from eeghub.core.errors import BadRequest

WHAT = "events_log_csv"
MAX_EVENT_SECONDS = 1e9
"""About 31 years: beyond any recording, and small enough that an onset in
microseconds from the session start (event correction, export) stays a
64-bit integer. 1e308 used to be stored and then failed the correction job
on every attempt (OverflowError)."""


@dataclass(frozen=True)
class LoggedEvent:
    line: int
    onset: float
    duration: float
    trial_type: str
    file_name: str | None
    description: str | None
    value: str | None


def _optional(values: dict[str, str], key: str, limit: int) -> str | None:
    value = values.get(key, "")
    if value == "" or value.lower() == "n/a":
        return None
    return value[:limit]


def parse_events(data: bytes) -> list[LoggedEvent]:
    table = parse_csv(data, what=WHAT, required=("onset", "trial_type"))
    events: list[LoggedEvent] = []
    for row in table.rows:
        v = row.values
        onset = parse_number(v["onset"], what=WHAT, line=row.line, field="onset", default=0.0)
        duration = parse_number(v.get("duration", ""), what=WHAT, line=row.line, field="duration", default=0.0)
        for field, number in (("onset", onset), ("duration", duration)):
            if abs(number) > MAX_EVENT_SECONDS:
                raise BadRequest(
                    f"invalid {WHAT}: line {row.line}, column {field!r}: more than {MAX_EVENT_SECONDS:g} seconds",
                    issues=[{"row": row.line, "field": field, "message": f"more than {MAX_EVENT_SECONDS:g} seconds"}],
                )
        if duration < 0:
            raise BadRequest(
                f"invalid {WHAT}: line {row.line}, column 'duration': must not be negative",
                issues=[{"row": row.line, "field": "duration", "message": "must not be negative"}],
            )
        if len(v["trial_type"]) > 255:
            raise BadRequest(
                f"invalid {WHAT}: line {row.line}, column 'trial_type': longer than 255 characters",
                issues=[{"row": row.line, "field": "trial_type", "message": "longer than 255 characters"}],
            )
        events.append(
            LoggedEvent(
                line=row.line,
                onset=onset,
                duration=duration,
                trial_type=v["trial_type"],
                file_name=_optional(v, "file_name", 255),
                description=_optional(v, "description", 10_000),
                value=_optional(v, "value", 255),
            )
        )
    return events
