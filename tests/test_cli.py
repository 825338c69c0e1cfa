"""The `toolkit` command: help for everything, one-line errors with exit codes, secrets masked."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import REPO

TOOLKIT = str(Path(sys.executable).parent / "toolkit")


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TOOLKIT, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def all_commands():
    from toolkit.faces.cli import app
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            for sub in cmd.commands:
                yield (name, sub)
        else:
            yield (name,)


@pytest.mark.parametrize("path", list(all_commands()), ids=lambda p: " ".join(p))
def test_every_command_has_help_and_is_in_the_readme(path):
    from toolkit.faces.cli import app

    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4
    assert f"toolkit {' '.join(path)}" in (REPO / "README.md").read_text()
    # Reads like the classic click CLIs: no Python types, no {braces}, and an example to copy.
    assert "<bool>" not in result.output and "<str>" not in result.output and "<list" not in result.output
    assert "{" not in result.output.splitlines()[0]
    examples = result.output.split("Examples:\n", 1)[1].splitlines()
    assert examples and all(line.strip().startswith(f"toolkit {' '.join(path)}") for line in examples if line.strip())


@pytest.mark.parametrize("args,message,code", [
    (["search"], "error: nothing to search for; give a TEXT query or --image PATH", 1),
    (["tag", "/no/such/folder"], "error: /no/such/folder: no such folder; check the path", 1),
    (["tag", "ftp://host/x"], "no connector for 'ftp://' sources", 1),
    (["search", "shoes", "--where", "price<cheap"], "'cheap' is not a number", 1),
    (["search", "shoes", "--where", "colour"], "is not of the form field=value", 1),
    (["search", "--image", "/no/such.jpg"], "/no/such.jpg: no such image file", 1),
    (["catalog", "import", "/no/products.csv"], "no such file; give the path of a products CSV", 1),
    (["tag", ".", "--tagger", "vision9000"], "--tagger 'vision9000' is not a tagger", 2),
])
def test_errors_are_one_line_with_exit_code(args, message, code):
    result = run(*args)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_config_masks_secrets(tmp_path):
    (tmp_path / ".env").write_text("TOOLKIT_AZURE_CV_PREDICTION_KEY=from-dotenv-0123456789\nTOOLKIT_COLLECTION=shoes\n")
    result = run("config", env={"TOOLKIT_BATCH_SIZE": "8"}, cwd=tmp_path)
    assert result.returncode == 0
    assert "from-dotenv-0123456789" not in result.stdout
    assert "TOOLKIT_AZURE_CV_PREDICTION_KEY" in result.stdout and "****** (set)" in result.stdout
    assert "TOOLKIT_COLLECTION" in result.stdout and "shoes" in result.stdout
    assert "TOOLKIT_BATCH_SIZE" in result.stdout


def test_env_example_lists_every_setting():
    from toolkit.ground.settings import Settings

    text = (REPO / ".env.example").read_text()
    names = [Settings.variable(n) for n in Settings.model_fields]
    missing = [name for name in names if f"{name}=" not in text]
    assert missing == []
    assert "GOOGLE_APPLICATION_CREDENTIALS" in names  # Google's own variable, read through Settings too


def test_help_does_not_load_the_model():
    code = ("import sys, toolkit.faces.cli; "
            "sys.argv=['toolkit','--help']\n"
            "try: toolkit.faces.cli.main()\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules, 'chromadb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False False"
