"""Per-stream ring buffers of recent samples.

One buffer per stream (user and device), holding the last
``buffer_seconds`` of int16 samples in a preallocated channels × capacity
array. Appending writes only the new samples (at most two slices), never
copies the buffer; reading a window copies just that window. Memory per
stream is fixed by design: channels × capacity × 2 bytes (8 channels, 250 Hz,
60 s: 240 kB), plus the quality window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StreamLayout:
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    sampling_rate: float


@dataclass
class RingBuffer:
    layout: StreamLayout
    capacity: int
    data: np.ndarray = field(init=False)
    written: int = 0
    """Samples ever appended (the newest is at (written - 1) % capacity)."""
    last_sample_us: int = 0
    """Absolute time of the newest sample."""

    def __post_init__(self) -> None:
        self.data = np.zeros((len(self.layout.channel_names), self.capacity), dtype=np.int16)

    @property
    def available(self) -> int:
        return min(self.written, self.capacity)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def append(self, samples: np.ndarray, last_sample_us: int) -> None:
        """Append channels × n int16 samples (only the last ``capacity`` kept)."""
        n = samples.shape[1]
        if n >= self.capacity:
            # Keep the invariant (the newest sample at (written - 1) % capacity):
            # rotate the last `capacity` samples so that `window` reads them in order.
            self.written += n
            self.data[:, :] = np.roll(samples[:, n - self.capacity :], self.written % self.capacity, axis=1)
        else:
            start = self.written % self.capacity
            first = min(n, self.capacity - start)
            self.data[:, start : start + first] = samples[:, :first]
            if first < n:
                self.data[:, : n - first] = samples[:, first:]
            self.written += n
        self.last_sample_us = last_sample_us

    def window(self, n: int) -> np.ndarray:
        """The newest ``n`` samples in time order (a copy)."""
        n = min(n, self.available)
        end = self.written % self.capacity
        if n <= end:
            return self.data[:, end - n : end].copy()
        return np.concatenate([self.data[:, self.capacity - (n - end) :], self.data[:, :end]], axis=1)
