"""The REST controller as users meet it: a real ``wdgrid serve`` (uvicorn) on loopback with a bearer token, a real
SQLite store and real sweep drivers on embedded Ray; httpx as the client. Submit, poll to completion, download every
view, cancel, bad input, and a restart mid-sweep that still finishes every cell exactly once."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from results import SqlStorage
from tests.factories import spec_data
from tests.processes import Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("server")
    s = start_server(folder, f"sqlite:///{folder / 'wdgrid.db'}", secrets.token_hex(16))
    yield s
    assert stop_server(s) < 15
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (exit status -15)
    assert s.process.returncode in (0, -signal.SIGTERM), (folder / "serve.log").read_text()[-3000:]
    assert "Application shutdown complete" in (folder / "serve.log").read_text()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _idle_workers() -> set[int]:
    """Ray worker processes that have not taken work yet (Ray titles them ``ray::IDLE``)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::IDLE"):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_health_is_open_and_everything_else_needs_the_token(server: Server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["disk"] == "ok"
    assert ready.json()["ray"] in ("starting", "local")  # the controller's own Ray, up within seconds
    assert httpx.get(f"{server.url}/sweeps").status_code == 401
    assert httpx.get(f"{server.url}/sweeps", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/presets").status_code == 401
    with server.client() as c:
        assert {p["name"] for p in c.get("/presets").json()} >= {"smoke", "cpu-fig2"}


def test_bad_input_is_a_422_or_404_naming_what_is_wrong(server: Server):
    with server.client() as c:
        r = c.post("/sweeps", json={"preset": "smoke", "epochs": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "epochs"]
        r = c.post("/sweeps", json={"preset": "nope"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "preset"]
        r = c.post("/sweeps", json=spec_data(colour="blue"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "colour"]
        r = c.post("/sweeps", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        r = c.post("/sweeps", json=[1, 2])
        assert r.status_code == 422
        r = c.post("/sweeps", json={"preset": "smoke"}, headers={"Idempotency-Key": ""})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
        assert c.get("/sweeps/999").status_code == 404
        assert c.get("/sweeps/0").status_code == 422
        assert c.get("/sweeps", params={"status": "sleeping"}).status_code == 422
        assert c.get("/sweeps/1/grid.csv", params={"optimizer": "rmsprop"}).status_code in (404, 422)


def test_the_openapi_document_describes_the_sweep_body_and_errors(server: Server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    post = doc["paths"]["/sweeps"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    # FastAPI's own schema of the route's typed body (service.schemas.SweepSubmission): nothing patched afterwards
    assert body["oneOf"] == [
        {"$ref": "#/components/schemas/SweepSpec"},
        {"$ref": "#/components/schemas/PresetSubmission"},
    ]
    schemas = doc["components"]["schemas"]
    spec = schemas["SweepSpec"]
    assert set(spec["required"]) == {"dataset", "model", "epochs", "batch_size", "schedule", "seeds", "grids"}
    fastapis = {"HTTPValidationError", "ValidationError"}
    undescribed = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        if name not in fastapis
        for field, value in schema.get("properties", {}).items()
        if not value.get("description")
    ]
    undescribed += [
        f"{method.upper()} {path} {p['name']}"
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        for p in operation.get("parameters", [])
        if not p.get("description")
    ]
    assert undescribed == [], "every field and parameter says what it is, with its unit"
    assert "per optimizer step" in schemas["Grid"]["properties"]["weight_decay"]["description"]
    preset = schemas["PresetSubmission"]
    assert preset["required"] == ["preset"] and "smoke" in preset["properties"]["preset"]["enum"]
    assert set(preset["properties"]) == {"preset", *spec["properties"]}  # overrides are the spec's own fields
    every_ref = json.dumps(doc)
    assert "#/$defs/" not in every_ref  # every reference resolves inside the document's components
    assert {"201", "401", "409", "422"} <= set(post["responses"])
    assert {"200", "401", "404", "422"} <= set(doc["paths"]["/sweeps/{sweep_id}/grid.csv"]["get"]["responses"])
    assert doc["paths"]["/sweeps/{sweep_id}/separability"]["get"]["responses"]["200"]["content"]["application/json"]


def test_a_submitted_sweep_runs_to_completion_and_every_view_downloads(server: Server):
    logs = server.folder / "wdgrid-logs"
    # The controller keeps a driver started ahead (Ray joined, Tune imported): once it is ready, the sweep goes to it.
    wait_for(lambda: "ready after" in _read(logs / "standby.log"), 120, "the standby driver")
    # ... and has had the raylet start a worker per trial slot ahead, which the first trials take.
    assert "asked the raylet for 2 worker processes" in _read(logs / "standby.log")
    idle = wait_for(_idle_workers, 60, "the standby's workers started ahead")
    with server.client() as c:
        r = c.post("/sweeps", json={"preset": "smoke"}, headers={"Idempotency-Key": "smoke-1"})
        assert r.status_code == 201
        sweep = r.json()
        assert r.headers["location"] == f"/sweeps/{sweep['id']}" and sweep["n_cells"] == 8
        again = c.post("/sweeps", json={"preset": "smoke"}, headers={"Idempotency-Key": "smoke-1"})
        assert again.json()["id"] == sweep["id"]  # a retried POST: the same sweep
        done = wait_for(
            lambda: (s := c.get(f"/sweeps/{sweep['id']}").json())["status"] in ("completed", "failed") and s,
            240,
            "the smoke sweep",
        )
        assert done["status"] == "completed" and done["progress"] == 1.0 and done["counts"]["completed"] == 8
        assert done["elapsed_s"] > 0 and done["eta_s"] == 0.0
        # The standby driver took the sweep, and had joined the controller's Ray rather than starting one of its own.
        assert httpx.get(f"{server.url}/readyz").json()["ray"] == "local"
        driver_log, standby_log = _read(logs / f"sweep-{sweep['id']}.log"), _read(logs / "standby.log")
        assert re.search(rf"standby driver (\d+) takes sweep {sweep['id']}\n", driver_log)
        assert "joined the Ray cluster at 127.0.0.1:" in standby_log
        assert "started an embedded Ray" not in driver_log + standby_log
        with SqlStorage(server.db, migrate=False) as store:
            trials, _ = store.trials(sweep["id"], limit=100)
            pids = {a.pid for t in trials for a in store.attempts(t.id)}
        assert pids & idle, f"the trials ran in {pids}, none of them a worker started ahead ({idle})"
        refused = c.post(f"/sweeps/{sweep['id']}/resume")  # nothing failed or was cancelled: nothing to resume
        assert refused.status_code == 409 and "only failed or cancelled sweeps resume" in refused.json()["detail"]
        listed = c.get("/sweeps", params={"status": "completed"}).json()
        assert sweep["id"] in [s["id"] for s in listed["data"]]

        grid = c.get(f"/sweeps/{sweep['id']}/grid.csv", params={"optimizer": "sgd"})
        assert grid.status_code == 200 and grid.headers["content-type"].startswith("text/csv")
        lines = grid.text.strip().splitlines()
        assert lines[0] == "lr\\weight_decay,0.0,0.0005" and len(lines) == 3
        n = c.get(f"/sweeps/{sweep['id']}/grid.csv", params={"optimizer": "adamw", "metric": "n"}).text
        assert n.strip().splitlines()[1].endswith(",1.0,1.0") or n.strip().splitlines()[1].endswith(",1,1")
        trials_csv = c.get(f"/sweeps/{sweep['id']}/trials.csv").text.strip().splitlines()
        assert len(trials_csv) == 1 + 8
        epochs_csv = c.get(f"/sweeps/{sweep['id']}/epochs.csv").text.strip().splitlines()
        assert len(epochs_csv) == 1 + 8 * 2
        png = c.get(f"/sweeps/{sweep['id']}/heatmap.png")
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert c.get(f"/sweeps/{sweep['id']}/separability").status_code == 409  # sgd without sgdw: no pair

        trials = c.get(f"/sweeps/{sweep['id']}/trials", params={"optimizer": "adamw", "limit": 3}).json()
        assert trials["count"] == 4 and len(trials["data"]) == 3
        assert {t["optimizer"] for t in trials["data"]} == {"adamw"}
        one = c.get(f"/sweeps/{sweep['id']}/trials/{trials['data'][0]['id']}").json()
        assert [e["epoch"] for e in one["epochs"]] == [1, 2] and one["attempts_detail"][0]["status"] == "completed"
        assert one["test_error"] == one["epochs"][-1]["test_error"] and one["config"]["optimizer"] == "adamw"

        # the same spec again: its 8 finished cells are reused, not retrained; the sweep completes on its own
        reused = c.post("/sweeps", json={"preset": "smoke"}).json()
        assert reused["id"] != sweep["id"] and reused["reused_cells"] == 8
        assert reused["reused_from"] == {str(sweep["id"]): 8} and reused["counts"]["completed"] == 8
        assert c.get(f"/sweeps/{reused['id']}/grid.csv", params={"optimizer": "sgd"}).text == grid.text
        wait_for(lambda: c.get(f"/sweeps/{reused['id']}").json()["status"] == "completed", 120, "the reused sweep")
        later = c.get(f"/sweeps/{reused['id']}").json()  # reuse is on record, not only in the POST's response
        assert (later["reused_cells"], later["reused_from"]) == (8, {str(sweep["id"]): 8})
        assert c.get(f"/sweeps/{sweep['id']}").json()["reused_cells"] == 0

        # `wdgrid run` of the same spec on the same store reuses the service's cells too
        ran = subprocess.run(
            [str(Path(sys.executable).parent / "wdgrid"), "run", "--preset", "smoke", "--db", server.db],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert f"8 finished cells reused from sweep {sweep['id']}" in ran.stdout and "0 trial restarts" in ran.stdout
        fresh = c.post("/sweeps", json={"preset": "smoke"}, params={"reuse": "false"}).json()
        assert fresh["reused_cells"] == 0 and fresh["counts"]["pending"] == 8
        c.post(f"/sweeps/{fresh['id']}/cancel")


def long_spec(epochs: int) -> dict[str, Any]:
    grids = [{"optimizer": "sgd", "lr": [0.01, 0.02, 0.03, 0.04], "weight_decay": [0.0]}]
    return spec_data(name="long", epochs=epochs, seeds=[0], grids=grids)


def counts(c: httpx.Client, sweep_id: int) -> dict[str, int]:
    result: dict[str, int] = c.get(f"/sweeps/{sweep_id}").json()["counts"]
    return result


def test_cancel_stops_a_running_sweep_and_resume_requeues_it(server: Server):
    with server.client() as c:
        sweep_id = c.post("/sweeps", json=long_spec(300)).json()["id"]
        wait_for(lambda: counts(c, sweep_id)["running"] > 0, 120, "cells to start")
        cancelled = c.post(f"/sweeps/{sweep_id}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["counts"]["running"] == 0
        assert c.post(f"/sweeps/{sweep_id}/cancel").status_code == 200  # again: nothing changes
        with SqlStorage(server.db, migrate=False) as store:  # the driver lets go of the sweep within seconds
            wait_for(lambda: store.get_sweep(sweep_id).driver is None, 15, "the driver to stop")
        resumed = c.post(f"/sweeps/{sweep_id}/resume").json()
        assert resumed["status"] in ("pending", "running") and resumed["counts"]["cancelled"] == 0
        c.post(f"/sweeps/{sweep_id}/cancel")  # do not train 300 epochs: leave the queue free


def test_a_restarted_server_finishes_a_running_sweep_with_every_cell_exactly_once(tmp_path: Path):
    token = secrets.token_hex(16)
    db = f"sqlite:///{tmp_path / 'wdgrid.db'}"
    first = start_server(tmp_path, db, token)
    with first.client() as c:
        sweep_id = c.post("/sweeps", json=long_spec(40) | {"name": "restart"}).json()["id"]
        wait_for(lambda: counts(c, sweep_id)["running"] > 0, 120, "cells to start")
    assert stop_server(first) < 15  # SIGTERM mid-sweep: its driver goes down with it
    with SqlStorage(db, migrate=False) as store:
        assert store.get_sweep(sweep_id).status == "running"
    second = start_server(tmp_path, db, token)
    try:
        with second.client() as c:
            done = wait_for(
                lambda: (s := c.get(f"/sweeps/{sweep_id}").json())["status"] in ("completed", "failed") and s,
                300,
                "the sweep to finish after the restart",
            )
        assert done["status"] == "completed" and done["counts"]["completed"] == 4
        with SqlStorage(db, migrate=False) as store:
            for t in store.trials(sweep_id)[0]:
                statuses = [a.status for a in store.attempts(t.id)]
                assert statuses.count("completed") == 1 and set(statuses) <= {"completed", "lost"}
                assert [e.epoch for e in store.epochs(t.id, attempt=t.attempts)] == list(range(1, 41))
    finally:
        stop_server(second)


def cli(
    server: Server, *args: str, token: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WDGRID_URL": url or server.url, "WDGRID_API_TOKEN": token or server.token, "COLUMNS": "150"}
    wdgrid = Path(sys.executable).parent / "wdgrid"
    return subprocess.run([str(wdgrid), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_cli_client_talks_to_the_server(server: Server, tmp_path: Path):
    with server.client() as c:
        smoke = next(s for s in c.get("/sweeps", params={"status": "completed"}).json()["data"] if s["name"] == "smoke")
    sid = str(smoke["id"])
    status = cli(server, "status", sid)
    assert status.returncode == 0 and f"sweep {sid} 'smoke' completed: 8/8 cells finished" in status.stdout
    watched = cli(server, "status", sid, "--watch")
    assert watched.returncode == 0 and "8/8" in watched.stdout
    table = cli(server, "trials", sid, "--optimizer", "sgd")
    assert table.returncode == 0 and "4 trials" in table.stdout and "completed" in table.stdout
    grid = cli(server, "download", sid, "--what", "grid", "--optimizer", "sgd")
    assert grid.returncode == 0 and grid.stdout.startswith("lr\\weight_decay,0.0,0.0005")
    png = cli(server, "download", sid, "--what", "heatmap", "-o", str(tmp_path / "h.png"))
    assert png.returncode == 0 and (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert cli(server, "download", sid, "--what", "epochs", "-o", str(tmp_path / "e.csv")).returncode == 0
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 1 + 16

    (tmp_path / "spec.json").write_text(json.dumps(long_spec(300) | {"name": "to cancel"}))
    submitted = cli(server, "submit", str(tmp_path / "spec.json"))
    assert submitted.returncode == 0 and submitted.stdout.startswith("submitted sweep ")
    assert "reused" not in submitted.stdout
    again = cli(server, "submit", "--preset", "smoke")  # every cell finished before: the CLI says so
    assert again.returncode == 0 and "8 cells, 8 reused from sweep" in again.stdout
    assert "nothing left to train" in again.stdout
    new_id = submitted.stdout.split()[2]
    cancelled = cli(server, "cancel", new_id)
    assert cancelled.returncode == 0 and f"sweep {new_id} 'to cancel' cancelled" in cancelled.stdout

    # every failure is one line on stderr
    for args, kwargs, message in [
        (("status", sid), {"token": "wrong"}, "401"),
        (("status", "999"), {}, "404 no sweep with id 999"),
        (("submit", "--preset", "nope"), {}, "422 body.preset: unknown preset 'nope'"),
        (("status", sid), {"url": "http://127.0.0.1:9"}, "cannot reach http://127.0.0.1:9"),
        (("status", sid), {"url": "http://[::1"}, "WDGRID_URL is not a URL"),
        (("download", sid, "--what", "everything"), {}, "--what must be one of"),
    ]:
        result = cli(server, *args, **kwargs)
        assert result.returncode != 0, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_plugins_are_listed_checked_at_submission_and_trained_by_ray_workers(
    server: Server, wdgrid_data_dir: Path, tmp_path: Path
):
    with server.client() as c:
        plugins = {(p["kind"], p["name"]): p for p in c.get("/plugins").json()}
        convnet = plugins[("model", "small_convnet")]
        assert convnet["package"] == "wdgrid-examples" and convnet["entry_point"].startswith("wdgrid_examples.")
        assert set(convnet["args_schema"]["properties"]) == {"width", "dropout"} and convnet["error"] is None
        assert plugins[("dataset", "npz")]["args_schema"]["required"] == ["path"]
        assert plugins[("model", "mlp")]["package"] == "wdgrid" and plugins[("model", "mlp")]["args_schema"] is None

        bad = c.post("/sweeps", json={"preset": "smoke", "model": "small_convnet", "model_args": {"width": "x"}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "model_args", "width"]
        unknown = c.post("/sweeps", json=spec_data(model="vgg16"))
        detail = unknown.json()["detail"][0]
        assert unknown.status_code == 422 and detail["loc"] == ["body", "model"] and "small_convnet" in detail["msg"]
        (tmp_path / "x.npz").write_bytes(b"")
        os.symlink(tmp_path, wdgrid_data_dir / "escape")  # inside the data directory, pointing out of it
        escape = c.post("/sweeps", json=spec_data(dataset="npz", dataset_args={"path": "escape/x.npz"}))
        assert escape.status_code == 422 and escape.json()["detail"][0]["loc"] == ["body", "dataset_args", "path"]
        assert "outside the data directory" in escape.json()["detail"][0]["msg"]

        spec = spec_data(
            name="plugin sweep",
            dataset="digits",
            model="small_convnet",
            model_args={"width": 4},
            epochs=1,
            seeds=[0],
            grids=[{"optimizer": "adamw", "lr": [1e-3, 3e-3], "weight_decay": [1e-3]}],
        )
        created = c.post("/sweeps", json=spec)
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        done = wait_for(
            lambda: (s := c.get(f"/sweeps/{sweep_id}").json())["status"] in ("completed", "failed") and s,
            240,
            "the plugin sweep",
        )
        assert done["status"] == "completed" and done["counts"]["completed"] == 2
    with SqlStorage(server.db, migrate=False) as store:
        trial = store.trials(sweep_id)[0][0]
        assert trial.config["model_args"] == {"width": 4}
        versions = trial.provenance.package_versions or {}
        assert "wdgrid-examples" in versions and "wdgrid" in versions  # the plugin's package is in the provenance


def test_a_trainer_sweep_is_refused_or_run_and_read_on_its_objective(server: Server):
    lm = spec_data(
        name="char lm",
        dataset="python_source",
        dataset_args={"chars": 8000, "block": 16},
        model="char_transformer",
        model_args={"d_model": 16, "layers": 1, "heads": 2},
        trainer="char_lm",
        objective={"metric": "val_loss", "mode": "min"},
        epochs=2,
        batch_size=64,
        seeds=[0],
        grids=[
            {"optimizer": "adam", "lr": [1e-3, 3e-3], "weight_decay": [1e-4]},
            {"optimizer": "adamw", "lr": [1e-3, 3e-3], "weight_decay": [1e-4]},
        ],
    )
    with server.client() as c:
        trainers = {p["name"]: p for p in c.get("/plugins").json() if p["kind"] == "trainer"}
        assert trainers["char_lm"]["metrics"] == ["train_loss", "val_loss", "val_bpc"]
        wrong = c.post("/sweeps", json=lm | {"objective": {"metric": "test_error"}})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "objective"]
        assert "reports: train_loss, val_loss, val_bpc" in wrong.json()["detail"][0]["msg"]
        bad = c.post("/sweeps", json=lm | {"trainer_args": {"clip": "high"}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "trainer_args", "clip"]

        created = c.post("/sweeps", json=lm)
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        done = wait_for(
            lambda: (s := c.get(f"/sweeps/{sweep_id}").json())["status"] in ("completed", "failed") and s,
            240,
            "the trainer sweep",
        )
        assert done["status"] == "completed" and done["counts"]["completed"] == 4, done
        trials = c.get(f"/sweeps/{sweep_id}/trials").json()["data"]
        assert all(t["metrics"]["val_loss"] > 0 and t["test_error"] is None for t in trials)
        grid = c.get(f"/sweeps/{sweep_id}/grid.csv", params={"optimizer": "adamw"}).text.splitlines()
        values = {float(line.split(",")[1]) for line in grid[1:]}
        assert values == {t["metrics"]["val_loss"] for t in trials if t["optimizer"] == "adamw"}
        epochs = c.get(f"/sweeps/{sweep_id}/epochs.csv").text.splitlines()
        assert epochs[0].endswith(",val_bpc,val_loss") and len(epochs) == 1 + 4 * 2


def test_the_api_docs_load_nothing_from_elsewhere_and_need_no_token(server: Server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{server.url}{page}").text
        assert "http://" not in html and "https://" not in html, html  # no CDN, no web fonts
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
        assert any(a.endswith(".js") for a in assets), html
        for asset in assets:
            r = httpx.get(f"{server.url}{asset}")  # public library code: served without the token
            assert r.status_code == 200 and len(r.content) > 1000, asset
            assert b"cdn.redoc.ly" not in r.content, asset  # ReDoc's logo from Redocly's CDN: left out
    assert httpx.get(f"{server.url}/docs-assets/../sweeps").status_code in (401, 404)  # no way round the token


def test_a_body_without_its_content_type_gets_a_hint_not_a_riddle(server: Server):
    with server.client() as c:
        r = c.post("/sweeps", content=json.dumps({"preset": "smoke"}), headers={"Content-Type": "text/plain"})
        assert r.status_code == 422
        assert "Content-Type: application/json" in r.json()["detail"][0]["msg"]
        r = c.post("/sweeps", json={"preset": "smoke", "epochs": 0})  # JSON sent right: no hint
        assert "Content-Type" not in r.json()["detail"][0]["msg"]
