"""The stimulus definition CSV (``stimuli_definition_csv``).

Required columns: ``file_name``, ``trial_type``. Known optional columns:
``description``, ``item_name``, ``brand_name``, ``category``, ``gender``
(the ``experiment_stimuli`` columns the predecessor dropped). Any other
column is kept too, in ``experiment_stimuli.extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eeghub.core.csvtable import parse_csv
from eeghub.core.errors import BadRequest
from eeghub.core.files import file_name_problem

WHAT = "stimuli_definition_csv"
KNOWN = {"file_name": 255, "trial_type": 255, "description": 10_000, "item_name": 255, "brand_name": 255, "category": 100, "gender": 50}


@dataclass(frozen=True)
class StimulusDefinition:
    line: int
    file_name: str
    trial_type: str
    description: str | None = None
    item_name: str | None = None
    brand_name: str | None = None
    category: str | None = None
    gender: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_definitions(data: bytes) -> list[StimulusDefinition]:
    table = parse_csv(data, what=WHAT, required=("file_name", "trial_type"))
    if not table.rows:
        raise BadRequest(f"{WHAT} has no rows", issues=[{"field": WHAT, "message": "no rows"}])
    issues: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    out: list[StimulusDefinition] = []
    for row in table.rows:
        v = row.values
        name = v["file_name"]
        problem = file_name_problem(name)
        if problem:
            issues.append({"row": row.line, "field": "file_name", "message": f"file name {name[:80]!r} {problem}"})
        elif name in seen:
            issues.append({"row": row.line, "field": "file_name", "message": f"{name!r} already defined on line {seen[name]}"})
        else:
            seen[name] = row.line
        if not v["trial_type"]:
            issues.append({"row": row.line, "field": "trial_type", "message": "trial_type is required"})
        for column, limit in KNOWN.items():
            if len(v.get(column, "")) > limit:
                issues.append({"row": row.line, "field": column, "message": f"longer than {limit} characters"})
        known = {k: (v.get(k) or None) for k in KNOWN if k not in ("file_name", "trial_type")}
        extra = {k: val for k, val in v.items() if k not in KNOWN}
        out.append(StimulusDefinition(line=row.line, file_name=name, trial_type=v["trial_type"], extra=extra, **known))
    if issues:
        first = issues[0]
        raise BadRequest(
            f"Invalid CSV format: line {first['row']}, column {first['field']!r}: {first['message']}",
            issues=issues[:20],
        )
    return out
