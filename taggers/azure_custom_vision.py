"""Azure Custom Vision: tags images with a retailer's own published classifier or detector.

Uses the real `azure-cognitiveservices-vision-customvision` prediction client. One image is
one call (one billable transaction). Images over the prediction size limit are re-encoded
smaller before upload rather than sent to be rejected. Calls run on a thread pool at the
configured rate, retried through `taggers.resilience`.
"""
from __future__ import annotations

import io
import math
import socket
import threading
from typing import TYPE_CHECKING, ClassVar, Iterator, Sequence

from PIL import Image, ImageOps

from taggers.base import TaggerBase
from taggers.label_mapping import LabelMapping
from taggers.resilience import (CallStats, ItemFailed, Kind, Outcome, RateLimiter, RetryPolicy,
                                call_with_retries, first_line, parse_retry_after, run_pool)
from toolkit.ground.errors import ConfigError
from toolkit.ground.models import Box, Media, Tag, TagResult

if TYPE_CHECKING:
    from toolkit.ground.settings import Settings

# Custom Vision limits for prediction (learn.microsoft.com, "Limits and quotas"):
# 4 MB per image, at most 10,240 px a side; jpg, png, bmp and gif are accepted.
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_SIDE = 10_240
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF"})

SETTING_ENDPOINT = "TOOLKIT_AZURE_CV_ENDPOINT"
SETTING_KEY = "TOOLKIT_AZURE_CV_PREDICTION_KEY"
SETTING_PROJECT = "TOOLKIT_AZURE_CV_PROJECT_ID"
SETTING_ITERATION = "TOOLKIT_AZURE_CV_ITERATION"
_REQUIRED = {
    "azure_cv_endpoint": SETTING_ENDPOINT, "azure_cv_prediction_key": SETTING_KEY,
    "azure_cv_project_id": SETTING_PROJECT, "azure_cv_iteration": SETTING_ITERATION,
}


class AzureCustomVisionTagger(TaggerBase):
    name: ClassVar[str] = "azure"
    media_types: ClassVar[frozenset[str]] = frozenset({"image"})
    billing_unit: ClassVar[str] = "image"
    #: USD per billable unit on the S0 tier (about $2 per 1,000 predictions), for --dry-run estimates.
    unit_price_usd: ClassVar[float] = 0.002

    def __init__(self, endpoint: str, prediction_key: str, project_id: str, iteration: str, *,
                 mode: str = "classify", threshold: float = 0.5, store_predictions: bool = False,
                 rate: float = 10.0, concurrency: int = 8, max_retries: int = 5, timeout: float = 30.0,
                 mapping: LabelMapping | None = None, retry: RetryPolicy | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        if mode not in ("classify", "detect"):
            raise ConfigError(f"TOOLKIT_AZURE_CV_MODE={mode!r}: use classify or detect")
        self.endpoint = endpoint.rstrip("/")
        self._key = prediction_key  # never printed: messages name the setting instead
        self.project_id = project_id
        self.iteration = iteration
        self.mode = mode
        self.threshold = threshold
        self.store_predictions = store_predictions
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_upload_bytes = max_upload_bytes
        self.mapping = mapping or LabelMapping.load()
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.limiter = RateLimiter(rate)
        self.stats = CallStats(service="azure", rate=rate)
        self._local = threading.local()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def is_configured(cls, settings: "Settings") -> bool:
        """True when any Custom Vision setting is given: `--tagger auto` then uses Azure, and a
        half-finished configuration is reported by `from_settings` instead of silently
        falling back to the local model."""
        return any(_setting_value(settings, field) for field in _REQUIRED)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "AzureCustomVisionTagger":
        missing = [env for field, env in _REQUIRED.items() if not _setting_value(settings, field)]
        if missing:
            raise ConfigError(f"Azure Custom Vision is not configured: set {', '.join(missing)}")
        endpoint = _setting_value(settings, "azure_cv_endpoint")
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigError(f"{SETTING_ENDPOINT} must be a URL like https://<name>.cognitiveservices.azure.com/")
        return cls(
            endpoint, _setting_value(settings, "azure_cv_prediction_key"),
            _setting_value(settings, "azure_cv_project_id"), _setting_value(settings, "azure_cv_iteration"),
            mode=settings.azure_cv_mode, threshold=settings.azure_cv_threshold,
            store_predictions=settings.azure_cv_store_predictions, rate=settings.azure_rate,
            concurrency=settings.concurrency, max_retries=settings.max_retries,
            timeout=settings.azure_timeout, mapping=LabelMapping.load(settings.label_mapping),
        )

    # -- the Tagger protocol ------------------------------------------------------------

    def tag(self, items: Sequence[Media]) -> Iterator[TagResult]:
        images = [m for m in items if m.kind in self.media_types]
        return run_pool(images, self._tag_one, self.concurrency)

    @property
    def calls(self) -> int:
        return self.stats.calls

    def billable_units(self, media: Media) -> float:
        return 1.0 if media.kind == "image" else 0.0

    def describe(self, media: Media) -> str:
        """One line for --dry-run: what would be sent where."""
        size = len(media.data) if media.data else (media.ref.size or 0)
        action = f"{self.mode} {'(stored)' if self.store_predictions else '(no store)'}"
        note = f", downscaled from {size / 1e6:.1f} MB" if size > self.max_upload_bytes else ""
        return f"azure {action} {media.ref.uri} ({size / 1e3:.0f} KB{note})"

    # -- one item -----------------------------------------------------------------------

    def _tag_one(self, media: Media, cancelled: threading.Event) -> TagResult:
        try:
            payload = self._payload(media)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            self.stats.add("items_failed")
            return TagResult(media.ref, self.name, error=f"cannot prepare image for upload: {exc}")
        try:
            prediction = call_with_retries(lambda: self._predict(payload), self._classify,
                                           self.limiter, self.retry, self.stats, cancelled)
        except ItemFailed as failed:
            self.stats.add("items_failed")
            return TagResult(media.ref, self.name, error=failed.report())
        self.stats.add("items_ok")
        return TagResult(media.ref, self.name, tags=self._tags(prediction))

    def _payload(self, media: Media) -> bytes:
        data, resized = fit_for_upload(media.data, self.max_upload_bytes)
        if resized:
            self.stats.add("downscaled")
        return data

    def _predict(self, data: bytes):  # -> ImagePrediction
        client = self._client()
        call = {
            ("classify", False): client.classify_image_with_no_store,
            ("classify", True): client.classify_image,
            ("detect", False): client.detect_image_with_no_store,
            ("detect", True): client.detect_image,
        }[(self.mode, self.store_predictions)]
        return call(self.project_id, self.iteration, data)

    def _client(self):
        """One SDK client per thread: each owns a requests session, and sessions are not
        documented as thread-safe."""
        client = getattr(self._local, "client", None)
        if client is None:
            from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
            from msrest.authentication import ApiKeyCredentials

            client = CustomVisionPredictionClient(
                self.endpoint, ApiKeyCredentials(in_headers={"Prediction-key": self._key}))
            # Retries are ours (counted, rate-limited, Retry-After aware); msrest's own urllib3
            # retries would hide throttling from the limiter and multiply the call count.
            client.config.retry_policy.retries = 0
            client.config.connection.timeout = self.timeout
            client.config.enable_http_logger = False  # it would log the Prediction-key header
            self._local.client = client
        return client

    def _tags(self, prediction) -> list[Tag]:
        best: dict[tuple[str, str], Tag] = {}
        boxed: list[Tag] = []
        for p in prediction.predictions or []:
            if p.probability is None or p.probability < self.threshold or p.tag_type == "Negative":
                continue
            box = _box(p.bounding_box)
            for group, label in self.mapping.map(self.name, p.tag_name or ""):
                tag = Tag(group, label, float(p.probability), self.name, box=box)
                if box is not None:
                    boxed.append(tag)  # each detected object is its own tag
                elif (group, label) not in best or best[group, label].confidence < tag.confidence:
                    best[group, label] = tag  # two provider tags may map to one catalog value
        return sorted(best.values(), key=lambda t: -t.confidence) + boxed

    # -- errors -------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> Outcome:
        from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorException
        from msrest.exceptions import ClientRequestError, DeserializationError

        if isinstance(exc, CustomVisionErrorException):
            return self._classify_http(exc)
        if isinstance(exc, ClientRequestError):
            if _is_name_resolution_error(exc):
                return Outcome(Kind.FATAL, f"Azure Custom Vision endpoint {self.endpoint} does not resolve; "
                                           f"check {SETTING_ENDPOINT}")
            return Outcome(Kind.TRANSIENT, f"connection to Custom Vision failed: {first_line(_root_message(exc))}")
        if isinstance(exc, DeserializationError):
            return Outcome(Kind.TRANSIENT, f"Custom Vision sent an unreadable answer: {first_line(str(exc))}")
        return Outcome(Kind.ITEM, first_line(f"{type(exc).__name__}: {exc}"))

    def _classify_http(self, exc) -> Outcome:
        status = getattr(exc.response, "status_code", 0) or 0
        code = getattr(exc.error, "code", None) or ""
        code = "" if code == str(status) else code  # the gateway's 401 body says code "401"
        said = first_line(f"{status} {code}: {exc.message}" if code else f"{status}: {exc.message}")
        fatal = self._fatal_message(status, str(code), said)
        if fatal:
            return Outcome(Kind.FATAL, fatal)
        if status == 429:
            return Outcome(Kind.THROTTLED, said, parse_retry_after(getattr(exc.response, "headers", None)))
        if status >= 500 or status == 408:
            return Outcome(Kind.TRANSIENT, said, parse_retry_after(getattr(exc.response, "headers", None)))
        return Outcome(Kind.ITEM, said)

    def _fatal_message(self, status: int, code: str, said: str) -> str | None:
        """Errors no retry or other image can fix: each names the setting to change."""
        where = f"Custom Vision at {self.endpoint}"
        if status == 401:
            return f"{where} rejected the prediction key ({said}); set {SETTING_KEY} to a key of this prediction resource"
        if status == 403:
            return f"{where} refused the calls ({said}); check {SETTING_KEY} and the resource's quota"
        lowered = f"{code} {said}".lower()
        if "iteration" in lowered or "publish" in lowered or code == "ErrorPredictionModelNotFound":
            if status in (400, 404):
                return f"{where}: no published iteration {self.iteration!r} ({said}); check {SETTING_ITERATION}"
        if code in ("NotFoundProject", "BadRequestInvalidIds") or (status == 404 and "project" in lowered):
            return f"{where}: no project {self.project_id} ({said}); check {SETTING_PROJECT}"
        if status == 404:
            return (f"{where} has no such prediction endpoint ({said}); check {SETTING_ENDPOINT}, "
                    f"{SETTING_PROJECT} and {SETTING_ITERATION}")
        return None


def fit_for_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_side: int = MAX_SIDE) -> tuple[bytes, bool]:
    """The image as Custom Vision will take it, and whether it had to be re-encoded.

    Too large (bytes or pixels) or in a format the service refuses: re-encoded as JPEG,
    shrinking until it fits. Otherwise the original bytes, untouched.
    """
    with Image.open(io.BytesIO(data)) as probe:
        fmt, size = probe.format, probe.size
    if len(data) <= max_bytes and fmt in ACCEPTED_FORMATS and max(size) <= max_side:
        return data, False
    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
    scale = min(1.0, max_side / max(img.size))
    while True:
        candidate = img if scale >= 1.0 else img.resize(
            (max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.LANCZOS)
        out = io.BytesIO()
        candidate.save(out, "JPEG", quality=90, optimize=True)
        if out.tell() <= max_bytes:
            return out.getvalue(), True
        # JPEG size grows about with the pixel count: aim just under the limit, at least 10% less.
        scale *= min(0.9, math.sqrt(max_bytes / out.tell()) * 0.95)


def _box(bb) -> Box | None:
    if bb is None:
        return None
    return Box(float(bb.left), float(bb.top), float(bb.width), float(bb.height))


def _setting_value(settings: "Settings", field: str) -> str:
    value = getattr(settings, field, None)
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return (value or "").strip()




def _is_name_resolution_error(exc: BaseException) -> bool:
    """A host name that does not resolve will not start resolving on a retry."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            return True
        stack.extend(e for e in (err.__cause__, err.__context__, getattr(err, "inner_exception", None),
                                 *[a for a in getattr(err, "args", ()) if isinstance(a, BaseException)],
                                 getattr(err, "reason", None))
                     if isinstance(e, BaseException))
    return False


def _root_message(exc: BaseException) -> str:
    inner = getattr(exc, "inner_exception", None)
    return f"{type(inner).__name__}: {inner}" if inner is not None else str(exc)
