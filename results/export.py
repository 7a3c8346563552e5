"""A sweep's results as files: grid CSVs, the long trial and epoch CSVs, heatmap PNGs and the separability report,
and the same cells as data for the web page's heatmaps (:func:`heatmaps`).

One home for every download: the REST routes serve these bytes and ``wdgrid run --out`` writes the same ones to a
folder. Units as in :mod:`results.grids`: errors in percent, α as given to the optimizer, λ raw per step.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from results._contract import Storage
from results._records import NotFoundError, SweepRecord
from results.grids import (
    best_cells,
    cell_stats,
    colour_limits,
    epochs_frame,
    grid_csv,
    grid_frame,
    seed_grids,
    trials_frame,
)
from results.separability import PERCENT_METRICS, TWINS, Comparison, report
from sweeps import Objective

__all__ = [
    "GridMetric",
    "Heatmap",
    "NoTwinsError",
    "UnfinishedPair",
    "epochs_csv",
    "grid_text",
    "heatmap_png_bytes",
    "heatmaps",
    "objective",
    "optimizers",
    "separability",
    "trials_csv",
    "unfinished_pairs",
    "write_all",
]

GridMetric = Literal["mean", "std", "n", "n_diverged"]
GRID_HEADER: Final = "lr\\weight_decay"


class NoTwinsError(ValueError):
    """The sweep has no L2 optimizer beside its decoupled twin, or its grids cannot be analysed (λ = 0 on an axis)."""


def objective(sweep: SweepRecord) -> Objective:
    """The sweep's objective: the metric its grids, heatmaps and verdict are about (specs from before objectives
    existed: final test error, lower is better)."""
    return Objective.model_validate(sweep.spec.get("objective") or {})


def optimizers(sweep: SweepRecord) -> list[str]:
    """The sweep's optimizers, in spec order."""
    return [str(g["optimizer"]) for g in sweep.spec["grids"]]


def _check_optimizer(sweep: SweepRecord, optimizer: str) -> None:
    names = optimizers(sweep)
    if optimizer not in names:
        raise NotFoundError(f"sweep {sweep.id} has no {optimizer} grid (it has {', '.join(names)})")


def grid_text(store: Storage, sweep: SweepRecord, optimizer: str, metric: GridMetric = "mean") -> str:
    """One optimizer's α × λ grid as CSV: ``mean`` (diverged cells marked), ``std``, ``n`` or ``n_diverged`` of the
    final value of the sweep's objective over seeds (test error in percent unless the spec says otherwise;
    :mod:`results.grids`)."""
    _check_optimizer(sweep, optimizer)
    stats = cell_stats(store, sweep.id, optimizer, objective(sweep).metric)
    if metric == "mean":
        return grid_csv(stats)
    text: str = grid_frame(stats, metric).to_csv(index_label=GRID_HEADER)
    return text


def trials_csv(store: Storage, sweep_id: int) -> str:
    """Every trial, one row each: grid place, status, final metrics (percent, seconds), provenance."""
    text: str = trials_frame(store, sweep_id).to_csv(index=False)
    return text


def epochs_csv(store: Storage, sweep_id: int) -> str:
    """Every stored epoch of every attempt of every trial (errors in percent, η_t, wall time in seconds)."""
    text: str = epochs_frame(store, sweep_id).to_csv(index=False)
    return text


@dataclass(frozen=True)
class Heatmap:
    """One optimizer's heatmap as data: its axes (ascending; λ raw per step), every cell as a row of
    :func:`results.grids.cell_stats` (a dict of its columns, NaN as None, ``finished_at`` a UTC datetime or None),
    and the best cells (:func:`results.grids.best_cells`), best first."""

    optimizer: str
    lrs: list[float]
    weight_decays: list[float]
    cells: list[dict[str, Any]]
    best: list[dict[str, Any]]


def _plain(value: Any) -> Any:
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp; NaT is caught below
        return None if value != value else value.to_pydatetime()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is not None and value == value else None


def heatmaps(store: Storage, sweep: SweepRecord) -> tuple[list[Heatmap], tuple[float, float]]:
    """Every optimizer's heatmap, in the spec's order, and the colour scale (low, high) they share: the numbers of
    the PNG heatmaps and the CSV grids, on the sweep's objective."""
    goal = objective(sweep)
    frames = {o: cell_stats(store, sweep.id, o, goal.metric) for o in optimizers(sweep)}
    maps = []
    for name, stats in frames.items():
        records: list[dict[str, Any]] = [{k: _plain(v) for k, v in r.items()} for r in stats.to_dict("records")]
        best = [{k: _plain(v) for k, v in r.items()} for r in best_cells(stats, goal).to_dict("records")]
        lrs, wds = sorted({float(v) for v in stats["lr"]}), sorted({float(v) for v in stats["weight_decay"]})
        maps.append(Heatmap(name, lrs, wds, records, best))
    return maps, colour_limits(list(frames.values()), goal)


def heatmap_png_bytes(store: Storage, sweep: SweepRecord, optimizer: str | None = None) -> bytes:
    """Figure-2 heatmaps as PNG: one optimizer's, or (None) every optimizer of the sweep on one colour scale, each L2
    optimizer beside its decoupled twin where both ran (:func:`results.figures.optimizers_png`)."""
    from results.figures import heatmap_png, optimizers_png  # matplotlib: only when a picture is asked for

    goal = objective(sweep)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "heatmap.png"
        if optimizer is None:
            stats = {o: cell_stats(store, sweep.id, o, goal.metric) for o in optimizers(sweep)}
            optimizers_png(stats, path, objective=goal)
        else:
            _check_optimizer(sweep, optimizer)
            heatmap_png(cell_stats(store, sweep.id, optimizer, goal.metric), path, title=optimizer, objective=goal)
        return path.read_bytes()


@dataclass(frozen=True)
class UnfinishedPair:
    """An L2 optimizer and its twin whose cells have not all finished: not analysed yet. ``finished``: cells of the
    two that completed, diverged or failed; ``cells``: all of them."""

    l2: str
    decoupled: str
    finished: int
    cells: int


def _pairs(sweep: SweepRecord) -> list[tuple[str, str]]:
    names = optimizers(sweep)
    pairs = [(l2, dw) for l2, dw in TWINS.items() if l2 in names and dw in names]
    if not pairs:
        raise NoTwinsError(f"sweep {sweep.id} has no L2 optimizer beside its decoupled twin {TWINS}")
    return pairs


def unfinished_pairs(store: Storage, sweep: SweepRecord) -> list[UnfinishedPair]:
    """The sweep's twin pairs with a cell still pending or running (:class:`NoTwinsError` when it has no pair)."""
    out = []
    for l2, dw in _pairs(sweep):
        waiting = total = 0
        for o in (l2, dw):
            total += store.trials(sweep.id, optimizer=o, limit=1)[1]
            waiting += sum(store.trials(sweep.id, optimizer=o, status=st, limit=1)[1] for st in ("pending", "running"))
        if waiting:
            out.append(UnfinishedPair(l2, dw, total - waiting, total))
    return out


def separability(
    store: Storage, sweep: SweepRecord, unfinished: list[UnfinishedPair] | None = None
) -> list[Comparison]:
    """Each L2 optimizer of the sweep against its decoupled twin (:func:`results.separability.report`), on the
    sweep's objective (negated where higher is better; scaled to its best value unless it is an error in percent),
    for the pairs whose cells have all finished (:func:`unfinished_pairs` names the others: a running sweep is
    analysed as far as it goes; a caller that has them already passes them as ``unfinished``). :class:`NoTwinsError`
    when no pair is in the sweep, or the grids cannot be analysed."""
    if unfinished is None:
        unfinished = unfinished_pairs(store, sweep)
    waiting = {(p.l2, p.decoupled) for p in unfinished}
    goal = objective(sweep)
    sign = 1.0 if goal.mode == "min" else -1.0
    grids = {}
    for pair in _pairs(sweep):
        if pair in waiting:
            continue
        for o in pair:
            lrs, wds, seeds = seed_grids(store, sweep.id, o, goal.metric)
            grids[o] = (lrs, wds, {seed: sign * values for seed, values in seeds.items()})
    try:
        return report(grids, relative=goal.metric not in PERCENT_METRICS)
    except ValueError as exc:  # e.g. λ = 0 on an axis: the analysis is in log2; or a grid with no finite cell
        raise NoTwinsError(f"cannot analyze sweep {sweep.id}: {exc}") from None


def write_all(store: Storage, sweep: SweepRecord, folder: Path) -> list[Path]:
    """Every download of the sweep into ``folder``: ``grid-<optimizer>.csv`` and ``heatmap-<optimizer>.png`` per
    optimizer, ``trials.csv``, ``epochs.csv``, and where twins ran ``twins.png`` and ``separability.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | bytes] = {}
    for o in optimizers(sweep):
        files[f"grid-{o}.csv"] = grid_text(store, sweep, o)
        files[f"heatmap-{o}.png"] = heatmap_png_bytes(store, sweep, o)
    files["trials.csv"] = trials_csv(store, sweep.id)
    files["epochs.csv"] = epochs_csv(store, sweep.id)
    try:
        comparisons = separability(store, sweep)
    except NoTwinsError:
        comparisons = []
    if comparisons:
        files["twins.png"] = heatmap_png_bytes(store, sweep)
        files["separability.txt"] = "\n\n".join(c.verdict for c in comparisons) + "\n"
    paths = []
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        paths.append(path)
    return paths
