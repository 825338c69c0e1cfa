"""A local server that speaks the Custom Vision prediction API, so tests run the real SDK.

It answers `POST /customvision/v3.1/prediction/{project}/{classify|detect}/iterations/{name}/image[/nostore]`
with the service's response shape, checks the `Prediction-key` header, and reads the
`imageData` part out of the raw multipart body (the SDK sends it with no filename).

Tests steer it: reject the key, fail an item once or always in a chosen way, fault a share
of items on their first call, stall, drop the connection, send a garbled body. It records
every call (time, item, size, status) so a test can check retries, uploads and the rate.

Labels are a pure function of the image (`expected_tags`): the dominant colour of the
non-background pixels, plus one product label picked by the content hash.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from tests.fakes.faults import FaultSteering, key_of

PATH_RE = re.compile(r"^/customvision/v3\.1/prediction/(?P<project>[^/]+)/(?P<mode>classify|detect)"
                     r"/iterations/(?P<iteration>[^/]+)/image(?P<nostore>/nostore)?/?(\?.*)?$")

#: Product labels as a generic vision service names them; the last is in no mapping on purpose.
PRODUCT_LABELS = ("t-shirt", "dress", "sneakers", "handbag", "watch", "jeans", "sunglasses", "zorblax")
PALETTE = {
    "black": (20, 20, 20), "white": (245, 245, 245), "gray": (128, 128, 128), "red": (200, 30, 30),
    "blue": (40, 80, 200), "navy": (20, 30, 80), "green": (40, 150, 60), "yellow": (230, 210, 40),
    "pink": (240, 150, 180), "brown": (120, 70, 30), "orange": (240, 130, 30), "purple": (120, 50, 150),
    "beige": (220, 200, 160),
}
FAULTS = ("throttle", "error", "unavailable", "stall", "drop", "malformed", "bad_image")


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dominant_colour(img: Image.Image) -> tuple[str, tuple[float, float, float, float] | None]:
    """Nearest palette name to the mean colour of the non-white pixels, and their bounding box
    (fractions), or ("white", None) for a blank image."""
    arr = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.float32)
    fg = (arr < 235).any(axis=2)
    if fg.sum() < 20:
        return "white", None
    mean = arr[fg].mean(axis=0)
    name = min(PALETTE, key=lambda n: float(((np.array(PALETTE[n]) - mean) ** 2).sum()))
    ys, xs = np.nonzero(fg)
    box = (xs.min() / 64, ys.min() / 64, (xs.max() + 1 - xs.min()) / 64, (ys.max() + 1 - ys.min()) / 64)
    return name, tuple(round(float(v), 4) for v in box)


def product_label(data: bytes) -> str:
    return PRODUCT_LABELS[int(sha_of(data)[:8], 16) % len(PRODUCT_LABELS)]


def expected_tags(data: bytes) -> list[dict]:
    """What the fake predicts for an image: tagName, probability and (for detect) boundingBox."""
    with Image.open(io.BytesIO(data)) as img:
        colour, box = dominant_colour(img)
    box_json = dict(zip(("left", "top", "width", "height"), box or (0.0, 0.0, 1.0, 1.0)))
    return [
        {"tagName": product_label(data), "probability": 0.91, "boundingBox": box_json},
        {"tagName": colour, "probability": 0.83, "boundingBox": box_json},
        {"tagName": "background-noise", "probability": 0.04, "boundingBox": box_json},
    ]


@dataclass
class Call:
    time: float
    path: str
    mode: str
    stored: bool
    sha: str | None
    size: int
    status: int = 0
    fault: str | None = None


@dataclass
class FakeCustomVision(FaultSteering):
    key: str = "test-prediction-key"
    project_id: str = "0f1e2d3c-0000-4000-8000-00000000c0de"
    iteration: str = "prod"
    retry_after: float = 0.05  # seconds asked for in a 429 (sent as Retry-After and retry-after-ms)
    stall_seconds: float = 3.0
    reject_key: bool = False
    calls: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)

    FAULTS = FAULTS
    DEFAULT_ONCE = "error"
    DEFAULT_ALWAYS = "error"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._init_faults()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FakeCustomVision":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-azure-cv", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    # -- steering -----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            for collection in (self.calls, self.uploads):
                collection.clear()
            self.reject_key = False
        self.clear_faults()

    # -- what happened ------------------------------------------------------------------

    def calls_for(self, item: bytes | str) -> list[Call]:
        key = key_of(item)
        return [c for c in self.calls if c.sha == key]

    def call_times(self) -> list[float]:
        return sorted(c.time for c in self.calls)

    # -- the service --------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


def _handler_for(fake: FakeCustomVision) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            now = time.monotonic()
            self._call = None  # one handler serves every request on a kept-alive connection
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = PATH_RE.match(self.path)
            if not match:
                return self._json(404, {"code": "404", "message": "Resource not found"})
            image = _image_part(self.headers.get("Content-Type", ""), body)
            sha = sha_of(image) if image is not None else None
            self._call = Call(now, self.path, match["mode"], not match["nostore"], sha, len(image or b""))
            fake._record(self._call)
            self._answer(match, image, sha, self._call)

        def _answer(self, match: re.Match, image: bytes | None, sha: str | None, call: Call) -> int:
            if fake.reject_key or self.headers.get("Prediction-Key") != fake.key:
                return self._json(401, {"code": "401", "message": "Access denied due to invalid subscription key "
                                        "or wrong API endpoint. Make sure to provide a valid key for an active "
                                        "subscription and use a correct regional API endpoint for your resource."})
            if match["project"] != fake.project_id:
                return self._json(404, {"code": "NotFound", "message": "Project not found."})
            if match["iteration"] != fake.iteration:
                return self._json(404, {"code": "NotFoundIteration",
                                        "message": f"Iteration '{match['iteration']}' not found or not published."})
            if image is None:
                return self._json(400, {"code": "BadRequestImageStream", "message": "No image data."})
            fault = fake._next_fault(sha)
            call.fault = fault
            if fault is None and len(image) > 4 * 1024 * 1024:
                fault = "too_big"
            if fault is not None:
                return self._fault(fault)
            fake.uploads[sha] = image
            return self._json(200, _prediction(match, image))

        def _fault(self, fault: str) -> int:
            if fault == "throttle":
                return self._json(429, {"code": "429", "message": "Rate limit is exceeded. Try again in 1 seconds."},
                                  {"Retry-After": str(max(1, round(fake.retry_after))),
                                   "retry-after-ms": str(int(fake.retry_after * 1000))})
            if fault == "error":
                return self._json(500, {"code": "InternalServerError", "message": "An unexpected error occurred (fake)."})
            if fault == "unavailable":
                return self._json(503, {"code": "ServiceUnavailable", "message": "The service is temporarily unavailable."})
            if fault == "bad_image":
                return self._json(400, {"code": "BadRequestImageFormat", "message": "Bad Request Image Format, "
                                        "Uri: fake"})
            if fault == "too_big":
                return self._json(400, {"code": "BadRequestImageSizeBytes", "message": "Image size is too large."})
            if fault == "stall":
                time.sleep(fake.stall_seconds)
                self.close_connection = True
                return 0
            if fault == "drop":
                self.close_connection = True  # no response at all: the client sees a dropped connection
                return 0
            # malformed: a 200 whose body is not the promised JSON
            return self._raw(200, b'{"id": "x", "predictions": [{"probability": ', "application/json")

        def _json(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> int:
            return self._raw(status, json.dumps(doc).encode(), "application/json", headers)

        def _raw(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> int:
            if getattr(self, "_call", None) is not None:
                self._call.status = status  # before the client can see the answer
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            return status

    return Handler


def _prediction(match: re.Match, image: bytes) -> dict:
    detect = match["mode"] == "detect"
    predictions = []
    for i, t in enumerate(expected_tags(image)):
        predictions.append({
            "probability": t["probability"], "tagId": f"00000000-0000-4000-8000-{i:012d}",
            "tagName": t["tagName"], "boundingBox": t["boundingBox"] if detect else None,
            "tagType": "Regular",
        })
    return {"id": "11111111-2222-4333-8444-555555555555", "project": match["project"],
            "iteration": "66666666-7777-4888-8999-000000000000",
            "created": "2026-01-01T00:00:00.000Z", "predictions": predictions}


def _image_part(content_type: str, body: bytes) -> bytes | None:
    """The bytes of the `imageData` part of a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return None
    for part in body.split(b"--" + m.group(1).encode()):
        head, sep, content = part.partition(b"\r\n\r\n")
        if sep and b'name="imageData"' in head:
            return content[:-2] if content.endswith(b"\r\n") else content
    return None


