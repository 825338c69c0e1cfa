"""Every performance benchmark, one table, bench/results/perf.json.

    .venv/bin/python bench/run_all.py                       # everything (1M store: ~30-60 min to build once,
                                                            # cached under ~/.cache/toolkit-bench; see search_scale.py)
    .venv/bin/python bench/run_all.py --scales 10000,100000 --photos 500 --memory-sizes 500,2000   # quick
    .venv/bin/python bench/run_all.py --only search         # one part; the others keep their last figures
    .venv/bin/python bench/run_all.py --only search --real-scales 1000000   # and a 1M real-embedding store

Each part records when it ran and the machine's load then: the machine is shared, so every
goal is a ratio or a figure measured within one run of its part.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone

from common import RESULTS, load_average, machine, say  # noqa: E402

PARTS = ("ingest", "search", "cold", "inference")


def run_part(name: str, a: argparse.Namespace) -> dict:
    if name == "ingest":
        import ingest
        return ingest.run(a.photos, tuple(int(x) for x in a.memory_sizes.split(",") if x))
    if name == "search":
        import search_scale
        return search_scale.run(tuple(int(s) for s in a.scales.split(",")), a.queries, hnsw=a.hnsw,
                                real_scales=tuple(int(s) for s in a.real_scales.split(",") if s))
    if name == "cold":
        import cold_start
        return cold_start.run(a.runs)
    import inference
    return inference.run(a.parity)


def stamp() -> dict:
    return {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_1min": round(load_average(), 2)}


def goal(ok: bool | None) -> str:
    return "not measured" if ok is None else ("MET" if ok else "NOT MET")


def rows(r: dict) -> list[tuple[str, str, str]]:
    """(measure, figure, goal verdict) for the table."""
    out = []
    ing = r.get("ingest")
    if ing:
        sp = lambda d: f"{d['p50']} [{d['p25']}-{d['p75']}]"  # noqa: E731
        spread = lambda part: sp(part["spread"]["images_per_s"]) if "spread" in part else part["images_per_s"]  # noqa: E731
        rng = lambda key: sp(ing[key + "_spread"]) if key + "_spread" in ing else ing[key]  # noqa: E731
        load = ing.get("embedder_spread", {}).get("load_1min")
        out += [("embedder alone, pre-decoded (img/s p50 [p25-p75])",
                 f"{sp(ing['embedder_spread']['images_per_s']) if 'embedder_spread' in ing else ing['embedder_images_per_s']}"
                 f" ({ing['runtime']})" + (f"; load {load['p50']}" if load else ""), ""),
                ("  share of arithmetic peak", f"{ing['share_of_peak']:.1%} of {ing['machine_peak_gflops']} G op/s "
                 f"({ing['machine_peak']})" + (f"; {ing['share_of_peak_per_cpu_s']:.1%} per CPU-second it got"
                                               if "share_of_peak_per_cpu_s" in ing else ""), ""),
                (f"tag {ing['photos']} photos, folder / embedder", f"{rng('folder_ratio')} "
                 f"({spread(ing['tag_folder'])} img/s)", goal(ing["folder_ratio"] >= 0.9) + " (>= 0.9)"),
                (f"tag {ing['photos']} photos, local S3 / embedder", f"{rng('s3_ratio')} "
                 f"({spread(ing['tag_s3'])} img/s; moto server used {ing.get('s3_server_cpu_s', '?')} "
                 f"CPU-s of the run's {ing['tag_s3']['seconds']} s"
                 + (f"; {ing['s3_ratio_without_server_cpu']} without it" if "s3_ratio_without_server_cpu" in ing else "")
                 + ")", goal(ing["s3_ratio"] >= 0.9) + " (>= 0.9)")]
        if "pipeline_cpu_share" in ing:
            share = ing["pipeline_cpu_share"]
            out.append(("  CPU beyond the model (share of the run's)", f"folder {share['folder']:.1%}, S3 {share['s3']:.1%}", ""))
        if "memory_ratio" in ing:
            mem = ", ".join(f"{n}: {v:.0f} MB" for n, v in ing["peak_rss_mb"].items())
            out.append(("peak RSS, largest / smallest bucket", f"{ing['memory_ratio']} ({mem})",
                        goal(ing["memory_ratio"] <= 1.1) + " (<= 1.10)"))
    else:
        out.append(("ingestion", "-", "not measured"))
    srch = r.get("search")
    if srch:
        fmt = lambda ms: f"{ms['p50']} [{ms['p25']}-{ms['p75']}]"  # noqa: E731
        out.append(("query embedding (text, ms p50 [p25-p75])", fmt(srch["query_embedding_ms"]), ""))
        if "hnsw_config" in srch:
            h = srch["hnsw_config"]
            out.append(("HNSW of new collections", f"M {h['max_neighbors']}, ef_construction {h['ef_construction']}, "
                        f"ef_search {h['ef_search']}", ""))
        for n, s in srch["scales"].items():
            big = int(n) >= 1_000_000
            load = f"; load {s['load_1min']}" if "load_1min" in s else ""
            out += [(f"{int(n):,}: unfiltered top-10 ms p50 [p25-p75]",
                     f"{fmt(s['unfiltered_ms'])}, recall {s['unfiltered_recall']}{load}",
                     goal(s["unfiltered_ms"]["p50"] <= 10) + " (<= 10 ms at 1M)" if big else ""),
                    (f"{int(n):,}: 5% filter, Chroma where", f"{fmt(s['chroma_where_ms'])}, recall {s['chroma_where_recall']}", ""),
                    (f"{int(n):,}: 5% filter, filter index", f"{fmt(s['index_ms'])}, recall {s['index_recall']}, "
                     f"built in {s['index_build_s']} s" + (f", loaded in {s['index_load_s']} s" if "index_load_s" in s else ""),
                     goal(s["index_ms"]["p50"] <= 20 and s["index_recall"] >= 0.95) + " (<= 20 ms, recall >= 0.95 at 1M)"
                     if big else "")]
        for n, s in (srch.get("real_scales") or {}).items():
            out.append((f"{int(n):,} real-embedding vectors: unfiltered top-10 ms p50",
                        f"{fmt(s['unfiltered_ms'])}, recall {s['unfiltered_recall']}; load {s['load_1min']}", ""))
        ld = srch["load"]
        out.append((f"insert into a store of {ld['store']:,} (vectors/s p50 [p25-p75])",
                    f"{fmt(ld['vectors_per_s'])}" + (f"; load {ld['load_1min']['p50']}" if "load_1min" in ld else "")
                    + (f"; {ld['vectors_per_cpu_s']['p50']:.0f} per CPU-second" if "vectors_per_cpu_s" in ld else "")
                    + (f"; {ld['method']}" if "method" in ld else ""),
                    goal(ld["vectors_per_s"]["p50"] >= 2000) + " (>= 2000 at 1M)" if ld["store"] >= 1_000_000
                    else "not measured at 1M"))
        if ld.get("into_empty_store"):
            e = ld["into_empty_store"]
            out.append(("  the same inserts into an empty store (Chroma's floor here)",
                        f"{fmt(e['vectors_per_s'])}; {e['vectors_per_cpu_s']['p50']:.0f} per CPU-second; "
                        f"load {e['load_1min']:.2f}", ""))
        if ld.get("cpu_s_by_thread"):
            out.append(("  where the insert's CPU went (CPU-s by thread)",
                        ", ".join(f"{k} {v}" for k, v in ld["cpu_s_by_thread"].items()), ""))
        if ld.get("during_build"):
            b = ld["during_build"]
            out.append((f"  while building it, {b['from']:,}-{b['to']:,} (vectors/s)",
                        f"{fmt(b['vectors_per_s'])}; load {b['load_1min']['p50']}", ""))
        for name, t in (srch.get("hnsw_tradeoff") or {}).items():
            bld = t.get("build_per_s_second_half")
            out.append((f"HNSW {name}, {t['n']:,}: recall / ms / build",
                        f"recall {t['unfiltered_recall']}, {fmt(t['unfiltered_ms'])} ms"
                        + (f", built at {bld['p50']}/s (load {t['build_load_second_half']['p50']})" if bld else "")
                        + (f"; insert into it {t['insert']['vectors_per_s']['p50']:.0f}/s, "
                           f"{t['insert']['vectors_per_cpu_s']['p50']:.0f} per CPU-s" if t.get("insert") else ""), ""))
        if not any(int(n) >= 1_000_000 for n in srch["scales"]):
            out.append(("1M store (search, filter, load goals)", "-", "not measured"))
    else:
        out.append(("search at scale", "-", "not measured"))
    cold = r.get("cold")
    if cold:
        out += [("first `toolkit search` (s p50)", f"{cold['first_search_s']['p50']} "
                 f"[{cold['first_search_s']['p25']}-{cold['first_search_s']['p75']}]",
                 goal(cold["first_search_s"]["p50"] <= 2) + " (<= 2 s)"),
                ("  where it goes (s)", ", ".join(f"{k} {v}" for k, v in cold["first_search_stages_s"].items()), ""),
                ("`toolkit --help` (s p50)", str(cold["help_s"]["p50"]), goal(cold["help_s"]["p50"] < 1) + " (< 1 s)")]
    else:
        out.append(("cold start", "-", "not measured"))
    inf = r.get("inference")
    if inf:
        p, q = inf["parity"], inf["int8_quality"]
        out += [("ONNX / PyTorch backbone speed", f"{inf['onnx_over_torch']}x", ""),
                ("ONNX = PyTorch top-10 (image; text queries)", f"{p['image_top10_same']:.1%}; {p['text_top10_same']:.1%}"
                 f" of {p['queries']}", goal(min(p["image_top10_same"], p["text_top10_same"]) >= 0.99) + " (>= 99%)"),
                ("int8 / fp32 speed (backbone; whole embedder)",
                 f"{inf['int8_over_fp32_backbone']}x; {inf['int8_over_fp32_embedder']}x", "needs >= 1.5x"),
                ("int8 quality change (points)", ", ".join(f"{k} {v:+}" for k, v in q["delta_points"].items()),
                 "needs < 1 point"),
                ("int8 qualifies as the default (issue's rule)", "yes" if inf["int8_qualifies"] else "no",
                 "default now: TOOLKIT_PRECISION=int8")]
    else:
        out.append(("inference", "-", "not measured"))
    return out


def print_table(r: dict) -> None:
    table = rows(r)
    w0, w1 = max(len(a) for a, _, _ in table), max(len(b) for _, b, _ in table)
    print(f"{'measure':<{w0}}  {'figure':<{w1}}  goal")
    for a, b, c in table:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    for part in PARTS:
        if part in r.get("runs", {}):
            print(f"  {part}: run at {r['runs'][part]['at']}, load {r['runs'][part]['load_1min']}")


#: Search figures measured only on request (--hnsw takes an hour, --real-scales builds a 1M store):
#: a search run without them keeps the last ones, with the date they were measured.
OPTIONAL_SEARCH = ("hnsw_tradeoff", "real_scales")


def keep_optional(figures: dict, previous: dict) -> None:
    before = previous.get("search", {})
    for key in OPTIONAL_SEARCH:
        if key not in figures and key in before:
            figures[key] = before[key]
            figures[f"{key}_run_at"] = before.get(f"{key}_run_at", previous["runs"]["search"]["at"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"parts to run: {','.join(PARTS)}")
    ap.add_argument("--scales", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--hnsw", action="store_true",
                    help="search: also compare ef_construction 100 and 200 on 100k synthetic and real-embedding stores")
    ap.add_argument("--real-scales", default="",
                    help="search: also real-embedding stores of these sizes, unfiltered (e.g. 1000000; built once)")
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--memory-sizes", default="2000,8000")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per cold-start figure")
    ap.add_argument("--parity", type=int, default=500, help="photos for ONNX/PyTorch parity and speed")
    a = ap.parse_args()
    path = RESULTS / "perf.json"
    result: dict = {}
    for part in a.only.split(","):
        say(f"== {part} (load {load_average():.2f})")
        before = stamp()
        figures = run_part(part, a)
        # Re-read before writing: another run of another part may have saved meanwhile.
        result = json.loads(path.read_text()) if path.is_file() else {}
        result.setdefault("runs", {})
        result["machine"] = machine()
        if part == "search":
            keep_optional(figures, result)
        result[part] = figures
        result["runs"][part] = {**before, "load_1min_after": round(load_average(), 2)}
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")  # each part saved as soon as it is done
    print_table(result)


if __name__ == "__main__":
    main()
