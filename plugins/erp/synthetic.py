"""Generated ERP experiments with known truth (tests, benchmark, validation).

Background EEG: 1/f ("pink") noise, partly shared between channels, plus a
10 Hz alpha rhythm with waxing and waning amplitude, strongest at the back.
A P300-like response (a positive Gaussian wave of known amplitude, latency
and width, with a parietal scalp distribution and a little latency jitter)
is added after every calibration target and after every trial of a product,
scaled by that product's chosen strength (0: no response, like a non-target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eeghub.core.experiment_analysis import Event, Participant, Recording, SessionInfo, Stimulus

CHANNELS = ["Fz", "Cz", "Pz", "P3", "P4", "POz", "O1", "O2"]
P300_WEIGHTS = np.array([0.3, 0.6, 1.0, 0.8, 0.8, 0.8, 0.4, 0.4])
ALPHA_WEIGHTS = np.array([0.3, 0.4, 0.7, 0.7, 0.7, 0.9, 1.0, 1.0])


@dataclass(frozen=True)
class Design:
    sampling_rate: float = 250.0
    calibration_s: float = 300.0
    main_s: float = 1200.0
    calibration_soa_s: float = 1.0
    main_soa_s: float = 1.2
    target_ratio: float = 0.2
    p300_uv: float = 6.0
    """Amplitude at Pz of the response to a calibration target."""
    p300_latency_s: float = 0.35
    p300_width_s: float = 0.07
    latency_jitter_s: float = 0.03
    background_uv: float = 10.0
    """RMS of the 1/f background per channel."""
    alpha_uv: float = 6.0
    product_strengths: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    logged_fraction: float = 0.05
    """Events left at their logged time (the analysis must leave them out)."""
    main_gain: float = 1.0
    """Amplitude scale of the whole main session (another cap fit or amplifier gain than in calibration)."""
    main_extra_noise_uv: float = 0.0
    """RMS of extra 1/f noise in the main session only (a noisier recording than calibration)."""


def product_files(design: Design) -> list[str]:
    return [f"product_{i + 1:02d}.png" for i in range(len(design.product_strengths))]


def stimuli(design: Design) -> list[Stimulus]:
    return [
        Stimulus(file_name=name, trial_type="product", item_name=f"Item {i + 1}", brand_name=f"Brand {chr(65 + i % 26)}",
                 description=f"product {i + 1}", category="Tops", gender="unisex")
        for i, name in enumerate(product_files(design))
    ]


def background(rng: np.random.Generator, channels: int, samples: int, design: Design) -> np.ndarray:
    """Volts: 1/f noise (half shared between channels) plus alpha."""
    fs = design.sampling_rate
    white = rng.standard_normal((channels + 1, samples))
    spectrum = np.fft.rfft(white, axis=1)
    freqs = np.fft.rfftfreq(samples, 1 / fs)
    scale = np.zeros_like(freqs)
    scale[1:] = 1 / np.sqrt(freqs[1:])
    pink = np.fft.irfft(spectrum * scale, n=samples, axis=1)
    pink /= pink.std(axis=1, keepdims=True)
    mixed = np.sqrt(0.5) * pink[:channels] + np.sqrt(0.5) * pink[channels][None, :]
    t = np.arange(samples) / fs
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
    alpha = envelope * np.sin(2 * np.pi * (10.0 + rng.normal(0, 0.3)) * t + rng.uniform(0, 2 * np.pi))
    weights = ALPHA_WEIGHTS[:channels] if channels <= len(ALPHA_WEIGHTS) else np.ones(channels)
    eeg = design.background_uv * mixed + design.alpha_uv * np.sqrt(2) * weights[:, None] * alpha[None, :]
    return (eeg * 1e-6).astype(np.float32)


def add_response(data: np.ndarray, onset: int, amplitude_uv: float, rng: np.random.Generator, design: Design) -> None:
    fs = design.sampling_rate
    latency = design.p300_latency_s + rng.normal(0, design.latency_jitter_s)
    t = np.arange(round(1.0 * fs)) / fs
    wave = amplitude_uv * np.exp(-0.5 * ((t - latency) / design.p300_width_s) ** 2) * 1e-6
    stop = min(data.shape[1], onset + len(t))
    weights = P300_WEIGHTS[: data.shape[0]]
    data[:, onset:stop] += (weights[:, None] * wave[None, : stop - onset]).astype(np.float32)


def schedule(rng: np.random.Generator, duration_s: float, soa_s: float, fs: float) -> np.ndarray:
    onsets = []
    t = 2.0
    while t < duration_s - 1.5:
        onsets.append(round(t * fs))
        t += soa_s + rng.uniform(-0.1, 0.1)
    return np.array(onsets, dtype=np.int64)


def _events(rng: np.random.Generator, onsets: np.ndarray, labels: Sequence[tuple[str, str]], design: Design) -> list[Event]:
    events = []
    for i, (onset, (trial_type, stim)) in enumerate(zip(onsets, labels, strict=True)):
        if rng.random() < design.logged_fraction:
            shifted = int(onset + round(rng.uniform(0.03, 0.15) * design.sampling_rate))
            events.append(Event(sample=shifted, source="logged", trial_type=trial_type, stim_file=stim, event_id=i))
        else:
            events.append(Event(sample=int(onset), source="trigger", trial_type=trial_type, stim_file=stim, event_id=i))
    return events


def calibration_recording(rng: np.random.Generator, design: Design, session_id: str = "cal") -> Recording:
    fs = design.sampling_rate
    data = background(rng, len(CHANNELS), round(design.calibration_s * fs), design)
    onsets = schedule(rng, design.calibration_s, design.calibration_soa_s, fs)
    is_target = rng.random(len(onsets)) < design.target_ratio
    labels = []
    for onset, target in zip(onsets, is_target, strict=True):
        if target:
            add_response(data, int(onset), design.p300_uv, rng, design)
        labels.append(("target", "face01.png") if target else ("nontarget", "house01.png"))
    return Recording(session_id, "calibration", fs, list(CHANNELS), ["eeg"] * len(CHANNELS), data, _events(rng, onsets, labels, design))


def main_recording(rng: np.random.Generator, design: Design, session_id: str = "main") -> Recording:
    fs = design.sampling_rate
    data = background(rng, len(CHANNELS), round(design.main_s * fs), design)
    onsets = schedule(rng, design.main_s, design.main_soa_s, fs)
    files = product_files(design)
    order = np.resize(np.arange(len(files)), len(onsets))
    rng.shuffle(order)
    labels = []
    for onset, k in zip(onsets, order, strict=True):
        strength = design.product_strengths[k]
        if strength:
            add_response(data, int(onset), strength * design.p300_uv, rng, design)
        labels.append(("product", files[k]))
    if design.main_extra_noise_uv:
        extra = background(rng, len(CHANNELS), data.shape[1], Design(sampling_rate=fs, background_uv=design.main_extra_noise_uv, alpha_uv=0.0))
        data += extra
    if design.main_gain != 1.0:
        data *= np.float32(design.main_gain)
    return Recording(session_id, "main", fs, list(CHANNELS), ["eeg"] * len(CHANNELS), data, _events(rng, onsets, labels, design))


def participant(user_id: str, design: Design, seed: int) -> Participant:
    rng = np.random.default_rng(seed)
    return Participant(user_id, [calibration_recording(rng, design, f"{user_id}-cal"), main_recording(rng, design, f"{user_id}-main")])


def sessions(user_ids: Sequence[str], design: Design) -> list[SessionInfo]:
    """What the database would say about the generated sessions."""
    out = []
    for user in user_ids:
        out.append(SessionInfo(f"{user}-cal", user, "calibration", "completed", 1, 1))
        out.append(SessionInfo(f"{user}-main", user, "main", "completed", 1, 1))
    return out
