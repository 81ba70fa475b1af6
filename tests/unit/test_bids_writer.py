"""The BIDS dataset writer, end to end without servers.

Two subjects' sessions are built from simulated device packets (both payload
variants) with triggers, a duplicated packet, a gap, an overlapping packet,
timestamp jitter and packets outside the session bounds. The dataset must
pass the BIDS validator with 0 errors, and ``mne_bids.read_raw_bids`` must
give back exactly the int16 counts that were sent (with the documented
placement), the trigger channel, events on the trigger edges, and
``meas_date`` = the first kept sample's time.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from eeghub.core.errors import BadRequest
from eeghub.core.packet import decode_payload
from eeghub.core.simulator import SimulatedDevice
from eeghub.core.timeline import Packet, sample_time_us
from eeghub.plugins.exporter.dataset import (
    BIDS_VERSION,
    EventSpec,
    MediaItem,
    SessionSpec,
    validate,
    write_bidsignore,
    write_dataset_description,
    write_participants,
    write_readme,
    write_session,
    write_sourcedata_media,
    write_stimuli,
)
from eeghub.plugins.exporter.labels import LabelMap
from eeghub.plugins.exporter.tsv import read_tsv

RATE = 250.0
N = 250  # samples per packet (1 s)
POWER_LINE = 60


@dataclass
class Stream:
    """A session's packets as the exporter gets them, plus what the test expects."""

    device: SimulatedDevice
    payloads: dict[str, bytes] = field(default_factory=dict)
    packets: list[Packet] = field(default_factory=list)
    expected: list[tuple[str, int, int] | int] = field(default_factory=list)
    """(object id, first, stop) slices and zero-fill lengths, in recording order."""

    def add(self, object_id: str, index: int, start_ms: int, payload: bytes | None = None) -> None:
        data = payload if payload is not None else self.device.payload(index)
        self.payloads[object_id] = data
        self.packets.append(
            Packet(object_id, start_ms, start_ms + 996, N, RATE, hashlib.sha256(data).hexdigest())
        )

    def signals(self, object_id: str) -> np.ndarray:
        return decode_payload(self.payloads[object_id]).signals

    def expected_recording(self) -> np.ndarray:
        channels = self.signals(self.packets[0].object_id).shape[0]
        parts = [
            np.zeros((channels, step), np.int16) if isinstance(step, int) else self.signals(step[0])[:, step[1] : step[2]]
            for step in self.expected
        ]
        return np.concatenate(parts, axis=1)

    def trigger_edges_us(self) -> list[int]:
        """Rising edges of the kept packets, as the event corrector timestamps them."""
        seen: set[str] = set()
        previous = 0
        edges: list[int] = []
        for packet in sorted(self.packets, key=lambda p: (p.start_ms, p.object_id)):
            if packet.sha256 in seen:
                continue
            seen.add(packet.sha256 or packet.object_id)
            decoded = decode_payload(self.payloads[packet.object_id], previous_trigger=previous)
            edges += [sample_time_us(packet, int(i)) for i in decoded.rising_edges]
            previous = decoded.last_trigger
        return edges


T0_A = 1_717_000_000_000  # ms
T0_B = 1_717_100_000_000


def stream_a() -> Stream:
    """v4 payloads (TRIG channel in the header), 20 packets of 1 s.

    - packets 0, 1 and 19 are outside the session [T0+2100 ms, T0+18500 ms];
      packet 2 loses its first 25 samples (100 ms) and packet 18 keeps 126;
    - packet 3 is delivered twice (same bytes): one copy is dropped;
    - packets 10-12 never arrive: a 3 s gap, filled with 750 zeros;
    - packets 4, 5 and 7 are stamped 2-3 ms off (phone jitter, within tolerance).
    """
    device = SimulatedDevice(
        "../evil user_1", "dev-a", channels=8, variant="v4", seed=1,
        trigger_samples=[400, 600, 1248, 2000, 2700, 3500, 4600],
    )
    s = Stream(device)
    jitter = {4: 2, 5: -3, 7: 3}
    for i in range(20):
        if i in (10, 11, 12):
            continue
        s.add(f"a{i:02d}", i, T0_A + i * 1000 + jitter.get(i, 0))
        if i == 3:
            s.add("a03-redelivered", i, T0_A + 3000, payload=s.payloads["a03"])
    s.expected = [("a02", 25, N)] + [(f"a{i:02d}", 0, N) for i in range(3, 10)] + [750]
    s.expected += [(f"a{i:02d}", 0, N) for i in range(13, 18)] + [("a18", 0, 126)]
    return s


def stream_b() -> Stream:
    """The mobile app's variant (trigger block, synthesized TRIG), 12 packets.

    - session [T0+500 ms, T0+11300 ms]: packet 0 loses 125 samples, packet 11 keeps 76;
    - packet 8 is delivered twice;
    - an intruder packet (other content) is stamped 600 ms after packet 5's start:
      it overlaps packet 5 by 400 ms, so its first 100 samples are dropped
      (first writer wins) and its last 150 are placed after packet 5; packet 6
      is anchored by its timestamp right after packet 5, so its first 150
      samples (now covered by the intruder) are dropped.
    """
    device = SimulatedDevice(
        "part-02", "dev-b", channels=4, variant="app", seed=2, trigger_samples=[300, 1000, 2600, 2900]
    )
    other = SimulatedDevice("part-02", "dev-b", channels=4, variant="app", seed=3)
    s = Stream(device)
    for i in range(12):
        s.add(f"b{i:02d}", i, T0_B + i * 1000)
        if i == 8:
            s.add("b08-again", i, T0_B + 8000, payload=s.payloads["b08"])
    s.add("b05-intruder", 5, T0_B + 5600, payload=other.payload(5))
    s.expected = [("b00", 125, N)] + [(f"b{i:02d}", 0, N) for i in range(1, 6)]
    s.expected += [("b05-intruder", 100, N), ("b06", 150, N)]
    s.expected += [(f"b{i:02d}", 0, N) for i in range(7, 11)] + [("b11", 0, 76)]
    return s


def spec_for(stream: Stream, labels: LabelMap, session_type: str, start_ms: int, end_ms: int) -> SessionSpec:
    layout = decode_payload(stream.payloads[stream.packets[0].object_id]).layout
    subject = labels.assign("subject", stream.device.user_id)
    session_id = f"session-of-{stream.device.user_id}"
    return SessionSpec(
        subject=subject,
        session=labels.assign("session", session_id, preferred="1", scope=subject),
        task=labels.assign("task", session_type),
        session_id=session_id,
        session_type=session_type,
        sampling_rate=RATE,
        lsb_to_volts=stream.device.lsb_to_volts,
        channel_names=layout.channel_names,
        channel_types=layout.channel_types,
        start_ms=start_ms,
        end_ms=end_ms,
        device_id=stream.device.device_id,
    )


def events_for(stream: Stream, start_ms: int, end_ms: int) -> list[EventSpec]:
    """One event per trigger edge inside the session (corrected onsets), plus
    one logged-only event (its trigger fell into the gap or was never seen)."""
    events = []
    for n, onset_us in enumerate(stream.trigger_edges_us()):
        if start_ms * 1000 <= onset_us <= end_ms * 1000:
            kind = "face" if n % 2 else "house"
            events.append(
                EventSpec(
                    onset_us=onset_us,
                    logged_onset_s=(onset_us - start_ms * 1000) / 1e6 + 0.031,
                    duration=0.5,
                    trial_type=kind,
                    value=n + 1,
                    stim_file=f"{kind} {n}.png",
                    event_id=f"ev{n}",
                )
            )
    events.append(EventSpec(onset_us=None, logged_onset_s=8.6, duration=None, trial_type="missed", value=99, event_id="lost"))
    return events


QUALITY_ENTRY = {"status": "good", "reasons": [], "zero_ratio": 0.0, "bad_impedance_ratio": 0.0,
                 "unknown_impedance_ratio": 0.0, "flatline": False, "type": "eeg", "has_warning": False}


class QualityWithReport(dict):  # type: ignore[type-arg]
    """The channels.tsv view plus the full report, as ``runner._SessionQuality`` gives them."""

    def channel_report(self) -> dict[str, dict[str, object]]:
        report = {f"CH{i}": dict(QUALITY_ENTRY) for i in range(1, 9)}
        report["CH2"].update(status="bad", reasons=["zero-fill 100%"], zero_ratio=1.0)
        report["CH3"].update(reasons=["impedance unknown 100%"], unknown_impedance_ratio=1.0, has_warning=True)
        report["TRIG"] = {**QUALITY_ENTRY, "type": "stim"}
        return report


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bids")
    labels = LabelMap()
    a, b = stream_a(), stream_b()
    bounds_a = (T0_A + 2100, T0_A + 18500)
    bounds_b = (T0_B + 500, T0_B + 11300)
    spec_a = spec_for(a, labels, "main external", *bounds_a)
    spec_b = spec_for(b, labels, "calibration", *bounds_b)
    events_a, events_b = events_for(a, *bounds_a), events_for(b, *bounds_b)

    write_dataset_description(root, name="Hostile labels study", authors=["Ada Lovelace", "Alan Turing"], license="CC0")
    write_readme(root, title="Hostile labels study", description="Two simulated participants.")
    write_participants(root, [{"participant_id": spec_a.subject}, {"participant_id": spec_b.subject}])
    stimuli = sorted({e.stim_file for e in events_a + events_b if e.stim_file})
    write_stimuli(root, [(name, b"\x89PNG fake " + name.encode()) for name in stimuli])
    write_sourcedata_media(
        root,
        [MediaItem("m1", spec_a.subject, spec_a.session, "image", "photo.jpg", b"jpeg", datetime(2024, 5, 29, tzinfo=UTC))],
    )
    quality = QualityWithReport(
        {"CH2": {"status": "bad", "description": "zero-fill 100%"}, "CH3": {"status": "good", "description": "impedance unknown 100%"}}
    )
    write_bidsignore(root)
    result_a = write_session(root, spec_a, a.packets, a.signals, events_a, quality, POWER_LINE)
    result_b = write_session(root, spec_b, b.packets, b.signals, events_b, {}, POWER_LINE)
    labels.write(root)
    return {
        "root": root,
        "labels": labels,
        "cases": [(a, spec_a, result_a, bounds_a, events_a), (b, spec_b, result_b, bounds_b, events_b)],
    }


def test_validator_reports_no_errors(exported: dict[str, object]) -> None:
    summary = validate(exported["root"])  # type: ignore[arg-type]
    for issue in summary.issues:
        print(issue.severity, issue.code, issue.sub_code or "", issue.location or "")
    print(f"validator: {summary.errors} errors, {summary.warnings} warnings, schema {summary.schema_version}")
    assert summary.errors == 0, [i for i in summary.issues if i.severity == "error"]


def test_dataset_description_and_participants(exported: dict[str, object]) -> None:
    root: Path = exported["root"]  # type: ignore[assignment]
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["BIDSVersion"] == BIDS_VERSION
    columns, rows = read_tsv(root / "participants.tsv")
    assert columns[0] == "participant_id"
    assert [row["participant_id"] for row in rows] == ["sub-eviluser1", "sub-part02"]
    assert (root / "README").read_text().startswith("# Hostile labels study")


def test_hostile_labels_are_sanitized_and_recorded(exported: dict[str, object]) -> None:
    root: Path = exported["root"]  # type: ignore[assignment]
    mapping = json.loads((root / "sourcedata" / "label_map.json").read_text())["labels"]
    assert mapping["subject"] == {"../evil user_1": "eviluser1", "part-02": "part02"}
    assert mapping["task"] == {"main external": "mainexternal", "calibration": "calibration"}
    assert mapping["session"]["eviluser1"] == {"session-of-../evil user_1": "1"}
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("sub-")) == ["sub-eviluser1", "sub-part02"]
    assert not (root.parent / "evil user_1").exists()


def test_stimulus_names_cannot_leave_the_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    for name in ("../escape.png", "..", "a/b.png", "/etc/passwd"):
        with pytest.raises(BadRequest):
            write_stimuli(root, [(name, b"x")])
    assert list(tmp_path.rglob("*.png")) == []
    assert write_stimuli(root, [("ok image.png", b"x")]) == ["ok image.png"]
    assert (root / "stimuli" / "ok image.png").read_bytes() == b"x"


def test_recordings_read_back_exactly(exported: dict[str, object]) -> None:
    import mne_bids

    root: Path = exported["root"]  # type: ignore[assignment]
    for stream, spec, result, bounds, events in exported["cases"]:  # type: ignore[attr-defined]
        path = mne_bids.BIDSPath(
            subject=spec.subject, session=spec.session, task=spec.task, datatype="eeg", suffix="eeg",
            extension=".vhdr", root=root,
        )
        raw = mne_bids.read_raw_bids(path, verbose="error")
        expected = stream.expected_recording()
        data = raw.get_data()
        assert raw.ch_names == list(spec.channel_names)
        assert data.shape == expected.shape == (len(spec.channel_names), result.samples)
        types = raw.get_channel_types()
        trig = raw.ch_names.index("TRIG")
        assert types[trig] == "stim"
        assert set(types) - {"stim"} == {"eeg"}
        eeg = [i for i, kind in enumerate(types) if kind == "eeg"]
        lsb = spec.lsb_to_volts
        np.testing.assert_allclose(data[eeg], expected[eeg] * lsb, rtol=1e-12, atol=0)
        assert np.array_equal(np.rint(data[eeg] / lsb).astype(np.int64), expected[eeg].astype(np.int64))
        assert np.array_equal(data[trig], expected[trig].astype(float))

        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=bounds[0])
        assert raw.info["meas_date"] == start == result.recording_start

        # Events sit on the rising edges of the trigger channel read back.
        trigger = data[trig]
        edges = set(np.flatnonzero((trigger[1:] != 0) & (trigger[:-1] == 0)) + 1)
        if trigger[0] != 0:
            edges.add(0)
        annotations = raw.annotations
        onsets = raw.time_as_index(annotations.onset, use_rounding=True)
        trigger_onsets = {int(o) for o, d in zip(onsets, annotations.description, strict=True) if d.split("/")[0] in ("face", "house")}
        assert trigger_onsets and trigger_onsets == edges
        assert sum(e.onset_us is not None for e in events) == len(trigger_onsets) == result.events_from_trigger
        assert result.events_from_log == 1 and result.events_not_placed == [] and result.missing_stimuli == []

        sidecar = json.loads(path.copy().update(extension=".json").fpath.read_text())
        assert sidecar["PowerLineFrequency"] == POWER_LINE
        assert raw.info["line_freq"] == POWER_LINE
        assert sidecar["SamplingFrequency"] == RATE
        assert sidecar["TriggerChannelCount"] == 1


def test_session_a_placement_details(exported: dict[str, object]) -> None:
    import mne_bids

    root: Path = exported["root"]  # type: ignore[assignment]
    (stream, spec, result, bounds, _events), _ = exported["cases"]  # type: ignore[misc]
    assert result.duplicates == ["a03-redelivered"]
    assert result.outside_bounds == ["a00", "a01", "a19"]
    assert result.gaps == [(8 * 250 / RATE - 25 / RATE, 3.0)]
    assert result.overlaps == []
    eeg_dir = root / f"sub-{spec.subject}" / f"ses-{spec.session}" / "eeg"
    _, rows = read_tsv(eeg_dir / f"{spec.stem}_events.tsv")
    gap = [row for row in rows if row["trial_type"] == "BAD_ACQ_SKIP"]
    assert gap == [
        {"onset": "7.9", "duration": "3", "trial_type": "BAD_ACQ_SKIP", "value": "n/a", "stim_file": "n/a",
         "sample": "1975", "onset_source": "exporter", "logged_onset": "n/a", "event_id": "n/a"}
    ]
    logged = [row for row in rows if row["onset_source"] == "logged"]
    assert logged == [
        {"onset": "8.6", "duration": "n/a", "trial_type": "missed", "value": "99", "stim_file": "n/a",
         "sample": "2150", "onset_source": "logged", "logged_onset": "8.6", "event_id": "lost"}
    ]
    assert all((root / "stimuli" / row["stim_file"]).is_file() for row in rows if row["stim_file"] != "n/a")
    _, channels = read_tsv(eeg_dir / f"{spec.stem}_channels.tsv")
    by_name = {row["name"]: row for row in channels}
    assert by_name["CH2"]["status"] == "bad" and by_name["CH2"]["status_description"] == "zero-fill 100%"
    assert by_name["CH3"]["status_description"] == "impedance unknown 100%"
    assert by_name["TRIG"]["type"] == "TRIG"
    _, scans = read_tsv(root / f"sub-{spec.subject}" / f"ses-{spec.session}" / f"sub-{spec.subject}_ses-{spec.session}_scans.tsv")
    assert scans == [{"filename": f"eeg/{spec.stem}_eeg.vhdr", "acq_time": "2024-05-29T16:26:42.100000Z"}]
    path = mne_bids.BIDSPath(subject=spec.subject, session=spec.session, task=spec.task, datatype="eeg",
                             suffix="eeg", extension=".vhdr", root=root)
    raw = mne_bids.read_raw_bids(path, verbose="error")
    assert raw.info["bads"] == ["CH2"]
    skip = [(o, d) for o, d, name in zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description, strict=True) if name == "BAD_ACQ_SKIP"]
    assert skip == [(pytest.approx(7.9), pytest.approx(3.0))]


def test_session_b_overlap_details(exported: dict[str, object]) -> None:
    _, (_stream, _spec, result, _bounds, _events) = exported["cases"]  # type: ignore[misc]
    assert result.duplicates == ["b08-again"]
    assert result.overlaps == [("b05-intruder", 100), ("b06", 150)]
    assert result.gaps == []
    assert result.outside_bounds == []
    assert result.samples == 125 + 5 * 250 + 150 + 100 + 4 * 250 + 76


def test_media_index(exported: dict[str, object]) -> None:
    root: Path = exported["root"]  # type: ignore[assignment]
    _, rows = read_tsv(root / "sourcedata" / "media" / "media.tsv")
    assert rows[0]["filename"] == "sub-eviluser1/ses-1/photo.jpg"
    assert (root / "sourcedata" / "media" / rows[0]["filename"]).read_bytes() == b"jpeg"
    assert rows[0]["sha256"] == hashlib.sha256(b"jpeg").hexdigest()


def test_writer_streams_a_long_session_in_bounded_memory(tmp_path: Path) -> None:
    """30 min, 8 EEG channels + TRIG at 250 Hz: 8.1 MB of int16. Writing must
    not hold the session (let alone a float64 copy): peak well below 2×."""
    device = SimulatedDevice("u", "d", channels=8, variant="v4", seed=4, trigger_samples=[100])
    distinct = [device.payload(i) for i in range(10)]
    packets = [Packet(f"p{i:04d}", T0_A + i * 1000, T0_A + i * 1000 + 996, N, RATE) for i in range(1800)]
    layout = decode_payload(distinct[0]).layout
    get_signals: Callable[[str], np.ndarray] = lambda oid: decode_payload(distinct[int(oid[1:]) % 10]).signals
    spec = SessionSpec(
        subject="long", session="1", task="rest", session_id="s", session_type="rest", sampling_rate=RATE,
        lsb_to_volts=device.lsb_to_volts, channel_names=layout.channel_names, channel_types=layout.channel_types,
        start_ms=T0_A, end_ms=T0_A + 1800 * 1000,
    )
    session_bytes = 1800 * N * len(layout.channel_names) * 2
    events = [EventSpec(onset_us=(T0_A + i * 1000) * 1000, logged_onset_s=float(i), trial_type="tick") for i in range(0, 1800, 3)]
    tracemalloc.start()
    try:
        result = write_session(tmp_path, spec, packets, get_signals, events, {}, 50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak traced memory {peak / 1e6:.2f} MB for a {session_bytes / 1e6:.1f} MB session")
    assert result.samples == 1800 * N
    eeg_file = tmp_path / "sub-long" / "ses-1" / "eeg" / "sub-long_ses-1_task-rest_eeg.eeg"
    assert eeg_file.stat().st_size == session_bytes
    assert peak < 0.25 * session_bytes


def test_media_from_several_calls_never_overwrite(tmp_path: Path) -> None:
    write_sourcedata_media(tmp_path, [MediaItem("m1", "s1", "1", "image", "a.jpg", b"one")])
    write_sourcedata_media(tmp_path, [MediaItem("m2", "s1", "1", "image", "a.jpg", b"two")])
    with pytest.raises(BadRequest):
        write_sourcedata_media(tmp_path, [MediaItem("m3", "s1", "1", "audio", "../../x.wav", b"x")])
    _, rows = read_tsv(tmp_path / "sourcedata" / "media" / "media.tsv")
    assert [(r["media_id"], r["filename"], r["original_file_name"]) for r in rows] == [
        ("m1", "sub-s1/ses-1/a.jpg", "a.jpg"),
        ("m2", "sub-s1/ses-1/a-2.jpg", "a.jpg"),
    ]
    assert (tmp_path / "sourcedata" / "media" / "sub-s1" / "ses-1" / "a-2.jpg").read_bytes() == b"two"
    assert not list(tmp_path.rglob("x.wav"))


def test_tsv_cells_replace_every_control_character() -> None:
    """cell() skips its per-character scan for printable text; the result is
    the scan's for every code point (alone and inside text)."""
    import sys
    import unicodedata

    from eeghub.plugins.exporter.tsv import cell

    def scanned(text: str) -> str:
        return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text).strip() or "n/a"

    for code in range(0, sys.maxunicode + 1, 7):
        ch = chr(code)
        for text in (ch, f" a{ch}b ", ch * 2):
            assert cell(text) == scanned(text), hex(code)
    assert cell("a\tb\nc\u200bd\u00a0e ") == "a b c d\u00a0e"


def test_exported_stimulus_name_shortens_only_names_too_long_to_write() -> None:
    from eeghub.core.files import file_name_problem
    from eeghub.plugins.exporter.dataset import exported_stimulus_name

    assert exported_stimulus_name("choco.png") == "choco.png"
    long_a, long_b = "€" * 100 + "a.png", "€" * 100 + "b.png"  # 305 bytes each, same first 240 bytes
    short_a, short_b = exported_stimulus_name(long_a), exported_stimulus_name(long_b)
    for short in (short_a, short_b):
        assert file_name_problem(short) is None and short.endswith(".png") and "~" in short
        assert len(short.encode()) <= 255
    assert short_a != short_b, "the hash keeps two long names apart"
    assert exported_stimulus_name(long_a) == short_a, "stable"
    no_ext = "x" * 300
    assert exported_stimulus_name(no_ext).startswith("x" * 200) and len(exported_stimulus_name(no_ext)) <= 255
    # Other problems are not papered over: write_stimuli refuses them.
    assert exported_stimulus_name("../etc.png") == "../etc.png"


def test_quality_report_beside_the_recording(exported: dict[str, object], tmp_path: Path) -> None:
    """The predecessor's ``…_desc-quality_channels.json``: the full report,
    only where the quality has one; ignored by the validator through
    ``.bidsignore`` (without it, the file is an error)."""
    import shutil

    root: Path = exported["root"]  # type: ignore[assignment]
    (_, spec_a, result_a, _, _), (_, spec_b, result_b, _, _) = exported["cases"]  # type: ignore[misc]
    path = root / f"sub-{spec_a.subject}" / f"ses-{spec_a.session}" / "eeg" / f"{spec_a.stem}_desc-quality_channels.json"
    report = json.loads(path.read_text())
    assert list(report) == [f"CH{i}" for i in range(1, 9)] + ["TRIG"]
    assert report["CH2"] == {**QUALITY_ENTRY, "status": "bad", "reasons": ["zero-fill 100%"], "zero_ratio": 1.0}
    assert report["CH3"]["has_warning"] is True and report["TRIG"]["type"] == "stim"
    assert path.relative_to(root).as_posix() in result_a.files
    assert not any(f.endswith("_desc-quality_channels.json") for f in result_b.files)  # a plain mapping: none
    assert (root / ".bidsignore").read_text() == "*_desc-quality_channels.json\n"
    copy = tmp_path / "without-bidsignore"
    shutil.copytree(root, copy)
    (copy / ".bidsignore").unlink()
    errors = [i for i in validate(copy).issues if i.severity == "error"]
    assert errors and all("desc-quality_channels.json" in (i.location or "") for i in errors), errors
