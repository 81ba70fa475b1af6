"""Fuzz: hostile bytes never get past the codec as anything but PacketError.

More than 100,000 random and mutated payloads go through ``parse_layout`` and
``decode_payload``, and as many zstd frames through ``decompress_frame`` with
a small output budget. Mutating small valid packets (rather than drawing
pure noise, which almost always fails the version byte) reaches every check
of the parser, and keeps the run to a few seconds. A seeded generator makes
every run the same; a failure names the iteration and shows the offending
bytes.

Besides "only PacketError", every successful result is checked against what
its input length allows, so an unbounded allocation cannot hide here.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from eeghub.core.packet import (
    PacketError,
    compress_frame,
    decode_payload,
    decompress_frame,
    encode_payload,
    parse_layout,
)

ITERATIONS = 100_000
SEED = 20_261_123


def valid_packets(rng: np.random.Generator, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        channels = int(rng.integers(1, 11))
        samples = int(rng.integers(1, 9))
        types = list(rng.choice(["eeg", "emg", "eog", "stim", "misc"], channels))
        signals = rng.integers(-32768, 32768, (channels, samples)).astype(np.int16)
        signals[rng.random((channels, samples)) < 0.5] = 0
        names = [f"C{j}" if (i + j) % 5 else "" for j in range(channels)]
        impedance = rng.integers(0, 256, (channels, samples))
        if i % 2:
            trigger = rng.integers(0, 256, samples) * (rng.random(samples) < 0.5)
            out.append(encode_payload(signals, names, types, trigger=trigger, variant="app", impedance=impedance))
        else:
            out.append(encode_payload(signals, names, types, impedance=impedance))
    return out


def flip_bits(rng: np.random.Generator, data: bytes, lo: int = 0, hi: int | None = None) -> bytes:
    buf = bytearray(data)
    hi = len(buf) if hi is None else min(hi, len(buf))
    if hi <= lo:
        return data
    for _ in range(int(rng.integers(1, 5))):
        buf[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def random_bytes(rng: np.random.Generator, size: int) -> bytes:
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def mutate_payload(rng: np.random.Generator, base: bytes) -> bytes:
    kind = int(rng.integers(0, 12))
    if kind == 0:
        return flip_bits(rng, base)
    if kind == 1:  # version, channel count, trigger flag
        return flip_bits(rng, base, 0, 4)
    if kind == 2:  # names and type codes
        return flip_bits(rng, base, 4, 4 + 10 * base[1])
    if kind == 3:
        return base[: int(rng.integers(0, len(base)))]
    if kind == 4:
        return base + random_bytes(rng, int(rng.integers(1, 64)))
    if kind == 5:  # whole extra samples: a valid, longer packet
        layout = parse_layout(base)
        body = base[layout.header_size :]
        return base + body * int(rng.integers(1, 4))
    if kind == 6:  # any channel count, 0 and 255 included
        return base[:1] + bytes([int(rng.integers(0, 256))]) + base[2:]
    if kind == 7:  # flip the trigger flag: the predecessor's mis-framing
        return base[:2] + bytes([base[2] ^ 1]) + base[3:]
    if kind == 8:  # a plausible header over random bytes
        return bytes([4, int(rng.integers(0, 256)), int(rng.integers(0, 2)), 0]) + random_bytes(rng, int(rng.integers(0, 400)))
    if kind == 9:
        return random_bytes(rng, int(rng.integers(0, 300)))
    if kind == 10:  # invalid UTF-8 in a name
        channel = int(rng.integers(0, base[1]))
        at = 4 + 10 * channel + int(rng.integers(0, 8))
        return base[:at] + bytes([int(rng.integers(0x80, 0x100))]) + base[at + 1 :]
    return base


def check_decoded(payload: bytes, max_channels: int, previous: int) -> str:
    """Parse and decode; return the outcome ('ok' or the error reason)."""
    try:
        layout = parse_layout(payload, max_channels=max_channels)
    except PacketError as exc:
        with pytest.raises(PacketError) as again:
            decode_payload(payload, max_channels=max_channels)
        assert again.value.reason == exc.reason
        return exc.reason
    packet = decode_payload(payload, previous_trigger=previous, max_channels=max_channels)
    channels = len(layout.channel_names)
    n = layout.num_samples
    assert packet.layout == layout
    assert layout.header_size + n * layout.sample_size == len(payload)
    assert 1 <= layout.num_channels <= max_channels and n >= 1
    assert len(set(layout.channel_names)) == channels
    # Nothing larger than the input implies: two output bytes per channel
    # and sample take at least two input bytes, at most one edge per two samples.
    assert packet.signals.shape == (channels, n)
    assert packet.signals.nbytes <= len(payload)
    assert packet.rising_edges.size <= (n + 1) // 2
    assert np.all((packet.rising_edges >= 0) & (packet.rising_edges < n))
    for counter in vars(packet.stats).values():
        assert counter.shape == (channels,)
    assert np.all(packet.stats.zero_count <= n) and np.all(packet.stats.impedance_unknown <= n)
    return "ok"


def test_fuzz_payloads() -> None:
    rng = np.random.default_rng(SEED)
    bases = valid_packets(rng, 64)
    outcomes: Counter[str] = Counter()
    count = 0
    for i in range(ITERATIONS):
        base = bases[int(rng.integers(0, len(bases)))]
        payload = mutate_payload(rng, base)
        if i % 2_000 == 0:  # now and then a long packet: huge N
            payload = base + base[parse_layout(base).header_size :] * int(rng.integers(1_000, 5_000))
        max_channels = 255 if i % 3 == 0 else 8
        previous = int(rng.choice([0, 1, -1]))
        try:
            outcomes[check_decoded(payload, max_channels, previous)] += 1
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"iteration {i}: {type(exc).__name__}: {exc}; payload={payload[:200]!r}") from exc
        count += 1
    assert count >= 100_000
    # The mutations reach every check of the parser, and plenty decode.
    expected = {"ok", "version", "truncated_header", "channels", "sample_size", "no_samples", "channel_name"}
    assert expected <= set(outcomes), outcomes
    assert outcomes["ok"] > count // 10, outcomes


def frame_bases(rng: np.random.Generator) -> dict[bytes, bytes]:
    """Frames and what they decompress to."""
    frames = {}
    for i, payload in enumerate(valid_packets(rng, 24)):
        frames[compress_frame(payload, level=[1, 3, 19][i % 3], include_content_size=bool(i % 2))] = payload
    # Bombs: tiny frames of large outputs, with and without a declared size.
    for payload, declared in ((bytes(1 << 20), True), (bytes(1 << 20), False), (b"\x04" * 50_000, False)):
        frames[compress_frame(payload, include_content_size=declared)] = payload
    return frames


def mutate_frame(rng: np.random.Generator, frames: list[bytes]) -> bytes:
    base = frames[int(rng.integers(0, len(frames)))]
    kind = int(rng.integers(0, 9))
    if kind == 0:
        return flip_bits(rng, base)
    if kind == 1:  # frame header: sizes, window, flags
        return flip_bits(rng, base, 4, 14)
    if kind == 2:
        return base[: int(rng.integers(0, len(base)))]
    if kind == 3:
        return base + random_bytes(rng, int(rng.integers(1, 32)))
    if kind == 4:
        return base + frames[int(rng.integers(0, len(frames)))]
    if kind == 5:
        return base[:4] + random_bytes(rng, int(rng.integers(0, 200)))
    if kind == 6:
        return random_bytes(rng, int(rng.integers(0, 200)))
    if kind == 7:  # drop a byte from the middle
        at = int(rng.integers(0, len(base)))
        return base[:at] + base[at + 1 :]
    return base


def test_fuzz_frames() -> None:
    rng = np.random.default_rng(SEED + 1)
    originals = frame_bases(rng)
    frames = list(originals)
    budgets = [64, 512, 4096, 65536]
    outcomes: Counter[str] = Counter()
    count = 0
    for i in range(ITERATIONS):
        frame = mutate_frame(rng, frames)
        budget = budgets[i % len(budgets)]
        try:
            out = decompress_frame(frame, max_output_size=budget)
        except PacketError as exc:
            outcomes[exc.reason] += 1
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"iteration {i}: {type(exc).__name__}: {exc}; frame={frame[:200]!r}") from exc
        else:
            assert isinstance(out, bytes) and len(out) <= budget
            # Errors in earlier iterations leave no state behind in the
            # (per-thread, reused) decompressor.
            assert frame not in originals or out == originals[frame]
            outcomes["ok"] += 1
        count += 1
    assert count >= 100_000
    assert {"ok", "decompress", "too_large"} <= set(outcomes), outcomes
    assert min(outcomes.values()) > count // 50, outcomes
