"""The built-in analyses on generated data with a known answer: coherence from
the first seconds of a stream (a growing window, its segments and noise floor),
the alpha band power in V² next to the predecessor's mean density, units."""

from __future__ import annotations

import types

import numpy as np
import pytest

from eeghub.config.settings import AnalyzerSettings
from eeghub.plugins.analyzer.builtin import CoherenceAnalysis, PsdAnalysis, band_power
from eeghub.plugins.analyzer.contract import AnalysisWindow, check_plugin
from eeghub.plugins.analyzer.host import AnalysisHost
from eeghub.plugins.analyzer.render import coherence_png, coherence_title

SFREQ = 250.0
NAMES = ("Fp1", "Fp2", "C3", "C4")


def window(data: np.ndarray) -> AnalysisWindow:
    n = data.shape[0]
    return AnalysisWindow(
        user_id="u", device_id="d", session_id=None, data=data, channel_names=NAMES[:n], channel_types=("eeg",) * n,
        sampling_rate=SFREQ, start_us=0, end_us=int((data.shape[1] - 1) * 1e6 / SFREQ),
    )  # fmt: skip


def noise(channels: int, seconds: float, seed: int, scale: float = 10e-6) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * SFREQ))) * scale


def alpha_mixture(seconds: float, seed: int) -> np.ndarray:
    """Sines on every 1 Hz bin of 8–13 Hz with random phases: a rhythm filling the band."""
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 6)
    return sum(20e-6 * np.sin(2 * np.pi * f * t + p) for f, p in zip(range(8, 14), phases))  # type: ignore[return-value]


def test_coherence_needs_nine_segments_by_default_and_can_be_configured() -> None:
    plugin = CoherenceAnalysis(AnalyzerSettings())
    assert plugin.min_segments == 9 and plugin.min_window_seconds == 5.0 and plugin.window_seconds == 20.0
    assert check_plugin(plugin) == []
    assert CoherenceAnalysis(AnalyzerSettings(coherence_min_segments=3)).min_window_seconds == 2.0
    # never beyond the full window; at least two segments
    assert CoherenceAnalysis(AnalyzerSettings(coherence_min_segments=99, coherence_window_seconds=8)).min_window_seconds == 8
    assert CoherenceAnalysis(AnalyzerSettings(coherence_min_segments=0)).min_segments == 2
    bad = types.SimpleNamespace(**{k: getattr(plugin, k) for k in ("id", "display_name", "description", "window_seconds", "interval_seconds", "channel_types", "analyze")})
    bad.min_window_seconds = 30.0
    assert check_plugin(bad) == ["min_window_seconds must be a positive number no larger than window_seconds"]


def test_independent_noise_in_five_seconds_is_at_the_floor() -> None:
    plugin = CoherenceAnalysis(AnalyzerSettings())
    means, floors = [], set()
    for seed in range(30):
        out = plugin.analyze(window(noise(4, 5, seed)))
        assert out is not None
        means.append(out.mean)
        floors.add(round(out.noise_floor, 6))
    assert out.n_segments == 9 and out.window_seconds == 5.0 and out.segment_seconds == 1.0
    assert floors == {round(out.noise_floor, 6)} and 0.11 < out.noise_floor < 0.125
    assert out.effective_segments == pytest.approx(1 / out.noise_floor, rel=1e-3)
    # Mean over 30 draws × 6 pairs: the floor, within 15 %; no single draw near a real coherence.
    assert np.mean(means) == pytest.approx(out.noise_floor, rel=0.15)
    assert max(means) < 0.3


def test_a_shared_rhythm_in_five_seconds_is_coherent() -> None:
    plugin = CoherenceAnalysis(AnalyzerSettings())
    x = noise(4, 5, seed=1, scale=2e-6)
    shared = alpha_mixture(5, seed=2)
    x[0] += shared
    x[2] += 0.5 * np.roll(shared, 7)
    out = plugin.analyze(window(x))
    assert out is not None and out.n_segments == 9
    m = np.array(out.matrix, dtype=float)
    assert m[0, 2] > 0.95 and m[2, 0] == m[0, 2]
    assert max(m[1, 3], m[0, 1], m[0, 3], m[1, 2]) < 0.5
    assert out.units["matrix"] == "1" and out.units["window_seconds"] == "s"


def test_a_shared_10_hz_sinusoid_in_five_seconds_is_coherent_at_its_frequency() -> None:
    from eeghub.plugins.analyzer.dsp import alpha_coherence

    t = np.arange(int(5 * SFREQ)) / SFREQ
    x = noise(3, 5, seed=9, scale=2e-6)
    x[0] += 20e-6 * np.sin(2 * np.pi * 10 * t)
    x[1] += 10e-6 * np.sin(2 * np.pi * 10 * t + 1.0)
    result = alpha_coherence(x, SFREQ)
    assert result.n_segments == 9
    ten = list(result.freqs).index(10.0)
    assert result.per_frequency[0, 1, ten] > 0.99  # the shared sinusoid: ≈ 1
    assert result.per_frequency[0, 2, ten] < 0.5 and result.per_frequency[1, 2, ten] < 0.5  # independent: near the floor


def test_the_image_title_says_segments_and_floor() -> None:
    out = CoherenceAnalysis(AnalyzerSettings()).analyze(window(noise(3, 6, seed=3)))
    assert out is not None and out.n_segments == 11
    assert coherence_title(out) == "8-13 Hz coherence (MSC), 11 segments in 6 s, noise floor 0.10"
    assert coherence_png(out)  # draws


def packet(host: AnalysisHost, index: int, seconds_per_packet: float = 1.0) -> None:
    n = int(SFREQ * seconds_per_packet)
    data = np.random.default_rng(index).integers(-2000, 2000, size=(4, n)).astype(np.int16)
    host.add_packet(
        user_id="u", device_id="d", session_id="s", sampling_rate=SFREQ, lsb_to_volts=1e-7,
        channel_names=NAMES, channel_types=("eeg",) * 4, signals=data,
        start_us=1_767_225_600_000_000 + index * int(seconds_per_packet * 1e6),
    )  # fmt: skip


async def test_the_host_gives_a_growing_window_from_the_minimum_up_to_the_full_one() -> None:
    settings = AnalyzerSettings()
    plugin = CoherenceAnalysis(settings)
    host = AnalysisHost([plugin], buffer_seconds=60)
    try:
        for i in range(4):
            packet(host, i)
        stream = host.streams[("u", "d")]
        assert host.window_for(stream, plugin) is None  # 4 s: fewer than 9 segments
        packet(host, 4)
        w5 = host.window_for(stream, plugin)
        assert w5 is not None and w5.data.shape == (4, 1250)
        for i in range(5, 12):
            packet(host, i)
        w12 = host.window_for(stream, plugin)  # a 12 s session gets its coherence
        assert w12 is not None and w12.data.shape == (4, 3000) and w12.end_us - w12.start_us == 11_996_000
        out = plugin.analyze(w12)
        assert out is not None and out.n_segments == 23 and out.window_seconds == 12.0
        for i in range(12, 30):
            packet(host, i)
        assert host.window_for(stream, plugin).data.shape == (4, 5000)  # type: ignore[union-attr]  # capped at 20 s
        # A plugin without min_window_seconds still waits for its full window.
        plain = types.SimpleNamespace(window_seconds=40.0, channel_types=("eeg",))
        assert host.window_for(stream, plain) is None
    finally:
        host.close()


def test_band_power_is_in_volts_squared() -> None:
    plugin = PsdAnalysis(AnalyzerSettings())
    sigma = 10e-6
    white = np.random.default_rng(4).standard_normal((2, int(60 * SFREQ))) * sigma
    out = plugin.analyze(window(white))
    assert out is not None
    # White noise: density 2σ²/fs one-sided, so 5 Hz of band hold 10σ²/fs.
    for name in out.channels:
        assert out.alpha_band_power[name] == pytest.approx(5 * 2 * sigma**2 / SFREQ, rel=0.1)
        assert out.alpha_power[name] == pytest.approx(2 * sigma**2 / SFREQ, rel=0.1)  # the predecessor's mean density
    # A 10 Hz sine of amplitude A has power A²/2, all inside the band.
    t = np.arange(int(8 * SFREQ)) / SFREQ
    amplitude = 30e-6
    sine = np.vstack([amplitude * np.sin(2 * np.pi * 10 * t), 0.5 * amplitude * np.sin(2 * np.pi * 10 * t + 1)])
    out = plugin.analyze(window(sine))
    assert out is not None
    assert out.alpha_band_power["Fp1"] == pytest.approx(amplitude**2 / 2, rel=0.02)
    assert out.alpha_band_power["Fp2"] == pytest.approx(amplitude**2 / 8, rel=0.02)
    assert out.units == {"freqs": "Hz", "psd": "V²/Hz", "peak_frequency": "Hz", "alpha_power": "V²/Hz", "alpha_band_power": "V²", "alpha_band": "Hz"}
    assert out.alpha_band == [8.0, 13.0]


def test_band_power_of_a_band_with_one_bin_is_zero() -> None:
    freqs = np.arange(0, 20, 2.0)
    assert band_power(freqs, np.ones((1, freqs.size)), (9.0, 11.0)).tolist() == [0.0]
    assert band_power(freqs, np.ones((1, freqs.size)), (8.0, 12.0)).tolist() == [4.0]
