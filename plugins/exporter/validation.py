"""Run the BIDS validator on a written dataset and summarise what it says.

The validator is ``bids-validator-deno`` (the schema-based validator, a
Python wheel that bundles its Deno runtime; it runs offline). It is looked
up next to the running interpreter first (a virtualenv's ``bin/``, where pip
puts it even when that ``bin/`` is not on PATH), then on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eeghub.core.errors import EeghubError

EXECUTABLE = "bids-validator-deno"


class ValidatorUnavailable(EeghubError):
    """The validator is not installed or could not produce a report."""


@dataclass(frozen=True)
class ValidationIssue:
    severity: str
    code: str
    location: str | None = None
    sub_code: str | None = None
    message: str | None = None


@dataclass
class ValidationSummary:
    errors: int
    warnings: int
    issues: list[ValidationIssue] = field(default_factory=list)
    schema_version: str | None = None

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "warnings": self.warnings,
            "schema_version": self.schema_version,
            "issues": [issue.__dict__ for issue in self.issues],
        }


def find_validator() -> str:
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found:
        return found
    raise ValidatorUnavailable(
        f"{EXECUTABLE} was not found next to {sys.executable} or on PATH; "
        "install it with: pip install bids-validator-deno"
    )


def validate(root: Path | str, *, timeout_s: float = 600.0, max_rows: int = -1) -> ValidationSummary:
    """Validate the dataset at ``root``; ``max_rows=-1`` checks every TSV row
    (the validator's default is the first 1000)."""
    command = [find_validator(), "--format", "json", "--no-color", "--max-rows", str(max_rows), str(root)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"{EXECUTABLE} could not run: {exc}") from exc
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise ValidatorUnavailable(f"{EXECUTABLE} exited with {done.returncode} without a JSON report: {detail}") from None
    return parse_report(report)


def parse_report(report: dict[str, Any]) -> ValidationSummary:
    issues_part = report.get("issues", {})
    messages: dict[str, str] = issues_part.get("codeMessages", {}) or {}
    issues: list[ValidationIssue] = []
    for raw in issues_part.get("issues", []) or []:
        code = str(raw.get("code", ""))
        issues.append(
            ValidationIssue(
                severity=str(raw.get("severity", "error")),
                code=code,
                location=raw.get("location"),
                sub_code=raw.get("subCode"),
                message=(raw.get("issueMessage") or messages.get(code) or "").strip() or None,
            )
        )
    return ValidationSummary(
        errors=sum(1 for issue in issues if issue.severity == "error"),
        warnings=sum(1 for issue in issues if issue.severity == "warning"),
        issues=issues,
        schema_version=(report.get("summary") or {}).get("schemaVersion"),
    )
