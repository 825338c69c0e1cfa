"""Facts about the machine a figure or a model choice was made on: the CPU, the instruction
sets that change what ONNX Runtime's int8 kernels compute, and the ONNX Runtime version.

Ground floor: imports nothing of ours and nothing heavy, so eval reports, benchmarks and the
precision check can all stamp their output with it.
"""
from __future__ import annotations

import hashlib
import json
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: CPU features that decide which int8 kernel ONNX Runtime's MLAS runs (x86-64: VPMADDUBSW on
#: AVX2 and AVX-512 without VNNI, VPDPBUSD with VNNI, AMX tiles; ARM64: the dot-product extension).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddot", "i8mm")


@lru_cache(maxsize=1)
def machine_facts() -> dict[str, object]:
    """{"cpu", "arch", "flags", "onnxruntime"}: the same keys on every machine."""
    model, flags = _cpuinfo()
    return {"cpu": model or platform.processor() or "unknown", "arch": platform.machine(),
            "flags": [f for f in RELEVANT_FLAGS if f in flags], "onnxruntime": package_version("onnxruntime")}


def machine_key() -> str:
    """A short hash of `machine_facts`: a decision measured on one machine is keyed by it."""
    return hashlib.sha256(json.dumps(machine_facts(), sort_keys=True).encode()).hexdigest()[:12]


def describe(facts: dict[str, object] | None = None) -> str:
    """One line: "Intel(R) Xeon(R) Processor (x86_64; avx2 avx512f avx512_vnni); onnxruntime 1.32.0"."""
    f = facts or machine_facts()
    flags = " ".join(f.get("flags") or []) or "no int8 dot-product flags"  # type: ignore[arg-type]
    return f"{f.get('cpu')} ({f.get('arch')}; {flags}); onnxruntime {f.get('onnxruntime')}"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpuinfo() -> tuple[str, set[str]]:
    """The first processor's model name and flags from /proc/cpuinfo (x86 "flags", ARM "Features")."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags
