"""S3 adapter of the ``ObjectStore`` port (AWS S3, MinIO, SeaweedFS) via aioboto3.

One long-lived client is opened in ``start()`` and closed in ``close()``: a
client per call would pay for a new connection pool and credential lookup
every time. Path-style addressing (``endpoint/bucket/key``) is used because
MinIO and SeaweedFS do not serve virtual-host buckets by default, and AWS
still accepts it.

Every botocore, aiohttp and socket error is translated into the port's typed
errors (``ObjectNotFound``, ``StorageError``); messages name the operation,
bucket and key, never the credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aioboto3
import aiohttp
import yarl
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import add_expect_header
from botocore.httpsession import get_cert_path

from eeghub.core.errors import ConfigurationError, InvalidObjectKey, ObjectNotFound, StorageError
from eeghub.core.keys import validate_bucket, validate_key, validate_prefix
from eeghub.core.ports import ObjectInfo

from .object_store_support import check_range, normalize_metadata
from .s3_lean_put import SigV4Signer, s3_error

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3 rejects multipart parts (but the last) smaller than 5 MiB."""
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_INVALID_KEY_CODES = frozenset({"KeyTooLongError", "InvalidObjectName", "XMinioInvalidObjectName"})
"""Keys that pass ``validate_key`` but not the server's own rules: MinIO and
SeaweedFS refuse path segments longer than 255 bytes, which AWS accepts."""
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {
        "SlowDown", "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "Throttling",
        "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
    }
)  # fmt: skip
_LEAN_INCOMPATIBLE_CODES = frozenset({"SignatureDoesNotMatch", "NotImplemented", "XAmzContentSHA256Mismatch"})
"""A server answering these to a lean PUT gets botocore from then on."""
_LEAN_DEFER_CODES = frozenset(
    {"AuthorizationHeaderMalformed", "PermanentRedirect", "TemporaryRedirect", "IllegalLocationConstraintException"}
)
"""Answers botocore knows how to follow (region redirects): that request is
sent again through botocore."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


class _S3ObjectStream:
    """An ``ObjectStream`` over a GetObject response body."""

    def __init__(
        self, store: S3ObjectStore, body: Any, info: ObjectInfo, start: int, length: int, chunk_size: int
    ) -> None:
        self._store = store
        self._body: Any = body
        self.info = info
        self.start = start
        self.length = length
        self._chunk_size = chunk_size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        body = self._body
        if body is None:
            raise StorageError(f"stream of {self.info.key!r} is closed")
        try:
            while True:
                # The body checks the byte count against Content-Length at the
                # end, so a connection cut short raises instead of truncating.
                with self._store._translated("read", self.info.bucket, self.info.key):
                    chunk = await body.read(self._chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            # Closes the connection if unread bytes remain (the pool cannot
            # reuse it); after a complete read aiohttp has already released it.
            body.close()


class S3ObjectStore:
    """``ObjectStore`` on an S3-compatible server (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str = "us-east-1",
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
        ping_bucket: str | None = None,
        lean_put: bool = True,
        lean_put_max_bytes: int = 1024 * 1024,
        lean_get: bool = True,
        max_connections: int = 32,
    ) -> None:
        """``endpoint_url=None`` means AWS; ``access_key=None`` means botocore's
        usual credential chain (environment, profile, instance role).
        ``ping_bucket``: health checks HEAD this bucket instead of listing all
        buckets (production credentials often may not list buckets).
        ``lean_put``: ``put_bytes`` of at most ``lean_put_max_bytes`` goes
        through the lean signed aiohttp PUT of ``s3_lean_put`` (see there);
        ``lean_get``: ``get_bytes`` through the same path's GET (a raw
        packet stored alone is read so: export, event correction)."""
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(f"S3 part_size must be between 5 MiB and 5 GiB, not {part_size} bytes")
        if multipart_threshold < 1:
            raise ConfigurationError("S3 multipart_threshold must be positive")
        if max_attempts < 1:
            raise ConfigurationError("S3 max_attempts must be at least 1")
        self._endpoint_url = endpoint_url
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # botocore >= 1.36 adds CRC checksums to every upload by default;
            # several S3-compatible servers reject or mishandle them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._ping_bucket = ping_bucket
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._lean_wanted = lean_put or lean_get
        self._lean_put_wanted = lean_put
        self._lean_get = lean_get
        self._lean_max_bytes = lean_put_max_bytes
        self._signer: SigV4Signer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._credentials: Any = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the client (no network traffic yet); idempotent."""
        if self._client is not None:
            return
        session = aioboto3.Session()
        stack = AsyncExitStack()
        client_context = session.client(
            "s3",
            endpoint_url=self._endpoint_url,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name=self._region,
            config=self._config,
        )
        with self._translated("connect", "", None):
            self._client = await stack.enter_async_context(client_context)
        # botocore sends PUTs with "Expect: 100-continue"; aiohttp then waits
        # for the "100 Continue" with no timeout at all, so a stalled server
        # hung an upload for as long as it stalled. Without the header the
        # read timeout bounds the wait.
        self._client.meta.events.unregister("before-call.s3", add_expect_header)
        self._stack = stack
        if self._lean_wanted:
            await self._start_lean(session)

    async def _start_lean(self, session: Any) -> None:
        """Set up the lean path (PUT, GET); without credentials (anonymous
        access) or with an endpoint it cannot sign for, botocore does every
        request."""
        if self._access_key and self._secret_key:
            credentials: Any = None
        else:
            credentials = session.get_credentials()
            if inspect.isawaitable(credentials):
                credentials = await credentials
            if credentials is None:
                log.info("S3: no credentials found for the lean path; every request goes through botocore")
                return
        # The endpoint and region botocore resolved (AWS_ENDPOINT_URL_S3, the
        # profile, partitions such as amazonaws.com.cn), so both paths always
        # talk to the same server.
        endpoint = str(self._client.meta.endpoint_url)
        region = str(self._client.meta.region_name or self._region)
        try:
            signer = SigV4Signer(endpoint, region)
        except ValueError as exc:
            log.info("S3: lean path disabled: %s", exc)
            return
        # Behind an HTTP(S)_PROXY (which botocore honours) every write stays
        # with botocore. Decided once here: aiohttp's trust_env would read the
        # environment and ~/.netrc in a thread on every request.
        scheme = urlsplit(endpoint).scheme
        if getproxies().get(scheme) and not proxy_bypass(urlsplit(endpoint).hostname or ""):
            log.info("S3: a proxy is configured for %s; every request goes through botocore", endpoint)
            return
        ssl_context: ssl.SSLContext | bool = False
        if urlsplit(endpoint).scheme == "https":
            # The certificates botocore trusts (AWS_CA_BUNDLE, the profile's
            # ca_bundle, else certifi's), not the system store aiohttp uses.
            ca_bundle = session._session.get_config_variable("ca_bundle") or get_cert_path(True)
            ssl_context = ssl.create_default_context(cafile=ca_bundle)
        self._credentials = credentials
        self._signer = signer
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=ssl_context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=self._read_timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        http, self._http, self._signer = self._http, None, None
        if http is not None:
            await http.close()
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        with self._translated("ping", self._ping_bucket or "", None):
            if self._ping_bucket:
                await self._require_client().head_bucket(Bucket=self._ping_bucket)
            else:
                await self._require_client().list_buckets()

    async def ensure_bucket(self, bucket: str) -> None:
        validate_bucket(bucket)
        client = self._require_client()
        # HEAD first: production credentials often may use a bucket but not
        # create one, and the bucket usually exists already.
        try:
            with self._translated("check bucket", bucket, None):
                await client.head_bucket(Bucket=bucket)
            return
        except ObjectNotFound:
            pass
        params: dict[str, Any] = {"Bucket": bucket}
        if self._endpoint_url is None and self._region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        with self._translated("create bucket", bucket, None):
            try:
                await client.create_bucket(**params)
            except ClientError as exc:
                # Created meanwhile by another process (or, on AWS, owned by
                # another account: then the first real operation will say so).
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # ------------------------------------------------------------ helpers
    def _require_client(self) -> Any:
        if self._client is None:
            raise StorageError("S3 object store is not started (call start() first)")
        return self._client

    def _redact(self, text: str) -> str:
        if self._secret_key:
            text = text.replace(self._secret_key, "***")
        return text

    @contextlib.contextmanager
    def _translated(
        self, action: str, bucket: str, key: str | None, *, missing_bucket_is_error: bool = False
    ) -> Iterator[None]:
        """Turn library errors into the port's errors.

        A missing key or bucket becomes ``ObjectNotFound`` — except on writes
        (``missing_bucket_is_error``), where a missing bucket is a setup fault
        and not the caller's "not found".
        """
        where = f"{bucket}/{key}" if key else bucket or self._endpoint_url or "AWS"
        try:
            yield
        except ClientError as exc:
            code = _error_code(exc)
            if code == "NoSuchBucket" and missing_bucket_is_error:
                raise StorageError(f"bucket {bucket!r} does not exist") from exc
            if code in _NOT_FOUND_CODES or _status(exc) == 404:
                raise ObjectNotFound(bucket, key or "") from exc
            if code in _INVALID_KEY_CODES:
                raise InvalidObjectKey(f"the S3 server refuses object key {key!r}: {code}") from exc
            message = exc.response.get("Error", {}).get("Message", "")
            text = f"S3 {action} of {where} failed: {code or _status(exc)} {message}"
            raise StorageError(self._redact(text)) from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageError(self._redact(f"S3 {action} of {where} failed: {type(exc).__name__}: {exc}")) from exc

    # ------------------------------------------------------------ writes
    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        clean_metadata = normalize_metadata(metadata)
        body = bytes(data)
        if self._lean_put_wanted and self._signer is not None and len(body) <= self._lean_max_bytes:
            info = await self._lean_put(bucket, key, body, content_type, clean_metadata)
            if info is not None:
                return info
        return await self._put_object(bucket, key, body, content_type, clean_metadata)

    async def _lean_put(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo | None:
        """PutObject through ``s3_lean_put``; ``None`` when botocore should
        send this request instead."""
        headers = {"content-type": content_type}
        for name, value in metadata.items():
            headers[f"x-amz-meta-{name}"] = value
        answer = await self._lean_request("PUT", bucket, key, data, headers)
        if answer is None:
            return None
        _, etag = answer
        return ObjectInfo(
            bucket=bucket, key=key, size=len(data), content_type=content_type, etag=_etag(etag), metadata=metadata
        )

    async def _lean_request(
        self, method: str, bucket: str, key: str, data: bytes, headers: dict[str, str]
    ) -> tuple[bytes, str | None] | None:
        """One signed request (``PUT`` of ``data``, or ``GET``) through
        ``s3_lean_put``: the response body and ETag, ``None`` when botocore
        should send this request instead (see ``_LEAN_DEFER_CODES``), else
        the same errors as the botocore path. Retries like botocore's
        standard mode: connection errors, 5xx and throttling, up to
        ``max_attempts`` tries with jittered exponential back-off (both
        requests are idempotent)."""
        signer, http = self._signer, self._http
        if signer is None or http is None:
            return None
        try:
            path = signer.path(bucket, key)
        except UnicodeEncodeError:
            raise InvalidObjectKey(f"object key {key!r} is not valid UTF-8") from None
        url = yarl.URL(signer.base_url + path, encoded=True)
        payload_sha256 = hashlib.sha256(data).hexdigest()
        writing = method == "PUT"
        action = "upload" if writing else "read"
        where = f"{bucket}/{key}"
        attempt = 0
        while True:
            attempt += 1
            if self._credentials is None:
                access_key, secret_key, token = self._access_key or "", self._secret_key or "", None
            else:
                frozen = await self._credentials.get_frozen_credentials()
                access_key, secret_key, token = frozen.access_key, frozen.secret_key, frozen.token
            signed = signer.sign(
                method, path, headers, payload_sha256, access_key=access_key, secret_key=secret_key, session_token=token
            )
            if not writing:
                # aiohttp would offer gzip, and a compressing proxy or server
                # would then send the object compressed: ask for the bytes as
                # stored, as botocore does (unsigned, as botocore's is).
                signed["accept-encoding"] = "identity"
            try:
                if http.closed:
                    raise StorageError(f"S3 {action} of {where} failed: the object store is closed")
                async with http.request(
                    method, url, data=data if writing else None, headers=signed, allow_redirects=False
                ) as response:
                    status = response.status
                    body = await response.read()
                    etag = response.headers.get("ETag")
            except aiohttp.ClientSSLError as exc:
                # Not transient: botocore (its own TLS set-up) sends it, and
                # says what is wrong if it fails too.
                log.warning("S3 lean %s: TLS error (%s); sending every request through botocore", method, type(exc).__name__)
                self._signer = None
                return None
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, RuntimeError) as exc:
                # RuntimeError: aiohttp's "Session is closed" during close().
                if attempt < self._max_attempts and not http.closed:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise StorageError(self._redact(f"S3 {action} of {where} failed: {type(exc).__name__}: {exc}")) from exc
            if 200 <= status < 300 and not writing:
                return body, etag  # the object's bytes, whatever they look like
            code, message = s3_error(body)
            if 200 <= status < 300 and not code:
                return body, etag
            if 200 <= status < 300:
                # An <Error> body with a 200 (S3 may answer so when it fails
                # late): botocore treats it as a 500, and so do we.
                status = 500
            if (status in _RETRY_STATUSES or code in _RETRY_CODES) and attempt < self._max_attempts:
                await asyncio.sleep(self._backoff(attempt))
                continue
            if code in _LEAN_INCOMPATIBLE_CODES:
                log.warning("S3 server answered %s to a lean %s: sending every request through botocore from now on", code, method)
                self._signer = None
                return None
            if code in _LEAN_DEFER_CODES or 300 <= status < 400 or (status == 416 and not writing):
                return None  # botocore's answer (a range error is read's to translate)
            # The same errors as the botocore path (``_translated``): a
            # missing bucket is a setup fault on writes, "not found" on reads.
            if code == "NoSuchBucket" and writing:
                raise StorageError(f"bucket {bucket!r} does not exist")
            if code in _NOT_FOUND_CODES or status == 404:
                raise ObjectNotFound(bucket, key)
            if code in _INVALID_KEY_CODES:
                raise InvalidObjectKey(f"the S3 server refuses object key {key!r}: {code}")
            raise StorageError(self._redact(f"S3 {action} of {where} failed: {code or status} {message}"))

    @staticmethod
    def _backoff(attempt: int) -> float:
        # botocore's standard mode: random(0, 1) * min(2^(attempt-1), 20) s.
        return random.random() * min(2.0 ** (attempt - 1), 20.0)

    async def _put_object(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        client = self._require_client()
        with self._translated("upload", bucket, key, missing_bucket_is_error=True):
            response = await client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata
            )
        # PutObject does not return Last-Modified; a HEAD per write to learn
        # it is not worth a second round trip, so it stays None here.
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(data),
            content_type=content_type,
            etag=_etag(response.get("ETag")),
            metadata=metadata,
        )

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """One PutObject when the stream ends before ``multipart_threshold``
        bytes, else a multipart upload in ``part_size`` parts; at most about
        ``max(multipart_threshold, part_size)`` bytes are held at once. If the
        source or an upload raises, the multipart upload is aborted (so no
        half object or billed orphan parts remain) and the error propagates —
        the source's own exception unchanged."""
        validate_bucket(bucket)
        validate_key(key)
        clean_metadata = normalize_metadata(metadata)
        client = self._require_client()
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if upload_id is None:
                    if len(buffer) < self._multipart_threshold:
                        continue
                    with self._translated("start upload", bucket, key, missing_bucket_is_error=True):
                        created = await client.create_multipart_upload(
                            Bucket=bucket, Key=key, ContentType=content_type, Metadata=clean_metadata
                        )
                    upload_id = str(created["UploadId"])
                while len(buffer) >= self._part_size:
                    parts.append(await self._upload_part(bucket, key, upload_id, len(parts) + 1, buffer))
            if upload_id is None:
                return await self._put_object(bucket, key, bytes(buffer), content_type, clean_metadata)
            if buffer or not parts:
                parts.append(await self._upload_part(bucket, key, upload_id, len(parts) + 1, buffer))
            with self._translated("finish upload", bucket, key, missing_bucket_is_error=True):
                completed = await client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                await self._abort_quietly(bucket, key, upload_id)
            raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            content_type=content_type,
            etag=_etag(completed.get("ETag")),
            metadata=clean_metadata,
        )

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, buffer: bytearray
    ) -> dict[str, Any]:
        """Upload the first ``part_size`` bytes of ``buffer`` and remove them from it."""
        body = bytes(buffer[: self._part_size])
        with self._translated("upload part", bucket, key, missing_bucket_is_error=True):
            response = await self._require_client().upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        del buffer[: len(body)]
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _abort_quietly(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort a multipart upload; shielded so a cancellation cannot skip it.

        Failure is logged, not raised: the error that caused the abort is the
        one the caller needs to see. (A bucket lifecycle rule can remove what
        a failed abort leaves behind.)"""
        client = self._require_client()
        try:
            with self._translated("abort upload", bucket, key):
                await asyncio.shield(client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
        except (StorageError, asyncio.CancelledError) as exc:
            log.warning("could not abort multipart upload of %s/%s: %s", bucket, key, exc)

    async def sweep_stale_uploads(self, bucket: str, older_than_seconds: float) -> int:
        """Abort multipart uploads of ``bucket`` started more than
        ``older_than_seconds`` ago: what a process killed during an upload
        left (an abort on failure cannot run then). Stores without multipart
        listing answer 0."""
        validate_bucket(bucket)
        client = self._require_client()
        cutoff = time.time() - older_than_seconds
        stale: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            with self._translated("list uploads", bucket, None):
                try:
                    page = await client.list_multipart_uploads(Bucket=bucket, **markers)
                except ClientError as exc:
                    if _error_code(exc) in ("NotImplemented", "MethodNotAllowed"):
                        return 0
                    raise
            for upload in page.get("Uploads", []):
                initiated = upload.get("Initiated")
                if initiated is not None and initiated.timestamp() < cutoff:
                    stale.append((str(upload["Key"]), str(upload["UploadId"])))
            if not page.get("IsTruncated") or not page.get("NextKeyMarker"):
                break
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page.get("NextUploadIdMarker", "")}
        aborted = 0
        for key, upload_id in stale:
            with self._translated("abort upload", bucket, key):
                try:
                    await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                except ClientError as exc:
                    if _error_code(exc) != "NoSuchUpload":  # finished or aborted meanwhile
                        raise
                    continue
            aborted += 1
        return aborted

    async def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        try:
            with self._translated("delete", bucket, key):
                await self._require_client().delete_object(Bucket=bucket, Key=key)
        except ObjectNotFound:
            pass  # the object (or its whole bucket) is already gone

    # ------------------------------------------------------------ reads
    async def open(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = 256 * 1024,
    ) -> _S3ObjectStream:
        """Send GetObject now, so a missing object raises before this returns."""
        validate_bucket(bucket)
        validate_key(key)
        partial = check_range(start, end)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if partial:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        with self._translated("read", bucket, key):
            try:
                response = await self._require_client().get_object(**params)
            except ClientError as exc:
                if _error_code(exc) == "InvalidRange" or _status(exc) == 416:
                    raise ValueError("range not satisfiable") from None
                raise
        if response.get("ContentLength") is None:
            # Every S3 server sends it for GetObject; without it the stream
            # could not tell a complete object from one cut short.
            response["Body"].close()
            raise StorageError(f"S3 read of {bucket}/{key} failed: the answer has no Content-Length")
        length = int(response["ContentLength"])
        size = length
        first = 0
        content_range = response.get("ContentRange")  # "bytes 10-19/100"
        if partial and not content_range:
            # A server that ignores Range would hand out the wrong bytes.
            response["Body"].close()
            raise StorageError(f"S3 server ignored the byte range asked for {bucket}/{key}")
        if content_range:
            span, _, total = content_range.removeprefix("bytes ").partition("/")
            first = int(span.partition("-")[0])
            size = int(total)
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            content_type=response.get("ContentType"),
            etag=_etag(response.get("ETag")),
            last_modified=response.get("LastModified"),
            metadata=dict(response.get("Metadata") or {}),
        )
        return _S3ObjectStream(self, response["Body"], info, first, length, chunk_size)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        if self._lean_get and self._signer is not None:
            validate_bucket(bucket)
            validate_key(key)
            answer = await self._lean_request("GET", bucket, key, b"", {})
            if answer is not None:
                return answer[0]
        stream = await self.open(bucket, key, chunk_size=1024 * 1024)
        try:
            return b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        validate_bucket(bucket)
        validate_key(key)
        try:
            with self._translated("head", bucket, key):
                response = await self._require_client().head_object(Bucket=bucket, Key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(response["ContentLength"]),
            content_type=response.get("ContentType"),
            etag=_etag(response.get("ETag")),
            last_modified=response.get("LastModified"),
            metadata=dict(response.get("Metadata") or {}),
        )

    async def exists(self, bucket: str, key: str) -> bool:
        return await self.head(bucket, key) is not None

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2, page by page. Validation happens here, at the call."""
        validate_bucket(bucket)
        validate_prefix(prefix)
        return self._list(bucket, prefix)

    async def _list(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        client = self._require_client()
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            with self._translated("list", bucket, prefix):
                page = await client.list_objects_v2(**params)
            for item in page.get("Contents", ()):
                yield ObjectInfo(
                    bucket=bucket,
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=_etag(item.get("ETag")),
                    last_modified=item.get("LastModified"),
                )
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]
