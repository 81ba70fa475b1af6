"""The built-in analyses: ``psd``, ``coherence`` and ``channel_quality``.

They implement the same contract as third-party analysis plugins
(``contract.py``) and are registered through the same hook.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from eeghub.config.settings import AnalyzerSettings

from .contract import AnalysisWindow
from .dsp import alpha_coherence, welch_psd


ALPHA_BAND = (8.0, 13.0)

PSD_UNITS = {
    "freqs": "Hz",
    "psd": "V²/Hz",
    "peak_frequency": "Hz",
    "alpha_power": "V²/Hz",
    "alpha_band_power": "V²",
    "alpha_band": "Hz",
}
"""Units of the PSD result's fields (also in the result as ``units``)."""

COHERENCE_UNITS = {
    "band": "Hz",
    "matrix": "1",
    "mean": "1",
    "noise_floor": "1",
    "segment_seconds": "s",
    "window_seconds": "s",
}
"""Units of the coherence result's fields; ``1``: dimensionless (0 to 1)."""


class PsdResult(msgspec.Struct):
    channels: list[str]
    freqs: list[float]
    psd: list[list[float]]
    """V²/Hz, one row per channel."""
    peak_frequency: dict[str, float]
    alpha_power: dict[str, float]
    """The predecessor's field, kept for its clients: the *mean density* over
    8–13 Hz per channel (V²/Hz), not a power."""
    alpha_band_power: dict[str, float] = msgspec.field(default_factory=dict)
    """Band power over 8–13 Hz per channel (V²): the PSD integrated over the
    band (trapezoidal rule over the bins from 8 to 13 Hz)."""
    alpha_band: list[float] = msgspec.field(default_factory=lambda: list(ALPHA_BAND))
    units: dict[str, str] = msgspec.field(default_factory=dict)


def band_power(freqs: np.ndarray, psd: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """∫ PSD df over ``band`` (inclusive bins, trapezoidal rule) per row, in the
    PSD's unit × Hz (V²/Hz → V²); 0 when the band holds fewer than two bins."""
    inside = (freqs >= band[0]) & (freqs <= band[1])
    if inside.sum() < 2:
        return np.zeros(psd.shape[0])
    f, p = freqs[inside], psd[:, inside]
    return ((p[:, 1:] + p[:, :-1]) * np.diff(f)).sum(axis=1) / 2.0


class CoherenceOut(msgspec.Struct):
    channels: list[str]
    band: list[float]
    """Hz, inclusive."""
    matrix: list[list[float | None]]
    """Magnitude-squared coherence averaged over the band (dimensionless, 0–1)."""
    mean: float | None
    """Mean of the off-diagonal entries."""
    n_segments: int
    """Overlapping segments averaged (the window grows until it is full)."""
    noise_floor: float
    """Expected MSC of independent signals with this many segments
    (1/effective_segments): values near it mean no coherence."""
    effective_segments: float = 0.0
    """Welch's equivalent number of independent segments."""
    segment_seconds: float = 1.0
    window_seconds: float = 0.0
    """Data the estimate used (grows up to the configured window)."""
    units: dict[str, str] = msgspec.field(default_factory=dict)


class QualityOut(msgspec.Struct):
    bad_channels: list[str]
    channel_quality: dict[str, Any]


def _good(window: AnalysisWindow) -> tuple[np.ndarray, list[str]]:
    keep = [i for i, n in enumerate(window.channel_names) if n not in window.bad_channels]
    data = window.data[keep]
    names = [window.channel_names[i] for i in keep]
    # Flat channels (std < 1 nV) carry nothing; the predecessor dropped them too.
    live = [i for i in range(len(names)) if float(np.std(data[i])) >= 1e-9]
    return data[live], [names[i] for i in live]


class PsdAnalysis:
    id = "psd"
    display_name = "Power spectral density"
    description = "Welch PSD per channel (Hann, 50 % overlap), equal to scipy.signal.welch."
    channel_types = ("eeg", "emg", "eog")

    def __init__(self, settings: AnalyzerSettings) -> None:
        self.window_seconds = settings.window_seconds
        self.interval_seconds = settings.interval_seconds
        self.fmin, self.fmax = settings.psd_fmin, settings.psd_fmax

    def analyze(self, window: AnalysisWindow) -> PsdResult | None:
        data, names = _good(window)
        if not names:
            return None
        freqs, psd = welch_psd(data, window.sampling_rate, fmin=self.fmin, fmax=self.fmax)
        alpha = (freqs >= ALPHA_BAND[0]) & (freqs <= ALPHA_BAND[1])
        power = band_power(freqs, psd, ALPHA_BAND)
        return PsdResult(
            channels=names,
            freqs=freqs.tolist(),
            psd=psd.tolist(),
            peak_frequency={n: float(freqs[int(np.argmax(psd[i]))]) for i, n in enumerate(names)},
            alpha_power={n: float(psd[i, alpha].mean()) if alpha.any() else 0.0 for i, n in enumerate(names)},
            alpha_band_power={n: float(power[i]) for i, n in enumerate(names)},
            units=dict(PSD_UNITS),
        )


class CoherenceAnalysis:
    id = "coherence"
    display_name = "Alpha-band coherence"
    description = (
        "Magnitude-squared coherence between all channel pairs from overlapping 1 s segments, with its noise floor;"
        " from the first seconds of a stream (at least coherence_min_segments segments) up to the configured window."
    )
    channel_types = ("eeg", "emg", "eog")
    segment_seconds = 1.0
    overlap = 0.5

    def __init__(self, settings: AnalyzerSettings) -> None:
        self.window_seconds = settings.coherence_window_seconds
        self.interval_seconds = settings.interval_seconds
        self.band = (float(settings.coherence_band[0]), float(settings.coherence_band[1]))
        # K segments of 1 s at 50 % overlap span (1 + (K − 1)/2) s: the estimate is
        # made as soon as that much is buffered (never more than the full window).
        self.min_segments = max(2, int(settings.coherence_min_segments))
        span = self.segment_seconds * (1.0 + (self.min_segments - 1) * (1.0 - self.overlap))
        self.min_window_seconds = min(span, self.window_seconds)

    def analyze(self, window: AnalysisWindow) -> CoherenceOut | None:
        data, names = _good(window)
        if len(names) < 2:
            return None
        result = alpha_coherence(
            data, window.sampling_rate, band=self.band, segment_seconds=self.segment_seconds, overlap=self.overlap
        )
        matrix = [[None if not np.isfinite(v) else float(v) for v in row] for row in result.msc]
        off = result.msc[~np.eye(len(names), dtype=bool)]
        mean = float(np.nanmean(off)) if off.size and np.isfinite(off).any() else None
        return CoherenceOut(
            channels=names,
            band=list(self.band),
            matrix=matrix,
            mean=mean,
            n_segments=int(result.n_segments),
            noise_floor=float(result.noise_floor),
            effective_segments=round(float(result.effective_segments), 3),
            segment_seconds=result.segment_samples / window.sampling_rate,
            window_seconds=data.shape[1] / window.sampling_rate,
            units=dict(COHERENCE_UNITS),
        )


class QualityAnalysis:
    id = "channel_quality"
    display_name = "Channel quality"
    description = "Zero-fill, impedance and flatline checks over the last seconds of data (the predecessor's rules)."
    channel_types = ("eeg", "emg", "eog", "stim", "misc")

    def __init__(self, settings: AnalyzerSettings) -> None:
        # Reported once a PSD window's worth of data exists (the quality
        # itself covers quality_window_seconds).
        self.window_seconds = settings.window_seconds
        self.interval_seconds = settings.interval_seconds

    def analyze(self, window: AnalysisWindow) -> QualityOut:
        return QualityOut(bad_channels=sorted(window.bad_channels), channel_quality=dict(window.channel_quality))


def builtin_analyses(settings: AnalyzerSettings) -> list[Any]:
    return [PsdAnalysis(settings), CoherenceAnalysis(settings), QualityAnalysis(settings)]
