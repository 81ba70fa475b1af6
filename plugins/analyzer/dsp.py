"""Numerical kernels of the live analyzer: Welch PSD and band coherence.

Pure functions over float64 arrays of shape (channels, samples) in volts. Only
numpy is imported with this module (``numpy.fft``, about 5 ms); scipy costs
0.5 s (``scipy.fft``) to 2 s (``scipy.signal``) on the reference host and is
imported lazily, only for a window name not built in. mne and
mne-connectivity are never imported here; the tests use them as oracles.

Welch PSD (:func:`welch_psd`)
    Segments of ``nperseg`` samples (default: 2 s of data, clipped to the
    window, i.e. 0.5 Hz resolution like the predecessor's 2 s plot) every
    ``nperseg - noverlap`` samples (default 50 % overlap), the mean of each
    segment removed, a periodic Hann window, ``|rfft|²`` scaled to a one-sided
    density in V²/Hz and averaged ("mean"). This is exactly
    ``scipy.signal.welch(x, fs, window="hann", nperseg=nperseg,
    noverlap=noverlap, detrend="constant", scaling="density",
    average="mean")`` and ``mne.time_frequency.psd_array_welch(x, sfreq,
    fmin, fmax, n_fft=nperseg, n_per_seg=nperseg, n_overlap=noverlap,
    window="hann", average="mean", remove_dc=True)`` (MNE runs
    ``scipy.signal.spectrogram`` and averages). Note MNE's own default window
    is Hamming, as the predecessor's plot used.

Band coherence (:func:`alpha_coherence`)
    Magnitude-squared coherence (MSC) from Welch cross-spectra:
    ``C_xy(f) = |mean_k X_k(f) Y_k(f)*|² / (mean_k |X_k(f)|² · mean_k |Y_k(f)|²)``
    over K overlapping windowed segments (default 1 s, 50 % overlap: 1 Hz
    bins, the band 8–13 Hz inclusive is 6 bins), then the mean over the band
    bins. Vectorised, no loop over pairs: the band bins of every channel ×
    segment come from one matrix product with a (segment × 2·bins) DFT basis
    (the same numbers as ``rfft(...)[bins]`` to ~1e-15, but 6 bins out of 126
    cost less than a full FFT, and at 50 % overlap each segment is the sum of
    two contiguous half-segment blocks, so overlapping segments are never
    copied), then one batched Hermitian product per bin gives all
    cross-spectra (``matmul``, 7× faster here than the equivalent ``einsum``).

    With K segments the estimate is biased: for two independent Gaussian
    signals and K *independent* segments the per-bin MSC follows
    Beta(1, K − 1), so its expected value is 1/K (K = 1 gives 1 whatever the
    data). The predecessor estimated one 2 s epoch with the default
    multitaper (7 DPSS tapers, i.e. K ≈ 7) and plotted the coherence
    magnitude, whose expectation for independent signals is
    Γ(K)Γ(3/2)/Γ(K + 1/2) ≈ 0.34: its circle plot showed noise as connectivity.
    Overlapping segments are correlated, so the bias is 1/K_eff with Welch's
    effective number of segments (Welch 1967; Percival & Walden 1993 §6.17):

        K_eff = K / (1 + 2 Σ_{j=1}^{K-1} (1 − j/K) ρ(j)²),
        ρ(j)  = Σ_n w[n] w[n + jS] / Σ_n w[n]²

    (S the step, w the window; for Hann at 50 % overlap ρ(1) = 1/6 and
    K_eff ≈ 0.95 K). ``noise_floor = 1/K_eff`` is reported with every result;
    averaging over band bins does not change the expectation. A 60 s window
    at 1 s / 50 % gives K = 119, noise floor ≈ 0.009; the predecessor's 2 s
    window would give K = 3, noise floor ≈ 0.35: compute coherence on the
    long buffer, not on the 2 s display window.

    mne-connectivity's ``spectral_connectivity_epochs(method="coh",
    mode="fourier")`` windows every epoch with ``np.hanning(n_times)`` (the
    *symmetric* Hann, zero at both ends), removes each epoch's mean, and
    returns the coherence *magnitude* ``|S_xy|/sqrt(S_xx S_yy)`` (with
    ``faverage=True``, the band mean of the magnitude). Given the same
    segments as epochs and ``window="hann_symmetric"``, its result squared
    per frequency equals :attr:`CoherenceResult.per_frequency`, and its
    faverage output equals the band mean of ``sqrt(per_frequency)``. The live
    default stays the periodic Hann shared with :func:`welch_psd`; the two
    Hann variants differ by one sample's length and give coherences within a
    few thousandths of each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ANALYSIS_TYPES",
    "AnalysisChannels",
    "CoherenceResult",
    "alpha_coherence",
    "analysis_channels",
    "coherence_noise_floor",
    "effective_segments",
    "get_window",
    "segment_count",
    "welch_psd",
]

ANALYSIS_TYPES: frozenset[str] = frozenset({"eeg", "emg", "eog"})
"""Channel types that are analysed (spec §5.4); ``stim`` and ``misc`` are not."""

DEFAULT_PSD_SEGMENT_SECONDS = 2.0


# ---------------------------------------------------------------- channels
class AnalysisChannels(NamedTuple):
    """Rows of the window to analyse: positions and names, in channel order."""

    indices: tuple[int, ...]
    names: tuple[str, ...]


def analysis_channels(names: Sequence[str], types: Sequence[str], bad: Iterable[str] = ()) -> AnalysisChannels:
    """The channels of type eeg, emg or eog whose name is not in ``bad``.

    ``bad`` is any container of names (list, set, tuple). Raises ValueError
    when ``names`` and ``types`` differ in length.
    """
    if len(names) != len(types):
        raise ValueError(f"{len(names)} channel names but {len(types)} channel types")
    bad_set = frozenset(bad)
    picked = [(i, name) for i, (name, kind) in enumerate(zip(names, types)) if kind in ANALYSIS_TYPES and name not in bad_set]
    return AnalysisChannels(tuple(i for i, _ in picked), tuple(n for _, n in picked))


# ---------------------------------------------------------------- windows
def get_window(window: str | np.ndarray, n: int) -> np.ndarray:
    """A float64 window of ``n`` samples (read-only, cached for names).

    - ``"hann"``: the periodic ("DFT-even") Hann ``0.5 − 0.5 cos(2πk/n)``,
      the same values as ``scipy.signal.get_window("hann", n)`` (scipy's and
      MNE's ``window="hann"``).
    - ``"hann_symmetric"``: ``np.hanning(n)``, zero at both ends, what
      mne-connectivity's fourier mode applies.
    - ``"hamming"``: the periodic Hamming, MNE's default Welch window.
    - ``"boxcar"``: no window.
    - an array of ``n`` values is used as given; any other name goes to
      ``scipy.signal.get_window`` (imported then, not with this module).
    """
    if isinstance(window, str):
        return _named_window(window, int(n))
    w = np.asarray(window, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"the window has shape {w.shape}, expected ({n},)")
    return w


@lru_cache(maxsize=64)
def _named_window(name: str, n: int) -> np.ndarray:
    if n < 1:
        raise ValueError(f"a window needs at least one sample, got {n}")
    k = np.arange(n, dtype=np.float64)
    if name == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)
    elif name == "hann_symmetric":
        w = np.hanning(n).astype(np.float64)
    elif name == "hamming":
        w = 0.54 - 0.46 * np.cos(2.0 * np.pi * k / n)
    elif name == "boxcar":
        w = np.ones(n)
    else:
        from scipy.signal import get_window as scipy_get_window  # lazy: about 2 s to import

        w = np.asarray(scipy_get_window(name, n), dtype=np.float64)
    w.flags.writeable = False
    return w


# ---------------------------------------------------------------- helpers
def _as_channels(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2:
        raise ValueError(f"expected an array of shape (channels, samples), got {arr.shape}")
    return arr


def _check_sfreq(sfreq: float) -> float:
    sfreq = float(sfreq)
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise ValueError(f"the sampling rate must be a positive number, got {sfreq}")
    return sfreq


def segment_count(n_samples: int, nperseg: int, step: int) -> int:
    """Number of whole segments of ``nperseg`` samples every ``step`` samples."""
    if n_samples < nperseg:
        return 0
    return 1 + (n_samples - nperseg) // step


_FFT_CHUNK_SAMPLES = 1 << 16
"""Welch PSD transforms at most this many samples per FFT call (512 KiB of
float64): a 60 s, 8-channel window at once spills the CPU caches and costs
three times as much."""


def _segment_view(x: np.ndarray, nperseg: int, step: int) -> np.ndarray:
    """(channels, segments, nperseg), a strided view (no copy)."""
    return sliding_window_view(x, nperseg, axis=-1)[:, ::step, :]


def _band_slice(nfft: int, sfreq: float, fmin: float, fmax: float) -> tuple[slice, np.ndarray]:
    """Bins of ``rfft(n=nfft)`` with fmin ≤ f ≤ fmax (MNE's mask and frequencies)."""
    freqs = np.arange(nfft // 2 + 1, dtype=np.float64) * (sfreq / nfft)
    inside = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
    if inside.size == 0:
        raise ValueError(f"no frequency bin between {fmin} and {fmax} Hz (resolution {sfreq / nfft:g} Hz)")
    sl = slice(int(inside[0]), int(inside[-1]) + 1)
    return sl, freqs[sl]


# ---------------------------------------------------------------- PSD
def welch_psd(
    window_volts: np.ndarray,
    sfreq: float,
    *,
    fmin: float = 1.0,
    fmax: float = 45.0,
    nperseg: int | None = None,
    noverlap: int | None = None,
    window: str | np.ndarray = "hann",
) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density per channel, in V²/Hz, for fmin ≤ f ≤ fmax.

    ``window_volts`` is (channels, samples) (a 1-D array is one channel).
    ``nperseg`` defaults to 2 s of data, clipped to the number of samples (a
    2 s window is then one periodogram); ``noverlap`` to ``nperseg // 2``; the
    FFT length is ``nperseg`` (no zero padding). Trailing samples that do not
    fill a segment are ignored, as in scipy. Returns ``(freqs, psd)`` with
    ``psd`` of shape (channels, len(freqs)), float64. The samples must be
    finite. See the module docstring for the scipy/MNE calls it equals.
    """
    x = _as_channels(window_volts)
    sfreq = _check_sfreq(sfreq)
    n = x.shape[-1]
    if n < 1:
        raise ValueError("the window has no samples")
    if nperseg is None:
        nperseg = int(round(DEFAULT_PSD_SEGMENT_SECONDS * sfreq))
    nperseg = min(int(nperseg), n)
    if nperseg < 1:
        raise ValueError(f"nperseg must be at least 1, got {nperseg}")
    noverlap = nperseg // 2 if noverlap is None else int(noverlap)
    if not 0 <= noverlap < nperseg:
        raise ValueError(f"noverlap must be in [0, nperseg={nperseg}), got {noverlap}")
    step = nperseg - noverlap
    w = get_window(window, nperseg)
    band, freqs = _band_slice(nperseg, sfreq, fmin, fmax)

    segs = _segment_view(x, nperseg, step)
    n_ch, n_seg, _ = segs.shape
    psd = np.empty((n_ch, freqs.size))
    group = max(1, _FFT_CHUNK_SAMPLES // (n_seg * nperseg))  # channels per FFT call
    for c0 in range(0, n_ch, group):  # a loop over cache-sized channel groups, not over pairs
        chunk = segs[c0 : c0 + group]
        # The mean removed before windowing, as scipy does (exact even under a large DC offset).
        seg = chunk - chunk.mean(axis=-1, keepdims=True)
        seg *= w
        spec = np.fft.rfft(seg, axis=-1)[..., band]
        psd[c0 : c0 + group] = (spec.real**2 + spec.imag**2).mean(axis=1)
    # One-sided density: double every bin but DC and (even nperseg) Nyquist.
    scale = np.full(freqs.shape, 2.0 / (sfreq * float(np.dot(w, w))))
    bins = np.arange(band.start, band.stop)
    scale[bins == 0] /= 2.0
    if nperseg % 2 == 0:
        scale[bins == nperseg // 2] /= 2.0
    psd *= scale
    return freqs, psd


# ---------------------------------------------------------------- coherence
@dataclass(frozen=True)
class CoherenceResult:
    """Band coherence of every channel pair.

    ``msc`` is the (channels, channels) band mean of the magnitude-squared
    coherence, symmetric, 1 on the diagonal; ``per_frequency`` the MSC per
    band bin, (channels, channels, bins); ``freqs`` those bins in Hz.
    ``noise_floor`` = 1/``effective_segments`` is the expected MSC of two
    independent signals with this segmentation: values near it mean "no
    coherence". A constant channel (or one with exactly no power in the band)
    gives NaN in its row and column; drop near-constant channels before
    (the predecessor dropped std < 1e-9 V).
    """

    msc: np.ndarray
    per_frequency: np.ndarray
    freqs: np.ndarray
    n_segments: int
    effective_segments: float
    noise_floor: float
    segment_samples: int
    step_samples: int
    window: str

    def as_dict(self) -> dict[str, object]:
        """Plain lists and numbers (NaN becomes None), ready for JSON/msgspec."""
        return {
            "msc": _nan_to_none(self.msc),
            "freqs": self.freqs.tolist(),
            "n_segments": self.n_segments,
            "effective_segments": self.effective_segments,
            "noise_floor": self.noise_floor,
            "segment_samples": self.segment_samples,
            "step_samples": self.step_samples,
            "window": self.window,
        }


def _nan_to_none(a: np.ndarray) -> list:
    out = a.tolist()

    def fix(v: object) -> object:
        if isinstance(v, list):
            return [fix(i) for i in v]
        return None if isinstance(v, float) and v != v else v

    return fix(out)  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _named_dft_basis(name: str, nperseg: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    return _dft_basis(_named_window(name, nperseg), np.arange(lo, hi))


def _dft_basis(w: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``basis`` (nperseg, 2·bins) = [Re | Im] of w[n]·exp(−2πi·f·n/nperseg), and the window's DFT at ``bins``."""
    n = w.size
    phase = (2.0 * np.pi / n) * np.outer(np.arange(n), bins)
    basis = np.concatenate([w[:, np.newaxis] * np.cos(phase), -w[:, np.newaxis] * np.sin(phase)], axis=1)
    basis.flags.writeable = False
    window_dft = basis[:, : bins.size].sum(axis=0) + 1j * basis[:, bins.size :].sum(axis=0)
    window_dft.flags.writeable = False
    return basis, window_dft


_MAX_BLOCKS_PER_SEGMENT = 8
"""Above this (overlap > 87.5 %) copying the segments is cheaper than summing blocks."""


def _band_spectra(x: np.ndarray, basis: np.ndarray, window_dft: np.ndarray, step: int, n_seg: int) -> np.ndarray:
    """DFT of every windowed, mean-removed segment at ``bins`` only: (channels, segments, bins) complex.

    The same numbers as ``rfft((seg − mean)·w)[bins]`` (to ~1e-15), but as one
    matrix product against a (nperseg × 2·bins) basis: with 6 bins out of 126
    that is cheaper than a full FFT, and when the step divides the segment
    (50 % overlap) each segment is a sum of ``nperseg/step`` consecutive
    blocks, so the product runs on the contiguous signal without copying
    overlapping segments (the whole coherence of a 60 s, 8-channel window:
    ≈ 0.45 ms instead of ≈ 2 ms with an FFT of copied segments).
    """
    n_ch, _ = x.shape
    nperseg = basis.shape[0]
    nb = window_dft.size
    if nperseg % step == 0 and nperseg // step <= _MAX_BLOCKS_PER_SEGMENT:
        m = nperseg // step  # blocks per segment
        n_blocks = n_seg + m - 1
        used = x[:, : n_blocks * step]
        # Centre each channel first (a new contiguous array): the per-segment mean removal
        # below is then a small correction, which keeps full precision under a large DC offset.
        blocks = (used - used.mean(axis=1, keepdims=True)).reshape(n_ch * n_blocks, step)
        acc = np.zeros((n_ch, n_seg, 2 * nb))
        block_sums = blocks.sum(axis=1).reshape(n_ch, n_blocks)
        seg_sums = np.zeros((n_ch, n_seg))
        for j in range(m):  # m is 1 (no overlap), 2 (50 %), 4 (75 %)…
            part = (blocks @ basis[j * step : (j + 1) * step]).reshape(n_ch, n_blocks, 2 * nb)
            acc += part[:, j : j + n_seg]
            seg_sums += block_sums[:, j : j + n_seg]
    else:
        centred = x - x.mean(axis=1, keepdims=True)
        segs = np.ascontiguousarray(_segment_view(centred, nperseg, step)).reshape(n_ch * n_seg, nperseg)
        acc = (segs @ basis).reshape(n_ch, n_seg, 2 * nb)
        seg_sums = segs.sum(axis=1).reshape(n_ch, n_seg)
    spec = acc[..., :nb] + 1j * acc[..., nb:]
    spec -= (seg_sums / nperseg)[..., np.newaxis] * window_dft  # mean removal, by linearity
    return spec


def effective_segments(window: np.ndarray, step: int, n_segments: int) -> float:
    """Welch's equivalent number of independent segments (see the module docstring)."""
    k = int(n_segments)
    if k <= 1:
        return float(max(k, 0))
    w = np.asarray(window, dtype=np.float64)
    energy = float(np.dot(w, w))
    total = 0.0
    for j in range(1, k):  # only lags whose segments overlap contribute
        lag = j * step
        if lag >= w.size:
            break
        rho = float(np.dot(w[: w.size - lag], w[lag:])) / energy
        total += (1.0 - j / k) * rho * rho
    return k / (1.0 + 2.0 * total)


def coherence_noise_floor(window: np.ndarray, step: int, n_segments: int) -> float:
    """Expected MSC of two independent Gaussian signals: ``1 / K_eff`` (1 for one segment)."""
    k_eff = effective_segments(window, step, n_segments)
    return 1.0 if k_eff <= 1.0 else 1.0 / k_eff


def alpha_coherence(
    window_volts: np.ndarray,
    sfreq: float,
    *,
    band: tuple[float, float] = (8.0, 13.0),
    segment_seconds: float = 1.0,
    overlap: float = 0.5,
    window: str | np.ndarray = "hann",
) -> CoherenceResult:
    """Magnitude-squared coherence of all channel pairs, averaged over ``band`` (inclusive).

    Segments of ``round(segment_seconds × sfreq)`` samples every
    ``segment − round(overlap × segment)`` samples; each segment's mean is
    removed, then it is windowed (``window`` as in :func:`get_window`:
    ``"hann"`` periodic by default, ``"hann_symmetric"`` to match
    mne-connectivity's fourier mode exactly, ``"boxcar"`` for none). The
    samples must be finite. Raises ValueError when the window is shorter than
    one segment or the band holds no bin.
    """
    x = _as_channels(window_volts)
    sfreq = _check_sfreq(sfreq)
    nperseg = int(round(segment_seconds * sfreq))
    if nperseg < 2:
        raise ValueError(f"a segment of {segment_seconds} s at {sfreq} Hz has fewer than 2 samples")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    step = max(nperseg - int(round(overlap * nperseg)), 1)
    n_seg = segment_count(x.shape[-1], nperseg, step)
    if n_seg == 0:
        raise ValueError(f"the window has {x.shape[-1]} samples, fewer than one segment ({nperseg})")
    w = get_window(window, nperseg)
    band_sl, freqs = _band_slice(nperseg, sfreq, band[0], band[1])

    if isinstance(window, str):
        basis, window_dft = _named_dft_basis(window, nperseg, band_sl.start, band_sl.stop)
    else:
        basis, window_dft = _dft_basis(w, np.arange(band_sl.start, band_sl.stop))
    spec = _band_spectra(x, basis, window_dft, step, n_seg)  # (ch, seg, bins)
    # All cross-spectra at once, one small matrix product per bin:
    # cross[f, i, j] = Σ_k X_i,k(f) · conj(X_j,k(f)). (The 1/K of the mean cancels in the ratio.)
    a = np.ascontiguousarray(spec.transpose(2, 0, 1))  # (bins, ch, seg)
    cross = a @ a.conj().transpose(0, 2, 1)  # (bins, ch, ch), Hermitian
    power = np.diagonal(cross, axis1=1, axis2=2).real  # (bins, ch)
    live = np.ptp(x, axis=-1) > 0  # a constant channel has no spectrum: NaN, not rounding noise
    denom = power[:, :, np.newaxis] * power[:, np.newaxis, :]
    num = cross.real**2 + cross.imag**2
    ok = (denom > 0.0) & live[np.newaxis, :, np.newaxis] & live[np.newaxis, np.newaxis, :]
    per_freq = np.full(num.shape, np.nan)
    np.divide(num, denom, out=per_freq, where=ok)
    per_freq = 0.5 * (per_freq + per_freq.transpose(0, 2, 1))  # BLAS leaves ~1e-16 asymmetry: make it exact
    idx = np.arange(x.shape[0])
    per_freq[:, idx, idx] = np.where(ok[:, idx, idx], 1.0, np.nan)  # exactly 1, not 1 ± 1e-16
    per_freq = per_freq.transpose(1, 2, 0)  # (ch, ch, bins)
    msc = per_freq.mean(axis=-1)

    k_eff = effective_segments(w, step, n_seg)
    return CoherenceResult(
        msc=msc,
        per_frequency=per_freq,
        freqs=freqs,
        n_segments=n_seg,
        effective_segments=k_eff,
        noise_floor=1.0 if k_eff <= 1.0 else 1.0 / k_eff,
        segment_samples=nperseg,
        step_samples=step,
        window=window if isinstance(window, str) else "custom",
    )
