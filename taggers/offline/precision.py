"""Which precision the image backbone runs at on this machine, decided by measurement.

The same int8 model file computes different vectors on different CPUs: ONNX Runtime's u8s8
kernels use VPMADDUBSW on x86-64 without VNNI (AVX2, AVX-512 before VNNI), whose 16-bit sums
saturate (its quantisation docs say so), while VNNI, AMX and ARM64's dot-product kernels do not.
Measured on the eval photos (backbone features, cosine to fp32): 0.996 mean with VNNI, 0.909
mean and 0.68 lowest on an emulated AVX2-only CPU. So int8 is used only where it is checked: on
first use on a machine, int8 and fp32 embed the shipped calibration photos, and int8 is kept only
when it stays within TOLERANCE of fp32 (and, for "auto", is MIN_SPEEDUP faster there). The
verdict is cached per model file, CPU and ONNX Runtime version, so the check runs once.

Whatever the verdict, vectors stay within TOLERANCE of fp32's, which is why a collection's model
id does not name the precision and a store tagged on one machine can be searched on another.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from toolkit.ground.files import write_text_atomic
from toolkit.ground.machine import describe, machine_facts, machine_key

log = logging.getLogger(__name__)

#: "auto": int8 where it matches fp32 and is faster; "int8": wherever it matches fp32; "fp32": always.
Wanted = Literal["auto", "int8", "fp32"]
PRECISIONS = ("auto", "int8", "fp32")
#: How far int8's backbone features may stray from fp32's (cosine, over the calibration photos),
#: and the share of photos whose nearest other photo under fp32 stays among its 3 nearest.
TOLERANCE = {"mean_cosine": 0.99, "min_cosine": 0.97, "neighbours": 0.95}
#: For "auto", int8 must be this much faster than fp32 here: not worth a second model file otherwise.
MIN_SPEEDUP = 1.2
_FORMAT = 1

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Parity:
    mean_cosine: float
    min_cosine: float
    neighbours: float

    def within(self) -> bool:
        return (self.mean_cosine >= TOLERANCE["mean_cosine"] and self.min_cosine >= TOLERANCE["min_cosine"]
                and self.neighbours >= TOLERANCE["neighbours"])

    def __str__(self) -> str:
        return (f"cosine to fp32 {self.mean_cosine:.4f} mean, {self.min_cosine:.4f} lowest; "
                f"nearest neighbours kept {self.neighbours:.0%}")


@dataclass
class Choice:
    """The precision in force and why; what `toolkit model info` and `toolkit config` show."""
    wanted: str
    precision: str
    reason: str
    parity: Parity | None = None
    speedup: float | None = None
    machine: dict[str, object] = field(default_factory=machine_facts)

    @property
    def fell_back(self) -> bool:
        return self.wanted != "fp32" and self.precision == "fp32"


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    a, b = _unit(reference), _unit(candidate)
    cos = (a * b).sum(axis=1)
    nearest = np.argsort(-(a @ a.T), axis=1)[:, 1]
    top3 = np.argsort(-(b @ b.T), axis=1)[:, 1:4]
    kept = float(np.mean([n in row for n, row in zip(nearest, top3)])) if len(a) > 1 else 1.0
    return Parity(round(float(cos.mean()), 4), round(float(cos.min()), 4), round(kept, 4))


def speedup(fp32: Runner, int8: Runner, x: np.ndarray, rounds: int = 3) -> float:
    """fp32's time over int8's on the same batch, best of `rounds` each, interleaved so that a
    neighbour's load hits both alike."""
    fp32(x[:2]), int8(x[:2])  # warm-up: first runs allocate
    best = {"fp32": float("inf"), "int8": float("inf")}
    for _ in range(rounds):
        for name, run in (("fp32", fp32), ("int8", int8)):
            t = time.perf_counter()
            run(x)
            best[name] = min(best[name], time.perf_counter() - t)
    return round(best["fp32"] / max(best["int8"], 1e-9), 2)


def decide(wanted: str, fp32: Runner, int8: Runner, x: np.ndarray) -> Choice:
    """Measure int8 against fp32 on `x` (normalised photos) and pick, as `wanted` allows."""
    p = parity(fp32(x), int8(x))
    if not p.within():
        return Choice(wanted, "fp32", f"int8 strays from fp32 on this CPU ({p}; tolerance "
                                      f"{TOLERANCE['mean_cosine']} mean, {TOLERANCE['min_cosine']} lowest)", p)
    gain = speedup(fp32, int8, x)
    if wanted == "auto" and gain < MIN_SPEEDUP:
        return Choice(wanted, "fp32", f"int8 matches fp32 but is only {gain:.2f}x as fast on this CPU "
                                      f"(needs {MIN_SPEEDUP}x)", p, gain)
    return Choice(wanted, "int8", f"int8 matches fp32 on this CPU ({p}) and is {gain:.2f}x as fast", p, gain)


def choice_path(int8_model: Path) -> Path:
    """Where the verdict for this int8 file on this machine is kept, beside the file."""
    return int8_model.with_name(f"{int8_model.stem}.choice-{machine_key()}.json")


def cached_decide(wanted: str, int8_model: Path, fp32: Runner, int8: Runner, x: Callable[[], np.ndarray]) -> Choice:
    """`decide`, once per int8 file and machine; a fallback is said once, when it is measured."""
    path = choice_path(int8_model)
    known = _read(path, wanted)
    if known is not None:
        return known
    choice = decide(wanted, fp32, int8, x())
    _write(path, choice)
    if choice.fell_back:
        log.warning("image backbone runs fp32 on this machine: %s. Recorded in %s; "
                    "`toolkit model info` shows it", choice.reason, path)
    return choice


def latest_choice(cache: Path, wanted: str) -> Choice | None:
    """The newest verdict measured on this machine under `cache` (DATA_DIR/cache), without loading
    any model: what `toolkit config` shows. None before the image backbone was first used here."""
    found = sorted((cache / "onnx").glob(f"*.choice-{machine_key()}.json"), key=lambda p: p.stat().st_mtime)
    return _read(found[-1], wanted) if found else None


def _read(path: Path, wanted: str) -> Choice | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        by_wanted = data["choices"][wanted]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    p = by_wanted.get("parity")
    return Choice(wanted, by_wanted["precision"], by_wanted["reason"], Parity(**p) if p else None,
                  by_wanted.get("speedup"), data.get("machine", {}))


def _write(path: Path, choice: Choice) -> None:
    """Merged with other `wanted` values' verdicts; written whole under a temporary name, so a
    killed process leaves the old file or the new one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    entry = {k: v for k, v in asdict(choice).items() if k not in ("wanted", "machine")}
    data = {"format": _FORMAT, "machine": choice.machine, "machine_line": describe(choice.machine),
            "tolerance": TOLERANCE, "min_speedup": MIN_SPEEDUP,
            "choices": {**data.get("choices", {}), choice.wanted: entry}}
    try:
        write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    except OSError as err:  # a read-only cache only costs a re-check next time
        log.debug("cannot record the precision choice at %s: %s", path, err)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
