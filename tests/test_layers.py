"""The house's plan (pyproject.toml, [tool.importlinter]) holds: layers, no backend importing
another, no cycles; and a backend imported alone loads neither the core nor pydantic-settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and "KEPT" in out.stdout


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_a_connector_stands_on_the_ground_floor_alone():
    loaded = _loaded_after("import connectors.local")
    ours = sorted(m for m in loaded if m.split(".")[0] in ("toolkit", "taggers", "store"))
    assert all(m == "toolkit" or m.startswith("toolkit.ground") for m in ours), ours
    assert "pydantic_settings" not in loaded and "toolkit.core" not in loaded


def test_the_package_exposes_toolkit_lazily():
    loaded = _loaded_after("import toolkit")
    assert "toolkit.core" not in loaded and "pydantic_settings" not in loaded
    loaded = _loaded_after("from toolkit import Toolkit, ToolkitError, Hit")
    assert "toolkit.core" in loaded
