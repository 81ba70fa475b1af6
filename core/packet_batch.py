"""Decode many payloads at once, straight into a multiplexed int16 block.

The BIDS exporter writes BrainVision ``.eeg`` files, which are multiplexed
(all channels of sample 0, then of sample 1, …), while
:func:`eeghub.core.packet.decode_payload` returns one packet as
channels × samples. Decoding packet by packet, then slicing, transposing and
copying each into the file cost the exporter more than reading the data did
(about 20 µs of Python per 250-sample packet). :class:`MultiplexedDecoder`
does the same work for a whole batch of packets in one numba call
(``nogil``, so the event loop fetching the next batch runs meanwhile):

- each payload's header is validated by :func:`~eeghub.core.packet.parse_layout`
  (cached per distinct header and length, since a device repeats the same
  header in every packet), so a payload is accepted or refused exactly as
  ``decode_payload`` would;
- samples ``[first, stop)`` of each packet are written to rows
  ``row … row + stop − first`` of the caller's (samples × channels) int16
  block: the values ``decode_payload(payload).signals[:, first:stop].T``
  holds, the trigger channel of the app variant included;
- the per-channel counters of :class:`~eeghub.core.packet.PacketStats` are
  computed over the *whole* packet (as ``decode_payload`` does), one row of
  five per packet.

Rising trigger edges are not computed: the exporter does not use them (its
events come from the corrected onsets in the database).

The plain-numpy oracle the tests compare this against is ``decode_payload``
/ ``decode_payload_reference`` followed by the slice and transpose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from .packet import PacketError, PacketLayout, _clamp_threshold, parse_layout

__all__ = ["MultiplexedDecoder"]

_LAYOUT_CACHE_SIZE = 64

# Columns of the per-packet parameter table handed to the kernel.
_START, _HEADER, _SAMPLE_SIZE, _IN_CHANNELS, _TRIGGER_BLOCK, _SAMPLES, _FIRST, _STOP, _ROW = range(9)
_COLUMNS = 9


def _place_kernel_source(
    buf: np.ndarray, table: np.ndarray, out: np.ndarray, stats: np.ndarray, impedance_threshold: int
) -> None:  # pragma: no cover - compiled by numba
    """For packet ``p`` (row ``p`` of ``table``): decode its samples from
    ``buf``, write ``[first, stop)`` to ``out[row:]`` (multiplexed) and its
    counters to ``stats[p]`` (zeros, min, max, impedance unknown, high).

    Byte offsets are unsigned (numba's wraparound check on signed indices
    costs more than the loads, see ``packet._decode_kernel_source``). The
    channel loop is innermost: a sample's signals are contiguous in the
    payload and in ``out``."""
    one = np.uint64(1)
    eight = np.uint16(8)
    width = out.shape[1]
    zeros = np.empty(width, dtype=np.int64)
    lo = np.empty(width, dtype=np.int16)
    hi = np.empty(width, dtype=np.int16)
    unknown = np.empty(width, dtype=np.int64)
    high = np.empty(width, dtype=np.int64)
    for p in range(table.shape[0]):
        start = np.uint64(table[p, 0])
        header = np.uint64(table[p, 1])
        stride = np.uint64(table[p, 2])
        channels = table[p, 3]
        trigger_block = table[p, 4]
        n = table[p, 5]
        first = table[p, 6]
        stop = table[p, 7]
        row = table[p, 8]
        out_channels = channels + trigger_block
        for c in range(out_channels):
            zeros[c] = 0
            lo[c] = 32767
            hi[c] = -32768
            unknown[c] = 0
            high[c] = 0
        base = start + header
        for s in range(n):
            pos = base + np.uint64(s) * stride
            placed = first <= s < stop
            target = row + s - first
            for c in range(channels):
                at = pos + np.uint64(2 * c)
                v = np.int16(np.uint16(buf[at]) | (np.uint16(buf[at + one]) << eight))
                if placed:
                    out[target, c] = v
                zeros[c] += v == 0
                lo[c] = min(lo[c], v)
                hi[c] = max(hi[c], v)
            if trigger_block:
                v = np.int16(buf[pos + np.uint64(2 * channels)] & np.uint8(0x0F))
                if placed:
                    out[target, channels] = v
                zeros[channels] += v == 0
                lo[channels] = min(lo[channels], v)
                hi[channels] = max(hi[channels], v)
            at = pos + np.uint64(2 * channels + 12 + 4 * trigger_block)
            for c in range(channels):
                z = buf[at + np.uint64(c)]
                unknown[c] += z == 255
                high[c] += (z >= impedance_threshold) & (z != 255)
        for c in range(out_channels):
            stats[p, 0, c] = zeros[c]
            stats[p, 1, c] = lo[c]
            stats[p, 2, c] = hi[c]
            stats[p, 3, c] = unknown[c]
            stats[p, 4, c] = high[c]


_compiled: Callable[..., None] | None = None
_compile_lock = threading.Lock()


def _kernel() -> Callable[..., None]:
    """The compiled kernel, created on first use (numba is imported then, as in ``packet``)."""
    global _compiled
    if _compiled is None:
        with _compile_lock:
            if _compiled is None:
                from numba import njit

                _compiled = njit(cache=True, nogil=True)(_place_kernel_source)
    return _compiled


class MultiplexedDecoder:
    """Validate payloads and decode batches of them into a multiplexed block.

    ``max_channels`` and ``impedance_threshold`` mean what they mean to
    :func:`~eeghub.core.packet.decode_payload`. Not thread-safe (one per
    writer)."""

    def __init__(self, *, max_channels: int = 128, impedance_threshold: int = 200) -> None:
        self._max_channels = max_channels
        self._threshold = _clamp_threshold(impedance_threshold)
        self._layouts: dict[tuple[bytes, int], PacketLayout | PacketError] = {}

    def layout(self, payload: bytes) -> PacketLayout:
        """``parse_layout(payload, max_channels=…)`` (raises :class:`PacketError`
        likewise), cached by (header bytes, payload length): the layout depends
        on nothing else."""
        size = len(payload)
        if size < 2:
            return parse_layout(payload, max_channels=self._max_channels)
        key = (payload[: 4 + 10 * payload[1]], size)
        found = self._layouts.get(key)
        if found is None:
            try:
                found = parse_layout(payload, max_channels=self._max_channels)
            except PacketError as exc:
                found = exc
            if len(self._layouts) >= _LAYOUT_CACHE_SIZE:
                self._layouts.clear()
            self._layouts[key] = found
        if isinstance(found, PacketError):
            raise PacketError(found.reason, found.message)
        return found

    def decode_into(
        self,
        payloads: Sequence[bytes],
        layouts: Sequence[PacketLayout],
        firsts: Sequence[int],
        stops: Sequence[int],
        rows: Sequence[int],
        out: np.ndarray,
    ) -> np.ndarray:
        """Write samples ``[firsts[i], stops[i])`` of ``payloads[i]`` (already
        validated: ``layouts[i]`` is its :meth:`layout`) to ``out[rows[i]:]``;
        return the counters, int64 (packets × 5 × channels): zero count,
        minimum, maximum, impedance unknown, impedance high (the fields of
        ``PacketStats``, over each whole packet).

        ``out`` is a C-contiguous int16 (samples × channels) array; every
        packet must decode to exactly its ``channels`` (ValueError otherwise)
        and its rows must lie inside ``out`` (ValueError)."""
        count = len(payloads)
        if not (len(layouts) == len(firsts) == len(stops) == len(rows) == count):
            raise ValueError("need one layout, first, stop and row per payload")
        if out.dtype != np.int16 or out.ndim != 2 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous int16 (samples, channels) array")
        channels = out.shape[1]
        stats = np.empty((count, 5, channels), dtype=np.int64)
        if count == 0:
            return stats
        table = np.empty((count, _COLUMNS), dtype=np.int64)
        sizes = np.fromiter(map(len, payloads), dtype=np.int64, count=count)
        table[0, _START] = 0
        np.cumsum(sizes[:-1], out=table[1:, _START])
        distinct = {id(layout): layout for layout in layouts}
        for layout in distinct.values():
            if len(layout.channel_names) != channels:
                raise ValueError(f"a payload decodes to {len(layout.channel_names)} channels, the block has {channels}")
        shape = [
            (layout.header_size, layout.sample_size, layout.num_channels, int(layout.has_trigger_block), layout.num_samples)
            for layout in (distinct.values() if len(distinct) == 1 else layouts)
        ]
        table[:, _HEADER : _SAMPLES + 1] = shape
        table[:, _FIRST] = firsts
        table[:, _STOP] = stops
        table[:, _ROW] = rows
        header, sample_size, samples = table[:, _HEADER], table[:, _SAMPLE_SIZE], table[:, _SAMPLES]
        if (sizes != header + sample_size * samples).any():
            raise ValueError("a payload does not match its layout")
        first, stop, row = table[:, _FIRST], table[:, _STOP], table[:, _ROW]
        if ((first < 0) | (stop < first) | (stop > samples) | (row < 0) | (row + stop - first > out.shape[0])).any():
            raise ValueError("samples [first, stop) of a payload do not fit in the block at its row")
        buf = np.frombuffer(payloads[0] if count == 1 else b"".join(payloads), dtype=np.uint8)
        if buf.flags.writeable:  # one compiled signature: bytes give a read-only array
            buf = buf.view()
            buf.flags.writeable = False
        _kernel()(buf, table, out, stats, self._threshold)
        return stats
