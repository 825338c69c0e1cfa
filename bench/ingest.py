"""Ingestion: the embedder alone on pre-decoded batches (the limit), then `toolkit tag` end
to end over a folder and over the local S3 server, and peak memory against bucket size.

    .venv/bin/python bench/ingest.py [--photos 2000] [--memory-sizes 2000,8000]
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

from common import CACHE, ROOT, cpu_peak_gflops, photo_folder, photo_paths, say, summary  # noqa: E402

#: EfficientNet-Lite0 at 224 px: 0.407 G multiply-adds (its paper's "FLOPs"), 2 FLOPs each.
BACKBONE_GFLOP_PER_IMAGE = 0.814


def embedder():
    from bench_embedder import embedder as shipped

    return shipped()  # as `toolkit tag` builds it: the default settings (int8 backbone)


def embedder_alone(emb, n: int, batch: int = 32) -> dict:
    """Images a second through embed_images on photos decoded beforehand (no I/O, no store)."""
    from toolkit.media import decode_image

    images = [decode_image(p.read_bytes(), name=str(p)) for p in photo_paths(n)]
    emb.embed_images(images[:batch])  # warm: sessions built, first-run allocations done
    rates, t0 = [], time.perf_counter()
    for i in range(0, n, batch):
        t = time.perf_counter()
        emb.embed_images(images[i:i + batch])
        rates.append(len(images[i:i + batch]) / (time.perf_counter() - t))
    return {"images_per_s": round(n / (time.perf_counter() - t0), 2), "batch_rate": summary(rates)}


def tag_run(emb, source: str, n: int, **settings) -> dict:
    """One `toolkit tag` of `source` into a new store, with a warm model (loading is cold start's part)."""
    from toolkit.core import Toolkit
    from toolkit.settings import load_settings

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tk = Toolkit(load_settings(data_dir=Path(tmp), **settings), embedder=emb)
        tk.tag(str(photo_folder(32)))  # warm: store opened, tagger labels loaded
        t = time.perf_counter()
        report = tk.tag(source, tagger="local")
        seconds = time.perf_counter() - t
        assert report.new == n, f"tagged {report.new} of {n}"
    return {"images_per_s": round(n / seconds, 2), "seconds": round(seconds, 2)}


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
    from toolkit.settings import load_settings

    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        Toolkit(load_settings(data_dir=Path(tmp))).tag(str(photo_folder(n)), tagger="local")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run(photos: int = 2000, memory_sizes: tuple[int, ...] = (2000, 8000)) -> dict:
    emb = embedder()
    say(f"ingest: embedder alone on {photos} pre-decoded photos")
    alone = [embedder_alone(emb, photos)]
    say("ingest: toolkit tag from a folder")
    folder = tag_run(emb, str(photo_folder(photos)), photos)
    alone.append(embedder_alone(emb, photos))
    say("ingest: toolkit tag from the local S3 server")
    server, endpoint, uri = s3_bucket(photos)
    try:
        cpu = cpu_seconds(server.pid)
        s3 = tag_run(emb, uri, photos, s3_endpoint_url=endpoint)
        s3["server_cpu_s"] = round(cpu_seconds(server.pid) - cpu, 2)
    finally:
        stop(server)
    alone.append(embedder_alone(emb, photos))
    limit = sorted(a["images_per_s"] for a in alone)[1]  # the median of three, around both runs
    peak, how = cpu_peak_gflops()
    int8 = emb.images.precision_used == "int8"
    if int8:  # VNNI does 4 int8 multiply-adds where FMA does one fp32
        peak, how = peak * 4, how + " x 4 (int8 VNNI)"
    result = {"photos": photos, "embedder_alone": alone, "embedder_images_per_s": limit,
              "tag_folder": folder, "tag_s3": s3, "runtime": f"{emb.runtime_used} {emb.images.precision_used or 'fp32'}",
              "folder_ratio": round(folder["images_per_s"] / limit, 3),
              "s3_ratio": round(s3["images_per_s"] / limit, 3),
              "machine_peak_gflops": round(peak, 1), "machine_peak": how,
              "s3_server_cpu_s": s3.pop("server_cpu_s"),
              "embedder_gflops": round(limit * BACKBONE_GFLOP_PER_IMAGE, 1),
              "share_of_peak": round(limit * BACKBONE_GFLOP_PER_IMAGE / peak, 3)}
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
    ap.add_argument("--memory-child", type=int)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(a.memory_child)
    else:
        sizes = tuple(int(x) for x in a.memory_sizes.split(",") if x)
        print(json.dumps(run(a.photos, sizes), indent=1))
