"""Google Video Intelligence: label and shot-change detection for videos.

Uses the real `google-cloud-videointelligence` client. A gs:// video is passed by URI; an S3
or local video is sent as content when it fits in one request, staged in
TOOLKIT_GCP_STAGING_BUCKET when it does not, and otherwise reported with the setting that
would fix it. Each annotation is a long-running operation, polled until it finishes or
TOOLKIT_GCP_TIMEOUT passes. Requests and status checks share the service's rate limit.
"""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence
from urllib.parse import urlparse

from taggers.base import TaggerBase
from taggers.gcs_staging import SCOPE, GcsStager
from taggers.label_mapping import UNMAPPED_GROUP, LabelMapping
from taggers.resilience import (CallStats, Cancelled, ItemFailed, Kind, Outcome, RateLimiter, RetryPolicy,
                                call_with_retries, first_line, parse_retry_after, run_pool)
from toolkit.ground.errors import ConfigError, FatalTaggerError
from toolkit.ground.models import Media, Tag, TagResult

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

# Google front ends refuse request bodies over 10 MiB ("Request payload size exceeds the
# limit: 10485760 bytes"); the Video Intelligence docs give no other figure for
# input_content, so larger videos go by gs:// URI.
INLINE_LIMIT = 10 * 1024 * 1024
SETTING_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
SETTING_STAGING = "TOOLKIT_GCP_STAGING_BUCKET"
SETTING_TIMEOUT = "TOOLKIT_GCP_TIMEOUT"
SETTING_ENDPOINT = "TOOLKIT_GCP_VI_ENDPOINT"
SHOT_GROUP = "shot"
CATEGORY_GROUP = "category"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class OperationTimedOut(Exception):
    pass


class VideoIntelligenceTagger(TaggerBase):
    name: ClassVar[str] = "gcp"
    media_types: ClassVar[frozenset[str]] = frozenset({"video"})
    billing_unit: ClassVar[str] = "minute"
    #: USD per minute of label detection after the monthly 1,000 free minutes; shot detection
    #: is free alongside label detection (cloud.google.com/video-intelligence/pricing).
    unit_price_usd: ClassVar[float] = 0.10

    def __init__(self, *, endpoint: str | None = None, staging_bucket: str | None = None, rate: float = 1.0,
                 concurrency: int = 8, max_retries: int = 5, timeout: float = 600.0, poll_interval: float = 1.0,
                 rpc_timeout: float = 300.0, inline_limit: int = INLINE_LIMIT, mapping: LabelMapping | None = None,
                 retry: RetryPolicy | None = None, credentials: Any = None,
                 credentials_file: Path | None = None) -> None:
        self.endpoint = (endpoint or "").strip() or None
        self.staging_bucket = staging_bucket
        self.concurrency = concurrency
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.rpc_timeout = rpc_timeout
        self.inline_limit = inline_limit
        self.mapping = mapping or LabelMapping.load()
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.limiter = RateLimiter(rate)
        self.stats = CallStats(service="gcp", rate=rate)
        self._given_credentials = credentials
        self._credentials_file = credentials_file
        self._client_lock = threading.Lock()
        self._client_obj = None
        self._stager = GcsStager(staging_bucket, self._credentials) if staging_bucket else None
        # Staging uploads go to Cloud Storage, not Video Intelligence: their own limiter.
        self._staging_limiter = RateLimiter(max(rate, 10.0))

    # -- construction -------------------------------------------------------------------

    @classmethod
    def is_configured(cls, settings: "Settings") -> bool:
        """An endpoint override, or Google credentials that can be found without a network
        call (the key file variable, or gcloud's application-default login)."""
        if (settings.gcp_vi_endpoint or "").strip():
            return True
        if settings.google_application_credentials:
            return True
        return _gcloud_adc_file().is_file()

    @classmethod
    def from_settings(cls, settings: "Settings") -> "VideoIntelligenceTagger":
        bucket = (settings.gcp_staging_bucket or "").strip() or None
        if bucket and (not bucket.startswith("gs://") or not bucket[5:].strip("/")):
            raise ConfigError(f"{SETTING_STAGING}={bucket!r} must be a gs://bucket URI")
        return cls(endpoint=settings.gcp_vi_endpoint, staging_bucket=bucket, rate=settings.gcp_rate,
                   concurrency=settings.concurrency, max_retries=settings.max_retries,
                   timeout=settings.gcp_timeout, poll_interval=settings.gcp_poll_interval,
                   mapping=LabelMapping.load(settings.label_mapping),
                   credentials_file=settings.google_application_credentials)

    # -- the Tagger protocol ------------------------------------------------------------

    def tag(self, items: Sequence[Media]) -> Iterator[TagResult]:
        videos = [m for m in items if m.kind in self.media_types]
        return run_pool(videos, self._tag_one, self.concurrency)

    @property
    def calls(self) -> int:
        return self.stats.calls

    def billable_units(self, media: Media) -> float:
        """Minutes, each video rounded up to a whole minute as Google bills; an unknown
        duration counts as one minute."""
        if media.kind != "video":
            return 0.0
        return float(max(1, math.ceil((media.duration or 0.0) / 60.0)))

    def describe(self, media: Media) -> str:
        """One line for --dry-run: what would be sent where."""
        how = self._route(media)
        duration = f"{media.duration:.0f} s" if media.duration else "duration unknown"
        return f"gcp LABEL_DETECTION+SHOT_CHANGE_DETECTION {media.ref.uri} ({duration}; {how})"

    # -- one item -----------------------------------------------------------------------

    def _route(self, media: Media) -> str:
        if media.ref.uri.startswith("gs://"):
            return "by URI"
        size = len(media.data)
        if size <= self.inline_limit:
            return f"inline, {_size(size)}"
        if self._stager is not None:
            return f"staged in {self.staging_bucket}, {_size(size)}"
        return f"too large to send inline ({_size(size)}): set {SETTING_STAGING}"

    def _tag_one(self, media: Media, cancelled: threading.Event) -> TagResult:
        try:
            request, staged = self._request(media, cancelled)
        except ItemFailed as failed:
            self.stats.add("items_failed")
            return TagResult(media.ref, self.name, error=failed.report())
        try:
            response = call_with_retries(lambda: self._annotate(request, cancelled), self._classify,
                                         self.limiter, self.retry, self.stats, cancelled)
            tags, frame_tags = self._tags(response, media)
        except ItemFailed as failed:
            self.stats.add("items_failed")
            return TagResult(media.ref, self.name, error=failed.report())
        finally:
            if staged:
                self._unstage(staged)
        self.stats.add("items_ok")
        return TagResult(media.ref, self.name, tags=tags, frame_tags=frame_tags)

    def _request(self, media: Media, cancelled: threading.Event) -> tuple[dict, str | None]:
        """The AnnotateVideo request for this video, and the staged object to delete after."""
        from google.cloud import videointelligence_v1 as vi

        request: dict = {"features": [vi.Feature.LABEL_DETECTION, vi.Feature.SHOT_CHANGE_DETECTION]}
        if media.ref.uri.startswith("gs://"):
            return {**request, "input_uri": media.ref.uri}, None
        if len(media.data) <= self.inline_limit:
            return {**request, "input_content": media.data}, None
        if self._stager is None:
            raise ItemFailed(f"video is {_size(len(media.data))}, over the {_size(self.inline_limit)} "
                             "Video Intelligence takes inline; "
                             f"set {SETTING_STAGING}=gs://<bucket> to stage it, or keep videos in gs://", 0)
        name = self._stager.object_name(media.sha256, Path(media.ref.key).suffix)
        uri = call_with_retries(lambda: self._stager.upload(name, media.data, media.mime), self._classify_staging,
                                self._staging_limiter, self.retry, CallStats("gcs", 0), cancelled)
        self.stats.add("staged")
        return {**request, "input_uri": uri}, name

    def _unstage(self, name: str) -> None:
        try:
            self._stager.delete(name)
        except Exception:  # noqa: BLE001 - a leftover staged copy must not fail a tagged item
            self.stats.add("unstage_failed")

    def _annotate(self, request: dict, cancelled: threading.Event):
        """Start one annotation and wait for it. Called (and retried) as one unit: an
        operation that ends in a server error is started again."""
        operation = self._client().annotate_video(request=request, retry=None, timeout=self.rpc_timeout)
        self.stats.add("operations_started")
        return self._wait(operation.operation, cancelled)

    def _wait(self, op, cancelled: threading.Event):
        """Poll the operation (each check rate-limited and retried on its own) until done."""
        deadline = time.monotonic() + self.timeout
        delay = self.poll_interval
        while not op.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationTimedOut(op.name)
            if cancelled.wait(min(delay, remaining)):
                raise Cancelled()
            op = call_with_retries(lambda: self._get_operation(op.name), self._classify, self.limiter,
                                   self.retry, self.stats, cancelled)
            delay = min(delay * 1.5, 20.0)
        return self._operation_result(op)

    def _get_operation(self, name: str):
        self.stats.add("polls")
        return self._client().transport.operations_client.get_operation(
            name, retry=None, timeout=min(self.rpc_timeout, 60.0))

    @staticmethod
    def _operation_result(op):
        from google.api_core import exceptions
        from google.cloud import videointelligence_v1 as vi

        if op.HasField("error"):
            raise exceptions.from_grpc_status(op.error.code, op.error.message)
        return vi.AnnotateVideoResponse.deserialize(op.response.value)

    def _client(self):
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = self._make_client()
            return self._client_obj

    def _make_client(self):
        from google.cloud import videointelligence_v1 as vi

        target = _host_port(self.endpoint) if self.endpoint else None
        if target and target.rsplit(":", 1)[0] in _LOOPBACK:
            # A local server (tests, an emulator) speaks plain gRPC; the default transport
            # insists on TLS and Google credentials.
            import grpc
            from google.cloud.videointelligence_v1.services.video_intelligence_service.transports import (
                VideoIntelligenceServiceGrpcTransport)

            channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1),
                                                             ("grpc.max_receive_message_length", 64 << 20)])
            return vi.VideoIntelligenceServiceClient(transport=VideoIntelligenceServiceGrpcTransport(channel=channel))
        options = {"api_endpoint": target} if target else None
        return vi.VideoIntelligenceServiceClient(credentials=self._credentials(), client_options=options)

    def _credentials(self):
        if self._given_credentials is not None:
            return self._given_credentials
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        path = self._credentials_file
        if path is not None and not Path(path).is_file():
            raise FatalTaggerError(f"{SETTING_CREDENTIALS} names {path}, which is not a file; "
                                   "point it at a service-account key JSON")
        try:
            if path is not None:
                credentials, _ = google.auth.load_credentials_from_file(str(path), scopes=[SCOPE])
            else:  # google-auth's own chain: its variable, gcloud's login, the metadata server
                credentials, _ = google.auth.default(scopes=[SCOPE])
        except DefaultCredentialsError as err:
            if path is not None:
                raise FatalTaggerError(f"{SETTING_CREDENTIALS} names {path}, which Google cannot read as a key "
                                       f"({first_line(str(err))}); point it at a service-account key JSON") from None
            raise FatalTaggerError(f"no Google credentials found: set {SETTING_CREDENTIALS} to a service-account "
                                   "key JSON (or run `gcloud auth application-default login`)") from None
        self._given_credentials = credentials
        return credentials

    # -- results ------------------------------------------------------------------------

    def _tags(self, response, media: Media) -> tuple[list[Tag], dict[int, list[Tag]]]:
        """Whole-video labels as the item's tags; shot labels and the shots themselves on the
        sampled frames they cover, so a filter on a shot's colour finds that shot's frames and
        not the whole video. A video with no sampled frames keeps everything at item level."""
        if not response.annotation_results:
            raise ItemFailed("Video Intelligence returned no annotation results", 1)
        result = response.annotation_results[0]
        if result.error.code:
            raise ItemFailed(first_line(result.error.message or f"error code {result.error.code}"), 1)
        whole = [t for ann in result.segment_label_annotations for t in self._label_tags(ann)]
        timed = [t for ann in result.shot_label_annotations for t in self._label_tags(ann)]
        timed += [Tag(SHOT_GROUP, f"shot {i + 1}", 1.0, self.name, _seconds(s.start_time_offset),
                      _seconds(s.end_time_offset)) for i, s in enumerate(result.shot_annotations)]
        frame_tags = _frame_tags(media, timed)
        return (whole, frame_tags) if frame_tags else (whole + timed, {})

    def _label_tags(self, ann) -> list[Tag]:
        """One tag per (mapped label, segment), and the label's categories over the same time."""
        names = [(g, v) for g, v in self.mapping.map(self.name, ann.entity.description)]
        for cat in ann.category_entities:
            names.extend((CATEGORY_GROUP if g == UNMAPPED_GROUP else g, v)
                         for g, v in self.mapping.map(self.name, cat.description))
        out: list[Tag] = []
        for seg in ann.segments:
            start, end = _seconds(seg.segment.start_time_offset), _seconds(seg.segment.end_time_offset)
            seen: set[tuple[str, str]] = set()
            for group, label in names:
                if (group, label) not in seen:  # a label and its category may map to one value
                    seen.add((group, label))
                    out.append(Tag(group, label, round(float(seg.confidence), 4), self.name, start, end))
        return out

    # -- errors -------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> Outcome:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc
        from google.protobuf.message import DecodeError

        if isinstance(exc, OperationTimedOut):
            return Outcome(Kind.ITEM, f"annotation did not finish within {self.timeout:g} s "
                                      f"(operation {exc}); raise {SETTING_TIMEOUT}")
        if isinstance(exc, (gexc.Unauthenticated, auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return Outcome(Kind.FATAL, f"Google rejected the credentials ({_said(exc)}); set {SETTING_CREDENTIALS} "
                                       "to a service-account key allowed to use the Video Intelligence API")
        if isinstance(exc, gexc.PermissionDenied):
            return Outcome(Kind.FATAL, f"Google refused the call ({_said(exc)}); check the account in "
                                       f"{SETTING_CREDENTIALS} has the Video Intelligence API enabled and can read the videos")
        if isinstance(exc, (gexc.ResourceExhausted, gexc.TooManyRequests)):
            return Outcome(Kind.THROTTLED, _said(exc), _retry_delay(exc))
        if isinstance(exc, (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.DeadlineExceeded,
                            gexc.Aborted, gexc.GatewayTimeout, gexc.BadGateway, gexc.Unknown)):
            return Outcome(Kind.TRANSIENT, _said(exc), _retry_delay(exc))
        if isinstance(exc, gexc.GoogleAPICallError):
            return Outcome(Kind.ITEM, _said(exc))
        if isinstance(exc, (DecodeError, auth_exc.TransportError, ConnectionError, TimeoutError)):
            return Outcome(Kind.TRANSIENT, first_line(f"{type(exc).__name__}: {exc}"))
        return Outcome(Kind.ITEM, first_line(f"{type(exc).__name__}: {exc}"))

    def _classify_staging(self, exc: BaseException) -> Outcome:
        import requests

        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status, said = exc.response.status_code, first_line(f"{exc.response.status_code}: {exc.response.text}")
            if status in (401, 403):
                return Outcome(Kind.FATAL, f"Cloud Storage refused the staging upload ({said}); check "
                                           f"{SETTING_CREDENTIALS} can write to {SETTING_STAGING}={self.staging_bucket}")
            if status == 404:
                return Outcome(Kind.FATAL, f"staging bucket not found ({said}); check {SETTING_STAGING}={self.staging_bucket}")
            if status == 429:
                return Outcome(Kind.THROTTLED, said, parse_retry_after(exc.response.headers))
            if status >= 500 or status == 408:
                return Outcome(Kind.TRANSIENT, said)
            return Outcome(Kind.ITEM, f"staging upload failed: {said}")
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return Outcome(Kind.TRANSIENT, first_line(f"staging upload: {exc}"))
        return Outcome(Kind.ITEM, first_line(f"staging upload: {type(exc).__name__}: {exc}"))


def _frame_tags(media: Media, timed: list[Tag]) -> dict[int, list[Tag]]:
    """Each sampled frame gets the shot-level tags of the shot it falls in, so a search hit
    on that frame carries them."""
    out: dict[int, list[Tag]] = {}
    for i, frame in enumerate(media.frames):
        if frame.timestamp is None:
            continue
        hits = [t for t in timed if t.start is not None and t.end is not None and t.start <= frame.timestamp < t.end]
        if hits:
            out[i] = hits
    return out


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _seconds(offset) -> float:
    # proto-plus turns google.protobuf.Duration into datetime.timedelta
    return round(offset.total_seconds(), 3) if offset is not None else 0.0


def _said(exc) -> str:
    code = getattr(exc, "grpc_status_code", None) or getattr(exc, "code", "")
    name = getattr(code, "name", None) or str(code)
    return first_line(f"{name}: {getattr(exc, 'message', None) or exc}")


def _retry_delay(exc) -> float | None:
    """The service's RetryInfo, when it sent one with the error."""
    for detail in getattr(exc, "details", None) or []:
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and hasattr(delay, "seconds"):
            return delay.seconds + delay.nanos / 1e9
    return None


def _host_port(endpoint: str) -> str:
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        return parsed.netloc
    return endpoint.strip("/")


def _gcloud_adc_file() -> Path:
    root = os.environ.get("CLOUDSDK_CONFIG") or (
        Path(os.environ["APPDATA"]) / "gcloud" if os.name == "nt" and "APPDATA" in os.environ
        else Path.home() / ".config" / "gcloud")
    return Path(root) / "application_default_credentials.json"
