"""Media from an S3 bucket (or any S3-compatible server), listed page by page and read one object at a time.

Listing, the early check and presigned URLs go through one boto3 client: its credential chain,
its addressing (virtual-host for AWS, path style for an endpoint override such as moto or
MinIO) and its own retries (adaptive mode: backoff with a client-side rate limit when S3
throttles). Object reads go through obstore (a Rust S3 client, fed by the same boto3
credential chain) when it is installed: about 0.5 ms of CPU an object against boto3's 2.2 ms,
which on two cores is about a sixth of the CPU a photo costs to tag (bench/s3_reads.py). Without
obstore, boto3 reads them. Errors from either become one line naming the object and the fix.
"""
from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import ClassVar, Iterator
from urllib.parse import urlparse

from toolkit.ground.errors import ConfigError, MediaError, SourceError
from toolkit.ground.models import MediaRef

#: boto3's retry settings: six tries in all (the first call and five retries); "adaptive" also
#: slows the client down when S3 answers SlowDown/503, so a throttled run backs off instead of hammering.
RETRIES = {"total_max_attempts": 6, "mode": "adaptive"}


def obstore_installed() -> bool:
    try:
        import obstore  # noqa: F401
    except ImportError:
        return False
    return True


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"{uri}: not an S3 URI; write it as s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Connector:
    schemes: ClassVar[frozenset[str]] = frozenset({"s3"})

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 addressing_style: str | None = None, retries: dict | None = None,
                 reader: str | None = None) -> None:
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        #: "auto" (boto3's default), "virtual" or "path".
        self.addressing_style = addressing_style or None
        self.retries = retries or RETRIES
        #: What reads objects: "obstore" (when installed) or "boto3".
        self.reader = reader or ("obstore" if obstore_installed() else "boto3")
        self._client = None
        self._session = None
        self._client_lock = threading.Lock()
        self._stores: dict[str, object] = {}

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
                    self._session = boto3.session.Session()
                    self._client = self._session.client(
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
        if self.reader == "obstore":
            return self._read_obstore(ref, bucket, key)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except Exception as exc:
            raise MediaError(f"{ref.uri}: cannot download ({_describe(exc)})") from exc

    def _read_obstore(self, ref: MediaRef, bucket: str, key: str) -> bytes:
        import obstore

        store = self._store(bucket)
        try:
            return obstore.get(store, key).bytes().to_bytes()
        except Exception as exc:
            raise MediaError(f"{ref.uri}: cannot download ({_describe_obstore(exc, self.endpoint_url)})") from exc

    def _store(self, bucket: str):
        """obstore's client for one bucket, with boto3's credentials, region and addressing."""
        store = self._stores.get(bucket)
        if store is not None:
            return store
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store

        client = self.client  # boto3's session: its credential chain and region
        if self._session.get_credentials() is None:
            raise ConfigError(NO_CREDENTIALS)
        style = self.addressing_style or "auto"
        if style == "auto":  # as boto3 does: path style for an endpoint override or a dotted bucket
            style = "path" if self.endpoint_url or "." in bucket else "virtual"
        options: dict = {"region": client.meta.region_name or "us-east-1",
                         "virtual_hosted_style_request": style == "virtual",
                         "retry_config": {"max_retries": self.retries.get("total_max_attempts", 6) - 1,
                                          "retry_timeout": timedelta(minutes=3)}}
        if self.endpoint_url:
            scheme, host = self.endpoint_url.rstrip("/").split("://", 1)
            options["endpoint"] = f"{scheme}://{bucket}.{host}" if style == "virtual" else f"{scheme}://{host}"
            options["client_options"] = {"allow_http": scheme == "http"}
        store = S3Store(bucket, credential_provider=Boto3CredentialProvider(self._session), **options)
        with self._client_lock:
            return self._stores.setdefault(bucket, store)

    def presigned_url(self, uri: str, expires: int = 3600) -> str:
        bucket, key = parse_s3_uri(uri)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=expires)


NO_CREDENTIALS = ("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                  "in the environment or .env")
#: S3's answers when it wants the client to slow down (after boto3's retries have run out).
THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                       "TooManyRequestsException", "503"})


def _describe_obstore(exc: Exception, endpoint_url: str | None) -> str:
    """obstore's error (the S3 answer is in its text) as one line in `_describe`'s words."""
    text = str(exc)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    code = code.group(1) if code else type(exc).__name__
    if code in THROTTLED or " 503 " in text or " 429 " in text:
        tries = re.search(r"after (\d+) retries", text)
        tries = f"{int(tries.group(1)) + 1} tries" if tries else "its retries"
        return f"{code}: S3 kept throttling after {tries}; run again later, or tag fewer items at once"
    if code in ("NoSuchBucket",):
        return "no such bucket; check the bucket name"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or "PermissionDenied" in code:
        return f"{code}: check the AWS credentials and the bucket policy"
    if "error sending request" in text or "Connection refused" in text:
        return f"cannot reach {endpoint_url or 'S3'}; check TOOLKIT_S3_ENDPOINT_URL"
    message = re.search(r"<Message>([^<]+)</Message>", text)
    return f"{code}: {message.group(1) if message else text.splitlines()[0][:200]}"


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
