"""Media from an S3 bucket (or any S3-compatible server), listed page by page and read one object at a time.

Reads go first through `SignedGet`: a GET signed with botocore's SigV4 signer over one kept-alive connection
per I/O thread (moto's server closes every connection; S3 keeps them). Against moto on this
machine, boto3's get_object cost about 2 ms of client CPU for each 5 KB photo (its events,
parameter validation, serialisation and parsing), a quarter of the model's CPU time per
image; this path costs about 0.4 ms. Anything but a complete 200 answer is handed to boto3,
so retries, redirects and every error message stay boto3's; a connector whose signed GETs
keep failing where boto3 succeeds stops trying them.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import threading
import zlib
from typing import ClassVar, Iterator
from urllib.parse import quote, urlparse, urlsplit

from toolkit.ground.errors import ConfigError, MediaError, SourceError
from toolkit.ground.models import MediaRef


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"{uri}: not an S3 URI; write it as s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Connector:
    schemes: ClassVar[frozenset[str]] = frozenset({"s3"})

    def __init__(self, endpoint_url: str | None = None, region: str | None = None, fast_get: bool = True) -> None:
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._client = None
        self._session = None
        self._client_lock = threading.Lock()
        self._fast: SignedGet | None = None
        self._fast_on = fast_get
        self._fast_lock = threading.Lock()

    @property
    def client(self):
        # One client for every thread: boto3 clients are thread-safe (sessions are not), and each
        # new session parses the S3 service model again (about 0.3 s of CPU).
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    self._session = boto3.session.Session()
                    self._client = self._session.client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                        config=Config(retries={"max_attempts": 5, "mode": "adaptive"}, max_pool_connections=16))
                client = self._client
        return client

    def check(self, uri: str) -> None:
        bucket, _ = parse_s3_uri(uri)
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise SourceError(f"{uri}: cannot list the bucket ({_describe(exc)})") from exc

    def list(self, uri: str) -> Iterator[MediaRef]:
        bucket, prefix = parse_s3_uri(uri)
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    rel = key[len(prefix):].lstrip("/") if prefix and key.startswith(prefix) else key
                    yield MediaRef(uri=f"s3://{bucket}/{key}", key=rel or key.rsplit("/", 1)[-1],
                                   size=obj.get("Size"), fingerprint=obj.get("ETag", "").strip('"') or None)
        except Exception as exc:  # botocore raises many kinds; all mean the listing failed
            raise SourceError(f"{uri}: cannot list the bucket ({_describe(exc)})") from exc

    def read(self, ref: MediaRef) -> bytes:
        bucket, key = parse_s3_uri(ref.uri)
        fast = self._signed_get()
        suspect = False
        if fast is not None:
            data, suspect = fast.get(bucket, key)
            if data is not None:
                return data
        data = self._boto_read(ref, bucket, key)
        if suspect and fast is not None and fast.missed():
            self._fast_on = False  # boto3 reads what the signed GET cannot (a proxy, a redirect): use boto3
        return data

    def _boto_read(self, ref: MediaRef, bucket: str, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except Exception as exc:
            raise MediaError(f"{ref.uri}: cannot download ({_describe(exc)})") from exc

    def _signed_get(self) -> "SignedGet | None":
        if not self._fast_on:
            return None
        if self._fast is not None:
            return self._fast
        with self._fast_lock:
            if self._fast is None and self._fast_on:
                try:
                    client = self.client
                    self._fast = SignedGet(client, self._session.get_credentials())
                except Exception:  # no credentials, an odd endpoint: boto3 alone then
                    self._fast_on = False
            return self._fast

    def presigned_url(self, uri: str, expires: int = 3600) -> str:
        bucket, key = parse_s3_uri(uri)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=expires)


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError, NoCredentialsError, EndpointConnectionError

    if isinstance(exc, NoCredentialsError):
        raise ConfigError("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "(or AWS_PROFILE) in the environment or .env") from exc
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}; check TOOLKIT_S3_ENDPOINT_URL"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "error")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return "no such bucket; check the bucket name"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"{code}: check the AWS credentials and the bucket policy"
        return f"{code}: {err.get('Message', '')}".strip()
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


#: Statuses that mean the signed GET itself is wrong here (a redirect to another region, a
#: signature or address S3 refuses) rather than the object being missing or the server busy.
_SUSPECT = frozenset({301, 302, 307, 400, 403})


class SignedGet:
    """GetObject without botocore's per-call machinery. Built from a boto3 client, whose
    credentials (refreshed as they expire), region and bucket addressing it follows."""

    #: After this many reads that boto3 served but this path could not, it stops being tried.
    MAX_MISSES = 3

    def __init__(self, client, creds) -> None:
        self._client = client
        self.region = client.meta.region_name or "us-east-1"
        if creds is None:
            raise ValueError("no credentials")
        self._creds = creds
        self._bases: dict[str, tuple[str, str, str]] = {}  # bucket -> (scheme, host, path prefix)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._misses = 0

    def missed(self) -> bool:
        """Count one read boto3 served after this path failed; True when it is time to stop."""
        with self._lock:
            self._misses += 1
            return self._misses >= self.MAX_MISSES

    def _base(self, bucket: str) -> tuple[str, str, str]:
        base = self._bases.get(bucket)
        if base is None:
            # botocore's own address for an object of this bucket (virtual-host or path style).
            url = urlsplit(self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60))
            if not url.path.endswith("/k"):
                raise ValueError(f"unexpected object address {url.path}")
            base = self._bases[bucket] = (url.scheme, url.netloc, url.path[:-1])
        return base

    def _headers(self, scheme: str, host: str, path: str) -> dict[str, str]:
        # botocore's own SigV4 signer (about 0.06 ms a call): only its per-call request machinery is skipped.
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="GET", url=f"{scheme}://{host}{path}",
                             headers={"x-amz-checksum-mode": "ENABLED"})
        S3SigV4Auth(self._creds.get_frozen_credentials(), "s3", self.region).add_auth(request)
        return dict(request.headers.items())

    def _connection(self, scheme: str, host: str, fresh: bool = False) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get((scheme, host))
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if scheme == "https":
                import ssl

                from botocore.httpsession import get_cert_path

                ctx = ssl.create_default_context(cafile=get_cert_path(True))
                conn = http.client.HTTPSConnection(host, timeout=60, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, timeout=60)
            conns[(scheme, host)] = conn
        return conn

    def get(self, bucket: str, key: str) -> tuple[bytes | None, bool]:
        """(the object's bytes, False), or (None, whether the failure looks like this path's own)."""
        try:
            scheme, host, prefix = self._base(bucket)
            path = prefix + quote(key, safe="/~")
            for attempt in (0, 1):  # a kept-alive connection the server has closed: once more on a new one
                conn = self._connection(scheme, host, fresh=attempt == 1)
                try:
                    conn.request("GET", path, headers=self._headers(scheme, host, path))
                    resp = conn.getresponse()
                    body = resp.read()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    if attempt:
                        raise
            if resp.will_close:
                conn.close()
            if resp.status != 200:
                return None, resp.status in _SUSPECT
            length = resp.getheader("Content-Length")
            if (length is not None and int(length) != len(body)) or not _checksum_ok(resp, body):
                return None, False
            return body, False
        except Exception:  # noqa: BLE001 - boto3 retries, or reports the error in its own words
            return None, True


def _checksum_ok(resp: http.client.HTTPResponse, body: bytes) -> bool:
    """The object's whole-body CRC32 or SHA-256, when S3 sent one (as boto3 validates them)."""
    crc = resp.getheader("x-amz-checksum-crc32")
    if crc and "-" not in crc:  # "-N": a composite checksum of multipart parts, not of the body
        return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode() == crc
    sha = resp.getheader("x-amz-checksum-sha256")
    if sha and "-" not in sha:
        return base64.b64encode(hashlib.sha256(body).digest()).decode() == sha
    return True
