"""Is the best weight decay λ tied to the learning rate α? Numbers that say so, computed from one α×λ grid.

The paper's claim (Loshchilov & Hutter, ICLR 2019, Figure 2): with L2 regularization (SGD, Adam) the good region of
the α×λ grid is a diagonal band — the best λ scales as 1/α, so tuning one means re-tuning the other — while with
decoupled weight decay (SGDW, AdamW) it is roughly axis-aligned. :func:`analyze` measures that on a grid of final
test errors (percent); :func:`compare` sets an L2 optimizer beside its decoupled twin, seed by seed, and says the
verdict in words. Pure numpy: the grid may come from the store (:func:`results.grids.seed_grids`) or anywhere else.

Conventions shared by every number here:

- ``errors[i, j]`` is the final top-1 test error (percent) at ``lrs[i]`` (α) and ``wds[j]`` (λ, raw per step, as the
  store keeps it); NaN marks a diverged (or missing) cell. Both axes must be strictly positive and increasing: the
  analysis works in log2 α and log2 λ.
- **Capped errors.** Where a number needs every cell, an error is replaced by ``min(error, best + cap)`` and a NaN
  cell by ``best + cap`` (``cap`` = :data:`DEFAULT_CAP` = 5 percentage points unless given): a diverged corner at 90 %
  would otherwise dominate every variance and regret, and "much worse than the best" is all it tells us.
- **Near-best rows.** A row (one α) is near-best when its lowest error is within ``max(1 point, 25 % of the best)``
  of the global best: with a best of 2 % that is 3 %; with a best of 20 %, 25 %.
- **Other objectives** (a trainer's ``val_loss``; ``relative=True``): the values are whatever the metric measures,
  lower is better (a metric where higher is better is analysed negated), and the cap and the near-best margin are
  fractions of the best value's magnitude — ``cap`` = :data:`RELATIVE_CAP` (half of it), near-best within 25 % of it
  — since "points" mean nothing for a loss in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_CAP",
    "PERCENT_METRICS",
    "RELATIVE_CAP",
    "TWINS",
    "Comparison",
    "Outcome",
    "Reason",
    "ReasonCode",
    "Separability",
    "analyze",
    "compare",
    "report",
]

DEFAULT_CAP: Final = 5.0  # percentage points above the best error; see the module docstring
_NEAR_POINTS: Final = 1.0  # near-best rows: within max(1 point, 25 % of the best) of the best
_NEAR_FRACTION: Final = 0.25
RELATIVE_CAP: Final = 0.5  # other objectives: the cap as a fraction of |best|
PERCENT_METRICS: Final = frozenset({"test_error", "train_error"})  # objectives in percent: caps in points
_STEPS: Final = (1, 2)  # the coupling index moves α by 2^±k for these k
_LOG_TOL: Final = 1e-6  # two log2 values name the same grid value when they differ by less than this

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Separability:
    """How coupled α and λ are on one grid. Errors in percent; α and λ (raw per step) as on the grid's axes.

    - ``coupling_slope``: least-squares slope of log2(best λ of the row) against log2 α over the near-best rows (see
      the module docstring), each row's argmin refined by the parabola through it and its two neighbours in
      log2 λ (not refined at the grid's edge, or when a neighbour is NaN). ≈ −1: the best λ scales as 1/α (coupled);
      ≈ 0: it does not depend on α. NaN with fewer than two near-best rows.
    - ``coupling_index``: r_λ / (r_λ + r_αλ), clipped to [0, 1], anchored on every good cell of the grid rather
      than on the single best one (which noise moves from seed to seed). The anchors are the best cell of every
      near-best row (the best λ for that α) and of every near-best column (the best α for that λ; near-best as for
      rows, see the module docstring). From each anchor (α, λ), α is moved by 2^±k for k = 1, 2: r_λ sums the
      second differences with λ held fixed, e(α·2^k, λ) + e(α·2^−k, λ) − 2·e(α, λ), and r_αλ those with α·λ held
      fixed, e(α·2^k, λ·2^−k) + e(α·2^−k, λ·2^k) − 2·e(α, λ) (capped errors). A step k of an anchor counts only
      when all four of its cells lie on the grid (same values within 1e-6 in log2), so each comparison is paired
      and a linear trend across the anchor cancels; a NaN (diverged) cell counts with the capped error. 1: keeping
      α·λ fixed costs nothing (fully coupled); 0.5: both directions cost the same; about 1/3: an isotropic separable
      bowl. NaN when no step of any anchor has its four cells on the grid, or both sums are ≤ 0. (Until issue 19
      the index was taken from the best cell alone, one-sided; on the measured grids kept in ``tests/results/data``
      and on noisy synthetic ones this definition varies about half as much from seed to seed:
      ``bench/coupling_index.py``.)
    - ``anchors``: how many anchors the coupling index rests on (0 when it is NaN).
    - ``interaction_share``: share of the capped grid's total sum of squares left unexplained by the additive model
      grand mean + row effect + column effect (two-way ANOVA without replication, NaN cells at the cap). 0 for a
      separable landscape f(α) + g(λ) within the cap.
    - ``topk_log_corr``: Pearson correlation of log2 α and log2 λ over the ``top_k`` finite cells with the lowest
      error (ties broken by grid order; the paper's black circles). Negative: a diagonal band. NaN when either
      coordinate is constant among them or fewer than 3 cells are finite.
    - ``best_lr``, ``best_wd``, ``best_error``: the best finite cell; ``lr_edge``, ``wd_edge``: where it lies on
      each axis: -1 the smallest value tried, +1 the largest, 0 inside (a best cell on an edge may not be the best).
    - ``near_rows``: how many rows the slope was fitted on; ``cap``: the cap used (points above the best).
    - ``regret``: the mean cost of one move behind the coupling index, (r_λ + r_αλ) / (4 × the steps counted)
      (same units as the errors; NaN with it): how large the differences it compares are.
    - ``resolution``: the smallest difference between two distinct finite values of the grid (NaN for fewer than
      two, or with ``relative``): for errors of one seed on a test set of n examples, 100/n points — one example.
    - ``finite_cells``, ``cells``: cells with a finite error, and all cells of the grid.
    """

    coupling_slope: float
    coupling_index: float
    interaction_share: float
    topk_log_corr: float
    best_lr: float
    best_wd: float
    best_error: float
    near_rows: int
    cap: float
    lr_edge: int = 0
    wd_edge: int = 0
    regret: float = math.nan
    anchors: int = 0
    resolution: float = math.nan
    finite_cells: int = 0
    cells: int = 0

    @property
    def best(self) -> tuple[float, float, float]:
        """(α, λ raw per step, test error %) of the best cell."""
        return (self.best_lr, self.best_wd, self.best_error)


def _log2_axis(values: Sequence[float], name: str) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be finite and > 0 (the analysis is in log2), got {v.tolist()}")
    if np.any(np.diff(v) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {v.tolist()}")
    return np.log2(v)


def _parabola_vertex(x: FloatArray, y: FloatArray) -> float:
    """x of the vertex of the parabola through three points whose middle y is the lowest."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if a <= 0:  # flat through the three points: no better estimate than the middle
        return float(x1)
    return float(np.clip(-b / (2 * a), x0, x2))


def _slope(errors: FloatArray, capped: FloatArray, la: FloatArray, lw: FloatArray, near: float) -> tuple[float, int]:
    xs, ys = [], []
    for i in range(errors.shape[0]):
        row = errors[i]
        if not np.any(np.isfinite(row)) or np.nanmin(row) > near:
            continue
        j = int(np.nanargmin(row))
        best_lw = float(lw[j])
        if 0 < j < len(lw) - 1 and np.all(np.isfinite(row[j - 1 : j + 2])):
            best_lw = _parabola_vertex(lw[j - 1 : j + 2], capped[i, j - 1 : j + 2])
        xs.append(float(la[i]))
        ys.append(best_lw)
    if len(set(xs)) < 2:
        return math.nan, len(xs)
    return float(np.polyfit(xs, ys, 1)[0]), len(xs)


def _index_of(axis: FloatArray, value: float) -> int | None:
    hits = np.flatnonzero(np.abs(axis - value) < _LOG_TOL)
    return int(hits[0]) if hits.size else None


def _anchors(errors: FloatArray, near: float) -> list[tuple[int, int]]:
    """The best cell of every near-best row and of every near-best column (each once), in grid order."""
    found: set[tuple[int, int]] = set()
    for axis in (0, 1):
        lines = errors if axis == 0 else errors.T
        for k, line in enumerate(lines):
            if np.any(np.isfinite(line)) and np.nanmin(line) <= near:
                at = int(np.nanargmin(line))
                found.add((k, at) if axis == 0 else (at, k))
    return sorted(found)


def _coupling_index(
    capped: FloatArray, la: FloatArray, lw: FloatArray, anchors: Sequence[tuple[int, int]]
) -> tuple[float, float, int]:
    """(coupling index, regret per move, anchors used): see :class:`Separability`."""
    r_fixed_wd = r_fixed_product = 0.0
    steps, used = 0, set()
    for i, j in anchors:
        for k in _STEPS:
            up, down = _index_of(la, la[i] + k), _index_of(la, la[i] - k)
            left, right = _index_of(lw, lw[j] - k), _index_of(lw, lw[j] + k)
            if up is None or down is None or left is None or right is None:  # a paired comparison or none
                continue
            r_fixed_wd += capped[up, j] + capped[down, j] - 2 * capped[i, j]
            r_fixed_product += capped[up, left] + capped[down, right] - 2 * capped[i, j]
            steps += 1
            used.add((i, j))
    total = r_fixed_wd + r_fixed_product
    if not steps or total <= 0:
        return math.nan, math.nan, 0
    return float(np.clip(r_fixed_wd / total, 0.0, 1.0)), float(total) / (4 * steps), len(used)


def _interaction_share(capped: FloatArray) -> float:
    grand = capped.mean()
    additive = capped.mean(axis=1, keepdims=True) + capped.mean(axis=0, keepdims=True) - grand
    total = float(((capped - grand) ** 2).sum())
    return float(((capped - additive) ** 2).sum()) / total if total > 0 else math.nan


def _topk_corr(errors: FloatArray, la: FloatArray, lw: FloatArray, top_k: int) -> float:
    flat = errors.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    if finite.size < 3:
        return math.nan
    order = finite[np.argsort(flat[finite], kind="stable")][:top_k]
    rows, cols = np.unravel_index(order, errors.shape)
    x, y = la[rows], lw[cols]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def analyze(
    errors: npt.ArrayLike,
    lrs: Sequence[float],
    wds: Sequence[float],
    *,
    top_k: int = 10,
    cap: float = DEFAULT_CAP,
    relative: bool = False,
) -> Separability:
    """Separability numbers of one grid: ``errors[i, j]`` = final test error (percent, NaN = diverged) at
    α = ``lrs[i]`` and λ = ``wds[j]`` (raw per step). See :class:`Separability` for each number's definition.
    ``relative``: the values are another objective (lower is better) and ``cap`` is ignored: see the module
    docstring."""
    e = np.asarray(errors, dtype=np.float64)
    la, lw = _log2_axis(lrs, "lrs"), _log2_axis(wds, "wds")
    if e.shape != (la.size, lw.size):
        raise ValueError(f"errors has shape {e.shape}, expected (len(lrs), len(wds)) = {(la.size, lw.size)}")
    if top_k < 2:
        raise ValueError(f"top_k must be at least 2, got {top_k}")
    if cap <= 0:
        raise ValueError(f"cap must be > 0 percentage points, got {cap}")
    if not np.any(np.isfinite(e)):
        raise ValueError("errors has no finite cell: nothing to analyze")
    bi, bj = (int(k) for k in np.unravel_index(int(np.nanargmin(e)), e.shape))
    best = float(e[bi, bj])
    if relative:
        cap, near = max(RELATIVE_CAP * abs(best), 1e-12), best + _NEAR_FRACTION * abs(best)
    else:
        near = best + max(_NEAR_POINTS, _NEAR_FRACTION * best)
    capped = np.where(np.isfinite(e), np.minimum(e, best + cap), best + cap)
    slope, near_rows = _slope(e, capped, la, lw, near)
    index, regret, anchors = _coupling_index(capped, la, lw, _anchors(e, near))
    return Separability(
        coupling_slope=slope,
        coupling_index=index,
        interaction_share=_interaction_share(capped),
        topk_log_corr=_topk_corr(e, la, lw, top_k),
        best_lr=float(lrs[bi]),
        best_wd=float(wds[bj]),
        best_error=best,
        near_rows=near_rows,
        cap=cap,
        lr_edge=_edge(bi, la.size),
        wd_edge=_edge(bj, lw.size),
        regret=regret,
        anchors=anchors,
        resolution=math.nan if relative else _resolution(e),
        finite_cells=int(np.isfinite(e).sum()),
        cells=int(e.size),
    )


def _edge(index: int, size: int) -> int:
    return -1 if index == 0 else 1 if index == size - 1 else 0


def _resolution(errors: FloatArray) -> float:
    values = np.unique(np.round(errors[np.isfinite(errors)], 9))
    steps = np.diff(values)
    return float(steps.min()) if steps.size else math.nan


# --- Comparing an L2 optimizer with its decoupled twin --------------------------------------------------------------
_FIELDS: Final = ("coupling_index", "coupling_slope", "interaction_share", "topk_log_corr")


Outcome = Literal["l2_more_coupled", "not_more_coupled", "inconclusive"]
ReasonCode = Literal[
    "single_seed", "seeds_disagree", "within_spread", "best_on_edge", "below_resolution", "too_few_cells"
]
RESOLUTION_STEPS: Final = 2  # a coupling index resting on differences under 2 steps of the resolution says nothing
MIN_FINISHED: Final = 0.5  # a grid with fewer finite cells than this share is too sparse to judge


@dataclass(frozen=True)
class Reason:
    """Why a comparison cannot tell: ``code`` (``single_seed``, ``seeds_disagree``, ``within_spread``,
    ``best_on_edge``, ``below_resolution``, ``too_few_cells``) and a sentence that says what to do about it."""

    code: ReasonCode
    text: str


@dataclass(frozen=True)
class Comparison:
    """An L2 optimizer (e.g. ``sgd``) beside its decoupled twin (``sgdw``), one :class:`Separability` per seed.

    ``coupled_seeds`` counts the seeds (present for both) on which the L2 optimizer's coupling index is higher than
    the twin's. ``outcome`` is ``l2_more_coupled`` (on every seed, the paper's claim), ``not_more_coupled`` (on no
    seed) or ``inconclusive``, and then ``reasons`` say why (:func:`compare`). ``sentence`` says it in words;
    ``verdict`` is that sentence with every statistic's per-seed values and mean beneath, one per line."""

    l2: str
    decoupled: str
    l2_by_seed: Mapping[int, Separability]
    decoupled_by_seed: Mapping[int, Separability]
    coupled_seeds: int
    n_seeds: int
    outcome: Outcome
    reasons: tuple[Reason, ...]
    sentence: str
    verdict: str


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _line(name: str, by_seed: Mapping[int, Separability], field: str) -> str:
    values = [getattr(by_seed[s], field) for s in sorted(by_seed)]
    per_seed = ", ".join(f"seed {s}: {v:+.2f}" for s, v in zip(sorted(by_seed), values, strict=True))
    return f"  {name:>8} {field:<17} mean {_mean(values):+.2f} ({per_seed})"


def _seeds(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _on_edge(field: str, side: int) -> Callable[[Separability], bool]:
    return lambda x: bool(getattr(x, field) == side)


def _fill(template: str) -> Callable[[Separability, str], str]:
    return lambda x, where: template.format(where=where)


def _grid_reasons(name: str, by_seed: Mapping[int, Separability]) -> list[Reason]:
    """What makes one optimizer's grids unable to carry a verdict: sparse grids, an undefined index, best cells on
    an edge, differences within the resolution. Each reason names the seeds it holds on and quotes the first."""
    seeds = sorted(by_seed)

    def on(holds: Callable[[Separability], bool]) -> list[int]:
        return [s for s in seeds if holds(by_seed[s])]

    checks: list[tuple[ReasonCode, list[int], Callable[[Separability, str], str]]] = [
        (
            "too_few_cells",
            on(lambda x: x.finite_cells < MIN_FINISHED * x.cells),
            lambda x, where: f"{name} has too few finished cells ({where}: {x.finite_cells} of {x.cells} on the first)",
        ),
        (
            "too_few_cells",
            on(lambda x: not math.isfinite(x.coupling_index)),
            lambda x, where: (
                f"{name}'s coupling index is undefined on {where}: no good cell has α moved by 2^±1 or 2^±2 "
                "with every compared cell on the grid (widen the grid around its good region: at least 3 values "
                "of each axis, in steps of 2^1 or finer)"
            ),
        ),
    ]
    for axis, field, symbol in (("α", "lr_edge", "lr"), ("λ", "wd_edge", "weight_decay")):
        for side, word, way in ((1, "largest", "up"), (-1, "smallest", "down")):
            template = (
                f"{name}'s best cell has the {word} {axis} tried ({{where}}): the best may lie beyond the grid; "
                f"extend the {symbol} axis {way}"
            )
            checks.append(("best_on_edge", on(_on_edge(field, side)), _fill(template)))
    checks.append(
        (
            "below_resolution",
            on(lambda x: math.isfinite(x.resolution) and x.regret < RESOLUTION_STEPS * x.resolution),
            lambda x, where: (
                f"{name}'s coupling index rests on differences of about {x.regret:.2f} points, within "
                f"{RESOLUTION_STEPS} steps of the grid's resolution ({x.resolution:.2f} points: one test example) on "
                f"{where}; a larger test set or more seeds would resolve it"
            ),
        )
    )
    return [Reason(code, text(by_seed[hits[0]], _seeds(hits))) for code, hits, text in checks if hits]


def compare(
    l2: tuple[str, Mapping[int, Separability]],
    decoupled: tuple[str, Mapping[int, Separability]],
) -> Comparison:
    """Compare ``(name, {seed: Separability})`` of an L2 optimizer with its decoupled twin's. The verdict rests on
    the coupling index seed by seed (the number the paper's claim predicts most reliably on small grids); the other
    numbers are listed beside it, per seed and as a mean (NaN values left out of the mean).

    It is ``inconclusive`` when any of these holds (each a :class:`Reason`): one seed only (the spread between
    seeds is unknown); the seeds disagree; the mean difference of the index (L2 minus decoupled) is within one
    standard deviation of it over seeds; on either grid a best cell lies on an edge of an axis, fewer than half
    the cells finished, the index is undefined, or its regrets are under :data:`RESOLUTION_STEPS` steps of the
    grid's resolution."""
    (l2_name, l2_by), (dw_name, dw_by) = l2, decoupled
    seeds = sorted(set(l2_by) & set(dw_by))
    if not seeds:
        raise ValueError(f"{l2_name} and {dw_name} share no seed: nothing to compare")
    l2_by, dw_by = {s: l2_by[s] for s in seeds}, {s: dw_by[s] for s in seeds}
    wins = sum(l2_by[s].coupling_index > dw_by[s].coupling_index for s in seeds)
    l2_mean = _mean([l2_by[s].coupling_index for s in seeds])
    dw_mean = _mean([dw_by[s].coupling_index for s in seeds])
    reasons = []
    if len(seeds) == 1:
        reasons.append(Reason("single_seed", "one seed: the spread between seeds is unknown; run 2 or more seeds"))
    elif 0 < wins < len(seeds):
        reasons.append(
            Reason("seeds_disagree", f"the seeds disagree: {l2_name} is more coupled on {wins} of {len(seeds)}")
        )
    else:
        diffs = np.array([l2_by[s].coupling_index - dw_by[s].coupling_index for s in seeds])
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size >= 2 and abs(float(diffs.mean())) < float(diffs.std(ddof=1)):
            reasons.append(
                Reason(
                    "within_spread",
                    f"the difference of the coupling index, {float(diffs.mean()):+.2f}, is within its spread over "
                    f"seeds (standard deviation {float(diffs.std(ddof=1)):.2f}); more seeds would tell",
                )
            )
    reasons += _grid_reasons(l2_name, l2_by) + _grid_reasons(dw_name, dw_by)
    numbers = f"coupling index {l2_mean:.2f} vs {dw_mean:.2f} (mean over seeds {seeds})"
    outcome: Outcome
    if reasons:
        outcome = "inconclusive"
        sentence = f"inconclusive: {l2_name} (L2) vs {dw_name} (decoupled), {numbers}: " + "; ".join(
            r.text for r in reasons
        )
    elif wins == len(seeds):
        outcome = "l2_more_coupled"
        sentence = f"{l2_name} (L2) is more coupled than {dw_name} (decoupled) on every seed: {numbers}"
    else:
        outcome = "not_more_coupled"
        sentence = f"{l2_name} (L2) is NOT more coupled than {dw_name} (decoupled) on any seed: {numbers}"
    sentence += "."
    lines = [sentence]
    for field in _FIELDS:
        lines += [_line(l2_name, l2_by, field), _line(dw_name, dw_by, field)]
    return Comparison(
        l2=l2_name,
        decoupled=dw_name,
        l2_by_seed=l2_by,
        decoupled_by_seed=dw_by,
        coupled_seeds=wins,
        n_seeds=len(seeds),
        outcome=outcome,
        reasons=tuple(reasons),
        sentence=sentence,
        verdict="\n".join(lines),
    )


# Each L2 optimizer and its decoupled twin (the registry in workers.optimizers; not imported, to keep torch out).
TWINS: Final[dict[str, str]] = {"sgd": "sgdw", "adam": "adamw"}

SeedGrids = tuple[Sequence[float], Sequence[float], Mapping[int, npt.ArrayLike]]


def report(
    grids: Mapping[str, SeedGrids], *, top_k: int = 10, cap: float = DEFAULT_CAP, relative: bool = False
) -> list[Comparison]:
    """One :class:`Comparison` per L2 optimizer in ``grids`` whose decoupled twin (:data:`TWINS`) is there too.
    ``grids`` maps an optimizer to (α values, λ values raw per step, {seed: errors in percent, or another
    objective's values with ``relative``}), as :func:`results.grids.seed_grids` returns it; each seed's grid is
    analyzed on its own."""
    by_seed = {
        name: {seed: analyze(e, lrs, wds, top_k=top_k, cap=cap, relative=relative) for seed, e in seeds.items()}
        for name, (lrs, wds, seeds) in grids.items()
    }
    return [compare((l2, by_seed[l2]), (dw, by_seed[dw])) for l2, dw in TWINS.items() if l2 in grids and dw in grids]
