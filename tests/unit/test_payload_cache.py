"""Each received frame decompressed once per process (core/payload_cache.py)."""

from __future__ import annotations

import pytest

from eeghub.core.packet import PacketError, compress_frame, decompress_frame
from eeghub.core.payload_cache import PayloadCache
from eeghub.core.simulator import SimulatedDevice


def frames(n: int) -> list[bytes]:
    device = SimulatedDevice(user_id="u", device_id="d", seed=2)
    return [compress_frame(device.payload(i)) for i in range(n)]


def test_a_frame_is_decompressed_once_and_the_same_bytes_come_back() -> None:
    cache = PayloadCache()
    [frame] = frames(1)
    first = cache.decompress(frame, max_output_size=1 << 24)
    again = cache.decompress(bytes(bytearray(frame)), max_output_size=1 << 24)  # equal bytes, another object
    assert first == again == decompress_frame(frame, max_output_size=1 << 24)
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_cache_stays_within_its_bytes_and_keeps_the_newest() -> None:
    sent = frames(40)
    size = len(sent[0]) + len(decompress_frame(sent[0], max_output_size=1 << 24))
    cache = PayloadCache(max_bytes=10 * size)
    for frame in sent:
        cache.decompress(frame, max_output_size=1 << 24)
    assert cache._bytes <= 10 * size  # noqa: SLF001
    cache.decompress(sent[-1], max_output_size=1 << 24)
    cache.decompress(sent[0], max_output_size=1 << 24)
    assert (cache.hits, cache.misses) == (1, 41)


def test_the_output_bound_holds_on_a_hit_too() -> None:
    cache = PayloadCache()
    [frame] = frames(1)
    payload = cache.decompress(frame, max_output_size=1 << 24)
    with pytest.raises(PacketError):
        cache.decompress(frame, max_output_size=len(payload) - 1)
    with pytest.raises(PacketError):  # garbage is refused and not kept
        cache.decompress(b"not zstd", max_output_size=1 << 24)
