"""Synthetic EEG devices: packets as the phone app sends them.

Used by ``eeghub simulate``, the tests and the benchmarks. A device produces
one packet per ``samples_per_packet`` samples: an alpha (10 Hz) rhythm plus
white noise on each EEG channel, and trigger pulses (value ``trigger_value``,
or a code per pulse as the app writes them, for ``pulse_samples`` samples)
at the requested sample positions, in either
payload variant (a TRIG channel in the header, or the mobile app's
trigger block).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .packet import compress_frame, encode_payload


@dataclass
class SimulatedDevice:
    user_id: str
    device_id: str
    channels: int = 8
    sampling_rate: float = 250.0
    samples_per_packet: int = 250
    variant: str = "v4"
    """``v4``: a TRIG channel (type stim) is the last header channel;
    ``app``: the mobile app's layout with a 4-byte trigger block per sample."""
    lsb_to_volts: float = 5.7220458984375e-6 / 32
    alpha_amplitude_counts: float = 400.0
    noise_counts: float = 150.0
    trigger_samples: Sequence[int] = ()
    """Absolute sample indices (from the device's first sample) where a pulse starts."""
    pulse_samples: int = 5
    trigger_value: int = 1
    trigger_codes: Sequence[int] = ()
    """The value of each pulse of ``trigger_samples`` (same order), e.g. the
    app's stimulus class codes; empty: every pulse is ``trigger_value``."""
    seed: int = 0
    session_id: str | None = None
    _rng: np.random.Generator = field(init=False, repr=False)
    _phase: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.variant not in ("v4", "app"):
            raise ValueError("variant must be 'v4' or 'app'")
        if self.trigger_codes and len(self.trigger_codes) != len(self.trigger_samples):
            raise ValueError("trigger_codes must give one value per trigger sample")
        self._rng = np.random.default_rng(self.seed)
        self._phase = self._rng.uniform(0, 2 * np.pi, self.channels)

    @property
    def channel_names(self) -> list[str]:
        names = [f"CH{i + 1}" for i in range(self.channels)]
        return names + ["TRIG"] if self.variant == "v4" else names

    @property
    def channel_types(self) -> list[str]:
        types = ["eeg"] * self.channels
        return types + ["stim"] if self.variant == "v4" else types

    @property
    def packet_ms(self) -> float:
        return self.samples_per_packet * 1000.0 / self.sampling_rate

    def eeg(self, first_sample: int, count: int) -> np.ndarray:
        t = (first_sample + np.arange(count)) / self.sampling_rate
        alpha = self.alpha_amplitude_counts * np.sin(2 * np.pi * 10.0 * t[None, :] + self._phase[:, None])
        noise = self._rng.normal(0.0, self.noise_counts, (self.channels, count))
        return np.clip(np.rint(alpha + noise), -32768, 32767).astype(np.int16)

    def trigger(self, first_sample: int, count: int) -> np.ndarray:
        out = np.zeros(count, dtype=np.int16)
        codes = self.trigger_codes or [self.trigger_value] * len(self.trigger_samples)
        for start, code in zip(self.trigger_samples, codes, strict=True):
            lo, hi = max(start, first_sample), min(start + self.pulse_samples, first_sample + count)
            if lo < hi:
                out[lo - first_sample : hi - first_sample] = code
        return out

    def payload(self, index: int) -> bytes:
        """The uncompressed payload of packet ``index``."""
        first = index * self.samples_per_packet
        signals = self.eeg(first, self.samples_per_packet)
        trigger = self.trigger(first, self.samples_per_packet)
        if self.variant == "v4":
            return encode_payload(np.vstack([signals, trigger[None, :]]), self.channel_names, self.channel_types)
        return encode_payload(signals, self.channel_names, self.channel_types, trigger=trigger, variant="app")

    def envelope(self, index: int, start_ms: int) -> dict[str, object]:
        begin = start_ms + round(index * self.packet_ms)
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "device_id": self.device_id,
            "timestamp_start_ms": begin,
            # The app stamps the arrival of the packet's last sample.
            "timestamp_end_ms": begin + round((self.samples_per_packet - 1) * 1000.0 / self.sampling_rate),
            "sampling_rate": self.sampling_rate,
            "lsb_to_volts": self.lsb_to_volts,
        }

    def packets(self, start_ms: int, count: int) -> Iterator[tuple[dict[str, object], bytes]]:
        """``count`` packets from ``start_ms``: (envelope without payload, zstd frame)."""
        for index in range(count):
            yield self.envelope(index, start_ms), compress_frame(self.payload(index))


def json_body(envelope: dict[str, object], frame: bytes) -> dict[str, object]:
    """The predecessor's ``POST /api/v1/data`` JSON body."""
    return {**envelope, "payload_base64": base64.b64encode(frame).decode()}


def trigger_sample(device: SimulatedDevice, seconds: float) -> int:
    return round(seconds * device.sampling_rate)
