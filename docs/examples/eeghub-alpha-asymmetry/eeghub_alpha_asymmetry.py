"""Frontal alpha asymmetry: ln alpha power of a right channel minus a left one.

An example live analysis plugin for eeghub (see ``docs/analysis-plugins.md``).
Every ``interval_seconds`` (default 5 s), for each stream, it takes the last
``window_seconds`` (default 10 s) of two EEG channels, estimates their power
in the alpha band with Welch's method, and reports

    asymmetry = ln(P_alpha(right)) - ln(P_alpha(left))

the usual frontal alpha asymmetry (for example F4 - F3). Alpha power is
inversely related to cortical activity, so a positive value means relatively
more left-hemisphere activity. A ratio of 4 between the two powers gives
ln 4 ≈ 1.39; the band width and the PSD scaling cancel in the difference.

Only numpy, scipy and msgspec are used. Settings come from the lab's
``[plugin.alpha_asymmetry]`` table (or ``EEGHUB_PLUGIN__ALPHA_ASYMMETRY__LEFT=F3``
and so on) and are validated with msgspec when the analyzer starts::

    [plugin.alpha_asymmetry]
    left = "F3"
    right = "F4"
    fmin = 8.0
    fmax = 13.0
    window_seconds = 10.0
    segment_seconds = 2.0
    interval_seconds = 5.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import numpy as np

from eeghub.core.errors import ConfigurationError
from eeghub.core.hookspecs import hookimpl

__version__ = "0.1.0"

PLUGIN_NAME = "alpha_asymmetry"
"""The entry-point name, the analysis id and the settings table's name."""

Positive = Annotated[float, msgspec.Meta(gt=0)]


class AlphaAsymmetrySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[plugin.alpha_asymmetry]``. The defaults fit the simulator (CH1..CH8)."""

    left: str = "CH1"
    """Left-hemisphere channel, e.g. F3."""
    right: str = "CH2"
    """Right-hemisphere channel, e.g. F4."""
    fmin: Positive = 8.0
    fmax: Positive = 13.0
    window_seconds: Positive = 10.0
    """Data per estimate: with 2 s segments at 50 % overlap, 10 s gives 9 segments."""
    segment_seconds: Positive = 2.0
    """Welch segment length (frequency resolution 1 / segment_seconds)."""
    interval_seconds: Positive = 5.0

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError.
        if not self.left or not self.right or self.left == self.right:
            raise ValueError("left and right must be two different channel names")
        if self.fmin >= self.fmax:
            raise ValueError("fmin must be below fmax")
        if self.segment_seconds > self.window_seconds:
            raise ValueError("segment_seconds must not exceed window_seconds")
        if 1.0 / self.segment_seconds > self.fmax - self.fmin:
            raise ValueError("the band is narrower than one frequency bin (1 / segment_seconds)")


def load_settings(table: Mapping[str, Any] | None) -> AlphaAsymmetrySettings:
    """Validate the plugin's settings table; environment values are strings,
    hence ``strict=False`` ("10" becomes 10.0)."""
    try:
        return msgspec.convert(dict(table or {}), AlphaAsymmetrySettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"invalid [plugin.{PLUGIN_NAME}] settings: {exc}") from None


class AlphaAsymmetryResult(msgspec.Struct):
    """What ``GET /api/v1/users/{id}/analysis`` shows under ``applications.alpha_asymmetry``."""

    left: str
    right: str
    band: list[float]
    left_power: float | None
    """Alpha band power of the left channel (V², the PSD integrated over the band)."""
    right_power: float | None
    asymmetry: float | None
    """ln(right_power) - ln(left_power); None when it cannot be computed (see ``note``)."""
    note: str | None = None


def band_power(data: np.ndarray, sfreq: float, fmin: float, fmax: float, segment_seconds: float = 2.0) -> np.ndarray:
    """Power in [fmin, fmax] Hz of each row of ``data`` (channels × samples, volts), in V².

    Welch PSD (Hann, 50 % overlap, mean removed per segment, one-sided
    density) summed over the band's bins times the bin width.
    """
    # scipy.signal costs 1-2 s to import: import it on first use (in the
    # analyzer's worker thread), not when the server starts.
    from scipy.signal import welch

    x = np.asarray(data, dtype=np.float64)
    nperseg = int(min(x.shape[-1], max(2, round(segment_seconds * sfreq))))
    freqs, psd = welch(
        x, fs=sfreq, window="hann", nperseg=nperseg, noverlap=nperseg // 2, detrend="constant", scaling="density", axis=-1
    )
    band = (freqs >= fmin) & (freqs <= fmax)
    if not band.any():
        raise ValueError(f"no frequency bin in {fmin:g}-{fmax:g} Hz at {sfreq:g} Hz with {nperseg}-sample segments")
    return psd[..., band].sum(axis=-1) * float(freqs[1] - freqs[0])


class AlphaAsymmetryAnalysis:
    """The analysis plugin object (the contract of ``plugins/analyzer/contract.py``).

    Stateless: ``analyze`` only reads the frozen settings, so the analyzer may
    run it for many streams at once in its worker threads.
    """

    id = PLUGIN_NAME
    display_name = "Frontal alpha asymmetry"
    channel_types = ("eeg",)

    def __init__(self, settings: AlphaAsymmetrySettings | None = None) -> None:
        self.settings = settings or AlphaAsymmetrySettings()
        s = self.settings
        self.window_seconds = s.window_seconds
        self.interval_seconds = s.interval_seconds
        self.description = (
            f"ln alpha power ({s.fmin:g}-{s.fmax:g} Hz) of {s.right} minus that of {s.left} "
            f"(Welch, {s.segment_seconds:g} s Hann segments, 50 % overlap, last {s.window_seconds:g} s)."
        )

    def analyze(self, window: Any) -> AlphaAsymmetryResult | None:
        s = self.settings
        names = list(window.channel_names)
        if s.left not in names or s.right not in names:
            return None  # this stream has no such channels: nothing to show for it
        result = AlphaAsymmetryResult(
            left=s.left, right=s.right, band=[s.fmin, s.fmax], left_power=None, right_power=None, asymmetry=None
        )
        bad = [c for c in (s.left, s.right) if c in window.bad_channels]
        if bad:
            result.note = f"bad channel(s): {', '.join(bad)}"
            return result
        rows = window.data[[names.index(s.left), names.index(s.right)]]
        left, right = (float(p) for p in band_power(rows, window.sampling_rate, s.fmin, s.fmax, s.segment_seconds))
        result.left_power, result.right_power = left, right
        if not (np.isfinite(left) and np.isfinite(right)) or left <= 0.0 or right <= 0.0:
            result.note = "no alpha power on a channel (flat?)"
            return result
        result.asymmetry = float(np.log(right) - np.log(left))
        return result


@hookimpl
def eeghub_analyses(ctx: Any) -> list[Any]:
    """Called by the analyzer at start-up: one analysis, configured from
    ``[plugin.alpha_asymmetry]`` (an invalid table stops start-up)."""
    return [AlphaAsymmetryAnalysis(load_settings(ctx.settings.plugin.get(PLUGIN_NAME, {})))]
