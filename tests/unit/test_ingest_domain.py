"""Pure parts of ingest and linking: envelopes and stream timelines (which
session a packet belongs to is SQL: tests/integration/test_link_rule.py)."""

from __future__ import annotations

import pytest

from eeghub.core.errors import BadRequest
from eeghub.core.timeline import Packet, plan_stream, sample_time_us
from eeghub.plugins.ingest.envelope import DataEnvelope, Envelope, from_amqp_headers, from_json, from_query_or_headers


def envelope(**overrides: object) -> DataEnvelope:
    base: dict[str, object] = dict(user_id="u", device_id="d", timestamp_start_ms=1000, timestamp_end_ms=2000,
                                   sampling_rate=250.0, lsb_to_volts=1e-7, payload_base64="AA==")
    base.update(overrides)
    return DataEnvelope(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": -250.0}, "sampling_rate"),
        ({"sampling_rate": float("nan")}, "sampling_rate"),
        ({"lsb_to_volts": 0.0}, "lsb_to_volts"),
        ({"lsb_to_volts": -1e-7}, "lsb_to_volts"),
        ({"timestamp_end_ms": 999}, "timestamp_end_ms"),
        ({"timestamp_end_ms": 1000 + 3_600_001}, "timestamp_end_ms"),
    ],
)
def test_envelope_rules_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        from_json(envelope(**overrides))
    assert field in info.value.message


def test_envelope_headers_match_the_predecessor() -> None:
    e = from_json(envelope(session_id="s1"))
    headers = e.headers()
    assert headers["lsb_to_volts_str"] == "1e-07" and headers["session_id"] == "s1"
    assert "session_id" not in from_json(envelope()).headers()
    assert from_amqp_headers(headers) == e


def test_amqp_headers_fall_back_to_the_string_lsb() -> None:
    headers = from_json(envelope()).headers()
    headers["lsb_to_volts"] = 0
    assert from_amqp_headers(headers).lsb_to_volts == 1e-7
    del headers["device_id"]
    with pytest.raises(ValueError, match="device_id"):
        from_amqp_headers(headers)


def test_binary_envelope_from_query_or_headers() -> None:
    query = {"device_id": "d", "timestamp_start_ms": "1000", "timestamp_end_ms": "2000"}
    headers = {"x-sampling-rate": "250", "x-lsb-to-volts": "1e-7"}
    e = from_query_or_headers(query, headers, caller="alice")
    assert e == Envelope("alice", "d", 1000, 2000, 250.0, 1e-7, None)
    with pytest.raises(BadRequest):
        from_query_or_headers({"device_id": "d"}, {}, caller="alice")


def packets(starts: list[int], n: int = 250, rate: float = 250.0) -> list[Packet]:
    return [Packet(f"o{i}", s, s + 996, n, rate, sha256=f"h{i}") for i, s in enumerate(starts)]


def test_plan_stream_orders_and_finds_gaps_overlaps_duplicates() -> None:
    items = packets([3000, 0, 1000, 2004])
    items.append(Packet("z-dup", 1000, 1996, 250, 250.0, sha256="h2"))  # same content as o2
    plan = plan_stream(items + [Packet("late", 6000, 6996, 250, 250.0, sha256="h9"), Packet("early", 6500, 7496, 250, 250.0, sha256="hA")])
    assert [p.object_id for p in plan.kept] == ["o1", "o2", "o3", "o0", "late", "early"]
    assert plan.duplicates == ["z-dup"]
    [gap] = plan.gaps
    assert gap.after_object == "o0" and gap.missing_ms == 2000 and gap.missing_samples == 500
    assert plan.overlaps == [("early", 500.0)]
    assert plan.samples == 6 * 250


def test_jitter_within_tolerance_is_not_a_gap() -> None:
    plan = plan_stream(packets([0, 1012, 1995, 3008]))
    assert plan.gaps == [] and plan.overlaps == []


def test_sample_time_follows_the_predecessor_rule() -> None:
    p = Packet("o", 2000, 2996, 256, 256.0)
    assert sample_time_us(p, 3) == 2_000_000 + round(3 * 1e6 / 256)
