"""Media from an S3 bucket (or any S3-compatible server), listed page by page and read one object at a time.

Everything goes through one boto3 client: its credential chain, its addressing (virtual-host
for AWS, path style for an endpoint override such as moto or MinIO), and its own retries
(adaptive mode: backoff with a client-side rate limit when S3 throttles). What boto3 raises is
turned here into one-line errors that name the object or bucket and the fix.

boto3 costs about 2 ms of CPU an object (obstore's Rust client about 0.5 ms), but over a whole
`tag` run that came to 4-7% of the CPU a photo costs, under the 10% that would pay for a second
client (bench/s3_reads.py, bench/results/s3_reads.json).
"""
from __future__ import annotations

import threading
from typing import ClassVar, Iterator
from urllib.parse import urlparse

from toolkit.ground.errors import ConfigError, MediaError, SourceError
from toolkit.ground.models import MediaRef

#: boto3's retry settings: six tries in all (the first call and five retries); "adaptive" also
#: slows the client down when S3 answers SlowDown/503, so a throttled run backs off instead of hammering.
RETRIES = {"total_max_attempts": 6, "mode": "adaptive"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"{uri}: not an S3 URI; write it as s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Connector:
    schemes: ClassVar[frozenset[str]] = frozenset({"s3"})

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 addressing_style: str | None = None, retries: dict | None = None) -> None:
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        #: "auto" (boto3's default), "virtual" or "path".
        self.addressing_style = addressing_style or None
        self.retries = retries or RETRIES
        self._client = None
        self._client_lock = threading.Lock()

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

                    s3_config = {"addressing_style": self.addressing_style} if self.addressing_style else None
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                        config=Config(retries=dict(self.retries), max_pool_connections=16, s3=s3_config))
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
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except Exception as exc:
            raise MediaError(f"{ref.uri}: cannot download ({_describe(exc)})") from exc

    def presigned_url(self, uri: str, expires: int = 3600) -> str:
        bucket, key = parse_s3_uri(uri)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=expires)


NO_CREDENTIALS = ("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                  "in the environment or .env")
#: S3's answers when it wants the client to slow down (after boto3's retries have run out).
THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                       "TooManyRequestsException", "503"})


def _describe(exc: Exception) -> str:
    """One line saying what went wrong and what to do; a missing credential stops the run."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        raise ConfigError(NO_CREDENTIALS) from exc
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}; check TOOLKIT_S3_ENDPOINT_URL"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "error")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return "no such bucket; check the bucket name"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"{code}: check the AWS credentials and the bucket policy"
        if code in THROTTLED:
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            return (f"{code}: S3 kept throttling after {attempts} tries; run again later, or tag fewer "
                    f"items at once")
        return f"{code}: {err.get('Message', '')}".strip()
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
