"""A whole `toolkit tag --tagger auto` run over a bucket, with both clouds misbehaving.

    .venv/bin/python bench/cloud_run.py [--images 500] [--videos 20] [--azure-rate 20] [--gcp-rate 1]

Puts real product photos and short MP4s in a bucket on a local moto S3 server, starts the
fake Azure Custom Vision and Google Video Intelligence servers (tests/fakes) with 30% of
items throttled or failing once and a few items failing for good, then runs the real CLI
against them (real SDKs, real offline model, real Chroma store). Prints the run's own
summary and, counted at the fake servers, the calls each service received against its
configured rate. Writes bench/results/cloud_run.json. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from common import free_port, machine, say  # noqa: E402
from tests.fakes.azure_cv_server import FakeCustomVision  # noqa: E402
from tests.fakes.gcp_vi_server import FakeVideoIntelligence  # noqa: E402
from tests.helpers import write_mp4  # noqa: E402

BUCKET = "cloud-bench"
SHARE = 0.3
AZURE_FAULTS = ("throttle", "error", "unavailable", "drop", "malformed")
GCP_FAULTS = ("throttle", "unavailable", "internal", "poll_unavailable")


def fill_bucket(endpoint: str, images: int, videos: int, data_dir: Path) -> tuple[list[bytes], list[bytes]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    photos = sorted((data_dir / "images").glob("*.jpg"))[:images]
    image_bytes = []
    for p in photos:
        data = p.read_bytes()
        image_bytes.append(data)
        s3.put_object(Bucket=BUCKET, Key=f"images/{p.name}", Body=data)
    palette = [(200, 30, 30), (20, 20, 20), (40, 80, 200), (40, 150, 60), (240, 130, 30), (245, 245, 245)]
    video_bytes = []
    for i in range(videos):
        colours = (palette[i % 6], palette[(i + 1) % 6], (30 + 9 * i, 100, 160))
        data = write_mp4(colours=colours, seconds_each=2.0, fps=5, size=64)
        video_bytes.append(data)
        s3.put_object(Bucket=BUCKET, Key=f"videos/clip{i:02d}.mp4", Body=data)
    return image_bytes, video_bytes


#: Calls are timed where the fake server receives them, so the first and last may arrive a
#: little early or late against the limiter's spacing (the first also opens the connection).
ARRIVAL_SLACK = 2


def rate_check(times: list[float], rate: float) -> dict:
    """Calls received against the configured rate: overall, and in the busiest second.
    A token bucket of one allows rate x elapsed + 1 calls."""
    times = sorted(times)
    if not times:
        return {"calls": 0}
    elapsed = times[-1] - times[0]
    busiest = max(sum(1 for t in times[i:] if t < s + 1.0) for i, s in enumerate(times))
    allowed = rate * elapsed + 1
    return {"calls": len(times), "seconds": round(elapsed, 2), "configured_rate_per_s": rate,
            "allowed_by_rate": round(allowed, 1),
            "mean_rate_per_s": round((len(times) - 1) / elapsed, 2) if elapsed else None,
            "busiest_1s_window": busiest, "arrival_slack": ARRIVAL_SLACK,
            "within_rate": len(times) <= allowed + ARRIVAL_SLACK and busiest <= rate + 1 + ARRIVAL_SLACK}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--azure-rate", type=float, default=20.0, help="TOOLKIT_AZURE_RATE (S0 no-store quota: 20/s)")
    ap.add_argument("--gcp-rate", type=float, default=1.0, help="TOOLKIT_GCP_RATE (Google's quota: 60 a minute)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "TOOLKIT_SHARED_DATA", ROOT.parent / "shared" / "data" / "fashion-products")))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cloud_run.json")
    args = ap.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    azure = FakeCustomVision(retry_after=0.5).start()
    gcp = FakeVideoIntelligence(retry_after=0.5).start()
    try:
        say(f"filling s3://{BUCKET} on {s3_url} with {args.images} photos and {args.videos} videos ...")
        images, videos = fill_bucket(s3_url, args.images, args.videos, args.data)
        azure.fault_share(SHARE, AZURE_FAULTS)
        gcp.fault_share(SHARE, GCP_FAULTS)
        broken_images, broken_video = images[7:9], videos[3]
        for data in broken_images:
            azure.fail_always(data, "error")
        gcp.fail_always(broken_video, "op_error")

        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "TOOLKIT_DATA_DIR": str(Path(tmp) / "data"), "TOOLKIT_S3_ENDPOINT_URL": s3_url,
                   "TOOLKIT_AZURE_CV_ENDPOINT": azure.endpoint, "TOOLKIT_AZURE_CV_PREDICTION_KEY": azure.key,
                   "TOOLKIT_AZURE_CV_PROJECT_ID": azure.project_id, "TOOLKIT_AZURE_CV_ITERATION": azure.iteration,
                   "TOOLKIT_AZURE_RATE": str(args.azure_rate), "TOOLKIT_GCP_VI_ENDPOINT": gcp.endpoint,
                   "TOOLKIT_GCP_RATE": str(args.gcp_rate), "NO_GCE_CHECK": "true"}
            cmd = [str(Path(sys.executable).parent / "toolkit"), "tag", f"s3://{BUCKET}/", "--tagger", "auto"]
            say("$ " + " ".join(cmd[1:]))
            started = time.monotonic()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
            wall = time.monotonic() - started
        summary = [ln for ln in proc.stderr.splitlines() if ln.startswith(("tagged ", "  failed", "  skipped", "error:"))]

        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(cmd[1:]), "exit_code": proc.returncode, "wall_seconds": round(wall, 1),
            "items": {"images": len(images), "videos": len(videos)},
            "faults": {"share_failing_once": SHARE, "azure_kinds": AZURE_FAULTS, "gcp_kinds": GCP_FAULTS,
                       "azure_items_faulted_once": sum(azure.faulted_first_time(d) for d in images),
                       "gcp_items_faulted_once": sum(gcp.faulted_first_time(d) for d in videos),
                       "always_failing": {"azure": len(broken_images), "gcp": 1}},
            "summary": summary,
            "azure": {**rate_check([c.time for c in azure.calls], args.azure_rate),
                      "statuses": _count(str(c.status) for c in azure.calls),
                      "faults_served": _count(c.fault for c in azure.calls if c.fault)},
            "gcp": {**rate_check([c.time for c in gcp.calls], args.gcp_rate),
                    "annotate_calls": sum(c.method == "AnnotateVideo" for c in gcp.calls),
                    "status_checks": sum(c.method == "GetOperation" for c in gcp.calls),
                    "faults_served": _count(c.fault for c in gcp.calls if c.fault)},
        }
    finally:
        azure.stop()
        gcp.stop()
        moto.stop()

    print("\n".join(summary) or proc.stderr[-2000:])
    for name in ("azure", "gcp"):
        r = result[name]
        print(f"{name}: {r['calls']} calls in {r.get('seconds', 0)} s at a configured {r.get('configured_rate_per_s')}/s "
              f"(at most {r.get('allowed_by_rate')} allowed; busiest second {r.get('busiest_1s_window')}): "
              f"{'within' if r.get('within_rate') else 'OVER'} the rate; faults served {r['faults_served']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    say(f"wrote {args.out}")


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


if __name__ == "__main__":
    main()
