"""Ingestion: the embedder alone on pre-decoded batches (the limit), then `toolkit tag` end
to end over a folder and over the local S3 server, and peak memory against bucket size.

    .venv/bin/python bench/ingest.py [--photos 2000] [--repeats 3] [--memory-sizes 2000,8000]

The runs alternate, embedder alone between every two end-to-end runs (A F A S A F A S A ...),
and each end-to-end run is divided by the mean of the embedder-alone runs just before and
after it: a ratio within one stretch of time on a shared machine. Reported: medians with
p25-p75 over the repeats, the load average at each run, the CPU time each run took per image
(what the pipeline adds beyond the model), and the CPU time of the moto S3 server, which runs
on the same two cores (so part of the S3 gap is the server's, not the client's).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CACHE, ROOT, cpu_peak_gflops, photo_folder, photo_paths, say  # noqa: E402

#: EfficientNet-Lite0 at 224 px: 0.407 G multiply-adds (its paper's "FLOPs"), 2 operations each.
BACKBONE_GFLOP_PER_IMAGE = 0.814


def embedder():
    from bench_embedder import embedder as shipped

    return shipped()  # as `toolkit tag` builds it: the default settings (int8 backbone)


def cpu_s() -> float:
    """CPU time of this process, all threads (the model's, the pipeline's and the store's)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def embedder_alone(emb, n: int, batch: int = 32) -> dict:
    """Images a second through embed_images on photos decoded beforehand (no I/O, no store)."""
    from toolkit.media.decode import decode_image

    images = [decode_image(p.read_bytes(), name=str(p)) for p in photo_paths(n)]
    emb.embed_images(images[:batch])  # warm: sessions built, first-run allocations done
    load, c = os.getloadavg()[0], cpu_s()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        emb.embed_images(images[i:i + batch])
    seconds = time.perf_counter() - t0
    return {"images_per_s": round(n / seconds, 2), "seconds": round(seconds, 2),
            "cpu_ms_per_image": round((cpu_s() - c) * 1000 / n, 3), "load_1min": round(load, 2)}


def tag_run(emb, source: str, n: int, server_pid: int | None = None, **settings) -> dict:
    """One `toolkit tag` of `source` into a new store, with a warm model (loading is cold start's part)."""
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tk = Toolkit(load_settings(data_dir=Path(tmp), **settings), embedder=emb)
        tk.tag(str(photo_folder(32)))  # warm: store opened, tagger labels loaded
        load, c = os.getloadavg()[0], cpu_s()
        server = cpu_seconds(server_pid) if server_pid else 0.0
        t = time.perf_counter()
        report = tk.tag(source, tagger="local")
        seconds = time.perf_counter() - t
        assert report.new == n, f"tagged {report.new} of {n}"
    out = {"images_per_s": round(n / seconds, 2), "seconds": round(seconds, 2),
           "cpu_ms_per_image": round((cpu_s() - c) * 1000 / n, 3), "load_1min": round(load, 2)}
    if server_pid:
        out["server_cpu_s"] = round(cpu_seconds(server_pid) - server, 2)
    return out


def s3_bucket(n: int):
    """moto's S3 server in its own process (as a real S3 would be: not sharing our interpreter),
    holding n photos; returns (process, endpoint, uri)."""
    import os
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for _ in range(100):
        try:
            s3.create_bucket(Bucket="bench")
            break
        except Exception:  # not listening yet
            time.sleep(0.2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ip: s3.put_object(Bucket="bench", Key=f"photos/{ip[0]:05d}.jpg", Body=ip[1].read_bytes()),
                      enumerate(photo_paths(n))))
    return proc, endpoint, "s3://bench/photos/"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used: moto's share of the 2 cores in the S3 run."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_memory(n: int) -> float:
    """Peak RSS in MB of a fresh process that tags n photos from a folder."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def memory_child(n: int) -> None:
    from toolkit.core import Toolkit
    from toolkit.ground.settings import load_settings

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        Toolkit(load_settings(data_dir=Path(tmp))).tag(str(photo_folder(n)), tagger="local")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _spread(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.median(a)), 3), "p25": round(float(np.percentile(a, 25)), 3),
            "p75": round(float(np.percentile(a, 75)), 3), "n": len(a)}


def _summarise(runs: list[dict]) -> dict:
    """Median run figures (the keys bench/run_all.py reads) with their p25-p75, and every run."""
    out = {k: _spread([r[k] for r in runs]) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    return {"images_per_s": out["images_per_s"]["p50"], "seconds": out["seconds"]["p50"], "spread": out, "runs": runs}


def peak_estimate(emb, images_per_s: float, cpu_ms_per_image: float | None = None) -> dict:
    """The embedder's throughput as a share of the machine's arithmetic peak.

    Peak: cores x clock x operations a cycle. An fp32 FMA is 2 FLOPs; AVX-512 on Zen 4 runs
    as two 256-bit pipes, 16 fp32 FMAs (32 FLOPs) a cycle; an int8 VNNI dot product (VPDPBUSD)
    does 4 int8 multiply-adds in each 32-bit lane, so 4x that: 128 int8 operations a cycle.
    Work: EfficientNet-Lite0 at 224 px is 0.407 G multiply-adds an image (0.814 G operations).
    Counted as peak: only the backbone's multiply-adds, on the nominal clock of both vCPUs, as
    if both were full cores; the colour features, resizing and projection head are not counted
    as work, and depthwise convolutions and (de)quantisation cannot use VNNI at full rate."""
    peak, how = cpu_peak_gflops()
    int8 = emb.images.precision_used == "int8"
    if int8:  # VNNI does 4 int8 multiply-adds where FMA does one fp32
        peak, how = peak * 4, how + " x 4 (int8 VNNI)"
    out = {"machine_peak_gflops": round(peak, 1), "machine_peak": how,
           "embedder_gflops": round(images_per_s * BACKBONE_GFLOP_PER_IMAGE, 1),
           "share_of_peak": round(images_per_s * BACKBONE_GFLOP_PER_IMAGE / peak, 3)}
    if cpu_ms_per_image:
        # The same share per CPU-second the embedder got, which a shared machine's load moves less:
        # operations an image over CPU time an image, against one core's peak.
        per_core = peak / (os.cpu_count() or 1)
        out["share_of_peak_per_cpu_s"] = round(BACKBONE_GFLOP_PER_IMAGE / (cpu_ms_per_image / 1000) / per_core, 3)
    return {**out,
            "peak_note": " ".join((peak_estimate.__doc__ or "").split("\n\n", 1)[1].split())}


def run(photos: int = 2000, memory_sizes: tuple[int, ...] = (2000, 8000), repeats: int = 3) -> dict:
    emb = embedder()
    folder_uri = str(photo_folder(photos))
    say("ingest: starting the local S3 server")
    server, endpoint, uri = s3_bucket(photos)
    alone, folder, s3, folder_ratio, s3_ratio, s3_ratio_no_server = [], [], [], [], [], []
    try:
        alone.append(embedder_alone(emb, photos))
        for r in range(repeats):
            say(f"ingest: repeat {r + 1}/{repeats}: tag from a folder, then from the local S3 server, "
                f"the embedder alone around each (load {os.getloadavg()[0]:.2f})")
            folder.append(tag_run(emb, folder_uri, photos))
            alone.append(embedder_alone(emb, photos))
            folder_ratio.append(folder[-1]["images_per_s"] / np.mean([a["images_per_s"] for a in alone[-2:]]))
            s3.append(tag_run(emb, uri, photos, server_pid=server.pid, s3_endpoint_url=endpoint))
            alone.append(embedder_alone(emb, photos))
            limit = np.mean([a["images_per_s"] for a in alone[-2:]])
            s3_ratio.append(s3[-1]["images_per_s"] / limit)
            # Had the server's CPU time been free for us (a real S3 runs elsewhere): the 2 cores
            # would have finished the run that many core-seconds sooner. An estimate, not a run.
            last = s3[-1]
            freed = last["seconds"] - last["server_cpu_s"] / (os.cpu_count() or 1)
            s3_ratio_no_server.append(photos / freed / limit)
    finally:
        stop(server)
    a = _summarise(alone)
    result = {"photos": photos, "repeats": repeats, "embedder_alone": a["runs"],
              "embedder_images_per_s": a["images_per_s"], "embedder_spread": a["spread"],
              "tag_folder": _summarise(folder), "tag_s3": _summarise(s3),
              "runtime": f"{emb.runtime_used} {emb.images.precision_used or 'fp32'}",
              "folder_ratio": round(float(np.median(folder_ratio)), 3), "folder_ratio_spread": _spread(folder_ratio),
              "s3_ratio": round(float(np.median(s3_ratio)), 3), "s3_ratio_spread": _spread(s3_ratio),
              "s3_ratio_without_server_cpu": round(float(np.median(s3_ratio_no_server)), 3),
              "s3_server_cpu_s": _spread([r["server_cpu_s"] for r in s3])["p50"],
              **peak_estimate(emb, a["images_per_s"], a["spread"]["cpu_ms_per_image"]["p50"])}
    base = a["spread"]["cpu_ms_per_image"]["p50"]
    result["pipeline_cpu_share"] = {  # CPU the pipeline spends beyond the model, as a share of the run's
        name: round(1 - base / runs["spread"]["cpu_ms_per_image"]["p50"], 3)
        for name, runs in (("folder", result["tag_folder"]), ("s3", result["tag_s3"]))}
    if memory_sizes:
        say(f"ingest: peak memory for {memory_sizes}")
        mem = {n: peak_memory(n) for n in memory_sizes}
        result["peak_rss_mb"] = mem
        result["memory_ratio"] = round(mem[max(mem)] / mem[min(mem)], 3)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--memory-sizes", default="2000,8000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-child", type=int)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(a.memory_child)
    else:
        sizes = tuple(int(x) for x in a.memory_sizes.split(",") if x)
        print(json.dumps(run(a.photos, sizes, a.repeats), indent=1))
