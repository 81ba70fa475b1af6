"""BIDS export cost: eeghub's streaming exporter against the predecessor's, in one run.

Run by hand (never a test)::

    .venv/bin/python benchmarks/export.py [--sessions 10] [--minutes 30]
        [--predecessor-sessions N] [--predecessor-minutes M] [--profile] [--keep]
        [--fetch-latency-ms L]
        [--zip-chunk-mib X] [--zip-max-chunks N] [--deflate-eeg] [--prefetch-depth D] [--direct-fetch]

What it does:

* generates an experiment once, before any timing: ``--sessions`` sessions of
  ``--minutes`` minutes from :class:`SimulatedDevice` (8 EEG channels + TRIG,
  v4 payloads, 250 Hz, 250 samples per packet), five subjects with two
  sessions each (calibration, main task), a trigger pulse and a logged event
  every 10 s. Each packet's *decompressed* payload is written to a file of
  its own, as the object store holds it; both methods read those same bytes;
* runs each method in a fresh child process (``python benchmarks/export.py
  --child …``), one after the other, never at the same time:

  - **eeghub**: the dataset-level files (``dataset_description.json``,
    ``README``, ``participants.tsv/.json``), then per session
    ``runner.write_session_prefetched`` — the path ``runner._write_one``
    takes: ``dataset.write_session`` in a worker thread, its packet objects
    fetched on the event loop ahead of the writer by
    ``runner.PacketPrefetcher`` (a block's worth at a time, at most
    ``runner.PREFETCH_DEPTH`` fetches running), decoded in the writer thread
    by ``runner.SessionSignals`` (one numba call per block of
    ``placement.BLOCK_SAMPLES`` samples, straight into the multiplexed
    ``.eeg`` block), which feeds the session's channel quality. The fetch stands in for ``ObjectStore.get_bytes``: it reads the
    payload file on the event loop (page-cached, so it does not wait), after
    ``--fetch-latency-ms`` of simulated round trip when that is set. Then
    the ZIP of ``zip_directory(root, prefix="bids_dataset/")``, whose chunks
    are written to a local file (where the service would stream them to S3);
  - **predecessor** (spec §5.5): ``dataset_description.json`` and
    ``participants.tsv``, then per session: read and parse every payload
    (``decode_payload_reference``, plain numpy), §5.4 quality counters,
    concatenate, scale to volts (float64), ``create_info`` +
    ``set_montage("standard_1020")`` + ``RawArray``,
    ``write_raw_bids(format="EDF", allow_preload=True, overwrite=True)``, the
    pandas rewrites of ``events.tsv``, ``_eeg.json``, ``channels.tsv`` and
    the quality JSON; then ``shutil.make_archive`` of the tree;

* in each child, imports and a tiny warm-up export of the same method (so
  numba compilation and mne/mne-bids/edfio lazy imports are not counted)
  happen first; then the child takes its baseline RSS, resets its RSS
  high-water mark (``/proc/self/clear_refs``), times the export and reads
  the high-water mark again. "Peak" is that high-water mark minus the
  baseline: the export's own memory, not the interpreter's.

Throughput is MB (10^6 bytes) of raw int16 samples per second of the
export's wall time: samples × channels (9, TRIG included) × 2 bytes.
The BIDS validator, which eeghub runs before zipping in production, is not
part of either measurement, nor are the database queries. Both methods read
the payload files without a store round trip; with ``--fetch-latency-ms``
eeghub's fetches wait that long first (the predecessor's reads do not: its
GETs were sequential, it would pay the latency once per packet), so the
ratios are then not like for like. If the predecessor is too slow at full
size, ``--predecessor-sessions/--predecessor-minutes`` give it a smaller
experiment; eeghub then runs at both sizes, and the side-by-side ratios are
computed at the predecessor's size only. ``--profile`` adds a cProfile of
eeghub's method (main thread, i.e. the event loop and its fetches; the
session writer and the ZIP run in threads of their own and are timed
separately). ``--zip-chunk-mib``, ``--zip-max-chunks``, ``--deflate-eeg``,
``--prefetch-depth`` and ``--direct-fetch`` add a what-if row ``eeghub*``:
the same method with ``zip_directory``'s chunk size or queue depth changed,
the ``.eeg`` files deflated rather than stored (a monkeypatch in that child
only), the prefetch window changed (1: one GET at a time, as before the
prefetch), or no prefetch at all (the writer thread reads each payload file
itself, as this benchmark did before). Nothing is asserted: timings depend
on the machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

BASE_MS = 1_750_000_000_000
RATE = 250.0
PACKET = 250
EEG_CHANNELS = 8
EVENT_EVERY_S = 10
SESSION_SPACING_MS = 2 * 3600 * 1000
MB = 1e6


# ---------------------------------------------------------------- data set (parent)
def object_path(data: Path | str, object_id: str) -> str:
    """``data/sNN/PPPPP.bin`` for object ``sNN-PPPPP`` (plain strings: both methods call it per packet)."""
    session, index = object_id.split("-")
    return f"{data}/{session}/{index}.bin"


def generate(data: Path, sessions: int, minutes: float) -> dict[str, Any]:
    """Write every packet's payload to ``data/sNN/PPPPP.bin``; return the manifest."""
    from eeghub.core.simulator import SimulatedDevice

    packets_per_session = int(round(minutes * 60 * RATE / PACKET))
    seconds = packets_per_session * PACKET / RATE
    trigger_at = [round((5 + EVENT_EVERY_S * k) * RATE) for k in range(int((seconds - 5) // EVENT_EVERY_S) + 1)]
    manifest: dict[str, Any] = {"sessions": []}
    for i in range(sessions):
        subject = f"P{i // 2 + 1:02d}"
        device = SimulatedDevice(
            f"user{subject}", f"board{i // 2}", channels=EEG_CHANNELS, variant="v4",
            trigger_samples=trigger_at, seed=i,
        )
        start_ms = BASE_MS + i * SESSION_SPACING_MS
        folder = data / f"s{i:02d}"
        folder.mkdir(parents=True)
        rows = []
        for index in range(packets_per_session):
            envelope = device.envelope(index, start_ms)
            object_id = f"s{i:02d}-{index:05d}"
            Path(object_path(data, object_id)).write_bytes(device.payload(index))
            rows.append([object_id, envelope["timestamp_start_ms"], envelope["timestamp_end_ms"], PACKET])
        events = []
        for k, sample in enumerate(trigger_at):
            packet, within = divmod(sample, PACKET)
            onset_us = rows[packet][1] * 1000 + round(within * 1e6 / RATE)
            events.append([k, onset_us, sample / RATE + 0.03])  # the app logs ~30 ms late
        manifest["sessions"].append(
            {
                "session_id": f"session-{i:02d}",
                "subject": subject,
                "session_type": "calibration" if i % 2 == 0 else "main_task",
                "start_ms": start_ms,
                "sampling_rate": RATE,
                "lsb_to_volts": device.lsb_to_volts,
                "channel_names": device.channel_names,
                "channel_types": device.channel_types,
                "packets": rows,
                "events": events,
            }
        )
    (data / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def select(manifest: dict[str, Any], sessions: int, minutes: float) -> list[dict[str, Any]]:
    """The first ``sessions`` sessions, each cut to its first ``minutes``."""
    keep = int(round(minutes * 60 * RATE / PACKET))
    out = []
    for s in manifest["sessions"][:sessions]:
        packets = s["packets"][:keep]
        end_ms = s["start_ms"] + round(len(packets) * PACKET * 1000 / RATE)
        events = [e for e in s["events"] if e[1] < end_ms * 1000]
        out.append({**s, "packets": packets, "events": events, "end_ms": end_ms})
    return out


# ---------------------------------------------------------------- memory (child)
def _status(field: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status("VmHWM") <= _status("VmRSS") + 64 * 1024


_MARKS: list[int] = []


def end_of_write_phase() -> None:
    """Record the write phase's RSS high-water mark, then reset it for the ZIP phase."""
    _MARKS.append(_status("VmHWM"))
    reset_peak()


# ---------------------------------------------------------------- eeghub's method (child)
ZIP_OPTIONS: dict[str, Any] = {}
"""``zip_directory`` keyword arguments of a what-if run (empty: eeghub's defaults)."""

PREFETCH_OPTIONS: dict[str, Any] = {}
"""``write_session_prefetched`` keyword arguments of a what-if run (empty: eeghub's defaults)."""

FETCH_LATENCY_S = 0.0
"""Simulated object-store round trip per packet object (``--fetch-latency-ms``)."""

DIRECT_FETCH = False
"""What-if ``--direct-fetch``: no prefetch; the writer thread reads each payload itself."""


class _DirectRead:
    """A stand-in for ``runner.PacketPrefetcher`` (``--direct-fetch``): ``get`` reads the payload file in
    the calling (writer) thread."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def get(self, object_id: str) -> bytes:
        with open(object_path(self.data, object_id), "rb") as handle:
            return handle.read()


def eeghub_export(sessions: list[dict[str, Any]], data: Path, out: Path) -> dict[str, Any]:
    import asyncio

    return asyncio.run(_eeghub_export(sessions, data, out))


async def _eeghub_export(sessions: list[dict[str, Any]], data: Path, out: Path) -> dict[str, Any]:
    import asyncio

    from eeghub.core.timeline import Packet
    from eeghub.plugins.exporter import dataset
    from eeghub.plugins.exporter.runner import SessionSignals, _SessionQuality, write_session_prefetched
    from eeghub.plugins.exporter.session import EventSpec, SessionSpec
    from eeghub.plugins.exporter.zipstream import zip_directory

    latency = FETCH_LATENCY_S

    async def fetch(object_id: str) -> bytes:
        # The object store's get_bytes: here a read of the payload file, on the event loop like aiobotocore's
        # reads (page-cached, so it does not wait), after a simulated round trip when --fetch-latency-ms is set.
        if latency:
            await asyncio.sleep(latency)
        with open(object_path(data, object_id), "rb") as handle:
            return handle.read()

    t0 = time.perf_counter()
    root = out / "bids_dataset"
    root.mkdir(parents=True)
    subjects = sorted({s["subject"] for s in sessions})
    dataset.write_dataset_description(root, name="Export benchmark", extra={"GeneratedBy": [{"Name": "eeghub"}]})
    dataset.write_readme(root, title="Export benchmark", description="Simulated data.")
    dataset.write_participants(root, [{"participant_id": f"sub-{s}"} for s in subjects])
    per_subject: dict[str, int] = {}
    samples = 0
    for s in sessions:
        per_subject[s["subject"]] = per_subject.get(s["subject"], 0) + 1
        names, types = list(s["channel_names"]), list(s["channel_types"])
        packets = [Packet(oid, start, end, n, s["sampling_rate"]) for oid, start, end, n in s["packets"]]
        total = sum(p.num_samples for p in packets)
        quality = _SessionQuality(names, types, total, PACKET)
        spec = SessionSpec(
            subject=s["subject"],
            session=str(per_subject[s["subject"]]),
            task=s["session_type"].replace("_", ""),
            session_id=s["session_id"],
            session_type=s["session_type"],
            sampling_rate=s["sampling_rate"],
            lsb_to_volts=s["lsb_to_volts"],
            channel_names=names,
            channel_types=types,
            start_ms=s["start_ms"],
            end_ms=s["end_ms"],
            device_id="board",
        )
        events = [
            EventSpec(onset_us=onset_us, logged_onset_s=logged, duration=1.0, trial_type="stimulus", value=1, event_id=k)
            for k, onset_us, logged in s["events"]
        ]
        if DIRECT_FETCH:
            # What-if: no prefetch; the writer thread reads each payload itself when it needs it
            # (decoding as runner.SessionSignals does).
            signals = SessionSignals(_DirectRead(data), packets, len(names), quality)  # type: ignore[arg-type]
            result = await asyncio.to_thread(dataset.write_session, root, spec, packets, signals, events, quality, 50.0)
        else:
            # runner._write_one's path: packet objects prefetched on this loop, decoded in the writer thread.
            result, signals = await write_session_prefetched(
                root, spec, packets, events, quality, 50.0, fetch=fetch, **PREFETCH_OPTIONS
            )
        if signals.undecodable or signals.missing:
            raise RuntimeError(f"{s['session_id']}: undecodable {signals.undecodable}, missing {signals.missing}")
        samples += result.samples
    t1 = time.perf_counter()
    end_of_write_phase()

    archive = out / "export.zip"
    size = 0
    with open(archive, "wb") as handle:
        async for chunk in zip_directory(root, prefix="bids_dataset/", **ZIP_OPTIONS):
            handle.write(chunk)
            size += len(chunk)
    t2 = time.perf_counter()
    return {"write_s": t1 - t0, "zip_s": t2 - t1, "samples": samples, "zip_bytes": size,
            "tree_bytes": _tree_size(root), "data_files": _data_files(root)}


# ---------------------------------------------------------------- the predecessor's method (child)
class _PredecessorQuality:
    """Spec §5.4 counters, accumulated per object (sticky flatline)."""

    def __init__(self, names: list[str], types: list[str]) -> None:
        import numpy as np

        self.names, self.types = names, types
        c = len(names)
        self.analysed = np.array([t in ("eeg", "emg", "eog") for t in types])
        self.total = np.zeros(c, dtype=np.int64)
        self.zeros = np.zeros(c, dtype=np.int64)
        self.unknown = np.zeros(c, dtype=np.int64)
        self.high = np.zeros(c, dtype=np.int64)
        self.flat = np.zeros(c, dtype=bool)

    def add(self, stats: Any, n: int) -> None:
        a = self.analysed
        self.total += n
        self.zeros[a] += stats.zero_count[a]
        self.flat[a] |= (stats.maximum - stats.minimum)[a] <= 5
        self.unknown[a] += stats.impedance_unknown[a]
        self.high[a] += stats.impedance_high[a]

    def report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i, (name, kind) in enumerate(zip(self.names, self.types, strict=True)):
            if not self.analysed[i]:
                out[name] = {"status": "good", "reasons": [], "zero_ratio": 0.0, "bad_impedance_ratio": 0.0,
                             "unknown_impedance_ratio": 0.0, "flatline": False, "type": kind, "has_warning": False}
                continue
            total = max(1, int(self.total[i]))
            zero, high, unknown = self.zeros[i] / total, self.high[i] / total, self.unknown[i] / total
            status, reasons = "good", []
            if zero >= 0.98:
                status = "bad"
                reasons.append(f"zero-fill {zero:.0%}")
            if high >= 0.5:
                status = "bad"
                reasons.append(f"impedance high {high:.0%}")
            if status != "bad" and unknown >= 0.75:
                reasons.append(f"impedance unknown {unknown:.0%}")
            if self.flat[i]:
                reasons.append("flatline amplitude")
            out[name] = {"status": status, "reasons": reasons, "zero_ratio": float(zero), "bad_impedance_ratio": float(high),
                         "unknown_impedance_ratio": float(unknown), "flatline": bool(self.flat[i]), "type": kind,
                         "has_warning": status != "bad" and bool(reasons)}
        return out


def predecessor_export(sessions: list[dict[str, Any]], data: Path, out: Path) -> dict[str, Any]:
    import mne
    import numpy as np
    import pandas as pd
    from mne_bids import BIDSPath, write_raw_bids

    from eeghub.core.packet import decode_payload_reference

    t0 = time.perf_counter()
    root = out / "bids_dataset"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "Export benchmark", "BIDSVersion": "1.8.0", "DatasetType": "raw", "Authors": ["EEG Platform User"]}))
    users = sorted({f"user{s['subject']}" for s in sessions})
    pd.DataFrame({"participant_id": users}).to_csv(root / "participants.tsv", sep="\t", index=False)
    samples = 0
    for i, s in enumerate(sessions):
        subject = f"user{s['subject']}".replace("-", "")
        task = s["session_type"].replace("_", "").replace("-", "").replace(" ", "") or "defaulttask"
        t0_ms = s["packets"][0][1]
        chunks = []
        quality: _PredecessorQuality | None = None
        names: list[str] = []
        types: list[str] = []
        for object_id, _start, _end, _n in s["packets"]:  # ordered by timestamp_start_ms
            with open(object_path(data, object_id), "rb") as handle:
                payload = handle.read()
            packet = decode_payload_reference(payload)
            if quality is None:
                names, types = list(packet.layout.channel_names), list(packet.layout.channel_types)
                quality = _PredecessorQuality(names, types)
            chunks.append(packet.signals)
            quality.add(packet.stats, packet.signals.shape[1])
        assert quality is not None
        signals = np.concatenate(chunks, axis=1)
        del chunks
        scale = np.array([s["lsb_to_volts"] if t in ("eeg", "emg", "eog", "misc") else 1.0 for t in types])
        volts = signals * scale[:, None]
        del signals
        report = quality.report()
        info = mne.create_info(names, s["sampling_rate"], types)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info.set_montage("standard_1020", on_missing="warn")
            raw = mne.io.RawArray(volts, info, verbose=False)
            raw.info["bads"] = [n for n, r in report.items() if r["status"] == "bad"]
            bids_path = BIDSPath(subject=subject, session=str(i + 1), task=task, datatype="eeg", root=root)
            write_raw_bids(raw, bids_path, overwrite=True, allow_preload=True, format="EDF", verbose=False)
        del volts
        samples += int(raw.n_times)
        stem = str(bids_path.directory / bids_path.copy().update(suffix=None, extension=None).basename)
        if s["events"]:
            pd.DataFrame(
                {
                    "onset": [(onset_us - t0_ms * 1000) / 1e6 for _k, onset_us, _logged in s["events"]],
                    "duration": [1.0] * len(s["events"]),
                    "trial_type": ["stimulus"] * len(s["events"]),
                    "stim_file": ["n/a"] * len(s["events"]),
                }
            ).to_csv(stem + "_events.tsv", sep="\t", index=False)
        sidecar = Path(stem + "_eeg.json")
        document = json.loads(sidecar.read_text(encoding="utf-8-sig"))
        document.update(PowerLineFrequency=50, EEGReference="n/a")
        sidecar.write_text(json.dumps(document, indent=4))
        channels = Path(stem + "_channels.tsv")
        table = pd.read_csv(channels, sep="\t", encoding="utf-8-sig")
        table = table[table["name"].isin(raw.ch_names)].copy()
        table["status"] = [report.get(n, {}).get("status", "good") for n in table["name"]]
        table["status_description"] = [
            "; ".join(report[n]["reasons"]) if report.get(n, {}).get("reasons")
            else ("warning" if report.get(n, {}).get("has_warning") else "n/a")
            for n in table["name"]
        ]
        table.to_csv(channels, sep="\t", index=False, na_rep="n/a")
        Path(stem + "_desc-quality_channels.json").write_text(json.dumps(report, indent=2))
        del raw
    t1 = time.perf_counter()
    end_of_write_phase()
    archive = shutil.make_archive(base_name=str(out / "eid_bench"), format="zip", root_dir=out, base_dir="bids_dataset")
    t2 = time.perf_counter()
    return {"write_s": t1 - t0, "zip_s": t2 - t1, "samples": samples, "zip_bytes": os.path.getsize(archive),
            "tree_bytes": _tree_size(root), "data_files": _data_files(root)}


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _data_files(root: Path) -> dict[str, int]:
    return {p.suffix: p.stat().st_size for p in root.rglob("*") if p.suffix in (".eeg", ".edf")} | {
        "count": sum(1 for p in root.rglob("*") if p.suffix in (".eeg", ".edf"))
    }


METHODS = {"eeghub": eeghub_export, "predecessor": predecessor_export}


def child(args: argparse.Namespace) -> None:
    """One method, in this fresh process; prints one JSON line."""
    global DIRECT_FETCH, FETCH_LATENCY_S
    data, work = Path(args.data), Path(args.work)
    method = METHODS[args.child]
    if args.zip_chunk_mib is not None:
        ZIP_OPTIONS["chunk"] = int(args.zip_chunk_mib * 1024 * 1024)
    if args.zip_max_chunks is not None:
        ZIP_OPTIONS["max_chunks"] = args.zip_max_chunks
    if args.deflate_eeg:
        from eeghub.plugins.exporter import zipstream

        zipstream._STORE_SUFFIXES.discard(".eeg")  # what-if only: deflate the int16 data (at the text level)
    if args.prefetch_depth is not None:
        PREFETCH_OPTIONS["depth"] = args.prefetch_depth
    DIRECT_FETCH, FETCH_LATENCY_S = args.direct_fetch, args.fetch_latency_ms / 1000
    manifest = json.loads((data / "manifest.json").read_text())
    # Warm-up: the same method on 8 s of one session, one event (numba, lazy imports), then discarded.
    tiny = select(manifest, 1, 8 * PACKET / RATE / 60)
    warm = work / "warm-up"
    warm.mkdir(parents=True)
    with open(os.devnull, "w") as sink:  # mne-bids prints to stdout
        stdout, sys.stdout = sys.stdout, sink
        try:
            method(tiny, data, warm)
        finally:
            sys.stdout = stdout
    shutil.rmtree(warm)
    sessions = select(manifest, args.sessions, args.minutes)
    del manifest
    _MARKS.clear()
    gc.collect()
    baseline = _status("VmRSS")
    exact = reset_peak()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    out = work / args.child
    out.mkdir()
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            started = time.perf_counter()
            result = method(sessions, data, out)
            wall = time.perf_counter() - started
        finally:
            sys.stdout = stdout
    peak = _status("VmHWM")
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        result["profile"] = text.getvalue()
    import resource

    result.update(
        wall_s=wall,
        baseline_rss=baseline,
        peak_rss=max(peak, *_MARKS),
        peak_write=_MARKS[0],
        peak_zip=peak,
        peak_exact=exact,
        ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        channels=len(sessions[0]["channel_names"]),
    )
    shutil.rmtree(out)
    print(json.dumps(result))


# ---------------------------------------------------------------- parent
def run_child(
    method: str, data: Path, work: Path, sessions: int, minutes: float, profile: bool = False, variant: tuple[str, ...] = ()
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", method, "--data", str(data), "--work", str(work),
               "--sessions", str(sessions), "--minutes", str(minutes), *variant]
    if profile:
        command.append("--profile")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed arguments
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{method} child failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def _mb(value: float) -> str:
    return f"{value / MB:,.1f}"


def print_table(title: str, results: dict[str, dict[str, Any]], sessions: int, minutes: float) -> None:
    any_result = next(iter(results.values()))
    channels = any_result["channels"]
    per_session = int(round(minutes * 60 * RATE)) * channels * 2
    print(f"\n== {title}: {sessions} sessions x {minutes:g} min, {channels} channels "
          f"({EEG_CHANNELS} EEG + TRIG) at {RATE:g} Hz ==")
    print(f"one session's int16 samples: {_mb(per_session)} MB; the experiment's: {_mb(per_session * sessions)} MB")
    header = (f"{'method':<12} {'wall s':>8} {'write s':>8} {'zip s':>7} {'MB/s':>8} {'peak MB':>8} "
              f"{'peak/ses':>8} {'base MB':>8} {'tree MB':>8} {'zip MB':>7}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        raw = r["samples"] * r["channels"] * 2
        own = r["peak_rss"] - r["baseline_rss"]
        r["throughput"] = raw / MB / r["wall_s"]
        r["own_peak"] = own
        print(f"{name:<12} {r['wall_s']:>8.2f} {r['write_s']:>8.2f} {r['zip_s']:>7.2f} {r['throughput']:>8.1f} "
              f"{_mb(own):>8} {own / per_session:>8.2f} {_mb(r['baseline_rss']):>8} {_mb(r['tree_bytes']):>8} "
              f"{_mb(r['zip_bytes']):>7}")
        if raw != per_session * sessions:
            print(f"  note: {name} wrote {r['samples']} samples, expected {per_session * sessions // channels // 2}")
    for name, r in results.items():
        exact = "VmHWM reset after warm-up" if r["peak_exact"] else "ru_maxrss, includes imports (clear_refs refused)"
        print(f"  {name}: data files {r['data_files']}; whole-process ru_maxrss {_mb(r['ru_maxrss'])} MB; "
              f"child process {r['process_s']:.1f} s incl. start-up; peak from {exact}")
        print(f"  {name}: peak above baseline while writing the tree {_mb(max(0, r['peak_write'] - r['baseline_rss']))} MB, "
              f"while zipping {_mb(max(0, r['peak_zip'] - r['baseline_rss']))} MB")
    if "eeghub" in results and "predecessor" in results:
        e, p = results["eeghub"], results["predecessor"]
        speed = e["throughput"] / p["throughput"]
        print(f"throughput eeghub / predecessor: {speed:.1f}x (target >= 5x: {'met' if speed >= 5 else 'NOT met'})")
        print(f"peak memory predecessor / eeghub: {p['own_peak'] / max(e['own_peak'], 1):.1f}x")
    if "eeghub*" in results and "predecessor" in results:
        speed = results["eeghub*"]["throughput"] / results["predecessor"]["throughput"]
        print(f"throughput eeghub* / predecessor: {speed:.1f}x (what-if)")
    for name in ("eeghub", "eeghub*"):
        if name in results:
            ratio = results[name]["own_peak"] / per_session
            print(f"{name} peak / one session's samples: {ratio:.2f} (target < 2: {'met' if ratio < 2 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--predecessor-sessions", type=int, default=None, help="default: --sessions")
    parser.add_argument("--predecessor-minutes", type=float, default=None, help="default: --minutes")
    parser.add_argument("--profile", action="store_true", help="cProfile eeghub's method (full size) too")
    parser.add_argument("--keep", action="store_true", help="keep the generated payloads (prints where)")
    what_if = parser.add_argument_group(
        "what-if", "any of these adds a row 'eeghub*': eeghub's method with zip_directory tuned (not the defaults)")
    what_if.add_argument("--zip-chunk-mib", type=float, default=None, help="zip_directory chunk (default 1 MiB)")
    what_if.add_argument("--zip-max-chunks", type=int, default=None, help="zip_directory max_chunks (default 2)")
    what_if.add_argument("--deflate-eeg", action="store_true", help="deflate .eeg files in the ZIP instead of storing them")
    what_if.add_argument("--prefetch-depth", type=int, default=None,
                         help="fetches running at once, and fetched ahead of the writer at least "
                              "(default 16; 1 = one GET at a time)")
    what_if.add_argument("--direct-fetch", action="store_true",
                         help="no prefetch: the writer thread reads each payload file itself")
    parser.add_argument("--fetch-latency-ms", type=float, default=0.0,
                        help="simulated object-store round trip per packet for eeghub's rows (default 0)")
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    p_sessions = args.predecessor_sessions or args.sessions
    p_minutes = args.predecessor_minutes or args.minutes
    if p_sessions > args.sessions or p_minutes > args.minutes:
        parser.error("the predecessor's size cannot exceed --sessions/--minutes")
    reduced = (p_sessions, p_minutes) != (args.sessions, args.minutes)
    variant: list[str] = []
    if args.zip_chunk_mib is not None:
        variant += ["--zip-chunk-mib", str(args.zip_chunk_mib)]
    if args.zip_max_chunks is not None:
        variant += ["--zip-max-chunks", str(args.zip_max_chunks)]
    if args.deflate_eeg:
        variant.append("--deflate-eeg")
    if args.prefetch_depth is not None:
        variant += ["--prefetch-depth", str(args.prefetch_depth)]
    if args.direct_fetch:
        variant.append("--direct-fetch")
    latency = ("--fetch-latency-ms", str(args.fetch_latency_ms)) if args.fetch_latency_ms else ()
    temp = Path(tempfile.mkdtemp(prefix="eeghub-export-bench-"))
    try:
        data, work = temp / "payloads", temp / "work"
        work.mkdir()
        started = time.perf_counter()
        manifest = generate(data, args.sessions, args.minutes)
        count = sum(len(s["packets"]) for s in manifest["sessions"])
        size = sum(p.stat().st_size for p in data.rglob("*.bin"))
        print(f"generated {count} packets ({_mb(size)} MB of decompressed v4 payloads, one file each) "
              f"in {time.perf_counter() - started:.1f} s under {temp}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; each method runs alone in a fresh child process")

        if variant:
            print(f"eeghub* = eeghub's method with {' '.join(variant)} (a what-if, not eeghub's defaults)")
        if latency:
            print(f"eeghub's rows: every packet fetch waits {args.fetch_latency_ms:g} ms first (simulated store round "
                  "trip); the predecessor's reads do not, so eeghub / predecessor ratios are not like for like")
        full = {"eeghub": run_child("eeghub", data, work, args.sessions, args.minutes, variant=latency)}
        if not reduced:
            full["predecessor"] = run_child("predecessor", data, work, args.sessions, args.minutes)
        if variant:
            full["eeghub*"] = run_child("eeghub", data, work, args.sessions, args.minutes, variant=(*variant, *latency))
        print_table("full size" if not reduced else "full size, eeghub only", full, args.sessions, args.minutes)
        if reduced:
            side = {
                "eeghub": run_child("eeghub", data, work, p_sessions, p_minutes, variant=latency),
                "predecessor": run_child("predecessor", data, work, p_sessions, p_minutes),
            }
            if variant:
                side["eeghub*"] = run_child("eeghub", data, work, p_sessions, p_minutes, variant=(*variant, *latency))
            print_table("REDUCED size, side by side (the predecessor at full size was too slow)", side,
                        p_sessions, p_minutes)
        if args.profile:
            profiled = run_child("eeghub", data, work, args.sessions, args.minutes, profile=True, variant=latency)
            print(f"\n== cProfile of eeghub's method (main thread; write {profiled['write_s']:.2f} s, "
                  f"zip {profiled['zip_s']:.2f} s under the profiler) ==")
            print(profiled["profile"])
    finally:
        if args.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
