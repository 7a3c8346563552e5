"""The ``wdgrid`` command line. Heavy imports (torch) happen inside the commands that need them, so that
``wdgrid --help`` and ``wdgrid --version`` answer at once."""

from __future__ import annotations

import sys
import threading
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx

    from results import Storage
    from service.settings import Settings
    from sweeps import SweepSpec

app = typer.Typer(
    name="wdgrid",
    help="(α, λ) grid searches for L2 regularization vs decoupled weight decay (Loshchilov & Hutter, ICLR 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"wdgrid {version('wdgrid')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """wdgrid: measure how separable the learning rate α and the weight decay λ are."""


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Epochs per optimizer.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of initialization and batch order.")] = 0,
) -> None:
    """Train one small MLP on MNIST-1D with each of sgd, sgdw, adam and adamw (cosine schedule); about 10 s on CPU."""
    from rich.console import Console
    from rich.table import Table

    from workers.demo import run_demo

    console = Console()
    with console.status(f"training 4 optimizers × {epochs} epochs on MNIST-1D …"):
        results = run_demo(epochs=epochs, seed=seed)
    table = Table(title=f"MNIST-1D, MLP, {epochs} epochs, cosine schedule")
    for column in ("optimizer", "α (lr)", "λ (raw, per step)", "test error %", "seconds"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.optimizer, f"{r.lr:g}", f"{r.weight_decay:.3g}", f"{r.test_error:.1f}", f"{r.seconds:.1f}")
    console.print(table)


def _fail(message: str) -> typer.Exit:
    """Print one clear line to stderr; the caller raises the returned Exit (code 2: bad input)."""
    typer.echo(f"wdgrid: {message}", err=True)
    return typer.Exit(2)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _load_spec(path: Path | None, preset: str | None) -> SweepSpec:
    from pydantic import ValidationError

    from sweeps import SweepSpec, UnknownPresetError, load_preset

    if (path is None) == (preset is None):
        raise _fail("give a spec file or --preset NAME (one of them)")
    try:
        if preset is not None:
            return load_preset(preset)
        assert path is not None
        return SweepSpec.model_validate_json(path.read_bytes())
    except UnknownPresetError as exc:
        raise _fail(str(exc).strip("'\"")) from None
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise _fail(f"invalid spec {path or preset}: {where}: {first['msg']}{more}") from None


def _shown(url: str) -> str:
    """A database URL fit to print: its password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://***" if "@" in url else url


def _watch(url: str, sweep_id: int, total: int, done: threading.Event) -> None:
    """Draw cells finished / total with an ETA until ``done`` is set, reading the store (its own connection)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from results import Storage

    columns = (
        TextColumn("[bold]sweep {task.fields[sweep]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells  {task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Storage(url, migrate=False) as store, Progress(*columns, transient=False) as bar:
        task = bar.add_task("", total=total, sweep=sweep_id, detail="")
        while True:
            counts = store.status_counts(sweep_id)
            finished = counts["completed"] + counts["diverged"] + counts["failed"]
            detail = f"{counts['running']} running, {counts['diverged']} diverged, {counts['failed']} failed"
            bar.update(task, completed=finished, detail=detail)
            if done.wait(0.5):
                counts = store.status_counts(sweep_id)
                finished = counts["completed"] + counts["diverged"] + counts["failed"]
                bar.update(task, completed=finished, detail=detail)
                return


@app.command("run")
def run_command(
    spec_file: Annotated[
        Path | None, typer.Argument(metavar="[SPEC.json]", help="A sweep spec (JSON); or use --preset.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Run a preset instead of a spec file (see README).")] = None,
    db: Annotated[
        str | None, typer.Option(help="Results store URL [default: $WDGRID_DATABASE_URL, else sqlite:///wdgrid.db].")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write grid CSVs, trials.csv, epochs.csv and heatmaps here.")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new sweep even if this spec ran here before.")] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join [default: $RAY_ADDRESS, else an embedded Ray].")
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.01, help="CPUs per Ray trial (torch threads).")] = 1.0,
    gpus_per_trial: Annotated[
        float | None, typer.Option(min=0.0, help="GPUs per trial (fractions share one) [default: 1 if any GPU].")
    ] = None,
    cells_per_trial: Annotated[
        int | None, typer.Option(min=1, help="Most cells trained together in one trial [default: 16 or fewer].")
    ] = None,
    max_retries: Annotated[int, typer.Option(min=0, help="Restarts of a crashed trial from its checkpoint.")] = 2,
    checkpoint_interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between a trial's checkpoints (0: every epoch).")
    ] = 30.0,
) -> None:
    """Run a sweep here, without the service: embedded Ray (or --address), results in the store (--db).

    Running the same spec again resumes it: finished cells are kept, the rest are trained (--new starts afresh)."""
    import logging

    spec = _load_spec(spec_file, preset)
    from results import Storage, SweepBusyError
    from workers.runner import ClusterError, RunOptions, run_sweep

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = RunOptions(
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        cells_per_trial=cells_per_trial,
        max_retries=max_retries,
        checkpoint_interval_s=checkpoint_interval,
    )
    try:
        store = Storage(db)
    except Exception as exc:  # a malformed URL, an unreachable server, a missing driver: all the user's to fix
        raise _fail(
            f"cannot open the results store {_shown(db) if db else '(default)'}: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from None
    key = None if new else f"wdgrid-run:{spec.fingerprint()}"
    sweep = store.create_sweep(spec, idempotency_key=key)
    if sweep.status in ("failed", "cancelled"):
        requeued = store.resume_sweep(sweep.id)
        print(f"resuming sweep {sweep.id} ({sweep.status}): {requeued} cells re-queued")
    total = sum(store.status_counts(sweep.id).values())
    print(f"sweep {sweep.id} '{spec.name}': {total} cells; results in {_shown(store.url)}")
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(store.url, sweep.id, total, done), daemon=True)
    watcher.start()
    try:
        summary = run_sweep(store, sweep.id, options, address=address)
    except (ClusterError, SweepBusyError) as exc:
        done.set()
        typer.echo(f"wdgrid: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        done.set()
        watcher.join()
        print(f"interrupted: sweep {sweep.id} cancelled; run the same command again to resume it")
        raise typer.Exit(130) from None
    finally:
        done.set()
        watcher.join()
    counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
    print(
        f"sweep {sweep.id} {summary.status} in {summary.wall_time_s:.0f} s: {counts} "
        f"({summary.reused} already finished, {summary.retries} trial restarts)"
    )
    if out is not None:
        for path in _write_results(store, sweep.id, out):
            print(f"  wrote {path}")
    print(f"results: sweep {sweep.id} in {_shown(store.url)}")
    if summary.status in ("cancelled", "failed"):
        print("run the same command again to resume it: finished cells are kept, the rest are re-queued")
    if summary.status != "completed":
        raise typer.Exit(1)


def _write_results(store: Storage, sweep_id: int, folder: Path) -> list[Path]:
    """Grid CSV and heatmap per optimizer, the twins figure and separability report where pairs ran, long CSVs."""
    from results import cell_stats, epochs_frame, grid_csv, report, seed_grids, trials_frame
    from results.figures import heatmap_png, twins_png
    from results.separability import TWINS

    folder.mkdir(parents=True, exist_ok=True)
    optimizers = [g["optimizer"] for g in store.get_sweep(sweep_id).spec["grids"]]
    stats = {o: cell_stats(store, sweep_id, o) for o in optimizers}
    paths = []
    for o, s in stats.items():
        grid_csv(s, folder / f"grid-{o}.csv")
        paths += [folder / f"grid-{o}.csv", heatmap_png(s, folder / f"heatmap-{o}.png", title=o)]
    trials_frame(store, sweep_id).to_csv(folder / "trials.csv", index=False)
    epochs_frame(store, sweep_id).to_csv(folder / "epochs.csv", index=False)
    paths += [folder / "trials.csv", folder / "epochs.csv"]
    if any(l2 in stats and dw in stats for l2, dw in TWINS.items()):
        paths.append(twins_png(stats, folder / "twins.png"))
        comparisons = report({o: seed_grids(store, sweep_id, o) for o in optimizers})
        text = "\n\n".join(c.verdict for c in comparisons)
        (folder / "separability.txt").write_text(text + "\n")
        paths.append(folder / "separability.txt")
        print(text)
    return paths


@app.command(hidden=True)
def drive(sweep_id: Annotated[int, typer.Argument(min=1)]) -> None:
    """Run one stored sweep to its end (the controller starts one such process per running sweep)."""
    import logging

    from results import Storage
    from workers.runner import ClusterError, RunOptions, run_sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Storage() as store:
        try:
            summary = run_sweep(store, sweep_id, RunOptions())
        except ClusterError as exc:  # the sweep is untouched; the controller reads this line as its reason
            raise _fail(str(exc)) from None
    print(f"sweep {sweep_id} {summary.status}: {summary.counts}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [default: $WDGRID_HOST or 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="[default: $WDGRID_PORT or 8000].")] = None,
) -> None:
    """Start the REST controller (uvicorn); settings from WDGRID_* variables (README, 'The service')."""
    import os

    import uvicorn
    from pydantic import ValidationError

    from results import Storage
    from service.main import create_app
    from service.settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise _fail(f"bad setting {where}: {message}" if where else f"bad setting: {message}") from None
    try:  # reachable, and migrated, before anything listens: a wrong URL is one line here, not a failed lifespan
        Storage(settings.database_url).close()
    except Exception as exc:
        raise _fail(
            f"cannot open the results store {_shown(settings.database_url)}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    os.environ.setdefault("WDGRID_DATABASE_URL", settings.database_url)
    typer.echo(_serve_banner(settings))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def _serve_banner(settings: Settings) -> str:
    """What `wdgrid serve` is about to do, in three lines: where, with what, and a first request to try."""
    store = _shown(settings.database_url)
    ray = f"the Ray cluster at {settings.ray_address}" if settings.ray_address else "an embedded Ray per sweep"
    slots = settings.max_concurrent_sweeps
    running = f"{slots} sweep{'s' if slots != 1 else ''} at once" if slots else "the queue PAUSED (0 sweeps at once)"
    base = f"http://{settings.host}:{settings.port}"
    auth = ' -H "Authorization: Bearer $WDGRID_API_TOKEN"' if settings.api_token else ""
    return (
        f"wdgrid {version('wdgrid')}: results in {store}; sweeps train on {ray}, {running}.\n"
        f"API docs: {base}/docs   CLI: WDGRID_URL={base} wdgrid submit --preset smoke\n"
        f"Try: curl -X POST {base}/sweeps{auth} -H 'Content-Type: application/json' -d '{{\"preset\": \"smoke\"}}'"
    )


# --- The client: talks to a running controller ($WDGRID_URL, token from $WDGRID_TOKEN) ----------------------------
def _client() -> httpx.Client:
    import os

    import httpx

    url = os.environ.get("WDGRID_URL", "http://127.0.0.1:8000")
    token = os.environ.get("WDGRID_TOKEN")
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
    if isinstance(detail, list):  # a validation error: name the fields
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    hint = " (set WDGRID_TOKEN)" if response.status_code == 401 else ""
    typer.echo(f"wdgrid: {response.status_code} {detail}{hint}", err=True)
    raise typer.Exit(1)


def _status_line(s: dict[str, Any]) -> str:
    c = s["counts"]
    eta = f", ETA {s['eta_s']:.0f} s" if s.get("eta_s") else ""
    return (
        f"sweep {s['id']} '{s['name']}' {s['status']}: {c['completed'] + c['diverged'] + c['failed']}/{s['n_cells']} "
        f"cells finished ({c['running']} running, {c['diverged']} diverged, {c['failed']} failed){eta}"
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
        raise _fail("give a spec file or --preset NAME (one of them)")
    if preset is not None:
        body: Any = {"preset": preset}
    else:
        assert spec_file is not None
        try:
            body = json.loads(spec_file.read_bytes())
        except OSError as exc:
            raise _fail(f"cannot read {spec_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise _fail(f"{spec_file} is not JSON: {exc}") from None
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    sweep = _call("POST", "/sweeps", json=body, headers=headers).json()
    print(f"submitted sweep {sweep['id']} ({sweep['n_cells']} cells): wdgrid status {sweep['id']} --watch")


@app.command()
def status(
    sweep_id: Annotated[int, typer.Argument(min=1)],
    watch: Annotated[bool, typer.Option("--watch", help="A live progress bar until the sweep ends.")] = False,
) -> None:
    """A sweep's status, counts and ETA (--watch: a live progress bar)."""
    import time

    sweep = _call("GET", f"/sweeps/{sweep_id}").json()
    if not watch:
        print(_status_line(sweep))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(f"[bold]sweep {sweep_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells  {task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("", total=sweep["n_cells"], detail="")
        while True:
            c = sweep["counts"]
            eta = f" ETA {sweep['eta_s']:.0f} s" if sweep.get("eta_s") else ""
            detail = f"{sweep['status']}, {c['running']} running, {c['diverged']} diverged, {c['failed']} failed{eta}"
            bar.update(task, completed=c["completed"] + c["diverged"] + c["failed"], detail=detail)
            if sweep["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(1)
            sweep = _call("GET", f"/sweeps/{sweep_id}").json()
    print(_status_line(sweep))
    if sweep["status"] != "completed":
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
    table = Table(title=f"sweep {sweep_id}: {len(rows)} trials")
    for column in ("id", "optimizer", "α", "λ (raw)", "seed", "status", "attempts", "test error %"):
        table.add_column(column, justify="right")
    for t in rows:
        error = "" if t["test_error"] is None else f"{t['test_error']:.2f}"
        cells = (t["id"], t["optimizer"], f"{t['lr']:.4g}", f"{t['weight_decay']:.4g}", t["seed"], t["status"])
        table.add_row(*(str(c) for c in cells), str(t["attempts"]), error)
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
        raise _fail(f"--what must be one of {', '.join(paths)}, got {what!r}")
    if what == "grid" and optimizer is None:
        raise _fail("--what grid needs --optimizer (sgd, sgdw, adam or adamw)")
    params = {"optimizer": optimizer} if optimizer else {}
    content = _call("GET", f"/sweeps/{sweep_id}/{paths[what]}", params=params).content
    if output is None:
        if what == "heatmap":
            raise _fail("a PNG does not go to a terminal: give -o FILE")
        sys.stdout.write(content.decode())
        return
    output.write_bytes(content)
    print(f"wrote {output} ({len(content)} bytes)")


@app.command()
def cancel(sweep_id: Annotated[int, typer.Argument(min=1)]) -> None:
    """Cancel a sweep: unfinished cells become cancelled, finished ones stay."""
    print(_status_line(_call("POST", f"/sweeps/{sweep_id}/cancel").json()))


if __name__ == "__main__":
    app()
