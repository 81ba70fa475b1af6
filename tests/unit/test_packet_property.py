"""Property: the numba kernel and the numpy reference decode every valid
packet identically, and both give back what was encoded.

Hypothesis draws the shape (C 1..64, N 1..600, variant, channel types,
previous trigger, impedance threshold) and a value style; a seeded numpy
generator fills the arrays, which keeps big examples fast while every
failure stays reproducible from the drawn seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eeghub.core.packet import DecodedPacket, PacketStats, decode_payload, decode_payload_reference, encode_payload

EXTREMES = np.array([-32768, -32767, -1, 0, 1, 32766, 32767], dtype=np.int16)
IMPEDANCES = np.array([0, 1, 199, 200, 201, 254, 255], dtype=np.uint8)
TYPE_CODE_OFFSET = 8  # byte of the type code inside a 10-byte electrode config


@dataclass
class Case:
    payload: bytes
    signals: np.ndarray
    trigger_bytes: np.ndarray | None
    previous_trigger: int
    impedance_threshold: int


def values(rng: np.random.Generator, style: str, shape: tuple[int, int]) -> np.ndarray:
    if style == "uniform":
        return rng.integers(-32768, 32768, shape).astype(np.int16)
    if style == "extremes":
        return rng.choice(EXTREMES, shape)
    # "sparse": mostly zeros, so zero counts, edges and carry-over all happen
    keep = rng.random(shape) < rng.choice([0.02, 0.3, 0.9])
    return np.where(keep, rng.choice(EXTREMES[EXTREMES != 0], shape), 0).astype(np.int16)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    num_channels = draw(st.integers(1, 64))
    num_samples = draw(st.integers(1, 600))
    variant = draw(st.sampled_from(["v4", "app"]))
    types = draw(st.lists(st.sampled_from(["eeg", "emg", "eog", "stim", "misc"]), min_size=num_channels, max_size=num_channels))
    style = draw(st.sampled_from(["uniform", "extremes", "sparse"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    signals = values(rng, style, (num_channels, num_samples))
    for i, kind in enumerate(types):
        if kind == "stim":
            signals[i] = values(rng, "sparse", (1, num_samples))[0]
    if draw(st.booleans()):
        impedance = rng.choice(IMPEDANCES, (num_channels, num_samples))
    else:
        impedance = rng.integers(0, 256, (num_channels, num_samples))
    names = [f"C{i}" if i % 7 else "" for i in range(num_channels)]  # some empty names
    payload = bytearray(
        encode_payload(signals, names, types, variant=variant, impedance=impedance)
    )

    # Bytes the decoders must ignore or mask: unknown type codes for misc
    # channels, random accel/gyro, and (app) a random trigger byte whose
    # high nibble and padding are not part of the trigger.
    for i, kind in enumerate(types):
        if kind == "misc":
            payload[4 + 10 * i + TYPE_CODE_OFFSET] = int(rng.choice([4, 100, 254, 255]))
    header_size = 4 + 10 * num_channels
    body = np.frombuffer(payload, dtype=np.uint8, offset=header_size).reshape(num_samples, -1).copy()
    extra = 4 if variant == "app" else 0
    imu = slice(2 * num_channels + extra, 2 * num_channels + extra + 12)
    body[:, imu] = rng.integers(0, 256, (num_samples, 12))
    trigger_bytes = None
    if variant == "app":
        block = slice(2 * num_channels, 2 * num_channels + 4)
        body[:, block] = rng.integers(0, 256, (num_samples, 4))
        body[rng.random(num_samples) < 0.5, 2 * num_channels] &= 0xF0  # zeros in the low nibble
        trigger_bytes = body[:, 2 * num_channels].copy()
    payload[header_size:] = body.tobytes()

    previous = draw(st.sampled_from([0, 1, -1, 15, 32767, -32768]))
    threshold = draw(st.sampled_from([200, 0, 1, 255, 256, -3, 1000]) | st.integers(0, 255))
    return Case(bytes(payload), signals, trigger_bytes, previous, threshold)


def assert_same(fast: DecodedPacket, slow: DecodedPacket) -> None:
    assert fast.layout == slow.layout
    for packet in (fast, slow):
        assert packet.signals.dtype == np.int16 and packet.signals.flags.c_contiguous
        assert packet.rising_edges.dtype == np.int64
    np.testing.assert_array_equal(fast.signals, slow.signals)
    np.testing.assert_array_equal(fast.rising_edges, slow.rising_edges)
    assert fast.last_trigger == slow.last_trigger
    assert (fast.trigger is None) == (slow.trigger is None)
    if fast.trigger is not None:
        np.testing.assert_array_equal(fast.trigger, slow.trigger)
    for field in fields(PacketStats):
        a, b = getattr(fast.stats, field.name), getattr(slow.stats, field.name)
        assert a.dtype == b.dtype == np.int64, field.name
        np.testing.assert_array_equal(a, b, err_msg=field.name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_kernel_matches_reference_and_input(case: Case) -> None:
    kwargs = {"previous_trigger": case.previous_trigger, "impedance_threshold": case.impedance_threshold}
    fast = decode_payload(case.payload, **kwargs)
    slow = decode_payload_reference(case.payload, **kwargs)
    assert_same(fast, slow)

    num_channels, num_samples = case.signals.shape
    assert fast.layout.num_samples == num_samples
    np.testing.assert_array_equal(fast.signals[:num_channels], case.signals)
    if case.trigger_bytes is not None:
        np.testing.assert_array_equal(fast.signals[num_channels], case.trigger_bytes & 0x0F)
        assert fast.layout.trigger_index == num_channels
    if fast.trigger is not None:
        # Independent of both decoders: edges straight from the definition.
        before = np.concatenate(([case.previous_trigger != 0], fast.trigger[:-1] != 0))
        np.testing.assert_array_equal(fast.rising_edges, np.flatnonzero((fast.trigger != 0) & ~before))
