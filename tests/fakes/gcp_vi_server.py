"""A local gRPC server that speaks Video Intelligence's AnnotateVideo and the long-running
Operations API, so tests run the real `google-cloud-videointelligence` client; and a local
Cloud Storage JSON endpoint for staged uploads (point STORAGE_EMULATOR_HOST at it).

AnnotateVideo returns an operation that finishes after `polls_to_finish` GetOperation
calls, with an AnnotateVideoResponse packed as Any. The answer is a pure function of the
video (`analyse`): one shot per solid-colour scene, a shot label naming each scene's
colour, and one segment label (with a category) picked by the content hash. Videos named
by gs:// URI are read from the fake bucket when staged there, otherwise labelled by URI.

Tests steer it per item (content hash or URI): throttle (RESOURCE_EXHAUSTED with
RetryInfo), unavailable, internal, stall, malformed reply, an operation that never
finishes or ends in error, a bad video; or reject every call's credentials. Every call is
recorded with its time, so tests can check retries and the rate.
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import grpc
import numpy as np
from google.cloud import videointelligence_v1 as vi
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.fakes.azure_cv_server import PALETTE
from tests.fakes.faults import FaultSteering, key_of

SERVICE = "google.cloud.videointelligence.v1.VideoIntelligenceService"
OPERATIONS = "google.longrunning.Operations"
RESPONSE_TYPE = "type.googleapis.com/google.cloud.videointelligence.v1.AnnotateVideoResponse"
#: Segment labels and their category, as Google names them; the last maps to nothing on purpose.
VIDEO_LABELS = (("dress", "clothing"), ("t-shirt", "clothing"), ("sneakers", "footwear"),
                ("handbag", "bag"), ("zorblax", "gizmo"))
FAULTS = ("throttle", "unavailable", "internal", "stall", "malformed", "never_done", "op_error",
          "bad_video", "poll_unavailable")


def itemkey_of(content: bytes | None, uri: str | None) -> str:
    return hashlib.sha256(content).hexdigest() if content else (uri or "")


@dataclass
class Scene:
    start: float
    end: float
    colour: str


@dataclass
class Analysis:
    label: str
    category: str
    duration: float
    scenes: list[Scene]


def analyse(content: bytes | None, uri: str = "") -> Analysis:
    """What the fake says about a video (tests call it to know what to expect)."""
    key = itemkey_of(content, uri)
    label, category = VIDEO_LABELS[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(VIDEO_LABELS)]
    if not content:
        return Analysis(label, category, 10.0, [Scene(0.0, 5.0, "gray"), Scene(5.0, 10.0, "gray")])
    scenes, duration = _scenes(content)
    return Analysis(label, category, duration, scenes)


def _scenes(content: bytes) -> tuple[list[Scene], float]:
    import av

    scenes: list[Scene] = []
    last_mean = None
    t = step = 0.0
    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.video[0]
        step = 1.0 / float(stream.average_rate or 25)
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
            if last_mean is None or np.abs(mean - last_mean).max() > 40:
                if scenes:
                    scenes[-1].end = t
                scenes.append(Scene(t, t, _colour_name(mean)))
            last_mean = mean
    duration = round(t + step, 3)
    if scenes:
        scenes[-1].end = duration
    return scenes, duration


def _colour_name(mean: np.ndarray) -> str:
    return min(PALETTE, key=lambda n: float(((np.array(PALETTE[n]) - mean) ** 2).sum()))


@dataclass
class Call:
    time: float
    method: str  # "AnnotateVideo" or "GetOperation"
    item: str
    fault: str | None = None
    size: int = 0


@dataclass
class _Op:
    item: str
    polls_left: int
    response: bytes | None = None
    error: tuple[int, str] | None = None
    never_done: bool = False
    poll_faults: list[str] = field(default_factory=list)


@dataclass
class FakeVideoIntelligence(FaultSteering):
    polls_to_finish: int = 1
    retry_after: float = 0.05  # RetryInfo sent with RESOURCE_EXHAUSTED
    stall_seconds: float = 3.0
    reject_key: bool = False
    deny_permission: bool = False
    calls: list[Call] = field(default_factory=list)

    FAULTS = FAULTS
    DEFAULT_ONCE = "unavailable"
    DEFAULT_ALWAYS = "op_error"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._init_faults()
        self._ops: dict[str, _Op] = {}
        self._server: grpc.Server | None = None
        self.port = 0
        self.storage = FakeStorage()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FakeVideoIntelligence":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                             options=[("grpc.max_receive_message_length", 64 << 20)])
        raw = {"request_deserializer": lambda b: b, "response_serializer": lambda b: b}
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(SERVICE, {
                "AnnotateVideo": grpc.unary_unary_rpc_method_handler(self._annotate, **raw)}),
            grpc.method_handlers_generic_handler(OPERATIONS, {
                "GetOperation": grpc.unary_unary_rpc_method_handler(self._get_operation, **raw)}),
        ))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.storage.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        self.storage.stop()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- steering -----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            for collection in (self._ops, self.calls):
                collection.clear()
            self.reject_key = self.deny_permission = False
        self.clear_faults()
        self.storage.objects.clear()
        self.storage.uploads.clear()
        self.storage.deletes.clear()

    # -- what happened ------------------------------------------------------------------

    def calls_for(self, item: bytes | str, method: str = "AnnotateVideo") -> list[Call]:
        key = key_of(item)
        return [c for c in self.calls if c.item == key and c.method == method]

    def call_times(self) -> list[float]:
        return sorted(c.time for c in self.calls)

    # -- the service --------------------------------------------------------------------

    def _annotate(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = vi.AnnotateVideoRequest.deserialize(raw)
        content = bytes(request.input_content) or None
        key = itemkey_of(content, request.input_uri)
        call = Call(time.monotonic(), "AnnotateVideo", key, size=len(raw))
        with self._lock:
            self.calls.append(call)
        self._check_auth(context)
        fault = call.fault = self._next_fault(key)
        if fault in ("throttle", "unavailable", "internal", "bad_video"):
            self._abort(context, fault)
        if fault == "stall":
            time.sleep(self.stall_seconds)
            self._abort(context, "unavailable")
        if fault == "malformed":
            return b"\xff\xff\xff not an Operation"
        if content is None and request.input_uri.startswith("gs://"):
            content = self.storage.objects.get(request.input_uri)
            if content is None and request.input_uri.startswith(f"gs://{self.storage.bucket}/"):
                self._abort(context, "not_found")
        op = _Op(key, self.polls_to_finish, never_done=fault == "never_done")
        if fault == "op_error":
            op.error = (code_pb2.INTERNAL, "Video processing failed: the video could not be decoded (fake).")
        else:
            op.response = _response(request.input_uri, content).SerializeToString()
        if fault == "poll_unavailable":
            op.poll_faults.append("unavailable")
        name = f"projects/fake/locations/us-east1/operations/{len(self._ops) + 1}-{key[:12]}"
        with self._lock:
            self._ops[name] = op
        return self._operation(name, op).SerializeToString()

    def _get_operation(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = operations_pb2.GetOperationRequest.FromString(raw)
        with self._lock:
            op = self._ops.get(request.name)
            self.calls.append(Call(time.monotonic(), "GetOperation", op.item if op else request.name))
        self._check_auth(context)
        if op is None:
            self._abort(context, "not_found")
        if op.poll_faults:
            self._abort(context, op.poll_faults.pop(0))
        if op.polls_left > 0:
            op.polls_left -= 1
        return self._operation(request.name, op).SerializeToString()

    def _operation(self, name: str, op: _Op) -> operations_pb2.Operation:
        done = op.polls_left <= 0 and not op.never_done
        out = operations_pb2.Operation(name=name, done=done)
        if done and op.error:
            out.error.CopyFrom(status_pb2.Status(code=op.error[0], message=op.error[1]))
        elif done:
            out.response.CopyFrom(any_pb2.Any(type_url=RESPONSE_TYPE, value=op.response))
        return out

    def _check_auth(self, context: grpc.ServicerContext) -> None:
        if self.reject_key:
            self._abort(context, "unauthenticated")
        if self.deny_permission:
            self._abort(context, "permission_denied")

    def _abort(self, context: grpc.ServicerContext, what: str) -> None:
        code, message = {
            "throttle": (code_pb2.RESOURCE_EXHAUSTED, "Quota exceeded for quota metric 'Requests' and limit "
                         "'Requests per minute' of service 'videointelligence.googleapis.com'."),
            "unavailable": (code_pb2.UNAVAILABLE, "The service is currently unavailable."),
            "internal": (code_pb2.INTERNAL, "Internal error encountered."),
            "bad_video": (code_pb2.INVALID_ARGUMENT, "Invalid video content: unsupported codec (fake)."),
            "not_found": (code_pb2.NOT_FOUND, "The requested object was not found."),
            "unauthenticated": (code_pb2.UNAUTHENTICATED, "Request had invalid authentication credentials. "
                                "Expected OAuth 2 access token, login cookie or other valid authentication credential."),
            "permission_denied": (code_pb2.PERMISSION_DENIED, "Cloud Video Intelligence API has not been used in "
                                  "project fake before or it is disabled."),
        }[what]
        status = status_pb2.Status(code=code, message=message)
        if what == "throttle":
            delay = duration_pb2.Duration(seconds=int(self.retry_after), nanos=int(self.retry_after % 1 * 1e9))
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status.details.append(detail)
        context.abort_with_status(rpc_status.to_status(status))


def _response(uri: str, content: bytes | None) -> vi.AnnotateVideoResponse:
    a = analyse(content, uri)

    def seg(start: float, end: float) -> vi.VideoSegment:
        return vi.VideoSegment(start_time_offset=timedelta(seconds=start), end_time_offset=timedelta(seconds=end))

    whole = vi.LabelAnnotation(
        entity=vi.Entity(entity_id="/m/fake", description=a.label, language_code="en-US"),
        category_entities=[vi.Entity(entity_id="/m/fakecat", description=a.category, language_code="en-US")],
        segments=[vi.LabelSegment(segment=seg(0.0, a.duration), confidence=0.87)])
    by_colour: dict[str, list[Scene]] = {}
    for scene in a.scenes:
        by_colour.setdefault(scene.colour, []).append(scene)
    shot_labels = [vi.LabelAnnotation(entity=vi.Entity(description=colour, language_code="en-US"),
                                      segments=[vi.LabelSegment(segment=seg(s.start, s.end), confidence=0.76)
                                                for s in scenes])
                   for colour, scenes in by_colour.items()]
    result = vi.VideoAnnotationResults(input_uri=uri or "/inline", segment=seg(0.0, a.duration),
                                       segment_label_annotations=[whole], shot_label_annotations=shot_labels,
                                       shot_annotations=[seg(s.start, s.end) for s in a.scenes])
    return vi.AnnotateVideoResponse(annotation_results=[result])._pb


class FakeStorage:
    """Just enough of the Cloud Storage JSON API for staging: media upload and delete."""

    def __init__(self, bucket: str = "staging-bucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.uploads: list[str] = []
        self.deletes: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _storage_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-gcs", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"


def _storage_handler(store: FakeStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = url.path.split("/")  # /upload/storage/v1/b/{bucket}/o
            if len(parts) != 7 or parts[5] != store.bucket:
                return self._reply(404, b'{"error": {"code": 404, "message": "The specified bucket does not exist."}}')
            name = parse_qs(url.query)["name"][0]
            uri = f"gs://{store.bucket}/{name}"
            store.objects[uri] = body
            store.uploads.append(uri)
            self._reply(200, b'{"kind": "storage#object", "name": "%s"}' % name.encode())

        def do_DELETE(self) -> None:  # noqa: N802
            parts = urlparse(self.path).path.split("/")  # /storage/v1/b/{bucket}/o/{name}
            uri = f"gs://{parts[4]}/{unquote('/'.join(parts[6:]))}"
            found = store.objects.pop(uri, None) is not None
            store.deletes.append(uri)
            self._reply(204 if found else 404, b"")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler




