"""``wdgrid`` commands that talk to a running controller over HTTP: ``submit``, ``status``, ``trials``, ``download``,
``cancel``. The controller is ``$WDGRID_URL`` (default http://127.0.0.1:8000); its token is ``$WDGRID_API_TOKEN``, the
same variable the server reads (``$WDGRID_TOKEN``, the name of earlier versions, still works)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli._common import Snapshot, command, errors_line, fail
from service.cli._common import watch as watch_progress

if TYPE_CHECKING:
    import httpx

app = typer.Typer()


def _client() -> httpx.Client:
    import os

    import httpx

    url = os.environ.get("WDGRID_URL", "http://127.0.0.1:8000")
    token = os.environ.get("WDGRID_API_TOKEN") or os.environ.get("WDGRID_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; any failure (server down, 4xx, 5xx) is one line on stderr and exit status 1."""
    import httpx

    try:
        with _client() as client:
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                typer.echo(f"wdgrid: cannot reach {client.base_url}: {exc} (set WDGRID_URL)", err=True)
                raise typer.Exit(1) from None
    except httpx.InvalidURL as exc:
        typer.echo(f"wdgrid: WDGRID_URL is not a URL: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # a validation error: name the field
        detail = errors_line(detail)
    hint = " (set WDGRID_API_TOKEN to the server's token)" if response.status_code == 401 else ""
    typer.echo(f"wdgrid: {response.status_code} {detail}{hint}", err=True)
    raise typer.Exit(1)


def _status_line(s: dict[str, Any]) -> str:
    c = s["counts"]
    eta = f", ETA {s['eta_s']:.0f} s" if s.get("eta_s") else ""
    return (
        f"sweep {s['id']} '{s['name']}' {s['status']}: {c['completed'] + c['diverged'] + c['failed']}/{s['n_cells']} "
        f"cells finished ({c['running']} running, {c['diverged']} diverged, {c['failed']} failed{_reused(s)}){eta}"
    )


@app.command()
def submit(
    spec_file: Annotated[Path | None, typer.Argument(metavar="[SPEC.json]", help="A sweep spec (JSON).")] = None,
    preset: Annotated[str | None, typer.Option(help="Submit a preset instead of a spec file.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key gives the same sweep.")
    ] = None,
) -> None:
    """Submit a sweep to the controller at $WDGRID_URL; prints its id."""
    import json

    if (spec_file is None) == (preset is None):
        raise fail("give a spec file or --preset NAME (one of them)")
    if preset is not None:
        body: Any = {"preset": preset}
    else:
        assert spec_file is not None
        try:
            body = json.loads(spec_file.read_bytes())
        except OSError as exc:
            raise fail(f"cannot read {spec_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise fail(f"{spec_file} is not JSON: {exc}") from None
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    sweep = _call("POST", "/sweeps", json=body, headers=headers).json()
    print(
        f"submitted sweep {sweep['id']} ({sweep['n_cells']} cells{_reused(sweep)}): "
        f"{command()} status {sweep['id']} --watch"
    )


def _reused(sweep: dict[str, Any]) -> str:
    """``, 8 reused from sweep 1 (nothing left to train)`` — or nothing, when no cell was reused."""
    n, sources = sweep.get("reused_cells", 0), sweep.get("reused_from") or {}
    if not n:
        return ""
    where = ", ".join(f"sweep {k}" for k in sources)
    left = sweep["n_cells"] - n
    rest = "nothing left to train" if left == 0 else f"{left} to train"
    return f", {n} reused from {where} ({rest})"


@app.command()
def status(
    sweep_id: Annotated[int, typer.Argument(min=1)],
    watch: Annotated[bool, typer.Option("--watch", help="A live progress bar until the sweep ends.")] = False,
) -> None:
    """A sweep's status, counts and ETA (--watch: a live progress bar)."""

    sweep = _call("GET", f"/sweeps/{sweep_id}").json()
    if watch:

        def poll() -> Snapshot:
            nonlocal sweep
            sweep = _call("GET", f"/sweeps/{sweep_id}").json()
            return Snapshot(sweep["counts"], sweep["status"], sweep.get("eta_s"))

        watch_progress(sweep_id, sweep["n_cells"], poll)
    print(_status_line(sweep))
    if watch and sweep["status"] != "completed":
        raise typer.Exit(1)


@app.command()
def trials(
    sweep_id: Annotated[int, typer.Argument(min=1)],
    optimizer: Annotated[str | None, typer.Option(help="Only this optimizer's trials.")] = None,
    status_: Annotated[str | None, typer.Option("--status", help="Only trials in this status.")] = None,
) -> None:
    """A sweep's trials as a table: α, λ (raw per step), seed, status, final test error (%)."""
    from rich.console import Console
    from rich.table import Table

    params = {k: v for k, v in {"optimizer": optimizer, "status": status_}.items() if v}
    rows: list[dict[str, Any]] = []
    while True:
        page = _call("GET", f"/sweeps/{sweep_id}/trials", params=params | {"offset": len(rows), "limit": 1000}).json()
        rows += page["data"]
        if not page["data"] or len(rows) >= page["count"]:
            break
    objective = _call("GET", f"/sweeps/{sweep_id}").json()["spec"].get("objective") or {}
    metric = str(objective.get("metric", "test_error"))
    heading = {"test_error": "test error %", "train_error": "train error %"}.get(metric, metric.replace("_", " "))
    table = Table(title=f"sweep {sweep_id}: {len(rows)} trials")
    for column in ("id", "optimizer", "α", "λ (raw)", "seed", "status", "attempts", heading):
        table.add_column(column, justify="right")
    for t in rows:
        value = t[metric] if metric in t else (t.get("metrics") or {}).get(metric)
        shown = "" if value is None else f"{value:.2f}" if metric.endswith("_error") else f"{value:.4g}"
        cells = (t["id"], t["optimizer"], f"{t['lr']:.4g}", f"{t['weight_decay']:.4g}", t["seed"], t["status"])
        table.add_row(*(str(c) for c in cells), str(t["attempts"]), shown)
    Console().print(table)


@app.command()
def download(
    sweep_id: Annotated[int, typer.Argument(min=1)],
    what: Annotated[str, typer.Option(help="grid, trials, epochs or heatmap.")] = "grid",
    optimizer: Annotated[str | None, typer.Option(help="The grid's optimizer (grid: required).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write [default: stdout].")] = None,
) -> None:
    """Download a sweep's grid CSV, trials CSV, epochs CSV or heatmap PNG."""
    paths = {"grid": "grid.csv", "trials": "trials.csv", "epochs": "epochs.csv", "heatmap": "heatmap.png"}
    if what not in paths:
        raise fail(f"--what must be one of {', '.join(paths)}, got {what!r}")
    if what == "grid" and optimizer is None:
        raise fail("--what grid needs --optimizer (sgd, sgdw, adam or adamw)")
    params = {"optimizer": optimizer} if optimizer else {}
    content = _call("GET", f"/sweeps/{sweep_id}/{paths[what]}", params=params).content
    if output is None:
        if what == "heatmap":
            raise fail("a PNG does not go to a terminal: give -o FILE")
        sys.stdout.write(content.decode())
        return
    output.write_bytes(content)
    print(f"wrote {output} ({len(content)} bytes)")


@app.command()
def cancel(sweep_id: Annotated[int, typer.Argument(min=1)]) -> None:
    """Cancel a sweep: unfinished cells become cancelled, finished ones stay."""
    print(_status_line(_call("POST", f"/sweeps/{sweep_id}/cancel").json()))
