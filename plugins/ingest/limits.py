"""Bounds on what one packet and one device stream may cost (issue 16): a
packet's sample count must fit its time span, and each device stream has a
budget of decompressed bytes per second, so a few kilobytes of compressed
zeros cannot fill the raw bucket."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from eeghub.core.errors import BadRequest, TooManyRequests

from .envelope import Envelope

SAMPLE_TOLERANCE = 1.1
"""10 %: a device's clock and the phone's differ by far less."""


def most_samples(envelope: Envelope, slack_seconds: float) -> int:
    """The most samples a packet with this envelope may hold: its span plus
    ``slack_seconds`` at its sampling rate, plus 10 %, plus one (a span of
    N samples is N - 1 sample periods)."""
    seconds = (envelope.timestamp_end_ms - envelope.timestamp_start_ms) / 1000.0 + slack_seconds
    return math.floor(seconds * envelope.sampling_rate * SAMPLE_TOLERANCE) + 1


def check_sample_count(envelope: Envelope, num_samples: int, slack_seconds: float) -> None:
    """400 when the packet holds far more samples than its envelope's span
    at its sampling rate can explain. Fewer is accepted: a radio delivers
    samples in bursts, and the timestamps stamp their arrival."""
    limit = most_samples(envelope, slack_seconds)
    if num_samples > limit:
        span = envelope.timestamp_end_ms - envelope.timestamp_start_ms
        message = (
            f"the packet holds {num_samples} samples, but {span} ms at {envelope.sampling_rate:g} Hz "
            f"allow at most {limit} (timestamp_end_ms - timestamp_start_ms, sampling_rate)"
        )
        raise BadRequest(f"invalid packet: {message}", issues=[{"field": "payload", "message": message}])


class StreamBudget:
    """A token bucket of decompressed bytes per device stream: refilled at
    ``rate`` bytes per second up to ``burst``. Remembers at most
    ``max_streams`` streams (the least recently seen are forgotten, which only
    ever gives a forgotten stream a full bucket)."""

    def __init__(
        self, rate: float, burst: float, *, max_streams: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_streams = max_streams
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def spend(self, stream: tuple[str, str], amount: int) -> None:
        """Take ``amount`` bytes from the stream's budget, or raise a 429
        saying when to retry (nothing is taken then)."""
        if self.rate <= 0:
            return
        now = self._clock()
        level, last = self._buckets.pop(stream, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if amount > level:
            self._buckets[stream] = (level, now)
            wait = (min(amount, self.burst) - level) / self.rate
            message = (
                f"device {stream[1]!r} sends more than {self.rate:g} bytes per second of samples "
                f"(ingest.stream_bytes_per_second); retry in {math.ceil(wait)} s"
            )
            raise TooManyRequests(
                message,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
                issues=[{"field": "device_id", "message": message}],
            )
        self._buckets[stream] = (level - amount, now)
        while len(self._buckets) > self.max_streams:
            self._buckets.popitem(last=False)
