"""Recommendation benchmarks: a table on stdout, JSON in bench/results/recommend.json.

    python bench/recommend.py [--events 1000000] [--baskets 1000000] [--scale 0.1] [--requests 300]

- train: `Recommender.train()` on the H&M sample (../shared/data/hm), per step;
- api: GET /api/recommend/{together,user,trending} through a real uvicorn, p50 and p99;
- import: N synthetic events from a CSV into DuckDB;
- rules: FP-Growth (mlxtend) over N synthetic baskets, time and peak memory;
- miners: mlxtend's FP-Growth and Apriori against efficient-apriori, same baskets, same rules?;
- eval: `toolkit recommend eval` on H&M with the shipped model's vectors of its photos (content picks);
- tune: the two-tower's settings and weight and cold start's segment lists, scored on the weeks before
  those `eval` reports (bench/results/recommend-tune.json);
- scale: `train` on synthetic data shaped like the full H&M data (31M purchases, 1.4M customers,
  105k articles) times --scale.
Each heavy job runs in its own process, so its peak memory (ru_maxrss) is its own.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HM = Path(os.environ.get("TOOLKIT_HM_DATA", ROOT.parent / "shared" / "data" / "hm"))
RESULTS = ROOT / "bench" / "results"


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    return {"model": model, "cores": os.cpu_count(), "python": platform.python_version(),
            **{f: f in flags for f in ("avx2", "avx512f", "avx512_vnni")}}


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def isolated(fn, *args) -> dict:
    """Run fn(*args) -> dict in a fresh process; add its peak memory."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_wrapped, (fn, args))


def _wrapped(fn, args) -> dict:
    result = fn(*args)
    result["peak_mb"] = peak_mb()
    return result


# -- jobs ------------------------------------------------------------------------------------------

def hm_recommender(data_dir: Path):
    from toolkit.recommend.service import Recommender

    rec = Recommender(data_dir)
    rec.import_items(HM / "articles.csv")
    rec.import_users(HM / "customers.csv")
    rec.import_events(HM / "transactions.csv")
    return rec


def job_train(data_dir: str) -> dict:
    rec = hm_recommender(Path(data_dir))
    vectors = content_vectors("joined")  # as the store would give them: content picks are part of what is served
    rec._vectors = lambda: vectors
    started = time.perf_counter()
    report = rec.train()
    return {"seconds": round(time.perf_counter() - started, 2), "events": report.events, "steps": report.steps}


def job_import(n: int) -> dict:
    import numpy as np
    import pandas as pd

    from toolkit.recommend.events import EventStore
    from toolkit.recommend.sources import read_source

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        start = np.datetime64("2020-01-01T00:00:00")
        pd.DataFrame({"user_id": rng.integers(0, n // 20 + 1, n).astype(str),
                      "item_id": (rng.zipf(1.3, n) % 100_000).astype(str),
                      "timestamp": (start + rng.integers(0, 365 * 86400, n).astype("timedelta64[s]")).astype(str),
                      "event_type": rng.choice(["view", "cart", "purchase"], n, p=[0.7, 0.2, 0.1]),
                      "price": rng.random(n).round(2)}).to_csv(path, index=False)
        store = EventStore(Path(tmp) / "events.duckdb")
        started = time.perf_counter()
        report = store.import_events(read_source(path))
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = store.import_events(read_source(path))
        return {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                "added": report.added, "merged": len(report.merged),
                "reimport_seconds": round(time.perf_counter() - started, 2), "reimport_added": again.added}


def synthetic_baskets(n: int, items: int, seed: int = 0) -> list[list[str]]:
    """Baskets of 1-8 items, item popularity Zipf-like, with planted pairs bought together."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.45, n), 8)
    flat = (rng.zipf(1.2, sizes.sum()) % items).astype(np.int64)
    out, pos = [], 0
    for size in sizes:
        basket = {int(i) for i in flat[pos:pos + size]}
        pos += size
        first = next(iter(basket))
        if first % 7 == 0:
            basket.add((first * 31 + 1) % items)  # a complement
        out.append([str(i) for i in basket])
    return out


def job_rules(n: int, min_support: float) -> dict:
    from toolkit.recommend.rules import mine_rules

    found = synthetic_baskets(n, 10_500)
    started = time.perf_counter()
    rules = mine_rules(found, min_support=min_support, min_confidence=0.1)
    return {"baskets": n, "min_support": min_support, "seconds": round(time.perf_counter() - started, 2),
            "rules": len(rules)}


def job_miners(source: str, min_support: float, min_confidence: float) -> dict:
    """mlxtend's FP-Growth and Apriori against efficient-apriori on the same baskets: time, rules, agreement."""
    from efficient_apriori import apriori as ea_apriori

    from toolkit.recommend.baskets import baskets
    from toolkit.recommend.rules import mine_rules

    if source == "hm":
        import tempfile as tf

        with tf.TemporaryDirectory() as tmp:
            found = baskets(hm_recommender(Path(tmp)).events.frame())
    else:
        found = synthetic_baskets(int(source), 10_500)
    out: dict = {"baskets": len(found), "min_support": min_support, "min_confidence": min_confidence}
    sets = {}
    for name in ("fpgrowth", "apriori"):
        started = time.perf_counter()
        try:
            rules = mine_rules(found, min_support, min_confidence, algorithm=name)
        except MemoryError as exc:  # mlxtend's Apriori tests candidates on a dense baskets x candidates array
            out[f"mlxtend {name}"] = {"seconds": round(time.perf_counter() - started, 2), "rules": None,
                                      "error": str(exc)}
            continue
        out[f"mlxtend {name}"] = {"seconds": round(time.perf_counter() - started, 2), "rules": len(rules)}
        sets[name] = {(r.antecedents, r.consequents): (r.support, r.confidence) for r in rules}
    started = time.perf_counter()
    _, rules = ea_apriori([tuple(b) for b in found], min_support=min_support, min_confidence=min_confidence)
    out["efficient-apriori"] = {"seconds": round(time.perf_counter() - started, 2), "rules": len(rules)}
    sets["efficient"] = {(tuple(sorted(r.lhs)), tuple(sorted(r.rhs))): (r.support, r.confidence) for r in rules}
    ref = sets["fpgrowth"]
    out["same_rules"] = all(
        other.keys() == ref.keys() and all(abs(ref[k][0] - other[k][0]) < 1e-9 and abs(ref[k][1] - other[k][1]) < 1e-9
                                           for k in ref)
        for other in sets.values())
    out["compared"] = sorted(sets)
    return out


def job_scale(scale: float) -> dict:
    """Train on purchases shaped like the full H&M data times `scale`."""
    import numpy as np
    import pandas as pd

    from toolkit.recommend.models import build

    rng = np.random.default_rng(0)
    purchases, users, items = int(31_000_000 * scale), int(1_370_000 * scale), int(105_000 * scale)
    user = rng.zipf(1.5, purchases) % users
    item = rng.zipf(1.1, purchases) % items
    start = np.datetime64("2018-09-20")
    ts = start + rng.integers(0, 730, purchases).astype("timedelta64[D]")
    events = pd.DataFrame({"user_id": user.astype(str), "item_id": item.astype(str),
                           "event_type": "purchase", "ts": ts.astype("datetime64[us]"), "basket_id": None,
                           "quantity": 1.0, "price": None}).sort_values("ts", ignore_index=True)
    started = time.perf_counter()
    models = build(events, pd.Timestamp("2020-09-23").to_pydatetime(), "bench", {}, {})
    return {"scale": scale, "purchases": purchases, "users": users, "items": items,
            "seconds": round(time.perf_counter() - started, 1), "steps": models.seconds}


def api_latency(data_dir: Path, requests: int) -> dict:
    import httpx
    import uvicorn

    from toolkit.faces.api import create_app
    from toolkit.core import Toolkit

    tk = Toolkit(data_dir=data_dir)
    rec = tk.recommend
    vectors = content_vectors("joined")
    rec._vectors = lambda: vectors
    rec.train()  # again, beside the Toolkit's collection: models built without one are refused for it
    models = rec.models()
    product = max(models.complements, key=lambda p: len(models.complements[p]))
    users = rec.events.frame()["user_id"].drop_duplicates().tolist()[:requests]
    server = uvicorn.Server(uvicorn.Config(create_app(tk), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    out = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        paths = {"together": lambda i: f"/api/recommend/together/{product}",
                 "user": lambda i: f"/api/recommend/user/{users[i % len(users)]}",
                 "trending": lambda i: "/api/recommend/trending"}
        for name, path in paths.items():
            for i in range(5):
                c.get(path(i)).raise_for_status()
            samples = []
            for i in range(requests):
                started = time.perf_counter()
                c.get(path(i)).raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
            samples.sort()
            out[name] = {"p50_ms": round(statistics.median(samples), 2),
                         "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
                         "n": len(samples)}
    server.should_exit = True
    thread.join(5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baskets", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--min-support", type=float, default=0.001)
    parser.add_argument("--scale", type=float, nargs="*", default=[0.01, 0.1])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--tune-weeks", type=int, default=8,
                        help="tune: how many of the weeks just before the --weeks that eval reports")
    parser.add_argument("--content", choices=("joined", "images"), default="joined",
                        help="eval: product vectors from photos and titles (as after a catalog import), or photos alone")
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS),
                        help="Which jobs to run; the others' figures stay in the JSON from earlier runs.")
    args = parser.parse_args()
    path = RESULTS / "recommend.json"
    result: dict = json.loads(path.read_text()) if path.is_file() else {}
    result.update({"cpu": cpu(), "load_average": os.getloadavg()[0],
                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for job in args.jobs:
        JOBS[job](args, result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"cpu: {result['cpu']}, load average {result['load_average']:.1f}")


def run_train_and_api(args, result: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result["train_hm"] = isolated(job_train, tmp)
        print(f"train on H&M ({result['train_hm']['events']} events): {result['train_hm']['seconds']} s, "
              f"peak {result['train_hm']['peak_mb']} MB  {result['train_hm']['steps']}", flush=True)
        result["api"] = api_latency(Path(tmp), args.requests)
        for name, r in result["api"].items():
            print(f"GET /api/recommend/{name:<9} p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>7.2f} ms", flush=True)


def run_import(args, result: dict) -> None:
    result["import"] = isolated(job_import, args.events)
    r = result["import"]
    print(f"import {r['rows']} synthetic events: {r['seconds']} s ({r['rows_per_s']}/s), peak {r['peak_mb']} MB; "
          f"again: {r['reimport_seconds']} s, {r['reimport_added']} added", flush=True)


def run_rules(args, result: dict) -> None:
    result["rules"] = []
    for n in args.baskets:
        r = isolated(job_rules, n, args.min_support)
        result["rules"].append(r)
        print(f"rules over {n} synthetic baskets (min support {args.min_support}): {r['seconds']} s, "
              f"{r['rules']} rules, peak {r['peak_mb']} MB", flush=True)


def run_miners(args, result: dict) -> None:
    result["miners"] = []
    for source, support, confidence in (("hm", 0.001, 0.3), ("hm", 0.0003, 0.1), ("100000", 0.001, 0.1)):
        r = isolated(job_miners, source, support, confidence)
        result["miners"].append(r)
        times = "  ".join(f"{k} {r[k]['seconds']} s ({r[k]['rules']} rules)" if "error" not in r[k] else
                          f"{k} failed after {r[k]['seconds']} s: {r[k]['error'][:60]}"
                          for k in ("mlxtend fpgrowth", "mlxtend apriori", "efficient-apriori"))
        print(f"miners on {r['baskets']} {'H&M' if source == 'hm' else 'synthetic'} baskets (support {support}, "
              f"confidence {confidence}): {times}; same rules: {r['same_rules']}", flush=True)


def run_scale(args, result: dict) -> None:
    result["scale"] = []
    for scale in args.scale:
        r = isolated(job_scale, scale)
        result["scale"].append(r)
        print(f"train at {scale:g} x full H&M ({r['purchases']} purchases, {r['users']} users, {r['items']} items): "
              f"{r['seconds']} s, peak {r['peak_mb']} MB  {r['steps']}", flush=True)


def hm_vectors():
    """The shipped offline model's image vector of every H&M photo, as `toolkit tag` would store them
    (cached in bench/.cache: minutes to compute on 2 cores)."""
    import numpy as np

    from toolkit.recommend.content import ItemVectors, normalise_rows

    cache = ROOT / "bench" / ".cache" / "hm-vectors.npz"
    if not cache.is_file():
        from PIL import Image

        from toolkit import registry
        from toolkit.ground.settings import load_settings

        embedder = registry.embedder(load_settings(data_dir=ROOT / "bench" / ".cache" / "toolkit"))
        paths = sorted((HM / "images").glob("*.jpg"))
        rows = [embedder.embed_images([Image.open(p).convert("RGB") for p in paths[i:i + 256]])
                for i in range(0, len(paths), 256)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.asarray([p.stem for p in paths]), matrix=np.concatenate(rows).astype(np.float32),
                 model=np.asarray(embedder.model_id))
    data = np.load(cache)
    return ItemVectors(data["ids"].tolist(), normalise_rows(data["matrix"]), str(data["model"]))


def hm_title_vectors():
    """The shipped offline model's text vector of every H&M article's title, as `toolkit catalog import` keeps
    them in the products collection; the title is the colour and the product name ("Black Strap top"), as the
    H&M mapping of `toolkit eval` writes its title queries (cached in bench/.cache)."""
    import csv

    import numpy as np

    from toolkit.recommend.content import ItemVectors, normalise_rows

    cache = ROOT / "bench" / ".cache" / "hm-title-vectors.npz"
    if not cache.is_file():
        from toolkit import registry
        from toolkit.ground.settings import load_settings

        embedder = registry.embedder(load_settings(data_dir=ROOT / "bench" / ".cache" / "toolkit"))
        with (HM / "articles.csv").open(newline="") as f:
            rows = [(r["article_id"], f"{r['colour_group_name']} {r['prod_name']}") for r in csv.DictReader(f)]
        matrix = np.concatenate([embedder.embed_texts([t for _, t in rows[i:i + 256]])
                                 for i in range(0, len(rows), 256)])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, ids=np.asarray([i for i, _ in rows]), matrix=matrix.astype(np.float32),
                 model=np.asarray(embedder.model_id))
    data = np.load(cache)
    return ItemVectors(data["ids"].tolist(), normalise_rows(data["matrix"]), str(data["model"]))


def content_vectors(kind: str):
    """The store's product vectors as `Toolkit.recommend` gives them: photos alone ("images"), or photos
    joined with titles ("joined", where a catalog was imported)."""
    from toolkit.recommend.content import joined

    return hm_vectors() if kind == "images" else joined(hm_vectors(), hm_title_vectors())


def run_eval(args, result: dict) -> None:
    """`toolkit recommend eval` on H&M with content vectors: the table the README quotes."""
    from toolkit.faces.commands.recommend import format_eval
    from toolkit.faces.commands.output import to_jsonable

    with tempfile.TemporaryDirectory() as tmp:
        rec = hm_recommender(Path(tmp))
        vectors = content_vectors(args.content)
        rec._vectors = lambda: vectors
        report = rec.evaluate(weeks=args.weeks)
    print(format_eval(report), flush=True)
    name = "recommend-eval.json" if args.content == "joined" else f"recommend-eval-{args.content}.json"
    (RESULTS / name).write_text(json.dumps(to_jsonable(report), indent=2))
    result["eval" if args.content == "joined" else f"eval-{args.content}"] = {
        "file": f"bench/results/{name}", "seconds": report.seconds, "content": args.content}


#: What `tune` tries, on the 8 weeks before those `eval` reports: two-tower settings (changes to TowerOptions),
#: the two-tower's weight in the blend, and cold start's segment lists (window days, half-life days, prior).
TOWER_GRID = {"default": {}, "logQ correction": {"log_q": True}, "temperature 0.05": {"temperature": 0.05}}
TOWER_WEIGHTS = (0.3, 1.0, 3.0)
SEGMENT_GRID = [(window, half, prior) for window in (30, 90, 365) for half in (7, 30) for prior in (0, 5, 20, 100)]


def run_tune(args, result: dict) -> None:
    """Choose the two-tower's settings and weight, and cold start's, on the weeks before the reported ones."""
    from dataclasses import replace
    from datetime import timedelta

    import numpy as np
    import pandas as pd

    from toolkit.recommend import evaluate as ev
    from toolkit.recommend import two_tower
    from toolkit.recommend.models import Options, build, shrunk_by_segment
    from toolkit.recommend.picks import Weights, cold_start, for_history
    from toolkit.recommend.segments import segment

    with tempfile.TemporaryDirectory() as tmp:
        rec = hm_recommender(Path(tmp))
        events = rec.events.frame(types=("purchase", "cart", "view")).sort_values("ts", kind="stable")
        users = rec.events.users()
        items = {i: it.attributes for i, it in rec.events.items().items()}
    vectors = content_vectors(args.content)
    purchases = events[events["event_type"] == "purchase"]
    end = (purchases["ts"].max().normalize() + pd.Timedelta(days=1)).to_pydatetime() - timedelta(days=7 * args.weeks)
    base = Options(tower=None)
    weights = Weights(two_tower=0)  # the blend the two-tower is added to at each trial weight
    scores: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}

    def score(name: str, ranked: list[str], actual: set[str]) -> None:
        scores.setdefault(name, []).append(ev.ap_at_k(ranked, actual, 12)[0])

    for w in range(args.tune_weeks, 0, -1):
        cutoff = end - timedelta(days=7 * w)
        test = purchases[(purchases["ts"] >= pd.Timestamp(cutoff)) & (purchases["ts"] < pd.Timestamp(cutoff + timedelta(days=7)))]
        train_all = events[events["ts"] < pd.Timestamp(cutoff)]
        train = purchases[purchases["ts"] < pd.Timestamp(cutoff)]
        models = build(train_all, cutoff, "tune", users, items, base, vectors=vectors)
        history = {u: h for u, h in train_all.groupby("user_id")}
        actual = test.groupby("user_id")["item_id"].agg(set)
        pop7 = ev.popularity(train, cutoff, 7, 12)
        known = [u for u in actual.index if u in history and (history[u]["event_type"] == "purchase").any()]
        for u in known:
            score("blend", [c.item_id for c in for_history(models, history[u], cutoff, 12, user_id=u,
                                                           weights=weights, segment=segment(users.get(u)))], actual[u])
        for u in actual.index:
            score("cold: popularity, last 7 days", pop7, actual[u])
        for window, half, prior in SEGMENT_GRID:
            models.by_segment_shrunk = shrunk_by_segment(train, cutoff, models.segments, replace(
                base, segment_window_days=window, segment_half_life_days=half, segment_prior=prior))
            for u in actual.index:
                score(f"cold: segment {window:g} d, half-life {half:g} d, prior {prior:g}",
                      [c.item_id for c in cold_start(models, 12, segment(users.get(u)), "shrunk")] or pop7, actual[u])
        for name, change in TOWER_GRID.items():
            started = time.perf_counter()
            models.two_tower = two_tower.train(models.data, train, cutoff,
                                               models.content if change.get("image_components", 1) else None,
                                               items, models.segments, replace(two_tower.TowerOptions(), **change))
            seconds.setdefault(name, []).append(time.perf_counter() - started)
            variants = {f"two-tower only ({name})": replace(
                Weights(repurchase=0, item=0, als=0, trending=0, variant=0, content=0, repurchase_days=0), two_tower=1)}
            variants.update({f"blend + two-tower x{x:g} ({name})": replace(weights, two_tower=x) for x in TOWER_WEIGHTS})
            for u in known:
                seg = segment(users.get(u))
                for label, wts in variants.items():
                    score(label, [c.item_id for c in for_history(models, history[u], cutoff, 12, user_id=u,
                                                                 weights=wts, segment=seg)], actual[u])
            for u in actual.index:
                score(f"cold: two-tower, segment only ({name})",
                      [c.item_id for c in cold_start(models, 12, segment(users.get(u)), "two-tower")], actual[u])
        print(f"tune week from {cutoff:%Y-%m-%d}: {len(known)} shoppers with a history, {len(actual)} in all",
              flush=True)
    table = {name: {"map": round(float(np.mean(v)), 5), "n": len(v)} for name, v in scores.items()}
    for name, row in table.items():
        print(f"  {name:<64} MAP@12 {row['map']:.4f}  ({row['n']})", flush=True)
    tower_seconds = {name: round(float(np.mean(v)), 1) for name, v in seconds.items()}
    print(f"two-tower training, mean seconds per week: {tower_seconds}", flush=True)
    name = "recommend-tune.json" if args.content == "joined" else f"recommend-tune-{args.content}.json"
    (RESULTS / name).write_text(json.dumps(
        {"weeks_before": end.strftime("%Y-%m-%d"), "weeks": args.tune_weeks, "content": args.content,
         "scores": table, "tower_seconds": tower_seconds, "cpu": cpu(), "load_average": os.getloadavg()[0]},
        indent=2))
    result["tune" if args.content == "joined" else f"tune-{args.content}"] = {"file": f"bench/results/{name}"}


JOBS = {"eval": run_eval, "tune": run_tune, "train": run_train_and_api, "import": run_import, "rules": run_rules, "miners": run_miners,
        "scale": run_scale}


if __name__ == "__main__":
    main()
