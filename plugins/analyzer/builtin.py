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


class PsdResult(msgspec.Struct):
    channels: list[str]
    freqs: list[float]
    psd: list[list[float]]
    """V²/Hz, one row per channel."""
    peak_frequency: dict[str, float]
    alpha_power: dict[str, float]
    """Mean PSD over 8–13 Hz per channel (V²/Hz)."""


class CoherenceOut(msgspec.Struct):
    channels: list[str]
    band: list[float]
    matrix: list[list[float | None]]
    """Magnitude-squared coherence averaged over the band."""
    mean: float | None
    n_segments: int
    noise_floor: float
    """Expected MSC of independent signals with this many segments."""


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
        alpha = (freqs >= 8.0) & (freqs <= 13.0)
        return PsdResult(
            channels=names,
            freqs=freqs.tolist(),
            psd=psd.tolist(),
            peak_frequency={n: float(freqs[int(np.argmax(psd[i]))]) for i, n in enumerate(names)},
            alpha_power={n: float(psd[i, alpha].mean()) if alpha.any() else 0.0 for i, n in enumerate(names)},
        )


class CoherenceAnalysis:
    id = "coherence"
    display_name = "Alpha-band coherence"
    description = "Magnitude-squared coherence between all channel pairs from overlapping 1 s segments, with its noise floor."
    channel_types = ("eeg", "emg", "eog")

    def __init__(self, settings: AnalyzerSettings) -> None:
        self.window_seconds = settings.coherence_window_seconds
        self.interval_seconds = settings.interval_seconds
        self.band = (float(settings.coherence_band[0]), float(settings.coherence_band[1]))

    def analyze(self, window: AnalysisWindow) -> CoherenceOut | None:
        data, names = _good(window)
        if len(names) < 2:
            return None
        result = alpha_coherence(data, window.sampling_rate, band=self.band)
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
