"""Cold start: `toolkit --help`, and a first `toolkit search` in a new process, with where the
time goes (imports, model, store, query), each the median of a few fresh processes.

    .venv/bin/python bench/cold_start.py [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE, ROOT, machine, photo_folder, say, summary  # noqa: E402

TOOLKIT = Path(sys.executable).parent / "toolkit"
#: Run in a fresh interpreter: each step's seconds, as a first search spends them.
STAGES = """
import json, time
t = time.perf_counter(); laps = {}
def lap(name):
    global t
    now = time.perf_counter(); laps[name] = round(now - t, 3); t = now
import toolkit.faces.cli; lap("import the CLI")
from toolkit.core import Toolkit
tk = Toolkit(); e = tk.embedder; e.model_id; e.dim; lap("which model (store pointer, heads hash)")
v = e.embed_texts(["red summer dress"]); lap("load text model + embed")
s = tk.store; lap("open the store")
from toolkit.search.query import search_vector
search_vector(s, v[0], 10); lap("query")
print(json.dumps(laps))
"""


def env(data: Path) -> dict:
    return {**os.environ, "TOOLKIT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}


def wall(cmd: list[str], environ: dict, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t)
    return summary(samples)


def run(runs: int = 5) -> dict:
    data = CACHE / "cold"
    # A fresh store each time: one left by an earlier model would (rightly) refuse this one's queries.
    shutil.rmtree(data, ignore_errors=True)
    e = env(data)
    # A small store and the one-time exports (ONNX towers, label vectors) already made, as after `toolkit tag`.
    subprocess.run([str(TOOLKIT), "tag", str(photo_folder(32)), "--tagger", "local"], env=e, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    say("cold start: --help and first search")
    # The very first search after `toolkit tag` in a new data directory: any one-time work it still
    # did (a text-tower export) would show here, not in the medians below.
    first = wall([str(TOOLKIT), "search", "red summer dress", "-k", "10"], e, 1)
    help_s = wall([str(TOOLKIT), "--help"], e, runs)
    search_s = wall([str(TOOLKIT), "search", "red summer dress", "-k", "10"], e, runs)
    stages = [json.loads(subprocess.run([sys.executable, "-c", STAGES], env=e, capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1]) for _ in range(3)]
    median = {k: sorted(s[k] for s in stages)[1] for k in stages[0]}
    return {"help_s": help_s, "first_search_after_tag_s": first, "first_search_s": search_s,
            "first_search_stages_s": median, "machine": machine()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    result = run(ap.parse_args().runs)
    print(json.dumps(result, indent=1))
    (ROOT / "bench" / "results" / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n")
