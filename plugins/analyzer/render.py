"""PNG pictures of results, for apps that show images (the predecessor's
``psd_image`` and ``coherence_image``). Rendering costs 100-300x the maths,
so it happens only when a client asks, in a worker thread, and the host
caches the pictures until the next result. matplotlib is imported here, on
first use, never at start-up."""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

_lock = threading.Lock()  # pyplot's state machine is not thread-safe


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1, dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def psd_png(result: Any) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    with _lock:
        figure = Figure(figsize=(6, 3.5))
        axes = figure.subplots()
        freqs = np.asarray(result.freqs)
        colours = matplotlib.colormaps["tab20"]
        for i, (name, row) in enumerate(zip(result.channels, result.psd, strict=True)):
            values = 10 * np.log10(np.maximum(np.asarray(row) * 1e12, 1e-30))  # µV²/Hz in dB
            axes.plot(freqs, values, label=name, color=colours(i % 20), linewidth=1)
        axes.set_xlabel("Frequency (Hz)")
        axes.set_ylabel("PSD (dB µV²/Hz)")
        axes.legend(fontsize=6, ncol=2, loc="upper right")
        axes.grid(alpha=0.3)
        return _png(figure)


def coherence_png(result: Any) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    with _lock:
        figure = Figure(figsize=(4.5, 4))
        axes = figure.subplots()
        matrix = np.array([[np.nan if v is None else v for v in row] for row in result.matrix], dtype=float)
        image = axes.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        axes.set_xticks(range(len(result.channels)), result.channels, rotation=90, fontsize=7)
        axes.set_yticks(range(len(result.channels)), result.channels, fontsize=7)
        axes.set_title(coherence_title(result), fontsize=8)
        figure.colorbar(image, ax=axes, fraction=0.046)
        return _png(figure)


def coherence_title(result: Any) -> str:
    """Band, the data and segments behind the estimate, and its noise floor."""
    seconds = getattr(result, "window_seconds", 0.0)
    span = f" in {seconds:.0f} s" if seconds else ""
    return (
        f"{result.band[0]:g}-{result.band[1]:g} Hz coherence (MSC), {result.n_segments} segments{span},"
        f" noise floor {result.noise_floor:.2f}"
    )
