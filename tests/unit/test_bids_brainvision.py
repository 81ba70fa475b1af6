"""The streaming BrainVision writer: MNE reads back the exact int16 counts."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from eeghub.plugins.exporter import validation
from eeghub.plugins.exporter.brainvision import (
    BrainVisionWriter,
    resolutions_for_types,
    safe_channel_names,
    units_for_types,
)

LSB = 5.7220458984375e-6


@pytest.mark.parametrize("rate", [250.0, 256.0, 500.0])
def test_mne_reads_back_counts_units_and_meas_date(tmp_path: Path, rate: float) -> None:
    import mne

    rng = np.random.default_rng(0)
    data = rng.integers(-32768, 32768, (4, 1000), dtype=np.int16)
    data[3] = 0
    data[3, 100:105] = 7
    names, types = ["C,3", "Cz", "EOG1", "TRIG"], ["eeg", "eeg", "eog", "stim"]
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with BrainVisionWriter(tmp_path / "rec", names, units_for_types(types), rate, resolutions_for_types(types, LSB), when) as writer:
        for start in range(0, 1000, 333):
            writer.write(data[:, start : start + 333])
        writer.add_marker("Comment", "gap, zero-filled", 10, 5)
    raw = mne.io.read_raw_brainvision(tmp_path / "rec.vhdr", preload=True, verbose="error")
    assert raw.ch_names == names
    assert raw.info["sfreq"] == rate
    assert raw.info["meas_date"] == when
    assert raw.get_channel_types()[3] == "misc"  # unit n/a; mne-bids makes it stim from channels.tsv
    read = raw.get_data()
    np.testing.assert_allclose(read[:3], data[:3] * LSB, rtol=1e-12, atol=0)
    assert np.array_equal(np.rint(read[:3] / LSB).astype(np.int16), data[:3])
    assert np.array_equal(read[3], data[3])
    assert list(raw.annotations.description) == ["Comment/gap, zero-filled"]
    assert raw.time_as_index(raw.annotations.onset, use_rounding=True)[0] == 10
    assert (tmp_path / "rec.eeg").stat().st_size == data.size * 2


def test_failed_write_leaves_no_recording(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with BrainVisionWriter(tmp_path / "rec", ["A"], ["V"], 250.0, [LSB], None) as writer:
            writer.write(np.zeros((1, 10), np.int16))
            raise RuntimeError("storage failed")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="control"):
        BrainVisionWriter(tmp_path / "x", ["A\nB"], ["V"], 250.0, [LSB], None)
    with pytest.raises(ValueError, match="unique"):
        BrainVisionWriter(tmp_path / "y", ["A", "A"], ["V", "V"], 250.0, [LSB, LSB], None)
    writer = BrainVisionWriter(tmp_path / "z", ["A"], ["V"], 250.0, [LSB], None)
    with pytest.raises(TypeError):
        writer.write(np.zeros((1, 3), np.float64))
    with pytest.raises(ValueError):
        writer.write(np.zeros((2, 3), np.int16))
    writer.abort()


def test_safe_channel_names() -> None:
    assert safe_channel_names(["Fp1", "a\tb", "", " Cz ", "Fp1"]) == ["Fp1", "a_b", "CH3", "Cz", "Fp1_2"]


def test_missing_validator_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(validation.ValidatorUnavailable, match="pip install bids-validator-deno"):
        validation.validate(tmp_path)


def test_validator_report_parsing() -> None:
    report = {
        "issues": {
            "issues": [
                {"code": "X", "severity": "error", "location": "/a"},
                {"code": "Y", "subCode": "Z", "severity": "warning", "issueMessage": "why"},
            ],
            "codeMessages": {"X": "what X means"},
        },
        "summary": {"schemaVersion": "1.2.7"},
    }
    summary = validation.parse_report(report)
    assert (summary.errors, summary.warnings, summary.ok) == (1, 1, False)
    assert summary.issues[0].message == "what X means" and summary.issues[1].sub_code == "Z"
    assert summary.to_dict()["schema_version"] == "1.2.7"
