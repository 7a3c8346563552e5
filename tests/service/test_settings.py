"""The controller's settings: from the environment, checked before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

WDGRID = Path(sys.executable).parent / "wdgrid"


def test_defaults_and_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("WDGRID_") or name == "RAY_ADDRESS":
            monkeypatch.delenv(name)
    s = Settings()
    assert (s.host, s.port, s.max_concurrent_sweeps, s.api_token, s.ray_address) == ("127.0.0.1", 8000, 1, None, None)
    monkeypatch.setenv("RAY_ADDRESS", "head:6380")
    monkeypatch.setenv("WDGRID_MAX_CONCURRENT_SWEEPS", "3")
    monkeypatch.setenv("WDGRID_API_TOKEN", "t" * 16)
    s = Settings()
    assert (s.ray_address, s.max_concurrent_sweeps) == ("head:6380", 3)
    assert s.api_token is not None and s.api_token.get_secret_value() == "t" * 16
    assert "t" * 16 not in repr(s)  # a secret never lands in a log line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WDGRID_HOST": "0.0.0.0"}, "set WDGRID_API_TOKEN"),
        ({"WDGRID_HOST": "example.org"}, "set WDGRID_API_TOKEN"),
        ({"WDGRID_API_TOKEN": "short"}, "at least 16 characters"),
        ({"WDGRID_PORT": "0"}, "greater than or equal to 1"),
        ({"WDGRID_MAX_CONCURRENT_SWEEPS": "many"}, "valid integer"),
        ({"WDGRID_MAX_CONCURRENT_SWEEPS": "-1"}, "greater than or equal to 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(monkeypatch, env, message):
    for name in list(os.environ):
        if name.startswith("WDGRID_"):
            monkeypatch.delenv(name)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"WDGRID_HOST": "0.0.0.0"},
            "wdgrid: bad setting: WDGRID_HOST=0.0.0.0 is reachable from other machines: set WDGRID_API_TOKEN (or bind "
            "127.0.0.1)",
        ),
        (
            {"WDGRID_DATABASE_URL": "garbage"},
            "wdgrid: bad setting database_url: WDGRID_DATABASE_URL is not a database URL (e.g. sqlite:///wdgrid.db or "
            "postgresql+psycopg://user:password@host:5432/db)",
        ),
        (  # a store that does not answer: one line, and the password is not in it
            {"WDGRID_DATABASE_URL": "postgresql+psycopg://u:TOPSECRET@127.0.0.1:1/x"},
            "wdgrid: cannot open the results store postgresql+psycopg://u:***@127.0.0.1:1/x: OperationalError:",
        ),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(env: dict[str, str], line: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WDGRID_")} | env
    result = subprocess.run([str(WDGRID), "serve"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
    assert "TOPSECRET" not in result.stderr + result.stdout


def test_a_sweep_driver_gets_every_setting_it_reads_and_not_the_api_token():
    settings = Settings(
        database_url="sqlite:///x.db",
        cpus_per_trial=2,
        tune_dir=Path("/shared/tune"),
        db_retry_s=7,
        api_token="t" * 16,  # type: ignore[arg-type]
        host="0.0.0.0",
    )
    env = settings.driver_environment({"PATH": "/bin", "WDGRID_API_TOKEN": "t" * 16, "WDGRID_HOST": "0.0.0.0"})
    assert env["PATH"] == "/bin" and env["WDGRID_CPUS_PER_TRIAL"] == "2.0" and env["WDGRID_TUNE_DIR"] == "/shared/tune"
    assert "WDGRID_API_TOKEN" not in env and "WDGRID_HOST" not in env
    options = Settings(**{k.removeprefix("WDGRID_").lower(): v for k, v in env.items() if k.startswith("WDGRID_")})  # type: ignore[arg-type]
    assert options.run_options().cpus_per_trial == 2.0 and options.run_options().storage_path == "/shared/tune"
    assert options.db_retry_s == 7  # the driver rides out an outage as long as the controller was told
