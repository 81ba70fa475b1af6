"""A streaming BrainVision writer that stores the device's int16 values as they are.

Why BrainVision and not EDF: the devices send int16 ADC counts with one
volts-per-count factor (``lsb_to_volts``). BrainVision ``INT_16`` with a
per-channel resolution stores exactly those counts, so the export is
lossless; EDF needs a physical range per channel and MNE's EDF writer
rescaled and dropped the trigger channel in the predecessor (spec §5.5).
The writer appends block after block to the ``.eeg`` file (multiplexed
blocks, as ``placement.iter_multiplexed`` builds them, go out without a
transpose or copy) and writes the two text headers at :meth:`BrainVisionWriter.close`, so no session is ever
held in memory (mne/pybv writers take the whole array, as float64).

Units, as MNE reads them (``mne.io.read_raw_brainvision``): a value is
``count × resolution × unit scale``. Channels given in volts (``"V"``) are
written with their resolution in µV and unit ``µV`` (the BrainVision
convention), so MNE returns ``count × lsb_to_volts`` volts up to float
rounding, and ``round(data / lsb_to_volts)`` gives back the exact counts.
Any other unit (``"n/a"`` for the trigger) is written verbatim with its
resolution (1.0): MNE reads such a channel as ``misc`` with the counts
unchanged, and mne-bids turns it back into ``stim`` from ``channels.tsv``
(type ``TRIG``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np

VOLT_UNITS = {"V": 1.0}
"""Units given to the writer in volts; written as µV (resolution × 1e6)."""

UNIT_OF_TYPE = {"eeg": "V", "emg": "V", "eog": "V", "misc": "V", "stim": "n/a"}
"""The predecessor's scaling rule (spec §1.1): eeg/emg/eog/misc × lsb_to_volts, stim × 1."""


def units_for_types(channel_types: Sequence[str]) -> list[str]:
    return [UNIT_OF_TYPE.get(kind, "V") for kind in channel_types]


def resolutions_for_types(channel_types: Sequence[str], lsb_to_volts: float) -> list[float]:
    return [1.0 if kind == "stim" else float(lsb_to_volts) for kind in channel_types]


def safe_channel_names(names: Sequence[str]) -> list[str]:
    """Channel names usable in a .vhdr and a TSV: control characters (tabs,
    newlines, …) become ``_``, surrounding spaces go, empty names become
    ``CH<n>``, repeats get ``_2``, ``_3``. Printable names pass unchanged."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        clean = "".join("_" if unicodedata.category(ch).startswith("C") else ch for ch in name).strip()
        clean = clean or f"CH{i + 1}"
        candidate, n = clean, 1
        while candidate in seen:
            n += 1
            candidate = f"{clean}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _check_text(value: str, what: str) -> str:
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise ValueError(f"{what} {value!r} contains control characters")
    # BrainVision encodes commas inside fields as \1.
    return value.replace(",", r"\1")


def _bv_date(moment: datetime) -> str:
    """``YYYYMMDDhhmmssuuuuuu`` in UTC: what the New Segment marker carries."""
    if moment.tzinfo is None:
        raise ValueError("meas_date must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")


class BrainVisionWriter:
    """Write ``<stem>.vhdr``, ``<stem>.vmrk`` and ``<stem>.eeg`` (INT_16, multiplexed, little-endian).

    ``resolutions`` are physical units per count: volts per count for
    channels whose unit is ``"V"`` (``lsb_to_volts``), and 1.0 for the
    trigger. Call :meth:`write` with int16 (channels × samples) blocks, or
    :meth:`write_multiplexed` with (samples × channels) ones, in time order,
    :meth:`add_marker` at any time, then :meth:`close` (or use
    the writer as a context manager; on an exception the headers are not
    written, so a half-written recording cannot be mistaken for a whole one).
    """

    def __init__(
        self,
        path_stem: Path | str,
        channel_names: Sequence[str],
        channel_units: Sequence[str],
        sampling_rate: float,
        resolutions: Sequence[float],
        meas_date: datetime | None,
    ) -> None:
        count = len(channel_names)
        if count == 0 or len(channel_units) != count or len(resolutions) != count:
            raise ValueError("need one unit and one resolution per channel, and at least one channel")
        if not (sampling_rate > 0 and np.isfinite(sampling_rate)):
            raise ValueError(f"sampling_rate must be a positive number, got {sampling_rate!r}")
        if not all(r > 0 and np.isfinite(r) for r in resolutions):
            raise ValueError("resolutions must be positive numbers")
        if len(set(channel_names)) != count:
            raise ValueError("channel names must be unique")
        stem = Path(path_stem)
        self.vhdr_path = stem.with_name(stem.name + ".vhdr")
        self.vmrk_path = stem.with_name(stem.name + ".vmrk")
        self.eeg_path = stem.with_name(stem.name + ".eeg")
        self._names = [_check_text(name, "channel name") for name in channel_names]
        self._units = [_check_text(unit, "unit") for unit in channel_units]
        self._resolutions = [float(r) for r in resolutions]
        self._sampling_rate = float(sampling_rate)
        self._date = _bv_date(meas_date) if meas_date is not None else None
        self._markers: list[str] = []
        self._samples = 0
        self._file = open(self.eeg_path, "wb")  # noqa: SIM115 - closed in close()
        self._closed = False

    @property
    def samples_written(self) -> int:
        return self._samples

    def write(self, block: np.ndarray) -> None:
        """Append an int16 (channels × samples) block."""
        if block.dtype != np.int16:
            raise TypeError(f"blocks must be int16, got {block.dtype}")
        if block.ndim != 2 or block.shape[0] != len(self._names):
            raise ValueError(f"expected ({len(self._names)}, n) samples, got shape {block.shape}")
        if block.shape[1] == 0:
            return
        # Multiplexed: all channels of sample 0, then of sample 1, … (a per-block transpose copy).
        self._file.write(np.ascontiguousarray(block.T, dtype="<i2").tobytes())
        self._samples += block.shape[1]

    def write_multiplexed(self, block: np.ndarray) -> None:
        """Append an int16 (samples × channels) block, already multiplexed:
        its bytes go to the file as they are (no transpose, no copy)."""
        if block.dtype != np.int16:
            raise TypeError(f"blocks must be int16, got {block.dtype}")
        if block.ndim != 2 or block.shape[1] != len(self._names):
            raise ValueError(f"expected (n, {len(self._names)}) samples, got shape {block.shape}")
        if block.shape[0] == 0:
            return
        data = np.ascontiguousarray(block, dtype="<i2")  # a no-op for a C-contiguous block on a little-endian machine
        self._file.write(memoryview(data).cast("B"))
        self._samples += block.shape[0]

    def add_marker(self, kind: str, description: str, position: int, size: int = 1, channel: int = 0) -> None:
        """A marker at 0-based sample ``position`` (written 1-based, as BrainVision counts)."""
        if position < 0 or size < 1 or channel < 0:
            raise ValueError("marker position and channel must be >= 0, size >= 1")
        self._markers.append(
            f"{_check_text(kind, 'marker type')},{_check_text(description, 'marker description')},"
            f"{position + 1},{size},{channel}"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._file.close()
        self._closed = True
        self._write_vhdr()
        self._write_vmrk()

    def abort(self) -> None:
        """Close and delete the data file, write no headers: a failed export
        leaves no recording that looks complete but is not."""
        if not self._closed:
            self._file.close()
            self._closed = True
            self.eeg_path.unlink(missing_ok=True)

    def __enter__(self) -> BrainVisionWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _write_vhdr(self) -> None:
        lines = [
            "Brain Vision Data Exchange Header File Version 1.0",
            "; Data written by eeghub (int16 device counts, unchanged)",
            "",
            "[Common Infos]",
            "Codepage=UTF-8",
            f"DataFile={self.eeg_path.name}",
            f"MarkerFile={self.vmrk_path.name}",
            "DataFormat=BINARY",
            "; Data orientation: MULTIPLEXED=ch1,pt1, ch2,pt1 ...",
            "DataOrientation=MULTIPLEXED",
            f"NumberOfChannels={len(self._names)}",
            f"DataPoints={self._samples}",
            "; Sampling interval in microseconds",
            f"SamplingInterval={1e6 / self._sampling_rate!r}",
            "",
            "[Binary Infos]",
            "BinaryFormat=INT_16",
            "",
            "[Channel Infos]",
            "; Each entry: Ch<Channel number>=<Name>,<Reference channel name>,",
            "; <Resolution in \"Unit\">,<Unit>, Future extensions..",
            "; Fields are delimited by commas, some fields might be omitted (empty).",
            "; Commas in channel names are coded as \"\\1\".",
        ]
        for i, (name, unit, resolution) in enumerate(zip(self._names, self._units, self._resolutions, strict=True)):
            if unit in VOLT_UNITS:
                lines.append(f"Ch{i + 1}={name},,{resolution * 1e6 / VOLT_UNITS[unit]!r},µV")
            else:
                lines.append(f"Ch{i + 1}={name},,{resolution!r},{unit}")
        self.vhdr_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_vmrk(self) -> None:
        lines = [
            "Brain Vision Data Exchange Marker File, Version 1.0",
            "",
            "[Common Infos]",
            "Codepage=UTF-8",
            f"DataFile={self.eeg_path.name}",
            "",
            "[Marker Infos]",
            "; Each entry: Mk<Marker number>=<Type>,<Description>,<Position in data points>,",
            "; <Size in data points>, <Channel number (0 = marker is related to all channels)>",
            "; Fields are delimited by commas, some fields might be omitted (empty).",
            "; Commas in type or description text are coded as \"\\1\".",
        ]
        markers = list(self._markers)
        if self._date is not None:
            markers.insert(0, f"New Segment,,1,1,0,{self._date}")
        lines += [f"Mk{i + 1}={marker}" for i, marker in enumerate(markers)]
        self.vmrk_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
