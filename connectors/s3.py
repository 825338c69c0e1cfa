"""Media from an S3 bucket (or any S3-compatible server), listed page by page and read one object at a time."""
from __future__ import annotations

import threading
from typing import ClassVar, Iterator
from urllib.parse import urlparse

from toolkit.errors import ConfigError, MediaError, SourceError
from toolkit.models import MediaRef


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SourceError(f"{uri}: not an S3 URI; write it as s3://bucket/prefix")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Connector:
    schemes: ClassVar[frozenset[str]] = frozenset({"s3"})

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._local = threading.local()

    @property
    def client(self):
        # boto3 clients are thread-safe, but sessions are not: one client per thread keeps reads parallel and safe.
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                                    config=Config(retries={"max_attempts": 5, "mode": "adaptive"},
                                                  max_pool_connections=16))
            self._local.client = client
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
