"""The binary packet codec (core/packet.py): sizes, round trips, triggers,
channel counters, malformed payloads, channel names and zstd framing."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zstandard

from eeghub.core.errors import EeghubError
from eeghub.core.packet import (
    CHANNEL_TYPES,
    PacketError,
    compress_frame,
    decode_payload,
    decode_payload_reference,
    decompress_frame,
    encode_payload,
    parse_layout,
    warm_up,
)

DECODERS = [decode_payload, decode_payload_reference]
MiB = 1024 * 1024


def header(num_channels: int, names: list[bytes] | None = None, codes: list[int] | None = None, flag: int = 0) -> bytes:
    names = names if names is not None else [f"CH{i + 1}".encode() for i in range(num_channels)]
    codes = codes if codes is not None else [0] * num_channels
    out = bytes([4, num_channels, flag, 0])
    for name, code in zip(names, codes, strict=True):
        out += name.ljust(8, b"\0") + bytes([code, 0])
    return out


def raw_sample(values: list[int], impedance: list[int], trigger_byte: int | None = None) -> bytes:
    out = struct.pack(f"<{len(values)}h", *values)
    if trigger_byte is not None:
        out += bytes([trigger_byte, 0, 0, 0])
    return out + bytes(12) + bytes(impedance)


def eeg_names(n: int) -> list[str]:
    return [f"CH{i + 1}" for i in range(n)]


# ---------------------------------------------------------------- sizes
def test_worked_sizes_of_the_spec() -> None:
    board = encode_payload(np.zeros((9, 250), np.int16), [*eeg_names(8), "TRIG"], ["eeg"] * 8 + ["stim"])
    layout = parse_layout(board)
    assert (layout.header_size, layout.sample_size, layout.num_samples, len(board)) == (94, 39, 250, 9_844)
    muse = encode_payload(np.zeros((4, 256), np.int16), ["TP9", "AF7", "AF8", "TP10"], ["eeg"] * 4)
    layout = parse_layout(muse)
    assert (layout.header_size, layout.sample_size, layout.num_samples, len(muse)) == (44, 24, 256, 6_188)


def test_app_variant_sample_is_four_bytes_longer() -> None:
    payload = encode_payload(np.zeros((8, 250), np.int16), eeg_names(8), ["eeg"] * 8, variant="app")
    layout = parse_layout(payload)
    assert (layout.header_size, layout.sample_size, len(payload)) == (84, 40, 84 + 40 * 250)
    assert payload[2] == 0x01


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("decode", DECODERS)
def test_v4_round_trip(decode) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    signals = rng.integers(-32768, 32768, (6, 300)).astype(np.int16)
    signals[0, :3] = [-32768, 32767, 0]
    signals[5] = 0
    signals[5, 10:15] = 3
    impedance = rng.integers(0, 256, (6, 300))
    names = ["Fz", "Cz", "Pz", "EMG", "EOG", "TRIG"]
    types = ["eeg", "eeg", "eeg", "emg", "eog", "stim"]
    payload = encode_payload(signals, names, types, impedance=impedance)

    packet = decode(payload)
    assert packet.layout.channel_names == tuple(names)
    assert packet.layout.channel_types == tuple(types)
    assert packet.layout.num_channels == 6 and not packet.layout.has_trigger_block
    assert packet.layout.trigger_index == 5
    assert packet.signals.dtype == np.int16 and packet.signals.flags.c_contiguous
    np.testing.assert_array_equal(packet.signals, signals)
    assert packet.trigger is not None and np.shares_memory(packet.trigger, packet.signals)
    np.testing.assert_array_equal(packet.trigger, signals[5])
    np.testing.assert_array_equal(packet.stats.impedance_unknown, (impedance == 255).sum(axis=1))


@pytest.mark.parametrize("decode", DECODERS)
def test_app_variant_round_trip_synthesizes_a_trigger_channel(decode) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    signals = rng.integers(-32768, 32768, (8, 250)).astype(np.int16)
    trigger = np.arange(250) % 16
    payload = encode_payload(signals, eeg_names(8), ["eeg"] * 8, trigger=trigger, variant="app")

    packet = decode(payload)
    layout = packet.layout
    assert layout.has_trigger_block and layout.num_channels == 8
    assert layout.channel_names == (*eeg_names(8), "TRIG")
    assert layout.channel_types == ("eeg",) * 8 + ("stim",)
    assert layout.trigger_index == 8
    assert packet.signals.shape == (9, 250)
    np.testing.assert_array_equal(packet.signals[:8], signals)
    np.testing.assert_array_equal(packet.trigger, trigger)
    assert packet.last_trigger == 249 % 16


@pytest.mark.parametrize("decode", DECODERS)
def test_app_trigger_is_the_low_nibble_of_the_first_block_byte(decode) -> None:  # type: ignore[no-untyped-def]
    samples = [
        raw_sample([100, -100], [255, 255], trigger_byte=byte)
        for byte in (0x00, 0x0F, 0xF3, 0xF0, 0x81, 0xFF)
    ]
    # The three padding bytes of the block are not part of the trigger either.
    samples[0] = samples[0][:5] + b"\xff\xff\xff" + samples[0][8:]
    payload = header(2, flag=0x01) + b"".join(samples)
    packet = decode(payload)
    np.testing.assert_array_equal(packet.trigger, [0, 15, 3, 0, 1, 15])
    np.testing.assert_array_equal(packet.signals[:2, 0], [100, -100])
    np.testing.assert_array_equal(packet.rising_edges, [1, 4])  # 0xF0 reads as 0


def test_only_bit_0_of_the_reserved_byte_is_the_trigger_flag() -> None:
    body = raw_sample([1], [255])
    assert not parse_layout(header(1, flag=0xFE) + body).has_trigger_block
    assert parse_layout(header(1, flag=0x03) + raw_sample([1], [255], trigger_byte=0)).has_trigger_block


def test_decoders_accept_bytes_bytearray_and_memoryview() -> None:
    payload = encode_payload(np.arange(20, dtype=np.int16).reshape(2, 10), ["A", "T"], ["eeg", "stim"])
    expected = decode_payload(payload).signals
    for form in (bytearray(payload), memoryview(payload)):
        np.testing.assert_array_equal(decode_payload(form).signals, expected)
        np.testing.assert_array_equal(decode_payload_reference(form).signals, expected)


def test_decoding_in_threads_gives_the_same_result() -> None:
    rng = np.random.default_rng(3)
    payloads = [
        encode_payload(rng.integers(-500, 500, (9, 250)).astype(np.int16), eeg_names(9), ["eeg"] * 8 + ["stim"])
        for _ in range(16)
    ]
    expected = [decode_payload(p).signals for p in payloads]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: decode_payload(p).signals, payloads * 4))
    for i, signals in enumerate(got):
        np.testing.assert_array_equal(signals, expected[i % 16])


# ---------------------------------------------------------------- triggers
def v4_with_trigger(trigger: list[int]) -> bytes:
    n = len(trigger)
    return encode_payload(np.vstack([np.ones(n, np.int16), trigger]), ["Cz", "TRIG"], ["eeg", "stim"])


@pytest.mark.parametrize("decode", DECODERS)
def test_rising_edges_are_zero_to_nonzero_transitions(decode) -> None:  # type: ignore[no-untyped-def]
    packet = decode(v4_with_trigger([0, 0, 1, 1, 0, 2, 2, 0, 1, 2, 0, -1, 0, 0, 7]))
    np.testing.assert_array_equal(packet.rising_edges, [2, 5, 8, 11, 14])
    assert packet.rising_edges.dtype == np.int64
    assert packet.last_trigger == 7


@pytest.mark.parametrize("decode", DECODERS)
def test_a_change_of_value_without_zero_is_not_an_edge(decode) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_array_equal(decode(v4_with_trigger([0, 1, 2, 3, 0])).rising_edges, [1])
    np.testing.assert_array_equal(decode(v4_with_trigger([4, 4, 0, 5])).rising_edges, [0, 3])


@pytest.mark.parametrize("decode", DECODERS)
def test_pulse_spanning_two_packets_counts_once(decode) -> None:  # type: ignore[no-untyped-def]
    first = decode(v4_with_trigger([0, 0, 0, 5, 5]))
    np.testing.assert_array_equal(first.rising_edges, [3])
    assert first.last_trigger == 5
    second = decode(v4_with_trigger([5, 5, 0, 0, 5]), previous_trigger=first.last_trigger)
    np.testing.assert_array_equal(second.rising_edges, [4])
    # Without the carry-over the continuing pulse would be counted again.
    np.testing.assert_array_equal(decode(v4_with_trigger([5, 5, 0, 0, 5])).rising_edges, [0, 4])


@pytest.mark.parametrize("decode", DECODERS)
def test_carry_over_in_the_app_variant(decode) -> None:  # type: ignore[no-untyped-def]
    def app(trigger: list[int]) -> bytes:
        return encode_payload(np.zeros((2, len(trigger)), np.int16), ["A", "B"], ["eeg", "eeg"], trigger=np.array(trigger), variant="app")

    first = decode(app([0, 1, 1]))
    second = decode(app([1, 0, 2]), previous_trigger=first.last_trigger)
    np.testing.assert_array_equal(first.rising_edges, [1])
    np.testing.assert_array_equal(second.rising_edges, [2])


@pytest.mark.parametrize("decode", DECODERS)
def test_the_last_stim_channel_is_the_trigger(decode) -> None:  # type: ignore[no-untyped-def]
    signals = np.array([[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 9, 9]], np.int16)
    packet = decode(encode_payload(signals, ["S1", "Cz", "S2"], ["stim", "eeg", "stim"]))
    assert packet.layout.trigger_index == 2
    np.testing.assert_array_equal(packet.rising_edges, [2])


@pytest.mark.parametrize("decode", DECODERS)
def test_no_trigger_channel(decode) -> None:  # type: ignore[no-untyped-def]
    packet = decode(encode_payload(np.ones((2, 5), np.int16), ["A", "B"], ["eeg", "misc"]), previous_trigger=3)
    assert packet.layout.trigger_index is None and packet.trigger is None
    assert packet.rising_edges.size == 0 and packet.rising_edges.dtype == np.int64
    assert packet.last_trigger == 3


# ---------------------------------------------------------------- channel counters
@pytest.mark.parametrize("decode", DECODERS)
def test_stats_on_a_crafted_packet(decode) -> None:  # type: ignore[no-untyped-def]
    # channel 0: zeros and extremes; channel 1: constant; channel 2: stim
    rows = [
        ([0, -32768, 0, 32767, 5], [255, 255, 200, 199, 254]),
        ([7, 7, 7, 7, 7], [0, 255, 201, 255, 255]),
        ([0, 1, 0, 0, 2], [255, 255, 255, 255, 255]),
    ]
    payload = header(3, codes=[0, 1, 3]) + b"".join(
        raw_sample([row[0][s] for row in rows], [row[1][s] for row in rows]) for s in range(5)
    )
    stats = decode(payload).stats
    np.testing.assert_array_equal(stats.zero_count, [2, 0, 3])
    np.testing.assert_array_equal(stats.minimum, [-32768, 7, 0])
    np.testing.assert_array_equal(stats.maximum, [32767, 7, 2])
    np.testing.assert_array_equal(stats.impedance_unknown, [2, 3, 5])
    np.testing.assert_array_equal(stats.impedance_high, [2, 1, 0])  # 200 and 254; 201; 255 never counts
    for counter in (stats.zero_count, stats.minimum, stats.maximum, stats.impedance_unknown, stats.impedance_high):
        assert counter.dtype == np.int64

    stricter = decode(payload, impedance_threshold=0).stats
    np.testing.assert_array_equal(stricter.impedance_high, [3, 2, 0])
    np.testing.assert_array_equal(decode(payload, impedance_threshold=1000).stats.impedance_high, [0, 0, 0])


@pytest.mark.parametrize("decode", DECODERS)
def test_synthesized_trigger_has_no_impedance(decode) -> None:  # type: ignore[no-untyped-def]
    payload = encode_payload(
        np.zeros((2, 4), np.int16), ["A", "B"], ["eeg", "eeg"],
        trigger=np.array([0, 3, 0, 0]), variant="app", impedance=np.array([210, 255]),
    )
    stats = decode(payload).stats
    np.testing.assert_array_equal(stats.impedance_unknown, [0, 4, 0])
    np.testing.assert_array_equal(stats.impedance_high, [4, 0, 0])
    np.testing.assert_array_equal(stats.zero_count, [4, 4, 3])
    np.testing.assert_array_equal(stats.maximum, [0, 0, 3])


# ---------------------------------------------------------------- malformed payloads
GOOD_SAMPLE = raw_sample([1, 2], [255, 255])

MALFORMED = [
    pytest.param(b"", "truncated_header", id="empty"),
    pytest.param(b"\x03" + header(2)[1:] + GOOD_SAMPLE, "version", id="version-3"),
    pytest.param(b"\x05\x02\x00\x00", "version", id="version-5"),
    pytest.param(b"\x00", "version", id="single-zero-byte"),
    pytest.param(b"\x04\x02", "truncated_header", id="two-bytes"),
    pytest.param(b"\x04\x00\x00\x00" + bytes(12), "channels", id="zero-channels"),
    pytest.param(header(129, names=[b"X"] * 129, codes=[0] * 129) + raw_sample([0] * 129, [0] * 129), "channels", id="129-channels"),
    pytest.param(header(2)[:20], "truncated_header", id="header-cut-in-configs"),
    pytest.param(header(2), "no_samples", id="header-only"),
    pytest.param(header(2) + GOOD_SAMPLE + GOOD_SAMPLE[:-1], "sample_size", id="partial-sample"),
    pytest.param(header(2) + GOOD_SAMPLE + b"\x00", "sample_size", id="one-trailing-byte"),
    pytest.param(header(2) + GOOD_SAMPLE[:5], "sample_size", id="less-than-one-sample"),
    # The predecessor's bug: flag set, samples framed as 3C+12. 5 x 18 bytes = 90, not a multiple of 22.
    pytest.param(header(2, flag=1) + GOOD_SAMPLE * 5, "sample_size", id="app-flag-with-v4-samples"),
    pytest.param(header(2, names=[b"\xff\xfe", b"Cz"]) + GOOD_SAMPLE, "channel_name", id="invalid-utf8"),
    pytest.param(header(2, names=[b"Cz", b"ab\xe2\x82"]) + GOOD_SAMPLE, "channel_name", id="truncated-utf8"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED)
@pytest.mark.parametrize("call", [parse_layout, *DECODERS])
def test_malformed_payloads_raise_packet_error(call, payload: bytes, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PacketError) as info:
        call(payload)
    assert info.value.reason == reason
    assert str(info.value)  # a message a person can read


def test_max_channels_is_configurable() -> None:
    payload = encode_payload(np.zeros((5, 3), np.int16), eeg_names(5), ["eeg"] * 5)
    assert parse_layout(payload, max_channels=5).num_channels == 5
    with pytest.raises(PacketError) as info:
        decode_payload(payload, max_channels=4)
    assert info.value.reason == "channels"


def test_packet_error_is_a_value_error_and_survives_pickling() -> None:
    error = PacketError("version", "unsupported payload version 3 (expected 4)")
    assert isinstance(error, ValueError) and isinstance(error, EeghubError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, str(copy)) == ("version", "unsupported payload version 3 (expected 4)")


# ---------------------------------------------------------------- channel names and types
def test_names_cut_at_the_first_nul_and_eight_bytes_have_no_terminator() -> None:
    payload = header(3, names=[b"ABCDEFGH", b"Fz\0junk", "Fp\u00e91".encode()]) + raw_sample([0, 0, 0], [0, 0, 0])
    assert parse_layout(payload).channel_names == ("ABCDEFGH", "Fz", "Fp\u00e91")


def test_empty_names_are_numbered() -> None:
    payload = header(3, names=[b"", b"Cz", b"\0\0\0\0"]) + raw_sample([0, 0, 0], [0, 0, 0])
    assert parse_layout(payload).channel_names == ("CH1", "Cz", "CH3")


def test_duplicate_names_get_a_suffix() -> None:
    names = [b"CH1", b"CH1", b"CH1", b"CH1_2", b"", b"Cz"]  # the empty one becomes CH5
    payload = header(6, names=names) + raw_sample([0] * 6, [0] * 6)
    layout = parse_layout(payload)
    assert layout.channel_names == ("CH1", "CH1_2", "CH1_3", "CH1_2_2", "CH5", "Cz")
    assert len(set(layout.channel_names)) == 6


def test_synthesized_trigger_name_is_made_unique_too() -> None:
    payload = header(2, names=[b"TRIG", b"Cz"], codes=[0, 0], flag=1) + raw_sample([0, 0], [0, 0], trigger_byte=1)
    layout = parse_layout(payload)
    assert layout.channel_names == ("TRIG", "Cz", "TRIG_2")
    assert layout.trigger_index == 2


def test_type_codes() -> None:
    codes = [0, 1, 2, 3, 255, 4, 77]
    payload = header(7, codes=codes) + raw_sample([0] * 7, [0] * 7)
    assert parse_layout(payload).channel_types == ("eeg", "emg", "eog", "stim", "misc", "misc", "misc")
    assert CHANNEL_TYPES == {0: "eeg", 1: "emg", 2: "eog", 3: "stim", 255: "misc"}


# ---------------------------------------------------------------- encoder input checks
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger": np.zeros(3, np.int16)}, "stim"),
        ({"channel_names": ["TOOLONGNAME", "B"]}, "8 UTF-8 bytes"),
        ({"channel_types": ["eeg", "ecg"]}, "channel type"),
        ({"signals": np.array([[0, 1, 40000], [0, 0, 0]])}, "within"),
        ({"signals": np.zeros((2, 3), np.float32)}, "integers"),
        ({"signals": np.zeros((2, 0), np.int16)}, "non-empty"),
        ({"channel_names": ["A"]}, "names and types"),
        ({"impedance": np.zeros(5, np.uint8)}, "impedance"),
        ({"impedance": np.full(2, 256)}, "within"),
        ({"variant": "v5"}, "variant"),
        ({"variant": "app", "trigger": np.zeros(4, np.int16)}, "trigger must have shape"),
    ],
)
def test_encoder_rejects_inconsistent_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"signals": np.zeros((2, 3), np.int16), "channel_names": ["A", "B"], "channel_types": ["eeg", "eeg"]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        encode_payload(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- zstd framing
PAYLOAD = encode_payload(np.arange(9 * 250, dtype=np.int16).reshape(9, 250) % 300, eeg_names(9), ["eeg"] * 8 + ["stim"])


@pytest.mark.parametrize("include_content_size", [True, False])
def test_decompress_with_and_without_declared_size(include_content_size: bool) -> None:
    frame = compress_frame(PAYLOAD, include_content_size=include_content_size)
    declared = zstandard.get_frame_parameters(frame).content_size
    assert (declared == len(PAYLOAD)) is include_content_size
    assert decompress_frame(frame, max_output_size=len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("level", [3, 19])
def test_decompress_a_streaming_compressor_frame(level: int) -> None:
    # What a streaming client produces: no content size, the level's window.
    sink = io.BytesIO()
    with zstandard.ZstdCompressor(level=level).stream_writer(sink, closefd=False) as writer:
        writer.write(PAYLOAD[:5000])
        writer.write(PAYLOAD[5000:])
    frame = sink.getvalue()
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress_frame(frame, max_output_size=len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("include_content_size", [True, False])
def test_one_byte_over_the_budget_is_too_large(include_content_size: bool) -> None:
    frame = compress_frame(PAYLOAD, include_content_size=include_content_size)
    with pytest.raises(PacketError) as info:
        decompress_frame(frame, max_output_size=len(PAYLOAD) - 1)
    assert info.value.reason == "too_large"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("include_content_size", [True, False])
def test_decompression_bomb_is_refused_without_allocating_it(include_content_size: bool) -> None:
    frame = compress_frame(bytes(100 * MiB), level=1, include_content_size=include_content_size)
    assert len(frame) < 10_000
    tracemalloc.start()
    try:
        with pytest.raises(PacketError) as info:
            decompress_frame(frame, max_output_size=1 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large"
    assert peak < 2 * MiB  # the budget plus one slice, not 100 MiB


def test_frame_asking_for_a_huge_window_is_refused() -> None:
    # A streaming compressor does not know the size, so it keeps the window it was given.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, write_content_size=False)
    sink = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(sink, closefd=False) as writer:
        writer.write(PAYLOAD)
    frame = sink.getvalue()
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    with pytest.raises(PacketError) as info:
        decompress_frame(frame, max_output_size=16 * MiB)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("include_content_size", [True, False])
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda f: f[: len(f) // 2], id="truncated"),
        pytest.param(lambda f: f[:-1], id="last-byte-missing"),
        pytest.param(lambda f: f + b"garbage", id="trailing-garbage"),
        pytest.param(lambda f: f + f, id="two-frames"),
        pytest.param(lambda f: b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd" + f, id="skippable-frame-first"),
        pytest.param(lambda f: f[:4], id="magic-only"),
        pytest.param(lambda f: b"", id="empty"),
        pytest.param(lambda f: b"not zstd at all", id="garbage"),
        pytest.param(lambda f: f[:4] + bytes(len(f) - 4), id="zeroed-after-magic"),
    ],
)
def test_corrupt_frames_raise_decompress(mangle, include_content_size: bool) -> None:  # type: ignore[no-untyped-def]
    frame = mangle(compress_frame(PAYLOAD, include_content_size=include_content_size))
    with pytest.raises(PacketError) as info:
        decompress_frame(frame, max_output_size=16 * MiB)
    assert info.value.reason == "decompress"


def test_an_empty_frame_decompresses_to_nothing() -> None:
    for include in (True, False):
        assert decompress_frame(compress_frame(b"", include_content_size=include), max_output_size=10) == b""


def test_warm_up_compiles_the_kernel() -> None:
    warm_up()
    assert decode_payload(PAYLOAD).signals.shape == (9, 250)
