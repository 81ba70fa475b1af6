"""The binary EEG packet: layout validation, decoding, encoding and zstd framing.

Format (spec §1.1, all little-endian): a header ``version u8 (=4), C u8,
reserved[2]``, then C electrode configs of 10 bytes (8-byte NUL-padded UTF-8
name, type code u8, reserved u8), then N samples of ``int16[C]`` signals,
``int16[3]`` accel, ``int16[3]`` gyro and ``uint8[C]`` impedance
(255 = unknown): 3C+12 bytes each.

The real mobile app (spec §1.2) sets bit 0 of reserved byte 0 and puts a
4-byte block ``[trigger & 0x0F, 0, 0, 0]`` right after the signals of every
sample (3C+16 bytes) without declaring a trigger channel. We accept that
variant and synthesize a channel ``TRIG`` of type ``stim``, appended last,
from the low nibble of the block's first byte. The trigger channel of a
packet is the last channel of type ``stim``.

Stricter than the predecessor, on purpose: it computed
``N = floor(body / sample_size)`` and silently dropped trailing bytes, which
hides mis-framed packets (exactly how it mangled the app's variant). Here a
body that is not a whole number of samples, or holds no sample at all, is
malformed and raises :class:`PacketError`.

Two decoders give the same result: :func:`decode_payload` runs one numba
kernel over the raw bytes (``nogil``, so callers may decode in threads), and
:func:`decode_payload_reference` uses plain numpy strided views and is the
oracle the tests compare the kernel against. numba is imported on the first
decode (or by :func:`warm_up`), not with this module: it costs about a
second, and the ingest route needs only :func:`parse_layout` and
:func:`decompress_frame`.

This module is domain code: it imports only numpy, numba, zstandard, the
standard library and ``eeghub.core.errors``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import zstandard

from .errors import EeghubError

__all__ = [
    "CHANNEL_TYPES",
    "DecodedPacket",
    "PacketError",
    "PacketLayout",
    "PacketStats",
    "compress_frame",
    "decode_payload",
    "decode_payload_reference",
    "decompress_frame",
    "encode_payload",
    "parse_layout",
    "warm_up",
]

VERSION = 4
HEADER_FIXED_SIZE = 4
ELECTRODE_CONFIG_SIZE = 10
NAME_SIZE = 8
IMU_SIZE = 12  # int16[3] accel + int16[3] gyro, ignored (clients send zeros)
TRIGGER_BLOCK_SIZE = 4
TRIGGER_FLAG = 0x01  # reserved byte 0, bit 0: the app's trigger block follows the signals
IMPEDANCE_UNKNOWN = 255
SYNTHESIZED_TRIGGER_NAME = "TRIG"

CHANNEL_TYPES: dict[int, str] = {0: "eeg", 1: "emg", 2: "eog", 3: "stim", 255: "misc"}
"""Type code → MNE channel type; any code not listed here is ``misc`` too."""

_CODE_OF_TYPE: dict[str, int] = {name: code for code, name in CHANNEL_TYPES.items()}

ChannelType = Literal["eeg", "emg", "eog", "stim", "misc"]
PacketVariant = Literal["v4", "app"]


class PacketError(EeghubError, ValueError):
    """A payload or zstd frame that cannot be a valid packet.

    ``reason`` is short and machine-readable (``version``, ``truncated_header``,
    ``channels``, ``sample_size``, ``no_samples``, ``channel_name``,
    ``decompress``, ``too_large``) so the HTTP layer can pick a status code
    (413 for ``too_large``) without parsing the message; ``str(error)`` is the
    message meant for a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[PacketError], tuple[str, str]]:
        # The default pickling would call __init__ with one argument; keep the
        # error intact when it crosses a process or thread-pool boundary.
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class PacketLayout:
    """What the header says, checked against the payload length.

    ``channel_names``/``channel_types`` are the *output* channels: the header's
    channels, plus the synthesized ``TRIG`` when ``has_trigger_block``.
    ``num_channels`` is C as sent. ``trigger_index`` indexes the output
    channels (the last ``stim`` one), or is None when there is none.
    """

    version: int
    num_channels: int
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    has_trigger_block: bool
    header_size: int
    sample_size: int
    num_samples: int
    trigger_index: int | None


@dataclass
class PacketStats:
    """Per-output-channel counters of one packet (int64 arrays), the inputs of
    the channel quality rules (spec §5.4). The synthesized ``TRIG`` row has no
    impedance on the wire, so its impedance counts are 0."""

    zero_count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    impedance_unknown: np.ndarray
    impedance_high: np.ndarray


@dataclass
class DecodedPacket:
    """A decoded payload.

    ``signals`` is int16, shape (channels, samples), C-contiguous. ``trigger``
    is a view of the trigger row. ``rising_edges`` are the sample indices
    where the trigger goes from 0 to non-zero, seen through
    ``previous_trigger`` so that a pulse spanning two packets counts once;
    ``last_trigger`` is what to pass as ``previous_trigger`` for the next
    packet of the stream.
    """

    layout: PacketLayout
    signals: np.ndarray
    trigger: np.ndarray | None
    rising_edges: np.ndarray
    last_trigger: int
    stats: PacketStats


# ---------------------------------------------------------------- layout
def parse_layout(payload: bytes | bytearray | memoryview, *, max_channels: int = 128) -> PacketLayout:
    """Validate the header and the length of ``payload`` without touching the samples.

    Cheap enough for the HTTP ingest to reject garbage with a 400 before it
    accepts a packet. Raises :class:`PacketError`.
    """
    size = len(payload)
    if size == 0:
        raise PacketError("truncated_header", "the payload is empty")
    version = payload[0]
    if version != VERSION:
        raise PacketError("version", f"unsupported payload version {version} (expected {VERSION})")
    if size < HEADER_FIXED_SIZE:
        raise PacketError("truncated_header", f"the header needs {HEADER_FIXED_SIZE} bytes, the payload has {size}")
    num_channels = payload[1]
    if not 1 <= num_channels <= max_channels:
        raise PacketError("channels", f"the header declares {num_channels} channels (allowed: 1 to {max_channels})")
    header_size = HEADER_FIXED_SIZE + ELECTRODE_CONFIG_SIZE * num_channels
    if size < header_size:
        raise PacketError(
            "truncated_header",
            f"{num_channels} channels need a header of {header_size} bytes, the payload has {size}",
        )
    has_trigger_block = bool(payload[2] & TRIGGER_FLAG)
    sample_size = 3 * num_channels + IMU_SIZE + (TRIGGER_BLOCK_SIZE if has_trigger_block else 0)
    body = size - header_size
    if body == 0:
        raise PacketError("no_samples", "the payload has a header but no samples")
    num_samples, rest = divmod(body, sample_size)
    if rest:
        raise PacketError(
            "sample_size",
            f"the {body}-byte body is not a whole number of {sample_size}-byte samples "
            f"({num_samples} samples and {rest} bytes left over; a sample is "
            f"{'3C+16 bytes because the trigger-block flag is set' if has_trigger_block else '3C+12 bytes'})",
        )
    names, types, trigger_index = _describe_channels(bytes(payload[HEADER_FIXED_SIZE:header_size]), has_trigger_block)
    return PacketLayout(
        version=version,
        num_channels=num_channels,
        channel_names=names,
        channel_types=types,
        has_trigger_block=has_trigger_block,
        header_size=header_size,
        sample_size=sample_size,
        num_samples=num_samples,
        trigger_index=trigger_index,
    )


@lru_cache(maxsize=256)
def _describe_channels(configs: bytes, has_trigger_block: bool) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
    """Names, types and trigger index from the electrode configs.

    Cached: a device repeats the same header in every packet, and the decoded
    names are immutable. Errors are not cached (lru_cache does not keep them).
    """
    names: list[str] = []
    types: list[str] = []
    for i in range(len(configs) // ELECTRODE_CONFIG_SIZE):
        entry = configs[i * ELECTRODE_CONFIG_SIZE : (i + 1) * ELECTRODE_CONFIG_SIZE]
        raw = entry[:NAME_SIZE]
        end = raw.find(b"\0")
        try:
            # A name of exactly 8 bytes has no terminator (spec §1.1).
            name = (raw if end < 0 else raw[:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise PacketError("channel_name", f"the name of channel {i + 1} is not valid UTF-8: {raw!r}") from None
        names.append(name or f"CH{i + 1}")
        types.append(CHANNEL_TYPES.get(entry[NAME_SIZE], "misc"))
    if has_trigger_block:
        names.append(SYNTHESIZED_TRIGGER_NAME)
        types.append("stim")
    stim = [i for i, kind in enumerate(types) if kind == "stim"]
    return _unique_names(names), tuple(types), (stim[-1] if stim else None)


def _unique_names(names: Sequence[str]) -> tuple[str, ...]:
    """Suffix repeated names (``CH1``, ``CH1_2``): MNE refuses duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return tuple(out)


# ---------------------------------------------------------------- decoding
# Impedance counters are int32 (they vectorise twice as wide as int64) and
# are flushed into the int64 stats every this many samples, so they cannot
# overflow whatever the payload length.
_COUNTER_FLUSH = 1 << 30


def _decode_kernel_source(
    buf: np.ndarray,
    header_size: int,
    sample_size: int,
    num_channels: int,
    num_samples: int,
    has_trigger_block: int,
    trigger_index: int,
    previous_nonzero: int,
    impedance_threshold: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled by numba
    """Signals, per-channel counters and rising edges in one call, reading
    every input byte exactly once; returns (signals, stats[5, channels], edges).

    The loops are arranged for speed, measured with ``benchmarks/decode.py``:
    - Byte offsets are unsigned. numba wraps negative indices, and the check it
      emits for a signed index cost more than the load itself (3x slower).
    - Signals are gathered one channel at a time (strided reads, contiguous
      row writes); a per-sample loop writing across rows was 2-5x slower.
    - zero/min/max then run over the fresh int16 rows, still in L1, where
      LLVM vectorises them.
    - Impedances are counted per sample across channels: contiguous bytes,
      vectorised.
    Outputs are allocated once, at their final size.
    Compiled by :func:`_kernel` with ``njit(cache=True, nogil=True)``.
    """
    out_channels = num_channels + has_trigger_block
    signals = np.empty((out_channels, num_samples), dtype=np.int16)
    stats = np.zeros((5, out_channels), dtype=np.int64)
    stride = np.uint64(sample_size)
    n = np.uint64(num_samples)
    one = np.uint64(1)

    for c in range(num_channels):
        row = signals[c]
        pos = np.uint64(header_size + 2 * c)
        for s in range(n):
            row[s] = np.int16(np.uint16(buf[pos]) | (np.uint16(buf[pos + one]) << np.uint16(8)))
            pos += stride
    if has_trigger_block:
        row = signals[num_channels]
        pos = np.uint64(header_size + 2 * num_channels)
        for s in range(n):
            row[s] = np.int16(buf[pos] & np.uint8(0x0F))
            pos += stride

    for c in range(out_channels):
        row = signals[c]
        zeros = 0
        lo = row[0]
        hi = row[0]
        for s in range(n):
            v = row[s]
            zeros += v == 0
            lo = min(lo, v)
            hi = max(hi, v)
        stats[0, c] = zeros
        stats[1, c] = lo
        stats[2, c] = hi

    unknown = np.zeros(num_channels, dtype=np.int32)
    high = np.zeros(num_channels, dtype=np.int32)
    pos = np.uint64(header_size + 2 * num_channels + 12 + 4 * has_trigger_block)
    flush = np.uint64(_COUNTER_FLUSH)
    for start in range(np.uint64(0), n, flush):
        for s in range(start, min(n, start + flush)):
            for c in range(num_channels):
                v = buf[pos + np.uint64(c)]
                unknown[c] += np.int32(v == 255)
                high[c] += np.int32((v >= impedance_threshold) & (v != 255))
            pos += stride
        for c in range(num_channels):
            stats[3, c] += unknown[c]
            stats[4, c] += high[c]
            unknown[c] = 0
            high[c] = 0

    if trigger_index < 0:
        return signals, stats, np.empty(0, dtype=np.int64)
    # An edge needs a zero before it, so there are at most ceil(N / 2).
    edges = np.empty((num_samples + 1) // 2, dtype=np.int64)
    count = 0
    before = previous_nonzero != 0
    row = signals[trigger_index]
    for s in range(n):
        now = row[s] != 0
        if now and not before:
            edges[count] = s
            count += 1
        before = now
    return signals, stats, edges[:count].copy()


_compiled: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
_compile_lock = threading.Lock()


def _kernel() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The numba-compiled kernel, created on first use.

    Importing numba takes about a second; doing it here rather than at
    module import keeps it off the start-up path of everything that only
    needs ``parse_layout`` or ``decompress_frame`` (the HTTP ingest).
    ``cache=True`` stores the machine code next to this file, so later
    processes load it instead of compiling; ``nogil=True`` lets threads
    decode in parallel.
    """
    global _compiled
    if _compiled is None:
        with _compile_lock:
            if _compiled is None:
                from numba import njit

                _compiled = njit(cache=True, nogil=True)(_decode_kernel_source)
    return _compiled


def decode_payload(
    payload: bytes | bytearray | memoryview,
    *,
    previous_trigger: int = 0,
    impedance_threshold: int = 200,
    max_channels: int = 128,
) -> DecodedPacket:
    """Decode a payload with the numba kernel (raises :class:`PacketError`).

    ``previous_trigger`` is the ``last_trigger`` of the stream's previous
    packet (0 for the first). Safe to run in threads: the kernel releases
    the GIL.
    """
    layout = parse_layout(payload, max_channels=max_channels)
    buf = np.frombuffer(payload, dtype=np.uint8)
    if buf.flags.writeable:
        # One compiled signature only: bytes give a read-only array, make
        # bytearray and memoryview input look the same to numba.
        buf = buf.view()
        buf.flags.writeable = False
    trigger_index = -1 if layout.trigger_index is None else layout.trigger_index
    signals, stats, edges = _kernel()(
        buf,
        layout.header_size,
        layout.sample_size,
        layout.num_channels,
        layout.num_samples,
        int(layout.has_trigger_block),
        trigger_index,
        int(previous_trigger != 0),
        _clamp_threshold(impedance_threshold),
    )
    return _assemble(
        layout,
        signals,
        PacketStats(stats[0], stats[1], stats[2], stats[3], stats[4]),
        edges,
        previous_trigger,
    )


def decode_payload_reference(
    payload: bytes | bytearray | memoryview,
    *,
    previous_trigger: int = 0,
    impedance_threshold: int = 200,
    max_channels: int = 128,
) -> DecodedPacket:
    """The same result as :func:`decode_payload`, with plain numpy only.

    A structured dtype over the body gives strided views of every field; no
    numba. This is the oracle of the property tests and the baseline of
    ``benchmarks/decode.py``.
    """
    layout = parse_layout(payload, max_channels=max_channels)
    c, n = layout.num_channels, layout.num_samples
    samples = np.frombuffer(payload, dtype=_sample_dtype(c, layout.has_trigger_block), count=n, offset=layout.header_size)
    out_channels = len(layout.channel_names)
    signals = np.empty((out_channels, n), dtype=np.int16)
    signals[:c] = samples["signals"].T
    if layout.has_trigger_block:
        signals[c] = samples["trigger"][:, 0] & 0x0F
    impedance = samples["impedance"].astype(np.int16)  # (n, c); int16 so any threshold compares
    threshold = _clamp_threshold(impedance_threshold)
    unknown = np.zeros(out_channels, dtype=np.int64)
    high = np.zeros(out_channels, dtype=np.int64)
    unknown[:c] = np.count_nonzero(impedance == IMPEDANCE_UNKNOWN, axis=0)
    high[:c] = np.count_nonzero((impedance >= threshold) & (impedance != IMPEDANCE_UNKNOWN), axis=0)
    stats = PacketStats(
        zero_count=np.count_nonzero(signals == 0, axis=1).astype(np.int64),
        minimum=signals.min(axis=1).astype(np.int64),
        maximum=signals.max(axis=1).astype(np.int64),
        impedance_unknown=unknown,
        impedance_high=high,
    )
    if layout.trigger_index is None:
        edges = np.empty(0, dtype=np.int64)
    else:
        active = signals[layout.trigger_index] != 0
        before = np.concatenate(([previous_trigger != 0], active[:-1]))
        edges = np.flatnonzero(active & ~before).astype(np.int64)
    return _assemble(layout, signals, stats, edges, previous_trigger)


def _assemble(
    layout: PacketLayout, signals: np.ndarray, stats: PacketStats, edges: np.ndarray, previous_trigger: int
) -> DecodedPacket:
    if layout.trigger_index is None:
        trigger, last = None, int(previous_trigger)
    else:
        trigger = signals[layout.trigger_index]
        last = int(trigger[-1])
    return DecodedPacket(layout=layout, signals=signals, trigger=trigger, rising_edges=edges, last_trigger=last, stats=stats)


def _clamp_threshold(threshold: int) -> int:
    # Impedances are bytes: below 0 every known value is high, above 255 none
    # is. Clamping keeps both decoders exact for any int without overflow.
    return min(max(int(threshold), 0), 256)


@lru_cache(maxsize=512)
def _sample_dtype(num_channels: int, has_trigger_block: bool) -> np.dtype:
    """The packed little-endian record of one sample."""
    fields: list[tuple[str, str, tuple[int, ...]]] = [("signals", "<i2", (num_channels,))]
    if has_trigger_block:
        fields.append(("trigger", "u1", (TRIGGER_BLOCK_SIZE,)))
    fields += [("accel", "<i2", (3,)), ("gyro", "<i2", (3,)), ("impedance", "u1", (num_channels,))]
    return np.dtype(fields)


# ---------------------------------------------------------------- encoding
def encode_payload(
    signals: np.ndarray,
    channel_names: Sequence[str],
    channel_types: Sequence[str],
    *,
    trigger: np.ndarray | None = None,
    variant: PacketVariant = "v4",
    impedance: np.ndarray | None = None,
) -> bytes:
    """Build a payload (for the device simulator, the tests and the benchmarks).

    ``signals`` is (channels, samples) of int16-range integers. In ``v4`` a
    trigger is an ordinary channel of type ``stim`` inside ``signals``; passing
    ``trigger`` separately is an error. In ``app`` the trigger goes into the
    per-sample 4-byte block as ``trigger & 0x0F`` (what the app does) and is
    not a header channel. ``impedance`` is per channel (C,) or per sample
    (C, N), default 255 (unknown). Raises ValueError on inconsistent input:
    this is a programming error, not bad data from a client.
    """
    sig = np.asarray(signals)
    if sig.ndim != 2 or sig.shape[0] == 0 or sig.shape[1] == 0:
        raise ValueError(f"signals must be a non-empty (channels, samples) array, got shape {sig.shape}")
    _require_integers(sig, "signals", -32768, 32767)
    num_channels, num_samples = sig.shape
    if num_channels > 255:
        raise ValueError(f"at most 255 channels fit in the header, got {num_channels}")
    if len(channel_names) != num_channels or len(channel_types) != num_channels:
        raise ValueError(f"need {num_channels} channel names and types, got {len(channel_names)} and {len(channel_types)}")
    if variant not in ("v4", "app"):
        raise ValueError(f"variant must be 'v4' or 'app', got {variant!r}")
    if variant == "v4" and trigger is not None:
        raise ValueError("in 'v4' the trigger is a channel of type 'stim' inside signals; pass it there")
    has_block = variant == "app"

    header = bytearray([VERSION, num_channels, TRIGGER_FLAG if has_block else 0, 0])
    for name, kind in zip(channel_names, channel_types, strict=True):
        raw = name.encode("utf-8")
        if len(raw) > NAME_SIZE or b"\0" in raw:
            raise ValueError(f"channel name {name!r} must be at most {NAME_SIZE} UTF-8 bytes without NUL")
        if kind not in _CODE_OF_TYPE:
            raise ValueError(f"channel type {kind!r} is not one of {sorted(_CODE_OF_TYPE)}")
        header += raw.ljust(NAME_SIZE, b"\0") + bytes([_CODE_OF_TYPE[kind], 0])

    samples = np.zeros(num_samples, dtype=_sample_dtype(num_channels, has_block))
    samples["signals"] = sig.T
    if has_block and trigger is not None:
        trig = np.asarray(trigger)
        if trig.shape != (num_samples,):
            raise ValueError(f"trigger must have shape ({num_samples},), got {trig.shape}")
        _require_integers(trig, "trigger", np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        samples["trigger"][:, 0] = trig.astype(np.int64) & 0x0F
    if impedance is None:
        samples["impedance"] = IMPEDANCE_UNKNOWN
    else:
        imp = np.asarray(impedance)
        _require_integers(imp, "impedance", 0, 255)
        if imp.ndim == 1:
            imp = imp[:, None]
        try:
            samples["impedance"] = np.broadcast_to(imp, (num_channels, num_samples)).T
        except ValueError:
            expected = f"({num_channels},) or ({num_channels}, {num_samples})"
            raise ValueError(f"impedance must have shape {expected}, got {imp.shape}") from None
    return bytes(header) + samples.tobytes()


def _require_integers(values: np.ndarray, what: str, lo: int, hi: int) -> None:
    if values.dtype.kind not in "iub":
        raise ValueError(f"{what} must be integers, got dtype {values.dtype}")
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{what} must be within [{lo}, {hi}]")


# ---------------------------------------------------------------- zstd framing
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A zstd block regenerates at most 128 KiB and needs at least 4 input bytes
# (an RLE block: 3-byte header + 1 byte), so one input byte can never yield
# more than 32 KiB of output. Feeding the streaming decompressor slices sized
# from the remaining budget bounds what one call can produce.
_MAX_EXPANSION = 32 * 1024
_MAX_BLOCK = 128 * 1024
_MIN_SLICE = 16
# Streaming compressors declare the window of their level, not of the data
# (level 3: 2 MiB, level 19: 8 MiB); refuse larger ones unless the output
# budget itself is larger, so a forged header cannot make the decoder
# reserve a huge window.
_MIN_WINDOW_LIMIT = 8 * 1024 * 1024
_decompressors = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    # Creating one costs ~10 µs and an instance must not be shared between
    # threads that use it at the same time: one per thread.
    dctx = getattr(_decompressors, "dctx", None)
    if dctx is None:
        dctx = _decompressors.dctx = zstandard.ZstdDecompressor()
    return dctx


def decompress_frame(frame: bytes | bytearray | memoryview, *, max_output_size: int) -> bytes:
    """Decompress exactly one zstd frame, bounded by ``max_output_size``.

    Works whether or not the frame declares its content size (the
    predecessor's one-shot call needed it, spec §1.1). Raises
    ``PacketError("too_large")`` when the output would exceed the budget,
    before allocating it: a declared size is checked up front, and an
    undeclared one is decompressed in slices so that no more than
    ``max_output_size`` plus one slice's output (≤ 640 KiB) is ever held.
    Raises ``PacketError("decompress")`` on anything that is not exactly one
    complete zstd frame: corrupt or truncated data, skippable frames, a
    second frame or trailing bytes (the spec says the body is one complete
    frame, and silently ignoring extra bytes would hide a client bug).
    """
    data = bytes(frame)
    if not data.startswith(ZSTD_MAGIC):
        raise PacketError("decompress", "the payload is not a zstd frame (bad magic number)")
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise PacketError("decompress", f"invalid zstd frame header: {exc}") from None
    declared = params.content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared != 0:
        if declared > max_output_size:
            raise PacketError("too_large", f"the frame declares {declared} bytes, more than {max_output_size} allowed")
        try:
            # Allocates exactly `declared` bytes; zstd fails if the frame
            # produces any other amount, and refuses trailing input.
            return _decompressor().decompress(data, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise PacketError("decompress", f"corrupt zstd frame: {exc}") from None
    if params.window_size > max(_MIN_WINDOW_LIMIT, max_output_size):
        raise PacketError("too_large", f"the frame asks for a {params.window_size}-byte window, more than allowed")
    return _decompress_streaming(data, max_output_size)


def _decompress_streaming(data: bytes, max_output_size: int) -> bytes:
    """For frames without a declared size: feed slices, stop at the budget."""
    dobj = _decompressor().decompressobj()
    chunks: list[bytes] = []
    produced = 0
    pos = 0
    try:
        while pos < len(data) and not dobj.eof:
            budget = max_output_size - produced
            step = max(_MIN_SLICE, budget // _MAX_EXPANSION)
            piece = dobj.decompress(data[pos : pos + step])
            pos += step
            if piece:
                produced += len(piece)
                if produced > max_output_size:
                    raise PacketError("too_large", f"the frame decompresses to more than {max_output_size} bytes")
                chunks.append(piece)
    except zstandard.ZstdError as exc:
        raise PacketError("decompress", f"corrupt zstd frame: {exc}") from None
    if not dobj.eof:
        raise PacketError("decompress", "the zstd frame is truncated")
    if dobj.unused_data or pos < len(data):
        raise PacketError("decompress", "bytes follow the zstd frame (only one frame is allowed)")
    return b"".join(chunks)


def compress_frame(payload: bytes, *, level: int = 3, include_content_size: bool = True) -> bytes:
    """One zstd frame of ``payload``; ``include_content_size=False`` mimics
    streaming compressors, which do not declare the size."""
    return zstandard.ZstdCompressor(level=level, write_content_size=include_content_size).compress(payload)


# ---------------------------------------------------------------- start-up
def warm_up() -> None:
    """Import numba and compile (or load from numba's cache) the kernel
    before the first packet arrives.

    About a second with a warm cache, several without; call it once at
    start-up, in a thread.
    """
    signals = np.zeros((2, 2), dtype=np.int16)
    decode_payload(encode_payload(signals, ["A", "T"], ["eeg", "stim"]))
    decode_payload(encode_payload(signals, ["A", "B"], ["eeg", "eeg"], trigger=np.ones(2, np.int16), variant="app"))
