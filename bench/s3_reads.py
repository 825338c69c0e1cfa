"""S3 clients compared: listing + reading a bucket of photos, and `toolkit tag` over it.

    .venv/bin/python bench/s3_reads.py [--photos 2000] [--repeats 3] [--tag] [--old PATH]

moto's server runs in its own process with the photos (as bench/ingest.py sets it up). Each
candidate lists the bucket and reads every object on 8 threads (the pipeline's io_workers);
reported: objects a second, this process's CPU per object and the server's CPU. With --tag,
the whole `tag` over S3 runs with each candidate as the S3 connector, the embedder alone
between runs, and each run is divided by the embedder-alone runs on either side (s3_ratio, as
bench/ingest.py does). Candidates run in turn within each repeat, so they share the load.

Candidates: "boto3" (connectors/s3.py as shipped), "obstore" (obstore's Rust client fed by boto3's
credential chain, listing and reading; skipped when obstore is not importable: try it with
`pip install --target DIR obstore==0.12.1` and DIR on PYTHONPATH), and "old" (any older
connectors/s3.py given by --old, e.g. the hand-signed GET it replaced).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from common import RESULTS, machine, say  # noqa: E402
from ingest import _spread, cpu_s, cpu_seconds, embedder, embedder_alone, s3_bucket, stop, tag_run  # noqa: E402


class ObstoreConnector:
    """The S3 connector's list/read over obstore, fed by boto3's credential chain: the candidate
    not shipped, kept measurable (errors are not translated)."""

    schemes = frozenset({"s3"})

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        self.endpoint_url, self.region, self._stores = endpoint_url, region or "us-east-1", {}

    def _store(self, bucket: str):
        if bucket not in self._stores:
            from obstore.auth.boto3 import Boto3CredentialProvider
            from obstore.store import S3Store

            extra = {"endpoint": self.endpoint_url, "virtual_hosted_style_request": False,
                     "client_options": {"allow_http": True}} if self.endpoint_url else {}
            self._stores[bucket] = S3Store(bucket, region=self.region, credential_provider=Boto3CredentialProvider(),
                                           **extra)
        return self._stores[bucket]

    def check(self, uri: str) -> None:
        pass

    def list(self, uri: str):
        import obstore

        from connectors.s3 import parse_s3_uri
        from toolkit.ground.models import MediaRef

        bucket, prefix = parse_s3_uri(uri)
        for batch in obstore.list(self._store(bucket), prefix=prefix or None):
            for obj in batch:
                key = obj["path"]
                rel = key[len(prefix):].lstrip("/") if prefix and key.startswith(prefix) else key
                yield MediaRef(uri=f"s3://{bucket}/{key}", key=rel, size=obj["size"],
                               fingerprint=(obj.get("e_tag") or "").strip('"') or None)

    def read(self, ref) -> bytes:
        import obstore

        from connectors.s3 import parse_s3_uri

        bucket, key = parse_s3_uri(ref.uri)
        return obstore.get(self._store(bucket), key).bytes().to_bytes()


def candidates(old: str | None) -> dict[str, Callable]:
    """name -> factory(endpoint_url=, region=) of a connector."""
    from connectors.s3 import S3Connector

    out: dict[str, Callable] = {"boto3": S3Connector}
    try:
        import obstore  # noqa: F401

        out["obstore"] = ObstoreConnector
    except ImportError:
        say("obstore is not importable: measuring without it")
    if old:
        spec = importlib.util.spec_from_file_location("old_s3", old)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out["old"] = mod.S3Connector
    return out


def list_and_read(cls, endpoint: str, uri: str, n: int, server_pid: int) -> dict:
    conn = cls(endpoint_url=endpoint, region="us-east-1")
    list(conn.list(uri))[:1]  # warm: client built, connections opened
    c, server, t = cpu_s(), cpu_seconds(server_pid), time.perf_counter()
    refs = list(conn.list(uri))
    listed = time.perf_counter() - t
    with ThreadPoolExecutor(8) as pool:
        size = sum(map(len, pool.map(conn.read, refs)))
    seconds = time.perf_counter() - t
    assert len(refs) == n, f"listed {len(refs)} of {n}"
    return {"objects_per_s": round(n / seconds, 1), "list_s": round(listed, 3), "seconds": round(seconds, 2),
            "client_cpu_ms_per_object": round((cpu_s() - c) * 1000 / n, 3),
            "server_cpu_s": round(cpu_seconds(server_pid) - server, 2), "mb": round(size / 1e6, 1),
            "load_1min": round(os.getloadavg()[0], 2)}


def run(photos: int, repeats: int, tag: bool, old: str | None) -> dict:
    import toolkit.registry as registry

    cands = candidates(old)
    server, endpoint, uri = s3_bucket(photos)
    reads = {name: [] for name in cands}
    tags = {name: [] for name in cands}
    ratios = {name: [] for name in cands}
    try:
        emb = embedder() if tag else None
        alone = [embedder_alone(emb, photos)] if tag else []
        for r in range(repeats):
            for name, cls in cands.items():
                say(f"s3: repeat {r + 1}/{repeats}, {name}: list + read (load {os.getloadavg()[0]:.2f})")
                reads[name].append(list_and_read(cls, endpoint, uri, photos, server.pid))
                if not tag:
                    continue
                registry.CONNECTORS["s3"] = lambda s, cls=cls: cls(endpoint_url=s.s3_endpoint_url, region=s.s3_region)
                say(f"s3: repeat {r + 1}/{repeats}, {name}: tag over S3")
                tags[name].append(tag_run(emb, uri, photos, server_pid=server.pid, s3_endpoint_url=endpoint))
                alone.append(embedder_alone(emb, photos))
                limit = np.mean([a["images_per_s"] for a in alone[-2:]])
                ratios[name].append(tags[name][-1]["images_per_s"] / limit)
    finally:
        stop(server)
    out: dict = {"photos": photos, "repeats": repeats, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "list_and_read": {n: {k: _spread([r[k] for r in runs]) for k in runs[0]} | {"runs": runs}
                                   for n, runs in reads.items()}}
    if tag:
        out["tag_s3"] = {n: {k: _spread([r[k] for r in runs]) for k in runs[0]} | {"runs": runs}
                         for n, runs in tags.items()}
        out["s3_ratio"] = {n: _spread(v) for n, v in ratios.items()}
        out["embedder_alone"] = alone
    return out


def perf_update(result: dict, choice: str, path=RESULTS / "perf.json") -> dict:
    """Put the chosen client's `tag` over S3 into perf.json's ingest figures (the keys
    bench/ingest.py writes and bench/run_all.py reads), saying where they came from."""
    names, alone = list(result["tag_s3"]), result["embedder_alone"]
    # Tag runs went repeat by repeat, candidate by candidate, each followed by an embedder-alone run.
    limits = [np.mean([alone[k]["images_per_s"], alone[k + 1]["images_per_s"]]) for k in range(len(alone) - 1)]
    mine = [k for k in range(len(limits)) if names[k % len(names)] == choice]
    runs = result["tag_s3"][choice]["runs"]
    cpus = result["machine"].get("cpus") or os.cpu_count() or 1
    base = float(np.median([a["cpu_ms_per_image"] for a in alone]))
    with open(path) as f:
        perf = json.load(f)
    ing = perf["ingest"]
    ing["tag_s3"] = {"images_per_s": _spread([r["images_per_s"] for r in runs])["p50"],
                     "seconds": _spread([r["seconds"] for r in runs])["p50"],
                     "spread": {k: _spread([r[k] for r in runs]) for k in runs[0]}, "runs": runs}
    ratios = [r["images_per_s"] / limits[k] for r, k in zip(runs, mine)]
    freed = [result["photos"] / (r["seconds"] - r["server_cpu_s"] / cpus) / limits[k] for r, k in zip(runs, mine)]
    ing["s3_ratio"], ing["s3_ratio_spread"] = round(float(np.median(ratios)), 3), _spread(ratios)
    ing["s3_ratio_without_server_cpu"] = round(float(np.median(freed)), 3)
    ing["s3_server_cpu_s"] = _spread([r["server_cpu_s"] for r in runs])["p50"]
    ing.setdefault("pipeline_cpu_share", {})["s3"] = round(
        1 - base / ing["tag_s3"]["spread"]["cpu_ms_per_image"]["p50"], 3)
    ing["s3_measured"] = (f"S3 figures: client {choice}, bench/s3_reads.py --tag at {result['at']} on "
                          f"{result['machine'].get('cpu', '?')} (the rest of ingest: an earlier run)")
    with open(path, "w") as f:
        json.dump(perf, f, indent=1)
        f.write("\n")
    return ing


def table(result: dict) -> str:
    rows = [f"{'client':8} {'objects/s':>10} {'client CPU ms/obj':>18} {'server CPU s':>13}"
            + (f" {'tag img/s':>10} {'s3_ratio':>9}" if "tag_s3" in result else "")]
    for name, r in result["list_and_read"].items():
        row = (f"{name:8} {r['objects_per_s']['p50']:>10} {r['client_cpu_ms_per_object']['p50']:>18} "
               f"{r['server_cpu_s']['p50']:>13}")
        if "tag_s3" in result:
            row += f" {result['tag_s3'][name]['images_per_s']['p50']:>10} {result['s3_ratio'][name]['p50']:>9}"
        rows.append(row)
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", action="store_true", help="also time `toolkit tag` over S3 with each candidate")
    ap.add_argument("--old", help="an older connectors/s3.py to measure alongside")
    ap.add_argument("--out", default=str(RESULTS / "s3_reads.json"))
    ap.add_argument("--from-json", help="report (and --perf) a result written before instead of measuring")
    ap.add_argument("--perf", help="the candidate whose tag-over-S3 figures go into bench/results/perf.json")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            result = json.load(f)
    else:
        result = run(a.photos, a.repeats, a.tag, a.old)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result))
    if a.perf:
        perf_update(result, a.perf)
