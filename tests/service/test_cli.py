"""The ``wdgrid`` console script, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

WDGRID = Path(sys.executable).parent / "wdgrid"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([str(WDGRID), *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def test_version_prints_the_installed_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"wdgrid {version('wdgrid')}"


def test_help_lists_the_demo_and_does_not_import_torch():
    probe = "import sys; from service.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_demo_trains_all_four_optimizers_and_prints_their_errors():
    result = run("demo", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    for name in ("sgd", "sgdw", "adam", "adamw"):
        assert f" {name} " in result.stdout
    assert "test error %" in result.stdout


def test_help_shows_defaults_and_no_types_beside_plain_flags():
    result = run("run", "--help")
    assert result.returncode == 0
    assert "<bool>" not in result.stdout  # --new is a flag, not an option taking a bool
    assert "$WDGRID_DATABASE_URL" in result.stdout  # help texts keep their "[default: ...]"


def test_demo_rejects_a_bad_epoch_count():
    result = run("demo", "--epochs", "0")
    assert result.returncode == 2
    assert "--epochs" in result.stderr


def test_run_refuses_bad_input_with_one_line(tmp_path: Path):
    (tmp_path / "bad.json").write_text('{"dataset": "mnist1d"}')
    (tmp_path / "broken.json").write_text("{")
    cases = [
        ((), "give a spec file or --preset NAME"),
        (("--preset", "nope"), "unknown preset 'nope'"),
        ((str(tmp_path / "missing.json"),), "cannot read"),
        ((str(tmp_path / "bad.json"),), "invalid spec"),
        ((str(tmp_path / "broken.json"),), "Invalid JSON"),
        (("--preset", "smoke", "--db", "nosuchdb://x"), "cannot open the results store nosuchdb://x"),
        (("--preset", "smoke", "--cells-per-trial", "0"), "--cells-per-trial"),
        (("--preset", "smoke", "--out", str(Path(__file__).parents[2] / "results")), "is a Python package"),
    ]
    for args, message in cases:
        result = run("run", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        if message != "--cells-per-trial":  # typer's own usage box for option ranges
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
