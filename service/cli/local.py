"""``wdgrid`` commands that train on this machine without the controller: ``run`` (a sweep, embedded Ray or a
cluster, results in the store), ``demo`` (four optimizers, one minute), and the hidden ``drive`` (what the controller
starts for each running sweep) and ``standby`` (the driver it keeps ready for the next sweep)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli._common import Snapshot, errors_line, fail, first_line, settings_or_fail, shown, watch

if TYPE_CHECKING:
    from service.fanout import RunOptions
    from service.settings import Settings
    from sweeps import SweepSpec

app = typer.Typer()


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Epochs per optimizer.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of initialization and batch order.")] = 0,
) -> None:
    """Train one small MLP on MNIST-1D with each of sgd, sgdw, adam and adamw (cosine schedule); under a minute."""
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


def _load_spec(path: Path | None, preset: str | None) -> SweepSpec:
    from pydantic import ValidationError

    from sweeps import SweepSpec, UnknownPresetError, load_preset

    if (path is None) == (preset is None):
        raise fail("give a spec file or --preset NAME (one of them)")
    try:
        if preset is not None:
            return load_preset(preset)
        assert path is not None
        return SweepSpec.model_validate_json(path.read_bytes())
    except UnknownPresetError as exc:
        raise fail(str(exc).strip("'\"")) from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise fail(f"invalid spec {path or preset}: {errors_line(exc.errors())}") from None


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
    new: Annotated[
        bool, typer.Option("--new", help="Start a new sweep and train every cell, even if this spec ran here before.")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join [default: $RAY_ADDRESS, else an embedded Ray].")
    ] = None,
    cpus_per_trial: Annotated[
        float | None,
        typer.Option(min=0.01, help="CPUs per Ray trial (torch threads) [default: $WDGRID_CPUS_PER_TRIAL]."),
    ] = None,
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

    Running the same spec again resumes it: finished cells are kept, the rest are trained; cells that any sweep of
    the same spec in the store finished (also one submitted to the service) are reused (--new trains afresh)."""
    import dataclasses
    import logging

    from results import SqlStorage, SweepBusyError
    from results.export import write_all
    from service.fanout import ClusterError, run_sweep
    from sweeps import DataPathError, SpecLimitError, expand

    settings = settings_or_fail()
    if out is not None and (out / "__init__.py").exists():
        raise fail(f"--out {out} is a Python package (it holds __init__.py): give a folder of its own")
    spec = _load_spec(spec_file, preset)
    try:
        spec.check_limits(settings.spec_limits())
        spec.check_data_paths(settings.data_root())
    except (SpecLimitError, DataPathError) as exc:  # valid, but refused here: name the field
        raise fail(f"invalid spec {spec_file or preset}: {exc.field}: {exc}") from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    base = settings.run_options()
    options = dataclasses.replace(
        base,
        max_retries=max_retries,
        checkpoint_interval_s=checkpoint_interval,
        cells_per_trial=cells_per_trial,
        cpus_per_trial=base.cpus_per_trial if cpus_per_trial is None else cpus_per_trial,
        gpus_per_trial=base.gpus_per_trial if gpus_per_trial is None else gpus_per_trial,
    )
    url = db or settings.database_url
    try:
        store = SqlStorage(url)
    except Exception as exc:  # a malformed URL, an unreachable server, a missing driver: all the user's to fix
        raise fail(f"cannot open the results store {shown(url)}: {type(exc).__name__}: {first_line(exc)}") from None
    key = None if new else f"wdgrid-run:{spec.fingerprint()}"
    sweep = store.create_sweep(expand(spec), idempotency_key=key)
    if sweep.status in ("failed", "cancelled"):
        requeued = store.resume_sweep(sweep.id)
        print(f"resuming sweep {sweep.id} ({sweep.status}): {requeued} cells re-queued")
    elif (
        not new
        and sweep.status == "pending"
        and sweep.started_at is None
        and (reused := store.reuse_finished(sweep.id))
    ):
        # New here, but other sweeps of the same spec (this command's or the service's) finished some cells.
        sources = ", ".join(f"sweep {k}" for k in reused)
        print(f"sweep {sweep.id}: {sum(reused.values())} finished cells reused from {sources} (not trained again)")
    total = sum(store.status_counts(sweep.id).values())
    print(f"sweep {sweep.id} '{spec.name}': {total} cells; results in {shown(store.url)}")

    def poll() -> Snapshot:
        return Snapshot(store.status_counts(sweep.id))

    done = threading.Event()
    watcher = threading.Thread(target=watch, args=(sweep.id, total, poll), kwargs={"stop": done}, daemon=True)
    watcher.start()
    try:
        summary = run_sweep(store, sweep.id, options, address=address or settings.ray_address)
    except (ClusterError, SweepBusyError) as exc:
        done.set()
        raise fail(str(exc), 1) from None
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
        for path in write_all(store, store.get_sweep(sweep.id), out):
            print(f"  wrote {path}")
        separability = out / "separability.txt"
        if separability.exists():
            print(separability.read_text().rstrip())
    print(f"results: sweep {sweep.id} in {shown(store.url)}")
    if summary.status in ("cancelled", "failed"):
        print("run the same command again to resume it: finished cells are kept, the rest are re-queued")
    if summary.status != "completed":
        raise typer.Exit(1)


@app.command()
def plugins() -> None:
    """The models, data sets and trainers installed here that a spec may name, with their packages and arguments."""
    from rich.console import Console
    from rich.table import Table

    from sweeps import PluginKind, describe

    table = Table(title="installed plugins (name them in a spec's model / dataset / trainer)")
    for column in ("kind", "name", "package", "arguments"):
        table.add_column(column, no_wrap=True)
    table.add_column("what it is")
    kinds: tuple[PluginKind, ...] = ("model", "dataset", "trainer")
    for kind in kinds:
        for d in describe(kind):
            schema = d.args_schema or {}
            args = ", ".join(schema.get("properties", {})) or "-"
            what = d.error or d.doc
            if d.metrics:
                what += f" (reports {', '.join(d.metrics)})"
            table.add_row(kind, d.info.name, f"{d.info.package} {d.info.version}", args, what or "-")
    Console().print(table)


@app.command(hidden=True)
def drive(sweep_id: Annotated[int, typer.Argument(min=1)]) -> None:
    """Run one stored sweep to its end (the controller starts one such process per running sweep)."""
    import logging

    settings = settings_or_fail()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _drive(settings, sweep_id)


@app.command(hidden=True)
def standby(log_dir: Annotated[Path, typer.Argument(file_okay=False)]) -> None:
    """A sweep driver started before its sweep (the controller keeps one ready): joins Ray and imports what a
    sweep needs, then waits for a sweep id on stdin and drives that sweep like ``drive``, its output from then on
    appended to LOG_DIR/sweep-ID.log. Exits quietly when stdin closes without an id."""
    import logging
    import os
    import select
    import sys
    import time

    from service.fanout import ClusterError, prepare, prestart_trial_workers

    settings = settings_or_fail()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        slots = prepare(settings.ray_address, _driver_options(settings))
    except ClusterError as exc:
        raise fail(str(exc)) from None
    if not select.select([sys.stdin], [], [], 0)[0]:  # no sweep waiting yet: have its first trials' workers ready
        prestart_trial_workers(slots, _driver_options(settings))
    logging.info(
        "standby driver %d ready after %.1f s (%d trial slots)", os.getpid(), time.monotonic() - started, slots
    )
    line = sys.stdin.readline()
    if not line:
        return  # the controller closed our stdin without a sweep: it no longer needs this standby
    if not line.strip().isdigit() or int(line) < 1:
        raise fail(f"standby: expected a sweep id on stdin, got {line[:40]!r}")
    sweep_id = int(line)
    # From here on this process is the sweep's driver: its output goes where the controller reads a driver's.
    out = os.open(log_dir / f"sweep-{sweep_id}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    logging.info("standby driver %d takes sweep %d", os.getpid(), sweep_id)
    _drive(settings, sweep_id)


def _driver_options(settings: Settings) -> RunOptions:
    """A controller's sweep driver runs on its share of the cluster: one of ``max_concurrent_sweeps``."""
    import dataclasses

    return dataclasses.replace(settings.run_options(), shares=max(1, settings.max_concurrent_sweeps))


def _drive(settings: Settings, sweep_id: int) -> None:
    import logging

    from results import SqlStorage, transient
    from service.fanout import ClusterError, run_sweep

    with SqlStorage(settings.database_url, retry_s=settings.db_retry_s) as store:
        try:
            summary = run_sweep(store, sweep_id, _driver_options(settings), address=settings.ray_address)
        except ClusterError as exc:  # the sweep is untouched; the controller reads this line as its reason
            raise fail(str(exc)) from None
        except Exception as exc:
            if not transient(exc):
                raise
            # The store failed past its retries (unreachable, or its disk full): one line the controller shows as
            # the reason if it gives up restarting this driver (the traceback is above it in this log).
            logging.getLogger(__name__).exception("the results store failed")
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            raise fail(f"the results store failed for {settings.db_retry_s:g} s: {reason}") from None
    print(f"sweep {sweep_id} {summary.status}: {summary.counts}")
