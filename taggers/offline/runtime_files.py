"""Housekeeping for ONNX Runtime and the files the models write into the cache."""
from __future__ import annotations

import os
import re
from pathlib import Path

#: `<name>.<pid>.tmp` and `<stem>.<pid>.tmp.onnx`: a half-written export or quantisation.
_TMP = re.compile(r"\.(\d+)\.tmp(\.[A-Za-z0-9]+)?$")


def sweep_stale_tmp(folder: Path) -> list[Path]:
    """Delete the temporary files of writers that are no longer running. An export is written
    under a temporary name and renamed when complete; a writer killed mid-way (kill -9, a power
    cut) never reaches its own cleanup and would leave its 12 MB file there for ever. A file
    whose writer is alive (a parallel run) is left alone."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TMP.search(path.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass  # another sweeper got it, or a read-only cache: harmless either way
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def onnxruntime():
    """ONNX Runtime with its telemetry off. `disable_telemetry_events()` is its Python switch
    for the events it queues under ~/.cache/Microsoft; ORT_TELEMETRY_DISABLED is read when the
    runtime starts by the versions that honour it (see README, "Privacy")."""
    os.environ.setdefault("ORT_TELEMETRY_DISABLED", "1")
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort
