"""The ERP analysis's figures, drawn from a stored result (PNG bytes).
Called in a worker thread; matplotlib is imported on first use."""

from __future__ import annotations

import io
import threading
from typing import Any

_lock = threading.Lock()

FIGURES = ("erp", "ranking")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1, dpi=100)
    return buffer.getvalue()


def _figure(size: tuple[float, float]) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def erp_png(details: dict[str, Any]) -> bytes:
    """Grand-average parietal waveforms per class, the analysis window shaded."""
    grand = details.get("grand_average")
    with _lock:
        figure = _figure((6.5, 3.5))
        axes = figure.subplots()
        if not grand:
            axes.text(0.5, 0.5, "no epochs to average", ha="center", va="center", transform=axes.transAxes)
            axes.set_axis_off()
            return _png(figure)
        times = grand["times_s"]
        window = grand["window_s"]
        axes.axvspan(window[0], window[1], color="0.9", label=f"P300/LPP window {window[0]}-{window[1]} s")
        colours = {"target": "tab:red", "nontarget": "tab:blue", "product": "tab:green"}
        for label, entry in grand["classes"].items():
            axes.plot(times, entry["uv"], color=colours.get(label, "black"),
                      label=f"{label} ({entry['participants']} participant(s))")
        axes.axhline(0, color="0.5", linewidth=0.5)
        axes.axvline(0, color="0.5", linewidth=0.5)
        axes.set_xlabel("Time from stimulus onset (s)")
        axes.set_ylabel(f"Amplitude at {grand.get('sites', 'parietal sites')} (µV)", fontsize=8 if len(grand.get("sites", "")) > 20 else None)
        axes.set_title("Grand-average ERP")
        axes.legend(fontsize=7, loc="upper right")
        return _png(figure)


def ranking_png(details: dict[str, Any]) -> bytes:
    """Products by group score with 95 % bootstrap intervals and the
    non-target level (with its interval)."""
    group = details.get("group") or {}
    rows = [r for r in group.get("products", []) if r.get("score") is not None]
    recommended = set(details.get("recommended_files", []))
    with _lock:
        figure = _figure((6.5, max(2.0, 0.35 * len(rows) + 1.2)))
        axes = figure.subplots()
        if not rows:
            axes.text(0.5, 0.5, "no product scores (see the summary)", ha="center", va="center", transform=axes.transAxes)
            axes.set_axis_off()
            return _png(figure)
        rows = rows[::-1]
        y = list(range(len(rows)))
        scores = [r["score"] for r in rows]
        low = [r["score"] - r["ci"][0] for r in rows]
        high = [r["ci"][1] - r["score"] for r in rows]
        colours = ["tab:red" if r["file_name"] in recommended else "tab:gray" for r in rows]
        axes.errorbar(scores, y, xerr=[low, high], fmt="none", ecolor="0.3", capsize=3)
        axes.scatter(scores, y, c=colours, zorder=3)
        level, interval = group.get("nontarget_level"), group.get("nontarget_level_ci") or [None, None]
        if level is not None:
            if interval[0] is not None:
                axes.axvspan(interval[0], interval[1], color="tab:blue", alpha=0.15)
            axes.axvline(level, color="tab:blue", linestyle="--", label="non-target level (95 % CI)")
        axes.set_yticks(y, [r["file_name"] for r in rows], fontsize=7)
        axes.set_xlabel("Target probability (mean, 95 % bootstrap CI)")
        axes.set_title("Products (red: reliably above the non-target level and the other products)")
        axes.legend(fontsize=7, loc="lower right")
        return _png(figure)


def render(details: dict[str, Any], name: str) -> bytes:
    if name == "erp":
        return erp_png(details)
    if name == "ranking":
        return ranking_png(details)
    raise KeyError(name)
