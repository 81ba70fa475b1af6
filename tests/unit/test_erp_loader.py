"""Placing a session's packets in one array, and its events on it
(``plugins/erp/loader.py``'s ``_assemble``), with gaps, timestamp jitter,
duplicates and packets of another layout."""

from __future__ import annotations

import types
from datetime import UTC, datetime

import numpy as np

from eeghub.plugins.erp.loader import _assemble

RATE = 250.0
START_MS = 1_760_000_000_000


def packet(first: int, n: int = 250, names: tuple[str, ...] = ("Pz", "Cz")) -> types.SimpleNamespace:
    signals = np.vstack([np.arange(first, first + n) % 30000 for _ in names]).astype(np.int16)
    layout = types.SimpleNamespace(channel_names=names, channel_types=("eeg",) * len(names))
    return types.SimpleNamespace(layout=layout, signals=signals)


def row(start_ms: int) -> dict[str, object]:
    return {"timestamp_start_ms": start_ms, "sampling_rate": RATE, "lsb_to_volts": 1e-6}


def test_packets_gaps_jitter_and_events() -> None:
    decoded = [
        (row(START_MS), packet(0)),
        (row(START_MS + 1003), packet(250)),  # 3 ms late: joins the previous packet
        (row(START_MS + 1003), packet(250)),  # a duplicate: left out
        (row(START_MS + 4000), packet(1000)),  # 2 s missing before it: a gap
        (row(START_MS + 5000), packet(1250, names=("Pz",))),  # another layout: left out
    ]
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    events = [
        {"event_id": 1, "onset": 0.5, "trial_type": "target", "onset_corrected_us": (START_MS + 1503) * 1000, "file_name": None},
        {"event_id": 2, "onset": 4.2, "trial_type": "nontarget", "onset_corrected_us": None, "file_name": "a.png"},
        {"event_id": 3, "onset": 9.0, "trial_type": "target", "onset_corrected_us": None, "file_name": None},
    ]
    report: dict[str, object] = {"missing_objects": 0, "undecodable_objects": 0, "inconsistent_objects": 0,
                                 "overlapping_objects": 0, "gaps": 0, "gap_seconds": 0.0}
    recording = _assemble("s", "calibration", start, decoded, events, report)
    assert recording.data.shape == (2, 1250)
    assert report == {"missing_objects": 0, "undecodable_objects": 0, "inconsistent_objects": 1,
                      "overlapping_objects": 1, "gaps": 1, "gap_seconds": 2.0}
    assert np.isnan(recording.data[:, 500:1000]).all() and np.isfinite(recording.data[:, :500]).all()
    # The second packet's samples follow the first's without a hole; values in volts.
    assert recording.data[0, 250] == np.float32(250e-6) and recording.data[0, 1000] == np.float32(1000e-6)
    first, second, third = recording.events
    # 500 ms after the second packet's (late) timestamp: its sample 125.
    assert (first.source, first.sample) == ("trigger", 375)
    # Logged at 4.2 s: 200 ms into the packet stamped 4.0 s, which starts at sample 1000.
    assert (second.source, second.sample, second.stim_file) == ("logged", 1050, "a.png")
    assert third.sample is None  # after the data
