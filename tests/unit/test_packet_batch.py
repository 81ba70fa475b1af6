"""core.packet_batch: a batch of payloads decoded into a multiplexed block,
cross-checked per packet against the plain numpy decoder."""

from __future__ import annotations

import numpy as np
import pytest

from eeghub.core.packet import PacketError, decode_payload, decode_payload_reference
from eeghub.core.packet_batch import MultiplexedDecoder
from tests.random_packets import STATS, random_payload

@pytest.mark.parametrize("seed", range(6))
def test_decoder_matches_decode_payload_per_packet(seed: int) -> None:
    rng = np.random.default_rng(seed)
    variant = "v4" if seed % 2 else "app"
    wire = int(rng.integers(1, 20))
    payloads = [random_payload(rng, wire, int(rng.integers(1, 400)), variant) for _ in range(int(rng.integers(1, 30)))]
    decoder = MultiplexedDecoder(impedance_threshold=int(rng.choice([-5, 0, 150, 200, 255, 300])))
    threshold = decoder._threshold
    layouts = [decoder.layout(p) for p in payloads]
    channels = len(layouts[0].channel_names)
    firsts, stops, rows, row = [], [], [], 0
    for layout in layouts:
        first = int(rng.integers(0, layout.num_samples))
        stop = int(rng.integers(first, layout.num_samples + 1))
        firsts.append(first)
        stops.append(stop)
        rows.append(row)
        row += stop - first
    out = np.full((row + 3, channels), 12345, np.int16)
    stats = decoder.decode_into(payloads, layouts, firsts, stops, rows, out)
    for i, payload in enumerate(payloads):
        reference = decode_payload_reference(payload, impedance_threshold=threshold)
        np.testing.assert_array_equal(out[rows[i] : rows[i] + stops[i] - firsts[i]], reference.signals[:, firsts[i] : stops[i]].T)
        for k, name in enumerate(STATS):
            np.testing.assert_array_equal(stats[i, k], getattr(reference.stats, name), err_msg=name)
    assert (out[row:] == 12345).all()  # nothing written past the last row


def test_decoder_refuses_what_decode_payload_refuses() -> None:
    rng = np.random.default_rng(7)
    good = random_payload(rng, 4, 10, "v4")
    decoder = MultiplexedDecoder(max_channels=8)
    for bad in (b"", b"\x04", good[:-1], b"\x05" + good[1:], random_payload(rng, 9, 10, "v4")):
        with pytest.raises(PacketError) as caught:
            decode_payload(bad, max_channels=8)
        with pytest.raises(PacketError) as again:
            decoder.layout(bad)
        assert again.value.reason == caught.value.reason
        with pytest.raises(PacketError):  # cached errors are raised again
            decoder.layout(bad)
    layout = decoder.layout(good)
    out = np.zeros((10, 4), np.int16)
    with pytest.raises(ValueError, match="fit"):
        decoder.decode_into([good], [layout], [0], [10], [1], out)
    with pytest.raises(ValueError, match="channels"):
        decoder.decode_into([good], [layout], [0], [10], [0], np.zeros((10, 3), np.int16))
    with pytest.raises(ValueError, match="layout"):
        decoder.decode_into([good + good[-34:]], [layout], [0], [10], [0], out)
