"""A real two-node Ray cluster on this machine, wired as docker-compose wires one: a head and a second node
(``ray start``), both with token auth and one shared ``RAY_AUTH_TOKEN``. ``wdgrid run --address`` joins it with the
token and its trials land on both nodes; a node or a driver without the token is refused."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from results import Storage
from tests.factories import spec_data

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``ray start ... --block`` in a session of its own, so that the test can take down all it started."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--num-cpus=1", "--block", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = f"import ray; ray.init(address={address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    logs = tmp_path_factory.mktemp("ray-logs")
    port = free_port()  # not 6379: Redis may hold it
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    nodes = [ray_start("--head", f"--port={port}", "--include-dashboard=false", env=env, log=logs / "head.log")]
    try:
        deadline = time.monotonic() + 60
        while alive_nodes(address, env) < 1:
            assert time.monotonic() < deadline, (logs / "head.log").read_text()[-2000:]
            time.sleep(1)
        nodes.append(ray_start(f"--address={address}", env=env, log=logs / "worker.log"))
        while alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, env
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)


def test_trials_land_on_both_nodes_of_a_token_authenticated_cluster(cluster, tmp_path: Path):
    address, env = cluster
    grids = [{"optimizer": "sgd", "lr": [0.01, 0.02, 0.03, 0.04], "weight_decay": [0.0]}]
    (tmp_path / "spec.json").write_text(json.dumps(spec_data(epochs=12, seeds=[0], grids=grids)))
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    run = [str(BIN / "wdgrid"), "run", str(tmp_path / "spec.json"), "--db", db, "--address", address]
    result = subprocess.run([*run, "--cells-per-trial", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with Storage(db, migrate=False) as store:
        trials = store.trials(1)[0]
        assert {t.status for t in trials} == {"completed"}
        nodes = {a.node for a in store.sweep_attempts(1)}
    assert len(nodes) == 2, f"every trial ran on one node: {nodes}"


def test_a_node_without_the_token_is_refused(cluster, tmp_path: Path):
    address, env = cluster
    stranger = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    result = subprocess.run(
        [str(BIN / "ray"), "start", f"--address={address}", "--num-cpus=1"],
        env=stranger,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert result.returncode != 0
    assert "token" in (result.stdout + result.stderr).lower()
    assert alive_nodes(address, env) == 2


def test_a_driver_without_the_token_gets_one_clear_line(cluster, tmp_path: Path):
    address, env = cluster
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}
    grids = [{"optimizer": "sgd", "lr": [0.1], "weight_decay": [0.0]}]
    (tmp_path / "spec.json").write_text(json.dumps(spec_data(epochs=1, seeds=[0], grids=grids)))
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    run = [str(BIN / "wdgrid"), "run", str(tmp_path / "spec.json"), "--db", db, "--address", address]
    result = subprocess.run(run, env=no_token, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"wdgrid: cannot join the Ray cluster at {address}") and "RAY_AUTH_TOKEN" in last
    assert "Traceback" not in result.stderr
    with Storage(db, migrate=False) as store:
        assert store.get_sweep(1).status == "pending"  # untouched: the same command runs it once the token is set
