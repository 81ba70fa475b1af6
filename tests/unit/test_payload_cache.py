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


def same_length_pair() -> tuple[bytes, bytes]:
    """Two different frames of the same length (the simulator's frames vary
    by a few dozen bytes, so 60 of them are bound to hold a pair)."""
    by_length: dict[int, bytes] = {}
    for frame in frames(60):
        other = by_length.setdefault(len(frame), frame)
        if other != frame:
            return other, frame
    raise AssertionError("no two simulated frames of the same length")


def test_frames_sharing_a_digest_each_get_their_own_payload() -> None:
    a, b = same_length_pair()
    expected = {a: decompress_frame(a, max_output_size=1 << 24), b: decompress_frame(b, max_output_size=1 << 24)}
    assert expected[a] != expected[b]
    cache = PayloadCache(digest=lambda frame: 0)  # every frame of a length shares one key
    assert cache.decompress(a, max_output_size=1 << 24) == expected[a]
    assert cache.decompress(b, max_output_size=1 << 24) == expected[b]  # verified against a: a miss
    assert cache.decompress(bytes(bytearray(b)), max_output_size=1 << 24) == expected[b]  # b is held now: a hit
    assert cache.decompress(a, max_output_size=1 << 24) == expected[a]  # not b's payload: a miss
    assert cache.decompress(memoryview(a), max_output_size=1 << 24) == expected[a]  # a hit, whatever the buffer type
    assert (cache.hits, cache.misses) == (2, 3)
    assert len(cache._entries) == 1  # noqa: SLF001 (the newer frame took the key over)
    assert cache._bytes == len(a) + len(expected[a])  # noqa: SLF001


def test_eviction_is_oldest_first_even_for_a_frame_just_used_and_the_bytes_stay_bounded() -> None:
    sent = frames(14)
    sizes = [len(f) + len(decompress_frame(f, max_output_size=1 << 24)) for f in sent]
    # Room for about nine (an entry larger than an eighth of the bound is not kept).
    cache = PayloadCache(max_bytes=sum(sizes[:9]) + min(sizes) // 2)
    held: list[bytes] = []
    for i, frame in enumerate(sent[:12]):
        cache.decompress(frame, max_output_size=1 << 24)
        held.append(frame)
        while sum(sizes[sent.index(f)] for f in held) > cache.max_bytes:
            held.pop(0)
        assert [f for f, _ in cache._entries.values()] == held, i  # noqa: SLF001
        assert cache._bytes == sum(sizes[sent.index(f)] for f in held) <= cache.max_bytes  # noqa: SLF001
    assert 2 <= len(held) < 12 and held[-1] is sent[11]
    oldest = held[0]
    cache.decompress(bytes(oldest), max_output_size=1 << 24)  # a hit does not make it newer
    assert cache.hits == 1
    cache.decompress(sent[12], max_output_size=1 << 24)
    assert oldest not in [f for f, _ in cache._entries.values()]  # noqa: SLF001
    assert cache._bytes <= cache.max_bytes  # noqa: SLF001
    misses = cache.misses
    cache.decompress(oldest, max_output_size=1 << 24)
    assert cache.misses == misses + 1


def test_the_layout_and_digest_are_worked_out_once_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from eeghub.core import payload_cache
    from eeghub.core.packet import parse_layout

    calls = {"layout": 0, "sha256": 0}
    real_parse, real_sha = payload_cache.parse_layout, hashlib.sha256

    def counting_parse(payload: bytes, *, max_channels: int) -> object:
        calls["layout"] += 1
        return real_parse(payload, max_channels=max_channels)

    def counting_sha(data: bytes) -> object:
        calls["sha256"] += 1
        return real_sha(data)

    monkeypatch.setattr(payload_cache, "parse_layout", counting_parse)
    monkeypatch.setattr(payload_cache.hashlib, "sha256", counting_sha)
    cache = PayloadCache()
    [frame] = frames(1)
    payload = decompress_frame(frame, max_output_size=1 << 24)
    first = cache.get(frame, max_output_size=1 << 24)
    assert first.layout(64) == parse_layout(payload, max_channels=64)
    assert first.sha256() == real_sha(payload).hexdigest()
    again = cache.get(bytes(bytearray(frame)), max_output_size=1 << 24)  # as the storage consumer brings it
    assert again is first
    assert again.layout(64) == first.layout(64) and again.sha256() == first.sha256()
    assert calls == {"layout": 1, "sha256": 1}
    # Another channel bound is checked again, and a refusal is never kept.
    layout_channels = len(parse_layout(payload).channel_names)
    with pytest.raises(PacketError):
        again.layout(1)
    with pytest.raises(PacketError):
        again.layout(1)
    assert again.layout(64) == parse_layout(payload, max_channels=64)
    assert calls["layout"] == 3 and layout_channels > 1  # the refusals, each checked; the kept layout for 64 still kept


def test_a_published_message_is_taken_once_and_only_with_the_same_bytes() -> None:
    from eeghub.core.payload_cache import PublishedMessages

    kept = PublishedMessages(max_bytes=1000)
    kept.put("m1", b"body-1", ["a", "b"])
    assert kept.take("m1", b"body-X") is None  # same id, other bytes: never these items
    assert kept.take("m1", b"body-1") is None  # (a refused take drops the entry)
    kept.put("m2", b"body-2", ["c"])
    assert kept.take("m2", bytes(bytearray(b"body-2"))) == ["c"]  # equal bytes, another object
    assert kept.take("m2", b"body-2") is None  # once
    assert kept.take(None, b"body-2") is None
    # Bounded in bytes, oldest first; a body too large for the bound is not kept.
    for i in range(20):
        kept.put(f"n{i}", b"x" * 100, [i])
    assert kept._bytes <= 1000  # noqa: SLF001
    assert kept.take("n0", b"x" * 100) is None and kept.take("n19", b"x" * 100) == [19]
    kept.put("big", b"y" * 200, ["big"])
    assert kept.take("big", b"y" * 200) is None
