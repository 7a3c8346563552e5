"""The controller on a real two-node Ray cluster, wired as docker-compose.yml wires one: ``RAY_ADDRESS`` names the
head, and the head, the second node and the controller (whose sweep drivers join the cluster) share one
``RAY_AUTH_TOKEN``. A sweep POSTed to it trains on both nodes."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from results import SqlStorage
from tests.factories import spec_data
from tests.processes import start_server, stop_server, two_node_cluster


def test_a_sweep_submitted_to_the_controller_runs_on_both_nodes_of_the_cluster(tmp_path: Path):
    with two_node_cluster(tmp_path) as (address, env):
        db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
        server = start_server(tmp_path, db, secrets.token_hex(16), env={**env, "RAY_ADDRESS": address})
        try:
            with server.client() as c:
                assert c.get("/readyz").json()["ray"] == "ok"
                grids = [{"optimizer": "sgd", "lr": [0.01, 0.02, 0.03, 0.04], "weight_decay": [0.0]}]
                sweep = c.post("/sweeps", json=spec_data(epochs=12, seeds=[0], grids=grids)).json()
                deadline = time.monotonic() + 240
                while (state := c.get(f"/sweeps/{sweep['id']}").json())["status"] not in ("completed", "failed"):
                    assert time.monotonic() < deadline, (tmp_path / "wdgrid-logs" / "sweep-1.log").read_text()[-3000:]
                    time.sleep(0.5)
            assert state["status"] == "completed" and state["counts"]["completed"] == 4
        finally:
            stop_server(server)
        with SqlStorage(db, migrate=False) as store:
            nodes = {a.node for t in store.trials(sweep["id"])[0] for a in store.attempts(t.id)}
        assert len(nodes) == 2, f"every trial ran on one node: {nodes}"
