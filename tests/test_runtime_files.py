"""A killed export's temporary file is swept by the next one; a running writer's is left alone."""
from __future__ import annotations

import subprocess
import sys

from taggers.offline.runtime_files import sweep_stale_tmp


def test_a_dead_writers_tmp_files_are_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = [tmp_path / f"effnet.onnx.{dead_pid}.tmp", tmp_path / f"effnet-int8.{dead_pid}.tmp.onnx"]
        busy = tmp_path / f"text-tower.onnx.{live.pid}.tmp"
        model = tmp_path / "effnet.onnx"
        for path in (*stale, busy, model):
            path.write_bytes(b"x" * 1024)
        assert sorted(sweep_stale_tmp(tmp_path)) == sorted(stale)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, model.name])
    finally:
        live.kill()
        live.wait()
