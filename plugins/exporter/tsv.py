"""BIDS TSV and JSON files, and paths that cannot leave the dataset.

BIDS TSVs are UTF-8, tab-separated, with ``n/a`` for missing values. Cell
text comes partly from clients (trial types, values, session types), so tabs,
newlines and other control characters are replaced by spaces: one of them
would add a column or a row. Numbers are written positionally (no ``1e-05``)
and as short as round-tripping allows.

Client text that a spreadsheet would run as a formula (beginning with ``=``,
``+``, ``-`` or ``@``, after tabs and carriage returns became spaces and were
stripped) gets a leading apostrophe (:func:`neutralise`), which spreadsheets
show as text and the BIDS validator does not care about. The rule is
reversible (:func:`restore`): text that already began with apostrophes
before such a character gets one more.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

NA = "n/a"


def inside(root: Path, *parts: str) -> Path:
    """``root/parts…``, refusing any result outside ``root`` (``..``, absolute
    parts, symlinks pointing out)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and not target.is_relative_to(base):
        raise ValueError(f"path {'/'.join(parts)!r} would leave the dataset")
    return target


def number(value: float) -> str:
    """Shortest positional decimal that reads back as ``value`` (``4.936``, ``0.00390625``)."""
    if not math.isfinite(value):
        return NA
    return str(np.format_float_positional(float(value), trim="-"))


_FORMULA = re.compile(r"'*[=+\-@]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralise(text: str) -> str:
    """``text`` as a spreadsheet shows it rather than runs it: a leading
    apostrophe before ``=``, ``+``, ``-`` or ``@`` (or before apostrophes
    followed by one, so that :func:`restore` is exact). Numbers such as
    ``-1.5`` are left alone: a spreadsheet reads them as numbers."""
    if _FORMULA.match(text) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def restore(text: str) -> str:
    """The text :func:`neutralise` was given."""
    if text.startswith("'") and _FORMULA.match(text, 1) and not _NUMBER.fullmatch(text[1:]):
        return text[1:]
    return text


def cell(value: object) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return number(float(value))
    text = str(value)
    if not text.isprintable():  # printable text has no control (category C) character: nothing to replace
        text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return neutralise(text.strip()) or NA


def write_tsv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    lines = ["\t".join(columns)]
    lines += ["\t".join(cell(row.get(column)) for column in columns) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        return [], []
    columns = lines[0].split("\t")
    return columns, [dict(zip(columns, line.split("\t"), strict=False)) for line in lines[1:] if line]


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def iso_utc(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.ffffffZ``: a BIDS datetime in UTC, to the µs."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
