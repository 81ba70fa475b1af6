"""Spreadsheet formula injection (issue 16): client text beginning with
``=``, ``+``, ``-`` or ``@`` (or tab / carriage return before them) must not
reach the start of a cell of events.tsv, a key of events.json,
dataset_description's Name or a README line as a formula; the validator
still accepts the dataset, and the original text is recoverable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eeghub.plugins.exporter.dataset import validate, write_dataset_description, write_participants, write_readme, write_session
from eeghub.plugins.exporter.labels import LabelMap
from eeghub.plugins.exporter.tsv import cell, neutralise, read_tsv, restore
from tests.unit.test_bids_writer import POWER_LINE, T0_B, events_for, spec_for, stream_b

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd", "\t=1+1", "\r=1+1", " =1+1"]


def executes(text: str) -> bool:
    return text[:1] in ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize("text", FORMULAS)
def test_cells_are_neutralised(text: str) -> None:
    out = cell(text)
    assert not executes(out), out
    assert out.startswith("'")


@pytest.mark.parametrize("text", ["-1.5", "+3", "-0", "1e-3", "-2E+5", "n/a", "face", "'quoted", "a=b"])
def test_numbers_and_plain_text_are_unchanged(text: str) -> None:
    assert cell(text) == text


@given(st.text())
def test_restore_undoes_neutralise_exactly(text: str) -> None:
    assert restore(neutralise(text)) == text


@given(st.text())
def test_no_cell_starts_a_formula_unless_it_is_a_number(text: str) -> None:
    out = cell(text)
    if executes(out):
        float(out)  # only a number such as -1.5 may start with + or -


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bids-formulas")
    labels = LabelMap()
    stream = stream_b()
    bounds = (T0_B + 500, T0_B + 11300)
    spec = spec_for(stream, labels, "=cmd|' /C calc'!A0", *bounds)
    events = [
        replace(event, trial_type=FORMULAS[n % len(FORMULAS)], value=FORMULAS[(n + 1) % len(FORMULAS)])
        for n, event in enumerate(events_for(stream, *bounds))
    ]
    write_dataset_description(root, name='=HYPERLINK("http://evil","click")', authors=["@Mallory"], license="CC0")
    write_readme(root, title="=1+1", description="+cmd|' /C calc'!A0\nplain line\n-2+3")
    write_participants(root, [{"participant_id": spec.subject}])
    write_session(root, spec, stream.packets, stream.signals, events, {}, POWER_LINE)
    labels.write(root)
    return root


def test_no_exported_text_starts_a_formula(exported: Path) -> None:
    description = json.loads((exported / "dataset_description.json").read_text())
    assert description["Name"] == '\'=HYPERLINK("http://evil","click")'
    assert description["Authors"] == ["'@Mallory"]
    assert restore(description["Name"]) == '=HYPERLINK("http://evil","click")'
    readme = (exported / "README").read_text().splitlines()
    assert "'+cmd|' /C calc'!A0" in readme and "'-2+3" in readme
    assert not any(executes(line) for line in readme)
    events_tsv = next(exported.rglob("*_events.tsv"))
    columns, rows = read_tsv(events_tsv)
    assert rows
    for row in rows:
        for column in ("trial_type", "value"):
            assert not executes(row[column]), (column, row[column])
    trial_types = {row["trial_type"] for row in rows}
    assert len(trial_types) > 3
    assert {restore(t) for t in trial_types} <= {f.strip() for f in FORMULAS}
    sidecar = json.loads(next(exported.rglob("*_events.json")).read_text())
    for key in sidecar["trial_type"]["Levels"]:
        assert not executes(key), key


def test_validator_accepts_the_neutralised_dataset(exported: Path) -> None:
    summary = validate(exported)
    assert summary.errors == 0, [i for i in summary.issues if i.severity == "error"]
