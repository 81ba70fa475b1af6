"""BIDS labels from client-supplied identifiers, and the record of the mapping.

A BIDS label (``sub-<label>``, ``ses-<label>``, ``task-<label>``) may hold
only ASCII letters and digits. User ids, session types and the like come from
clients and may contain anything (``../evil user_1``, ``main_external``,
non-Latin scripts); the predecessor removed a few characters and crashed the
whole export on any other (spec §8 item 15). Here every string maps to a
valid label, and because two originals can map to the same label
(``a-b`` and ``a_b`` both give ``ab``), a :class:`LabelMap` hands out unique
labels per kind and keeps original → label, which the dataset records in
``sourcedata/label_map.json`` (the validator ignores ``sourcedata/``, and a
JSON object can hold every kind, including session and task labels, which a
participants.tsv column could not).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from pathlib import Path

MAX_LABEL_LENGTH = 32
"""Keeps ``sub-…_ses-…_task-…_channels.tsv`` far below the 255-byte file name limit."""

LABEL_MAP_PATH = Path("sourcedata") / "label_map.json"


def is_bids_label(value: str) -> bool:
    return bool(value) and value.isascii() and value.isalnum()


def bids_label(value: str) -> str:
    """A valid BIDS label for ``value``: deterministic, never empty.

    Accents are folded (``é`` → ``e``, NFKD), every character that is not an
    ASCII letter or digit is dropped, case is kept, and the result is cut at
    :data:`MAX_LABEL_LENGTH`. A value with nothing left (empty, only
    punctuation, a non-Latin script) becomes ``x`` plus 8 hex digits of its
    SHA-256, so different such values still get different labels.
    """
    folded = unicodedata.normalize("NFKD", value)
    kept = "".join(ch for ch in folded if ch.isascii() and ch.isalnum())
    if not kept:
        return "x" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return kept[:MAX_LABEL_LENGTH]


class LabelMap:
    """Unique labels per kind (``subject``, ``session``, ``task``, …) and scope.

    ``assign(kind, original)`` returns the label already given to
    ``original``, or a new one: ``bids_label(preferred or original)``, with a
    number appended (``ab2``, ``ab3``) when another original of the same kind
    and scope already holds it. Uniqueness is checked case-insensitively, so
    ``sub-AB`` and ``sub-ab`` never both exist (they would be one directory on
    macOS and Windows). Labels depend on the order of the calls: assign in a
    stable order (for example sorted by original id) to get the same labels
    on every export. ``scope`` separates namespaces that BIDS keeps apart,
    such as session labels, which only need to be unique within a subject.
    """

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str, str], str] = {}
        self._taken: dict[tuple[str, str], set[str]] = {}

    def assign(self, kind: str, original: str, *, preferred: str | None = None, scope: str = "") -> str:
        key = (kind, scope, original)
        if key in self._labels:
            return self._labels[key]
        taken = self._taken.setdefault((kind, scope), set())
        base = bids_label(original if preferred is None else preferred)
        label, n = base, 1
        while label.lower() in taken:
            n += 1
            suffix = str(n)
            label = base[: MAX_LABEL_LENGTH - len(suffix)] + suffix
        taken.add(label.lower())
        self._labels[key] = label
        return label

    def label(self, kind: str, original: str, *, scope: str = "") -> str:
        """The label assigned earlier (KeyError if none was)."""
        return self._labels[(kind, scope, original)]

    def as_dict(self) -> dict[str, dict[str, object]]:
        """``{kind: {original: label}}``, or ``{kind: {scope: {original: label}}}``
        for kinds assigned with a scope."""
        out: dict[str, dict[str, object]] = {}
        for (kind, scope, original), label in sorted(self._labels.items()):
            table = out.setdefault(kind, {})
            if scope:
                inner = table.setdefault(scope, {})
                assert isinstance(inner, dict)
                inner[original] = label
            else:
                table[original] = label
        return out

    def write(self, root: Path, *, notes: Mapping[str, str] | None = None) -> Path:
        """Write ``sourcedata/label_map.json`` under ``root`` and return its path."""
        path = Path(root) / LABEL_MAP_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, object] = {
            "description": (
                "Original identifiers (user ids, session ids, session types) and the BIDS labels "
                "they were given. BIDS labels allow only ASCII letters and digits."
            ),
            "labels": self.as_dict(),
        }
        if notes:
            document["notes"] = dict(notes)
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path
