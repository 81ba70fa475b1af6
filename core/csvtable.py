"""Strict parsing of the CSV files clients upload (event logs, stimulus
definitions), with errors that name the row and the column.

Rules: UTF-8 (a byte-order mark is allowed), a header row, header names
compared case-insensitively after trimming, no duplicate or empty header
names, every data row with exactly as many fields as the header, blank lines
skipped. Row numbers in errors are the line numbers a person sees in a
spreadsheet (the header is line 1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BadRequest


@dataclass(frozen=True)
class CsvRow:
    line: int
    values: dict[str, str]


@dataclass(frozen=True)
class CsvTable:
    columns: list[str]
    rows: list[CsvRow]


def parse_csv(
    data: bytes,
    *,
    what: str,
    required: Iterable[str],
    max_rows: int = 100_000,
) -> CsvTable:
    """Parse ``data``; raise ``BadRequest`` (with one issue per problem, at most
    20) when it breaks a rule or lacks a ``required`` column."""
    if not data.strip():
        raise BadRequest(f"{what} is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise BadRequest(f"{what} contains NUL characters; is it really a CSV file?")
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    issues: list[dict[str, object]] = []
    try:
        header = next(reader, None)
        if header is None:
            raise BadRequest(f"{what} has no header row")
        columns = [h.strip().lower() for h in header]
        for index, name in enumerate(columns):
            if not name:
                issues.append({"row": 1, "message": f"column {index + 1} has an empty header"})
            elif columns.index(name) != index:
                issues.append({"row": 1, "field": name, "message": f"duplicate column {name!r}"})
        missing = [c for c in required if c not in columns]
        for name in missing:
            issues.append({"row": 1, "field": name, "message": f"required column {name!r} is missing"})
        if issues:
            raise BadRequest(_summary(what, issues), issues=issues[:20])
        rows: list[CsvRow] = []
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(columns):
                issues.append(
                    {"row": line, "message": f"has {len(fields)} fields, the header has {len(columns)}"}
                )
                if len(issues) >= 20:
                    break
                continue
            rows.append(CsvRow(line=line, values={c: f.strip() for c, f in zip(columns, fields, strict=True)}))
            if len(rows) > max_rows:
                raise BadRequest(f"{what} has more than {max_rows} rows")
    except csv.Error as exc:
        raise BadRequest(f"{what} is not valid CSV at line {reader.line_num}: {exc}") from None
    if issues:
        raise BadRequest(_summary(what, issues), issues=issues[:20])
    return CsvTable(columns=columns, rows=rows)


def _summary(what: str, issues: list[dict[str, object]]) -> str:
    first = issues[0]
    where = f"line {first['row']}" + (f", column {first['field']!r}" if first.get("field") else "")
    more = f" (and {len(issues) - 1} more problem(s))" if len(issues) > 1 else ""
    return f"invalid {what}: {where}: {first['message']}{more}"


def parse_number(value: str, *, what: str, line: int, field: str, default: float | None = None) -> float:
    """A finite float from a CSV cell; empty → ``default`` (or an error)."""
    import math

    if value == "" or value.lower() == "n/a":
        if default is None:
            raise BadRequest(
                f"invalid {what}: line {line}, column {field!r}: a number is required",
                issues=[{"row": line, "field": field, "message": "a number is required"}],
            )
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadRequest(
            f"invalid {what}: line {line}, column {field!r}: {value[:40]!r} is not a finite number",
            issues=[{"row": line, "field": field, "message": f"{value[:40]!r} is not a finite number"}],
        )
    return number
