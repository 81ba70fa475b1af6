"""The per-packet sample bound and the per-stream byte budget (issue 16)."""

from __future__ import annotations

import pytest

from eeghub.core.errors import BadRequest, TooManyRequests
from eeghub.core.packet import decompress_frame, parse_layout
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.ingest.envelope import DataEnvelope, Envelope, from_json
from eeghub.plugins.ingest.limits import StreamBudget, check_sample_count, most_samples


def envelope(span_ms: int, rate: float) -> Envelope:
    return Envelope("u", "d", 1_000_000, 1_000_000 + span_ms, rate, 1e-6)


@pytest.mark.parametrize("variant", ["v4", "app"])
@pytest.mark.parametrize(("rate", "per_packet"), [(250.0, 250), (256.0, 250), (500.0, 50), (1000.0, 1000)])
def test_simulated_and_app_like_packets_pass(variant: str, rate: float, per_packet: int) -> None:
    device = SimulatedDevice("u", "d", sampling_rate=rate, samples_per_packet=per_packet, variant=variant)
    for index, (env, frame) in enumerate(device.packets(1_750_000_000_000, 3)):
        layout = parse_layout(decompress_frame(frame, max_output_size=1 << 24))
        check_sample_count(from_json(DataEnvelope(**env, payload_base64=b"-")), layout.num_samples, 2.0)
        # The app stamps arrival times: a burst of 250 samples can arrive
        # within one millisecond; that too is accepted.
        burst = Envelope("u", "d", env["timestamp_start_ms"], env["timestamp_start_ms"], rate, 1e-6)  # type: ignore[arg-type]
        check_sample_count(burst, layout.num_samples, 2.0)
        assert index < 3


def test_sample_count_far_beyond_the_span_is_400_naming_why() -> None:
    # The reported packet: 128 channels of zeros, about 40,000 samples, a
    # one-second envelope at 250 Hz.
    with pytest.raises(BadRequest) as caught:
        check_sample_count(envelope(1000, 250.0), 39_850, 2.0)
    assert caught.value.status_code == 400
    assert "39850 samples" in caught.value.message and "at most 826" in caught.value.message
    assert most_samples(envelope(1000, 250.0), 2.0) == 826  # (1 + 2) s × 250 Hz × 1.1 + 1
    check_sample_count(envelope(1000, 250.0), 826, 2.0)
    with pytest.raises(BadRequest):
        check_sample_count(envelope(1000, 250.0), 827, 2.0)


def test_stream_budget_refills_at_its_rate_and_names_the_wait() -> None:
    now = [0.0]
    budget = StreamBudget(rate=1000, burst=5000, clock=lambda: now[0])
    budget.spend(("u", "d"), 5000)
    with pytest.raises(TooManyRequests) as caught:
        budget.spend(("u", "d"), 2000)
    assert caught.value.status_code == 429
    assert caught.value.headers["Retry-After"] == "2"
    assert "ingest.stream_bytes_per_second" in caught.value.message
    budget.spend(("u", "other-device"), 5000)  # streams are separate
    now[0] = 2.0
    budget.spend(("u", "d"), 2000)  # refilled 2 × 1000 bytes, the refusal took nothing
    with pytest.raises(TooManyRequests):
        budget.spend(("u", "d"), 1)


def test_stream_budget_zero_rate_is_unlimited_and_streams_are_bounded() -> None:
    StreamBudget(rate=0, burst=1).spend(("u", "d"), 10**9)
    budget = StreamBudget(rate=1, burst=10, max_streams=3)
    for i in range(10):
        budget.spend(("u", str(i)), 10)
    assert len(budget._buckets) == 3
