"""Random valid EEG payloads of both layouts, for decoder cross-checks."""

from __future__ import annotations

import numpy as np

from eeghub.core.packet import encode_payload, parse_layout

IMPEDANCES = np.array([0, 1, 199, 200, 201, 254, 255], dtype=np.uint8)
STATS = ("zero_count", "minimum", "maximum", "impedance_unknown", "impedance_high")


def random_payload(rng: np.random.Generator, channels: int, samples: int, variant: str) -> bytes:
    style = rng.integers(3)
    if style == 0:
        signals = rng.integers(-32768, 32768, (channels, samples))
    elif style == 1:
        signals = rng.choice([-32768, -1, 0, 1, 32767], (channels, samples))
    else:
        signals = np.where(rng.random((channels, samples)) < 0.2, rng.integers(-5, 6, (channels, samples)), 0)
    impedance = rng.choice(IMPEDANCES, (channels, samples))
    if variant == "v4":
        names = [f"E{i}" for i in range(channels - 1)] + ["TRIG"]
        types = ["eeg"] * (channels - 1) + ["stim"]
        return encode_payload(signals, names, types, impedance=impedance)
    names = [f"E{i}" for i in range(channels)]
    trigger = np.where(rng.random(samples) < 0.1, rng.integers(0, 40, samples), 0)
    payload = bytearray(
        encode_payload(signals, names, ["eeg"] * channels, trigger=trigger, variant="app", impedance=impedance)
    )
    # Set high bits of the trigger byte: decoders keep the low nibble only.
    layout = parse_layout(payload)
    at = layout.header_size + 2 * channels + layout.sample_size * np.arange(samples)
    payload_array = np.frombuffer(payload, np.uint8).copy()
    payload_array[at] |= rng.choice([0, 0x10, 0x80, 0xF0], samples).astype(np.uint8)
    return payload_array.tobytes()
