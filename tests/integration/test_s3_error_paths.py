"""The S3 adapter's two write paths (lean signed PUT and botocore) answer a
misbehaving S3 server the same way. The server here is a tiny aiohttp app
that answers what a real server answers in rare cases (a 200 carrying an
error, throttling, a missing bucket…); the real servers are covered by the
object store contract suite."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from eeghub.adapters.s3_store import S3ObjectStore
from eeghub.core.errors import ObjectNotFound, StorageError

ERROR = "<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"


class FakeS3:
    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.delay = 0.0
        self.fail_first = 0
        self.by_botocore = 0
        """Answer this many requests with a 503 SlowDown before the mode's answer."""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.by_botocore += "Botocore" in request.headers.get("User-Agent", "")
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_first:
            self.fail_first -= 1
            return web.Response(status=503, body=ERROR.format(code="SlowDown", message="later").encode())
        if self.mode == "cut-once":
            # The first answer stops in the middle of its body.
            self.mode = "data"
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b"the obj")
            assert request.transport is not None
            request.transport.close()
            return response  # type: ignore[return-value]
        if self.mode == "chunked":
            # An answer without Content-Length (chunked transfer encoding).
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"the object's bytes")
            await response.write_eof()
            return response  # type: ignore[return-value]
        if self.mode == "gzip-if-accepted":
            # What a compressing proxy or server does when the client says
            # it takes gzip.
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                return web.Response(body=gzip.compress(b"the object's bytes"), headers={"Content-Encoding": "gzip"})
            return web.Response(body=b"the object's bytes")
        answers = {
            "data": (200, "the object's bytes", {"ETag": '"abc"'}),
            "ok": (200, "", {"ETag": '"abc"'}),
            "200-error": (200, ERROR.format(code="InternalError", message="late failure"), {}),
            "slowdown": (503, ERROR.format(code="SlowDown", message="reduce your request rate"), {}),
            "no-bucket": (404, ERROR.format(code="NoSuchBucket", message="gone"), {}),
            "404-bare": (404, "", {}),
            "denied": (403, ERROR.format(code="AccessDenied", message="no"), {}),
        }
        status, body, headers = answers[self.mode]
        return web.Response(status=status, body=body.encode(), headers=headers, content_type="application/xml")


@pytest.fixture
async def fake_s3() -> AsyncIterator[tuple[FakeS3, str]]:
    fake = FakeS3()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def outcome_of(url: str, monkeypatch: pytest.MonkeyPatch, action: Any, **options: Any) -> Any:
    """What ``action(store)`` returns or raises on a store of the fake server."""
    monkeypatch.setattr(S3ObjectStore, "_backoff", staticmethod(lambda attempt: 0.0))
    store = S3ObjectStore(endpoint_url=url, access_key="AK", secret_key="not-the-secret-9d2", max_attempts=2, **options)
    await store.start()
    try:
        return await action(store)
    except Exception as exc:  # noqa: BLE001 - compared below
        return exc
    finally:
        await store.close()


async def get(url: str, *, lean: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    return await outcome_of(url, monkeypatch, lambda store: store.get_bytes("bucket", "raw/k.bin"), lean_get=lean)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("data", b"the object's bytes"),
        ("gzip-if-accepted", b"the object's bytes"),
        # A GET's 200 body is the object, even one that looks like an error.
        ("200-error", ERROR.format(code="InternalError", message="late failure").encode()),
        ("slowdown", StorageError),
        ("no-bucket", ObjectNotFound),
        ("404-bare", ObjectNotFound),
        ("denied", StorageError),
    ],
)
async def test_both_read_paths_agree(
    fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch, mode: str, expected: Any
) -> None:
    fake, url = fake_s3
    fake.mode = mode
    outcomes = {}
    for lean in (True, False):
        fake.requests = fake.by_botocore = 0
        outcome = await get(url, lean=lean, monkeypatch=monkeypatch)
        outcomes[lean] = (outcome if not isinstance(outcome, Exception) else type(outcome), fake.requests)
        assert fake.by_botocore == (0 if lean else fake.requests), "each path sent its own requests"
        if isinstance(expected, bytes):
            assert outcome == expected, (lean, outcome)
        else:
            assert isinstance(outcome, expected), (lean, outcome)
            assert "not-the-secret" not in str(outcome)
            if expected is StorageError:
                assert not isinstance(outcome, ObjectNotFound)
    assert outcomes[True][0] == outcomes[False][0]
    assert outcomes[True][1] == outcomes[False][1], "as many tries on both paths"


async def test_a_read_retried_after_throttling_returns_the_object(fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = fake_s3
    fake.mode, fake.fail_first = "data", 1
    assert await get(url, lean=True, monkeypatch=monkeypatch) == b"the object's bytes"
    assert fake.requests == 2


async def test_a_read_cut_in_the_middle_is_read_again(fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = fake_s3
    fake.mode = "cut-once"
    assert await get(url, lean=True, monkeypatch=monkeypatch) == b"the object's bytes"
    assert fake.requests == 2
    # botocore's read of the body is not retried: an error, never a short object.
    fake.mode, fake.requests = "cut-once", 0
    outcome = await get(url, lean=False, monkeypatch=monkeypatch)
    assert isinstance(outcome, StorageError) and fake.requests == 1


async def test_a_read_without_content_length_is_an_error_on_botocore_and_data_on_the_lean_path(
    fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = fake_s3
    fake.mode = "chunked"
    assert await get(url, lean=True, monkeypatch=monkeypatch) == b"the object's bytes"  # aiohttp reads to the end
    outcome = await get(url, lean=False, monkeypatch=monkeypatch)
    assert isinstance(outcome, StorageError) and "Content-Length" in str(outcome)


async def put(url: str, *, lean: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    return await outcome_of(url, monkeypatch, lambda store: store.put_bytes("bucket", "k", b"x"), lean_put=lean)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("ok", None),
        ("200-error", StorageError),
        ("slowdown", StorageError),
        ("no-bucket", StorageError),
        ("404-bare", ObjectNotFound),
        ("denied", StorageError),
    ],
)
async def test_both_write_paths_agree(
    fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch, mode: str, expected: type[Exception] | None
) -> None:
    fake, url = fake_s3
    fake.mode = mode
    outcomes = {}
    for lean in (True, False):
        fake.requests = 0
        outcome = await put(url, lean=lean, monkeypatch=monkeypatch)
        outcomes[lean] = (type(outcome) if isinstance(outcome, Exception) else None, fake.requests)
        if expected is None:
            assert not isinstance(outcome, Exception), outcome
            assert outcome.etag == "abc"
        else:
            assert isinstance(outcome, expected), (lean, outcome)
            assert "not-the-secret" not in str(outcome)
            if mode == "no-bucket":
                assert "does not exist" in str(outcome)
            if expected is StorageError:
                assert not isinstance(outcome, ObjectNotFound)
    if mode in ("200-error", "slowdown"):
        assert outcomes[True][1] == 2, "retried like botocore (max_attempts=2)"
    assert outcomes[True][0] == outcomes[False][0]


async def test_close_during_a_lean_put_raises_storage_error(
    fake_s3: tuple[FakeS3, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = fake_s3
    fake.delay = 1.0
    monkeypatch.setattr(S3ObjectStore, "_backoff", staticmethod(lambda attempt: 0.0))
    store = S3ObjectStore(endpoint_url=url, access_key="AK", secret_key="SK", max_attempts=3)
    await store.start()
    task = asyncio.create_task(store.put_bytes("bucket", "k", b"x"))
    await asyncio.sleep(0.2)
    await store.close()
    with pytest.raises(StorageError):
        await task


async def test_the_lean_path_uses_the_endpoint_botocore_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    store = S3ObjectStore(endpoint_url=None, access_key="AK", secret_key="SK", region="eu-central-1")
    await store.start()
    try:
        assert store._signer is not None
        assert store._signer.base_url == "http://127.0.0.1:9" == store._client.meta.endpoint_url
        assert store._signer.region == "eu-central-1"
    finally:
        await store.close()


def self_signed_certificate(directory: Any) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eeghub test S3")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


async def test_the_lean_path_trusts_the_ca_bundle_botocore_trusts(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert, key = self_signed_certificate(tmp_path)
    fake = FakeS3()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("AWS_CA_BUNDLE", cert)
    try:
        store = S3ObjectStore(endpoint_url=f"https://127.0.0.1:{port}", access_key="AK", secret_key="SK")
        await store.start()
        try:
            info = await store.put_bytes("bucket", "k", b"x")
            assert info.etag == "abc" and store._signer is not None  # the lean path did it
        finally:
            await store.close()
    finally:
        await runner.cleanup()
