"""The lean S3 PUT signs exactly as botocore's SigV4 signer does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from eeghub.adapters.s3_lean_put import SigV4Signer, s3_error

NOW = datetime(2026, 11, 23, 12, 34, 56, tzinfo=UTC)


def botocore_authorization(
    url: str, headers: dict[str, str], body: bytes, region: str, token: str | None, method: str = "PUT"
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    auth = S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), "s3", region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        auth.add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.mark.parametrize(
    ("endpoint", "key", "token", "region"),
    [
        ("http://127.0.0.1:8333", "raw/u1/d1/start_ms=1/end_ms=2_abc.bin", None, "us-east-1"),
        ("https://s3.eu-central-1.amazonaws.com", "stimuli/exp/画像 1.png", "session-token/+=", "eu-central-1"),
        ("http://minio.local:9000", "a+b/c%20d/ü~-_.!*'()", None, "us-east-1"),
        ("https://storage.example.org/s3", "x/y", None, "auto"),
    ],
)
def test_signature_equals_botocore(endpoint: str, key: str, token: str | None, region: str) -> None:
    signer = SigV4Signer(endpoint, region)
    body = b"\x01\x02payload" * 100
    headers = {"content-type": "application/octet-stream", "x-amz-meta-x-user-id": "u 1", "x-amz-meta-rate": "250.0"}
    path = signer.path("raw-data", key)
    ours = signer.sign(
        "PUT",
        path,
        headers,
        hashlib.sha256(body).hexdigest(),
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=token,
        now=NOW,
    )
    theirs = botocore_authorization(signer.base_url + path, headers, body, region, token)
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"] == "20261123T123456Z"
    if token:
        assert ours["x-amz-security-token"] == token


def test_a_get_is_signed_as_botocore_signs_it() -> None:
    signer = SigV4Signer("http://127.0.0.1:8333", "us-east-1")
    path = signer.path("raw-data", "raw/u1/d1/start_ms=1/end_ms=2_abc.bin")
    empty = hashlib.sha256(b"").hexdigest()
    ours = signer.sign("GET", path, {}, empty, access_key="AKIDEXAMPLE",
                       secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", now=NOW)
    theirs = botocore_authorization(signer.base_url + path, {}, b"", "us-east-1", None, method="GET")
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-content-sha256"] == empty


def test_host_and_path() -> None:
    assert SigV4Signer("http://h:80", "r").host == "h"
    assert SigV4Signer("https://h:443/", "r").host == "h"
    assert SigV4Signer("http://h:8333", "r").host == "h:8333"
    assert SigV4Signer("http://[::1]:9000", "r").host == "[::1]:9000"
    assert SigV4Signer("http://h/base/", "r").path("b", "k/é f") == "/base/b/k/%C3%A9%20f"
    with pytest.raises(ValueError):
        SigV4Signer("ftp://h", "r")


def test_signing_key_is_cached_per_day_and_secret() -> None:
    signer = SigV4Signer("http://h", "r")
    first = signer._signing_key("secret", "20261123")
    assert signer._signing_key("secret", "20261123") is first
    assert signer._signing_key("secret", "20261124") != first
    assert signer._signing_key("other", "20261123") != first


def test_s3_error_parsing() -> None:
    body = b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>gone &amp; away</Message></Error>"
    assert s3_error(body) == ("NoSuchBucket", "gone &amp; away")
    assert s3_error(b"") == ("", "")
    assert s3_error(b"<html>502 bad gateway</html>") == ("", "")
