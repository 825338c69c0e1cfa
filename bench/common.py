"""Helpers shared by the performance benchmarks: timing summaries, machine facts, paths.

Every goal is a ratio or figure measured within one run, because this machine is shared:
absolute timings move with the neighbours' load, ratios taken minutes apart move less.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
PHOTOS = Path(os.environ.get("TOOLKIT_SHARED_DATA", ROOT.parent / "shared" / "data" / "fashion-products"))


def machine(precision: str | None = None) -> dict[str, object]:
    """What every file under bench/results records about where it was measured: the CPU, its
    int8-relevant flags, the ONNX Runtime version (toolkit/ground/machine.py), cores, Python, and the image
    backbone precision the figures used (TOOLKIT_PRECISION when not given)."""
    from toolkit.ground.machine import machine_facts

    return {**machine_facts(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "precision": precision or os.environ.get("TOOLKIT_PRECISION") or "auto"}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(samples: list[float]) -> dict[str, float]:
    """Median with its spread (p25, p75) and the p95, in the samples' unit."""
    a = np.asarray(samples, dtype=np.float64)
    return {"p50": round(float(np.median(a)), 3), "p25": round(float(np.percentile(a, 25)), 3),
            "p75": round(float(np.percentile(a, 75)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "n": len(a)}


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return summary(samples)


def load_average() -> float:
    return os.getloadavg()[0]


def photo_paths(n: int) -> list[Path]:
    """The first n shared photos in a stable order (repeated if n exceeds the 8,083 there are)."""
    paths = sorted((PHOTOS / "images").glob("*.jpg"))
    return [paths[i % len(paths)] for i in range(n)]


def photo_folder(n: int) -> Path:
    """A folder of n photos (symlinks to the shared ones), made once under bench/.cache."""
    folder = CACHE / f"photos-{n}"
    if not folder.is_dir() or len(list(folder.iterdir())) != n:
        folder.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(photo_paths(n)):
            link = folder / f"{i:05d}-{p.name}"
            if not link.exists():
                link.symlink_to(p)
    return folder


def cpu_peak_gflops() -> tuple[float, str]:
    """Single-precision arithmetic peak: cores x GHz x FLOPs a cycle (AVX-512: 2 FMA units x 16 lanes x 2)."""
    flags, mhz = "", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line
            if line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
    except OSError:
        pass
    # Zen 4 runs AVX-512 on two 256-bit FMA pipes, so it peaks at 32 FLOPs a cycle like AVX2.
    amd = "AuthenticAMD" in Path("/proc/cpuinfo").read_text()[:2000] if Path("/proc/cpuinfo").exists() else False
    per_cycle = 64 if "avx512f" in flags and not amd else 32 if "avx2" in flags else 8
    cores = os.cpu_count() or 1
    ghz = mhz / 1000 or 2.0
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"
