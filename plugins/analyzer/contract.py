"""The analysis plugin contract.

An analysis plugin is any object with these attributes, returned from the
``eeghub_analyses`` hook (see ``docs/analysis-plugins.md``):

- ``id`` (str, unique), ``display_name`` (str), ``description`` (str);
- ``window_seconds`` (float): how much recent data ``analyze`` receives;
- ``channel_types`` (tuple of "eeg", "emg", "eog", "stim", "misc"): the
  channels it is given (bad channels included; see ``window.bad_channels``);
- ``interval_seconds`` (float): how often it runs per stream;
- ``analyze(window: AnalysisWindow) -> msgspec.Struct``: a pure function of
  the window. It runs in a worker thread, never on the event loop; it must
  not keep state between calls (streams are analysed concurrently).

Optional: ``min_window_seconds`` (float, at most ``window_seconds``): the
plugin is also run while the stream holds less than ``window_seconds`` but at
least this much; ``analyze`` then gets everything the buffer holds (the
window grows up to ``window_seconds``). Without it, a plugin waits for a full
window.

Optional: ``render(result, window_info) -> dict[str, str]`` returning images
(base64 PNG) for apps that show pictures; it is called (in a thread) only when
a client asks for images, and its output is cached until the next result.
``window_info`` is a dict: ``plugin_id``, ``user_id``, ``device_id``,
``session_id``, ``window_start_us``, ``window_end_us``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class AnalysisWindow:
    """What an analysis sees: the last ``window_seconds`` of one stream."""

    user_id: str
    device_id: str
    session_id: str | None
    data: np.ndarray
    """float64 volts, channels × samples, only the channels of the plugin's types."""
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    sampling_rate: float
    start_us: int
    """Absolute time (epoch µs) of the first sample."""
    end_us: int
    """Absolute time of the last sample."""
    bad_channels: tuple[str, ...] = ()
    channel_quality: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class AnalysisPlugin(Protocol):
    id: str
    display_name: str
    description: str
    window_seconds: float
    channel_types: tuple[str, ...]
    interval_seconds: float

    def analyze(self, window: AnalysisWindow) -> Any: ...


def check_plugin(plugin: Any) -> list[str]:
    """Problems that stop ``plugin`` from being registered (empty when fine)."""
    problems = []
    for name, kind in (("id", str), ("display_name", str), ("description", str)):
        if not isinstance(getattr(plugin, name, None), kind) or not getattr(plugin, name):
            problems.append(f"missing or empty {name}")
    for name in ("window_seconds", "interval_seconds"):
        value = getattr(plugin, name, None)
        if not isinstance(value, (int, float)) or value <= 0:
            problems.append(f"{name} must be a positive number")
    minimum = getattr(plugin, "min_window_seconds", None)
    if minimum is not None and (
        not isinstance(minimum, (int, float)) or not 0 < minimum <= getattr(plugin, "window_seconds", 0)
    ):
        problems.append("min_window_seconds must be a positive number no larger than window_seconds")
    types = getattr(plugin, "channel_types", None)
    if not isinstance(types, tuple) or not types or not set(types) <= {"eeg", "emg", "eog", "stim", "misc"}:
        problems.append("channel_types must be a non-empty tuple of eeg/emg/eog/stim/misc")
    if not callable(getattr(plugin, "analyze", None)):
        problems.append("analyze is not callable")
    return problems
