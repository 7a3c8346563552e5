"""α×λ grids, and long tables of trials and epochs, read from the store as pandas frames and CSV.

Views derived from the store's facts, never stored in their place. Units throughout: errors in percent, α (``lr``)
as the optimizer takes it, λ (``weight_decay``) raw per step as the store keeps it (``weight_decay_given`` is the
value as the spec gave it, possibly normalized), wall time in seconds.

How a cell (one α, one λ, all seeds) is summarized:

- ``mean``, ``std`` (sample, ddof=1; NaN for n < 2) and ``n`` are over the seeds whose trial **completed** with a
  finite final test error. A diverged seed is never averaged in as a number: it is counted in ``n_diverged``.
- ``state`` is ``"ok"`` (every finished seed completed), ``"diverged"`` (every finished seed diverged),
  ``"partly diverged"`` (both) or ``"unfinished"`` (no seed finished: pending, running, failed or cancelled).
- ``finished_at`` is when the cell's latest seed finished (UTC; None while none has): what changed since a moment.
- In the wide CSV a cell holds the mean (``repr`` of the float: exact) when ``state`` is ``"ok"``; otherwise the text
  ``diverged``, ``diverged k/n`` (k of n finished seeds diverged; the mean of the others is in the frame), or nothing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not a dependency (yet)

from results._contract import Storage
from results._records import EpochRecord, GridPoint, TrialRecord
from results.separability import PERCENT_METRICS
from sweeps import Objective

__all__ = [
    "CELL_COLUMNS",
    "DEFAULT_CLIP",
    "best_cells",
    "cell_stats",
    "circled",
    "colour_limits",
    "epochs_frame",
    "grid_csv",
    "grid_frame",
    "seed_grids",
    "trials_frame",
]

CELL_COLUMNS: Final = (
    "lr",
    "weight_decay",
    "weight_decay_given",
    "mean",
    "std",
    "n",
    "n_diverged",
    "n_trials",
    "state",
    "finished_at",
)
_VALUES: Final = ("mean", "std", "n", "n_diverged", "n_trials")  # the columns a grid can show
DEFAULT_CLIP: Final = 10.0  # colour scale: best error .. best + 10 percentage points
_PAGE: Final = 1000


def _cell_row(lr: float, wd: float, points: list[GridPoint]) -> dict[str, object]:
    errors = [p.value for p in points if p.status == "completed" and p.value is not None]
    diverged = sum(p.status == "diverged" for p in points)
    n = len(errors)
    if n == 0 and diverged == 0:
        state = "unfinished"
    elif diverged == 0:
        state = "ok"
    elif n == 0:
        state = "diverged"
    else:
        state = "partly diverged"
    finished = [p.finished_at for p in points if p.finished_at is not None and p.status in ("completed", "diverged")]
    return {
        "lr": lr,
        "weight_decay": wd,
        "weight_decay_given": points[0].weight_decay_given,
        "mean": float(np.mean(errors)) if n else math.nan,
        "std": float(np.std(errors, ddof=1)) if n > 1 else math.nan,
        "n": n,
        "n_diverged": diverged,
        "n_trials": len(points),
        "state": state,
        "finished_at": max(finished) if finished else None,
    }


def cell_stats(store: Storage, sweep_id: int, optimizer: str, metric: str = "test_error") -> pd.DataFrame:
    """One row per (α, λ) cell of one optimizer, ordered by α then λ, with the columns :data:`CELL_COLUMNS` (see the
    module docstring), over the final values of ``metric`` (the sweep's objective). Empty (with those columns) when
    the sweep has no trial of ``optimizer``."""
    cells: dict[tuple[float, float], list[GridPoint]] = {}
    for p in store.grid(sweep_id, optimizer, metric):
        cells.setdefault((p.lr, p.weight_decay), []).append(p)
    rows = [_cell_row(lr, wd, points) for (lr, wd), points in sorted(cells.items())]
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


def grid_frame(stats: pd.DataFrame, value: str = "mean") -> pd.DataFrame:
    """One column of :func:`cell_stats` as a grid: α (``lr``) down the rows, λ (``weight_decay``, raw per step)
    across the columns, both ascending; a cell absent from the sweep is NaN."""
    if value not in _VALUES:
        raise ValueError(f"value must be one of {_VALUES}, got {value!r}")
    return stats.pivot(index="lr", columns="weight_decay", values=value).sort_index().sort_index(axis=1)


_MIN: Final = Objective()


def circled(n_cells: int) -> int:
    """How many best cells a heatmap marks: about one in eight, at least 1 and at most 10 (the paper circles its
    best 10 of 80-odd; 10 of a 16-cell grid would circle most of it)."""
    return max(1, min(10, round(n_cells / 8)))


def best_cells(stats: pd.DataFrame, objective: Objective = _MIN, k: int | None = None) -> pd.DataFrame:
    """The ``k`` best cells of :func:`cell_stats` (default :func:`circled` of the grid's size), best first: cells
    whose every finished seed completed, by mean (lowest first, or highest where the objective's mode is ``max``)."""
    k = circled(len(stats)) if k is None else k
    ok = stats[stats["state"] == "ok"]
    return ok.sort_values("mean", kind="stable", ascending=objective.mode == "min").head(k)


def colour_limits(
    stats: Sequence[pd.DataFrame], objective: Objective = _MIN, clip: float = DEFAULT_CLIP
) -> tuple[float, float]:
    """The colour scale (low, high) of grids shown together: from the best mean to the worst, but at most ``clip``
    points from the best for errors in percent (half the best's magnitude for other metrics), so that the good
    region stays readable beside 90 % cells while a grid whose cells all lie within a few points spans the scale."""
    means = [float(v) for s in stats for v in s.loc[s["state"] == "ok", "mean"] if math.isfinite(v)]
    if not means:
        return 0.0, clip
    low, high = min(means), max(means)
    if high <= low:
        return low, low + 1e-9
    if objective.metric not in PERCENT_METRICS:
        clip = max(0.5 * abs(high if objective.mode == "max" else low), 1e-9)
    if objective.mode == "max":
        return max(high - clip, low), high
    return low, min(low + clip, high)


def _cell_text(row: pd.Series) -> str:
    finished = int(row["n"]) + int(row["n_diverged"])
    if row["state"] == "ok":
        return repr(float(row["mean"]))
    if row["state"] == "diverged":
        return "diverged"
    if row["state"] == "partly diverged":
        return f"diverged {int(row['n_diverged'])}/{finished}"
    return ""


def grid_csv(stats: pd.DataFrame, path: Path | None = None) -> str:
    """The wide CSV of mean final test error (percent): header ``lr\\weight_decay`` then each λ (raw per step) as
    ``repr`` of the float, then one line per α (``repr``); diverged and unfinished cells marked as the module
    docstring says. Written to ``path`` too when given; returns the text."""
    lrs = sorted(set(stats["lr"]))
    wds = sorted(set(stats["weight_decay"]))
    text = {(r["lr"], r["weight_decay"]): _cell_text(r) for _, r in stats.iterrows()}
    out = io.StringIO()
    out.write(",".join(["lr\\weight_decay", *(repr(float(w)) for w in wds)]) + "\n")
    for lr in lrs:
        out.write(",".join([repr(float(lr)), *(text.get((lr, w), "") for w in wds)]) + "\n")
    csv = out.getvalue()
    if path is not None:
        path.write_text(csv)
    return csv


def _all_trials(store: Storage, sweep_id: int) -> Iterator[TrialRecord]:
    offset = 0
    while True:
        page, total = store.trials(sweep_id, offset=offset, limit=_PAGE)
        yield from page
        offset += len(page)
        if not page or offset >= total:
            return


_TRIAL_COLUMNS: Final = (
    "trial_id",
    "cell_id",
    "optimizer",
    "lr",
    "weight_decay",
    "weight_decay_given",
    "seed",
    "status",
    "attempts",
    "test_error",
    "train_error",
    "test_loss",
    "train_loss",
    "wall_time_s",
    "epochs_done",
    "git_sha",
    "device",
    "host",
    "error",
)


def trials_frame(store: Storage, sweep_id: int) -> pd.DataFrame:
    """Every trial of a sweep, one row each, by trial id: place in the grid, status, final metrics (errors in
    percent; NaN until finished, or where non-finite), provenance, then a trainer's other final metrics (one column
    each, by name). ``to_csv(index=False)`` gives the long CSV."""
    rows = []
    trials = list(_all_trials(store, sweep_id))
    extra = sorted({k for t in trials if t.final is not None for k in t.final.extra or {}})
    for t in trials:
        f = t.final
        rows.append(
            (
                t.id,
                t.cell_id,
                t.optimizer,
                t.lr,
                t.weight_decay,
                t.weight_decay_given,
                t.seed,
                t.status,
                t.attempts,
                *(
                    (f.test_error, f.train_error, f.test_loss, f.train_loss, f.wall_time_s, f.epochs_done)
                    if f is not None
                    else (None,) * 6
                ),
                t.provenance.git_sha,
                t.provenance.device,
                t.provenance.host,
                t.error,
                *(None if f is None else (f.extra or {}).get(k) for k in extra),
            )
        )
    return pd.DataFrame(rows, columns=[*_TRIAL_COLUMNS, *extra])


_EPOCH_COLUMNS: Final = (
    "trial_id",
    "optimizer",
    "lr",
    "weight_decay",
    "seed",
    "attempt",
    "epoch",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "eta",
    "wall_time_s",
)


def _metrics(e: EpochRecord) -> tuple[float | None, ...]:
    return (e.train_loss, e.train_error, e.test_loss, e.test_error, e.eta, e.wall_time_s)


def epochs_frame(store: Storage, sweep_id: int, *, optimizer: str | None = None) -> pd.DataFrame:
    """Every stored epoch of every attempt of a sweep's trials (optionally one optimizer's), with the trial's place
    in the grid, by trial, attempt and epoch. Errors in percent, ``eta`` = η_t, wall time in seconds; a trainer's
    other metrics follow, one column each by name (empty where an epoch did not report it)."""
    trials = {t.id: t for t in _all_trials(store, sweep_id) if optimizer is None or t.optimizer == optimizer}
    epochs = [
        (t, e)
        for e in store.sweep_epochs(sweep_id)  # one query for every epoch, not one per trial
        if (t := trials.get(e.trial_id)) is not None
    ]
    extra = sorted({k for _, e in epochs for k in e.extra or {}})
    rows = [
        (
            t.id,
            t.optimizer,
            t.lr,
            t.weight_decay,
            t.seed,
            e.attempt,
            e.epoch,
            *_metrics(e),
            *((e.extra or {}).get(k) for k in extra),
        )
        for t, e in epochs
    ]
    return pd.DataFrame(rows, columns=[*_EPOCH_COLUMNS, *extra])


def seed_grids(
    store: Storage, sweep_id: int, optimizer: str, metric: str = "test_error"
) -> tuple[list[float], list[float], dict[int, npt.NDArray[np.float64]]]:
    """(α values, λ values raw per step, {seed: values}) of one optimizer, for :func:`results.separability.analyze`:
    ``values[i, j]`` is that seed's final ``metric`` (test error in percent by default) at α_i, λ_j; NaN where it
    diverged or did not finish."""
    points = store.grid(sweep_id, optimizer, metric)
    lrs = sorted({p.lr for p in points})
    wds = sorted({p.weight_decay for p in points})
    row, col = {v: i for i, v in enumerate(lrs)}, {v: j for j, v in enumerate(wds)}
    grids: dict[int, npt.NDArray[np.float64]] = {}
    for p in points:
        g = grids.setdefault(p.seed, np.full((len(lrs), len(wds)), np.nan))
        if p.status == "completed" and p.value is not None:
            g[row[p.lr], col[p.weight_decay]] = p.value
    return lrs, wds, grids
