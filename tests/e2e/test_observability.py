"""``GET /metrics`` scraped after real traffic (real PostgreSQL, filesystem
store, in-process broker), request ids in and out, and the one log format."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eeghub.core.logs import RequestIdFilter, formatter
from eeghub.core.metrics import REQUEST_ID
from eeghub.core.packet import compress_frame
from eeghub.core.simulator import SimulatedDevice
from tests.e2e.helpers import user, wait_for

pytestmark = [pytest.mark.postgres]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_metrics_count_requests_packets_and_queues(app_client: Any, local_env: dict[str, str]) -> None:
    device = SimulatedDevice(user_id="m-user", device_id="m-dev", seed=3)
    async with app_client(local_env) as (client, _):
        before = await scrape(client)
        assert before[("eeghub_packets_accepted_total", ())] == 0
        for index in range(3):
            body = {**device.envelope(index, 1_748_736_000_000), "payload_base64": base64.b64encode(compress_frame(device.payload(index))).decode()}
            r = await client.post("/api/v1/data", json=body, headers=user("m-user"))
            assert r.status_code == 202, r.text
        r = await client.get("/api/v1/sessions/nope", headers=user("m-user"))
        assert r.status_code == 404

        async def stored() -> Any:
            now = await scrape(client)
            return now if now[("eeghub_packets_stored_total", ())] >= 3 else None

        after = await wait_for(stored, timeout=30)
        assert after[("eeghub_packets_accepted_total", ())] == 3
        assert after[("eeghub_packets_stored_total", ())] == 3
        assert 1 <= after[("eeghub_raw_messages_published_total", ())] <= 3
        key = ("eeghub_http_requests_total", (("method", "POST"), ("route", "/api/v1/data"), ("status", "202")))
        assert after[key] == 3
        missing = ("eeghub_http_requests_total", (("method", "GET"), ("route", "/api/v1/sessions/{session_id}"), ("status", "404")))
        assert after[missing] == 1  # by route template, not by concrete path
        count = ("eeghub_http_request_duration_seconds_count", (("method", "POST"), ("route", "/api/v1/data")))
        assert after[count] == 3
        queues = {dict(labels)["queue"] for (name, labels) in after if name == "eeghub_queue_depth"}
        assert "processing_queue" in queues and "processing_queue.dlq" in queues
        assert ("eeghub_analyzer_streams", ()) in after and after[("eeghub_analyzer_streams", ())] >= 1


async def test_request_id_is_echoed_or_made(app_client: Any, local_env: dict[str, str]) -> None:
    async with app_client(local_env) as (client, _):
        given = await client.get("/api/v1/plugins", headers={"X-Request-Id": "trace-42.a"})
        assert given.headers["x-request-id"] == "trace-42.a"
        made = await client.get("/api/v1/plugins", headers={"X-Request-Id": "bad id with spaces"})
        assert made.headers["x-request-id"] != "bad id with spaces" and len(made.headers["x-request-id"]) >= 16
        again = await client.get("/api/v1/plugins")
        assert again.headers["x-request-id"] != made.headers["x-request-id"]
        # An error body repeats nothing of the caller's, but its header carries the id.
        denied = await client.get("/api/v1/experiments", headers={"X-Request-Id": "req-7"})
        assert denied.status_code == 401 and denied.headers["x-request-id"] == "req-7"


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_log_records_carry_the_request_id(log_format: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter(plain=log_format == "plain"))
    logger = logging.getLogger(f"eeghub.test.{log_format}")
    logger.addHandler(handler)
    logger.propagate = False
    token = REQUEST_ID.set("abc123")
    try:
        logger.warning("stored %d packets", 5)
    finally:
        REQUEST_ID.reset(token)
    logger.warning("outside")
    first, second = stream.getvalue().splitlines()
    if log_format == "json":
        record = json.loads(first)
        assert record["message"] == "stored 5 packets" and record["request_id"] == "abc123"
        assert record["level"] == "WARNING" and record["logger"] == "eeghub.test.json" and "time" in record
        assert json.loads(second)["request_id"] is None
        assert set(record) == {"time", "level", "logger", "message", "request_id"}
    else:
        assert first.endswith("stored 5 packets [request abc123]") and "WARNING" in first
        assert second.endswith("outside")


def test_signed_link_signatures_never_reach_the_log() -> None:
    """uvicorn's access log writes each request's path with its query: a
    signed download link's signature is masked (it opens the file until it
    expires), the rest of the line is kept."""
    from eeghub.core.logs import RedactLinkSignatures, setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", "plain")
        (handler,) = root.handlers
        assert any(isinstance(f, RedactLinkSignatures) for f in handler.filters)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("plain"))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactLinkSignatures())
    logger = logging.getLogger("uvicorn.access.test")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    secret = "9f" * 32
    path = f"/api/v1/export-tasks/abc/download?expires=1764000000&signature={secret}"
    logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200)
    logger.info("plain message with signature=%s&x=1", secret)
    text = stream.getvalue()
    assert secret not in text, text
    assert "/api/v1/export-tasks/abc/download?expires=1764000000&signature=[redacted]" in text
    assert "signature=[redacted]&x=1" in text and '" 200' in text
