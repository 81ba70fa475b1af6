"""BIDS labels from hostile identifiers, and unique assignment with a recorded map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eeghub.plugins.exporter.labels import MAX_LABEL_LENGTH, LabelMap, bids_label, is_bids_label


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("../evil user_1", "eviluser1"),
        ("main_external", "mainexternal"),
        ("Müller-Lüdenscheidt", "MullerLudenscheidt"),
        ("3f2a9c1e-0b7d-4e55-9a1c-2b6f0c7d8e9a", "3f2a9c1e0b7d4e559a1c2b6f0c7d8e9a"),
        ("ｆｕｌｌ", "full"),  # compatibility forms fold to ASCII
    ],
)
def test_bids_label_keeps_only_ascii_letters_and_digits(value: str, label: str) -> None:
    assert bids_label(value) == label
    assert is_bids_label(bids_label(value))


@pytest.mark.parametrize("value", ["", "___", "../..", "山田", "\n\t", "🙂"])
def test_bids_label_is_never_empty_and_deterministic(value: str) -> None:
    label = bids_label(value)
    assert is_bids_label(label) and label == bids_label(value)
    assert label.startswith("x") and len(label) == 9


def test_labels_of_different_unlatin_values_differ() -> None:
    assert bids_label("山田") != bids_label("田中")


def test_long_values_are_cut() -> None:
    assert len(bids_label("a" * 300)) == MAX_LABEL_LENGTH


def test_label_map_resolves_collisions_and_remembers() -> None:
    labels = LabelMap()
    assert labels.assign("subject", "a-b") == "ab"
    assert labels.assign("subject", "a_b") == "ab2"
    assert labels.assign("subject", "AB") == "AB3"  # case-insensitive: one directory on macOS
    assert labels.assign("subject", "a-b") == "ab"
    assert labels.assign("task", "a b") == "ab"  # kinds are separate namespaces
    long = "z" * 40
    assert labels.assign("subject", long) == "z" * MAX_LABEL_LENGTH
    assert labels.assign("subject", long + "!") == "z" * (MAX_LABEL_LENGTH - 1) + "2"


def test_scoped_session_labels(tmp_path: Path) -> None:
    labels = LabelMap()
    assert labels.assign("session", "s-1", preferred="1", scope="alice") == "1"
    assert labels.assign("session", "s-2", preferred="1", scope="bob") == "1"
    assert labels.assign("session", "s-3", preferred="1", scope="alice") == "12"
    labels.assign("subject", "../evil user_1")
    path = labels.write(tmp_path)
    assert path == tmp_path / "sourcedata" / "label_map.json"
    document = json.loads(path.read_text())
    assert document["labels"] == {
        "session": {"alice": {"s-1": "1", "s-3": "12"}, "bob": {"s-2": "1"}},
        "subject": {"../evil user_1": "eviluser1"},
    }
