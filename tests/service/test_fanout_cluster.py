"""A real two-node Ray cluster on this machine, wired as docker-compose wires one: a head and a second node
(``ray start``), both with token auth and one shared ``RAY_AUTH_TOKEN``. ``wdgrid run --address`` joins it with the
token and its trials land on both nodes; a node or a driver without the token is refused."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from results import SqlStorage
from tests.factories import spec_data
from tests.processes import BIN, alive_nodes, two_node_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with two_node_cluster(tmp_path_factory.mktemp("ray-logs")) as c:
        yield c


def test_trials_land_on_both_nodes_of_a_token_authenticated_cluster(cluster, tmp_path: Path):
    address, env = cluster
    grids = [{"optimizer": "sgd", "lr": [0.01, 0.02, 0.03, 0.04], "weight_decay": [0.0]}]
    (tmp_path / "spec.json").write_text(json.dumps(spec_data(epochs=12, seeds=[0], grids=grids)))
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    run = [str(BIN / "wdgrid"), "run", str(tmp_path / "spec.json"), "--db", db, "--address", address]
    result = subprocess.run([*run, "--cells-per-trial", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with SqlStorage(db, migrate=False) as store:
        trials = store.trials(1)[0]
        assert {t.status for t in trials} == {"completed"}
        nodes = {a.node for t in store.trials(1)[0] for a in store.attempts(t.id)}
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
    with SqlStorage(db, migrate=False) as store:
        assert store.get_sweep(1).status == "pending"  # untouched: the same command runs it once the token is set
