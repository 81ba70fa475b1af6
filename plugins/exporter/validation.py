"""Run the BIDS validator on a written dataset and summarise what it says.

The validator is ``bids-validator-deno`` (the schema-based validator, a
Python wheel that bundles its Deno runtime; it runs offline). It is looked
up next to the running interpreter first (a virtualenv's ``bin/``, where pip
puts it even when that ``bin/`` is not on PATH), then on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
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


def find_validator(command: str | None = None) -> str:
    """The validator's executable: ``command`` when given (a path, or a name
    looked up on PATH), else ``bids-validator-deno`` next to the running
    interpreter, then on PATH. Raises ValidatorUnavailable when not found."""
    if command:
        path = Path(command).expanduser()
        if path.parent != Path("."):  # a path: used as it is
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
            raise ValidatorUnavailable(f"the configured validator {command!r} (export.validator) is not an executable file")
        found = shutil.which(command)
        if found:
            return found
        raise ValidatorUnavailable(f"the configured validator {command!r} (export.validator) was not found on PATH")
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


def validate(
    root: Path | str, *, command: str | None = None, timeout_s: float = 600.0, max_rows: int = -1
) -> ValidationSummary:
    """Validate the dataset at ``root``; ``max_rows=-1`` checks every TSV row
    (the validator's default is the first 1000). ``command``: as in
    :func:`find_validator`."""
    argv = [find_validator(command), "--format", "json", "--no-color", "--max-rows", str(max_rows), str(root)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"{EXECUTABLE} could not run: {exc}") from exc
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise ValidatorUnavailable(f"{EXECUTABLE} exited with {done.returncode} without a JSON report: {detail}") from None
    if not isinstance(report, dict):
        raise ValidatorUnavailable(f"{EXECUTABLE} printed JSON that is not a report")
    return parse_report(report)


def probe(command: str | None = None, *, timeout_s: float = 60.0) -> str:
    """Check that the validator runs (``--version``); its path. Raises
    ValidatorUnavailable with the reason otherwise."""
    path = find_validator(command)
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"{EXECUTABLE} could not run: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-500:]
        raise ValidatorUnavailable(f"{path} --version exited with {done.returncode}: {detail}")
    return path


class ValidatorHealth:
    """What the exporter knows about its validator, for ``/api/v1/health``:
    ``problem`` is the reason it is unusable (from the start-up probe or the
    last export that could not validate), None once it ran."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.path: str | None = None
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        with self._lock:
            self.problem = reason

    def ran(self, path: str | None = None) -> None:
        with self._lock:
            self.problem = None
            if path:
                self.path = path


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
