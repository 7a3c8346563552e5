"""Figures from the grids: Figure-2-style α×λ heatmaps, coupled-vs-decoupled twins, and learning curves.

matplotlib's object API on the Agg canvas (no pyplot, so no global backend state and no display needed). Units:
errors in percent, α as the optimizer takes it, λ raw per step. The inputs are the frames of :mod:`results.grids`
(:func:`~results.grids.cell_stats` per optimizer, :func:`~results.grids.epochs_frame`), so a figure is a view of the
store's facts like the CSV is.

How a heatmap reads: α (``lr``) up the rows, λ (``weight_decay``) across the columns, one square per grid value,
ticks labelled with the values (``2^k`` where the value is a power of 2). Colour is the mean final test error over
seeds, from the best cell to the worst, clipped at best + ``clip`` (``clip`` = :data:`DEFAULT_CLIP` points unless
given) so that the good region stays readable next to 90 % cells while a grid whose cells all lie within a few
points still spans the whole scale; the best cells are circled (the paper's black circles: about one cell in eight,
1 to 10, unless ``top_k`` says), diverged cells are grey and hatched ``///``, partly diverged cells (some seeds
diverged) hatched ``..`` over their colour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not a dependency (yet)
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from results.grids import DEFAULT_CLIP, best_cells, circled, colour_limits
from results.separability import PERCENT_METRICS, TWINS
from sweeps import Objective

__all__ = [
    "DEFAULT_CLIP",
    "DPI",
    "circled",
    "colour_scale",
    "draw_heatmap",
    "heatmap_png",
    "label",
    "learning_curves_png",
    "optimizers_png",
    "twins_png",
]

DPI: Final = 100  # a PNG is (figure width × DPI) × (figure height × DPI) pixels
_CMAP: Final = "viridis"


def _tick(value: float) -> str:
    if value > 0 and float(np.log2(value)).is_integer():
        return f"$2^{{{int(np.log2(value))}}}$"
    return f"{value:.3g}"


_DEFAULT: Final = Objective()


def label(objective: Objective) -> str:
    """The metric as an axis reads it: ``test error (%)``, or its name."""
    name = objective.metric.replace("_", " ")
    return f"{name} (%)" if objective.metric in PERCENT_METRICS else name


def _best(stats: pd.DataFrame, objective: Objective = _DEFAULT) -> float:
    ok = stats.loc[stats["state"] == "ok", "mean"]
    if not len(ok):
        return math.nan
    return float(ok.max() if objective.mode == "max" else ok.min())


def _value(value: float, objective: Objective) -> str:
    return f"{value:.2f} %" if objective.metric in PERCENT_METRICS else f"{value:.4g}"


def draw_heatmap(
    ax: Axes,
    stats: pd.DataFrame,
    *,
    norm: Normalize,
    title: str = "",
    top_k: int | None = None,
    objective: Objective = _DEFAULT,
) -> tuple[list[float], list[float]]:
    """Draw one optimizer's grid (:func:`results.grids.cell_stats`) on ``ax`` as the module docstring says, coloured
    through ``norm`` (from :func:`colour_scale`). Returns the (α, λ) values of the rows and columns."""
    lrs = sorted(set(stats["lr"]))
    wds = sorted(set(stats["weight_decay"]))
    grid = np.full((len(lrs), len(wds)), np.nan)
    row, col = {v: i for i, v in enumerate(lrs)}, {v: j for j, v in enumerate(wds)}
    for r in stats.itertuples():
        i, j = row[r.lr], col[r.weight_decay]
        if r.state in ("ok", "partly diverged"):
            grid[i, j] = r.mean
        if r.state in ("diverged", "partly diverged"):
            whole = r.state == "diverged"
            ax.add_patch(
                Rectangle(
                    (j - 0.5, i - 0.5),
                    1,
                    1,
                    facecolor="0.6" if whole else "none",
                    edgecolor="0.2",
                    hatch="///" if whole else "..",
                    linewidth=0,
                    zorder=2,
                )
            )
    cmap = _CMAP if objective.mode == "min" else f"{_CMAP}_r"  # the best cells dark either way
    ax.imshow(np.clip(grid, norm.vmin, norm.vmax), origin="lower", cmap=cmap, norm=norm, aspect="equal")
    ok = best_cells(stats, objective, top_k)
    ax.scatter(
        [col[w] for w in ok["weight_decay"]],
        [row[a] for a in ok["lr"]],
        s=120,
        facecolors="none",
        edgecolors="black",
        linewidths=1.5,
        zorder=3,
    )
    ax.set_xticks(range(len(wds)), [_tick(w) for w in wds], rotation=90)
    ax.set_yticks(range(len(lrs)), [_tick(a) for a in lrs])
    ax.set_xlabel("weight decay λ (raw per step)")
    ax.set_ylabel("learning rate α")
    best = _value(_best(stats, objective), objective)
    ax.set_title(f"{title}  best {best}" if title else f"best {best}")
    return lrs, wds


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def colour_scale(
    stats: Sequence[pd.DataFrame], clip: float = DEFAULT_CLIP, objective: Objective = _DEFAULT
) -> Normalize:
    """The colour scale of panels drawn together: from the best mean to the worst, but at most ``clip`` points
    from the best for errors in percent (half the best's magnitude for other metrics)."""
    return Normalize(*colour_limits(stats, objective, clip))


def _extend(objective: Objective) -> str:
    return "max" if objective.mode == "min" else "min"


def heatmap_png(
    stats: pd.DataFrame,
    path: Path,
    *,
    title: str = "",
    clip: float = DEFAULT_CLIP,
    top_k: int | None = None,
    objective: Objective = _DEFAULT,
) -> Path:
    """One optimizer's heatmap with its colour bar, 600×500 pixels."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    norm = colour_scale([stats], clip, objective)
    draw_heatmap(ax, stats, norm=norm, title=title, top_k=top_k, objective=objective)
    fig.colorbar(ax.images[0], ax=ax, extend=_extend(objective), label=label(objective))
    fig.tight_layout()
    return _save(fig, path)


def twins_png(
    stats_by_optimizer: Mapping[str, pd.DataFrame],
    path: Path,
    *,
    clip: float = DEFAULT_CLIP,
    top_k: int | None = None,
    objective: Objective = _DEFAULT,
) -> Path:
    """Each L2 optimizer (sgd, adam) beside its decoupled twin (sgdw, adamw), one pair per row, all panels on one
    colour scale (the lowest best error .. + ``clip`` points): 1100 × 500 pixels per pair. Optimizers without
    their twin in ``stats_by_optimizer`` are left out; none at all is a ``ValueError``."""
    pairs = [(l2, dw) for l2, dw in TWINS.items() if l2 in stats_by_optimizer and dw in stats_by_optimizer]
    if not pairs:
        raise ValueError(f"no L2 optimizer with its twin among {sorted(stats_by_optimizer)}; pairs: {TWINS}")
    fig = Figure(figsize=(11, 5 * len(pairs)))
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    norm = colour_scale([stats_by_optimizer[o] for pair in pairs for o in pair], clip, objective)
    for (l2, dw), row in zip(pairs, axes, strict=True):
        for ax, name, kind in ((row[0], l2, "L2"), (row[1], dw, "decoupled")):
            draw_heatmap(
                ax, stats_by_optimizer[name], norm=norm, title=f"{name} ({kind})", top_k=top_k, objective=objective
            )
    fig.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), extend=_extend(objective), label=label(objective))
    return _save(fig, path)


def optimizers_png(
    stats_by_optimizer: Mapping[str, pd.DataFrame],
    path: Path,
    *,
    clip: float = DEFAULT_CLIP,
    top_k: int | None = None,
    objective: Objective = _DEFAULT,
) -> Path:
    """Every optimizer of a sweep on one colour scale, two panels a row (550 × 500 pixels each): each L2 optimizer
    beside its decoupled twin where both ran, then the others. What ``heatmap.png`` serves by default: no optimizer
    of the sweep is left out."""
    if not stats_by_optimizer:
        raise ValueError("no optimizer to draw")
    names = list(stats_by_optimizer)
    ordered = [o for l2, dw in TWINS.items() if l2 in names and dw in names for o in (l2, dw)]
    ordered += [o for o in names if o not in ordered]
    rows, cols = (len(ordered) + 1) // 2, min(2, len(ordered))
    fig = Figure(figsize=(5.5 * cols, 5 * rows), layout="constrained")  # labels of neighbouring panels never overlap
    axes = fig.subplots(rows, cols, squeeze=False)
    norm = colour_scale([stats_by_optimizer[o] for o in ordered], clip, objective)
    paired = {o for l2, dw in TWINS.items() if l2 in names and dw in names for o in (l2, dw)}
    for i, name in enumerate(ordered):
        kind = (" (L2)" if name in TWINS else " (decoupled)") if name in paired else ""
        panel = axes.flat[i]
        draw_heatmap(
            panel, stats_by_optimizer[name], norm=norm, title=f"{name}{kind}", top_k=top_k, objective=objective
        )
    for ax in axes.flat[len(ordered) :]:
        ax.set_visible(False)
    fig.colorbar(axes.flat[0].images[0], ax=axes.ravel().tolist(), extend=_extend(objective), label=label(objective))
    return _save(fig, path)


def learning_curves_png(
    epochs: pd.DataFrame,
    stats_by_optimizer: Mapping[str, pd.DataFrame],
    path: Path,
    *,
    objective: Objective = _DEFAULT,
) -> Path:
    """The objective (test error in percent by default) per epoch at each optimizer's best cell (best mean over
    seeds among cells where no seed diverged), as in the paper's Figures 3-4: the mean over seeds as a line, each
    seed faint. ``epochs`` is :func:`results.grids.epochs_frame`; each trial's last attempt is used. 800×500
    pixels."""
    metric = objective.metric
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    last = epochs[epochs["attempt"] == epochs.groupby("trial_id")["attempt"].transform("max")]
    for name, stats in stats_by_optimizer.items():
        ok = stats[stats["state"] == "ok"].sort_values("mean", kind="stable", ascending=objective.mode == "min")
        if ok.empty or metric not in last:
            continue
        best = ok.iloc[0]
        cell = last[
            (last["optimizer"] == name) & (last["lr"] == best["lr"]) & (last["weight_decay"] == best["weight_decay"])
        ]
        if cell.empty:
            continue
        for _, seed in cell.groupby("seed"):
            ax.plot(seed["epoch"], seed[metric], alpha=0.25, linewidth=0.8)
        mean = cell.groupby("epoch")[metric].mean()
        legend = f"{name}: α={best['lr']:.3g}, λ={best['weight_decay']:.3g}"
        ax.plot(mean.index, mean.to_numpy(), linewidth=2, label=legend)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label(objective))
    ax.set_title("learning curves at each optimizer's best cell")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)
