"""How steady is the coupling index from seed to seed, and would anchoring it on more of the grid make it steadier?
Issue 19 asked for a headline number anchored on more than the single best cell. This bench compares, on the same
grids, the index as ``results.separability`` defines it (from the best cell, α moved by 2^±1, 2^±2, one-sided
where the grid ends) with two candidates that use more of the grid:

- ``rows``: pooled over every near-best row's own best cell (the slope's rows), α moved by 2^±k with both moves of
  a k required (so that a row's trend in α cancels), regrets summed over anchors;
- ``quad``: a least-squares quadratic a·x² + 2b·xy + c·y² + … (x = log2 α, y = log2 λ) over every finite cell within
  the cap of the best; index = a / (a + (a − 2b + c)): the cost of moving α with λ fixed against the cost along
  α·λ fixed, exactly the coupling index of a quadratic landscape (1/3 for an isotropic bowl).

Grids: the two measured cpu-fig2 runs kept in ``tests/results/data/``; with ``--store URL``, every sweep of that store
with an L2 optimizer beside its twin on several seeds (``make reproduce`` keeps its store in ``.reproduce/``); and
synthetic landscapes of known coupling (a diagonal valley, a separable bowl) with independent noise per seed, rounded
to a test set's resolution (0.1 points). Per grid: each seed's value and the spread (max − min over seeds) of each.

    .venv/bin/python bench/coupling_index.py [--store sqlite:///.reproduce/wdgrid.db]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results.separability import DEFAULT_CAP, TWINS, analyze  # noqa: E402

FloatArray = npt.NDArray[np.float64]
DATA = ROOT / "tests" / "results" / "data"


def _capped(errors: FloatArray, cap: float) -> tuple[FloatArray, float]:
    best = float(np.nanmin(errors))
    return np.where(np.isfinite(errors), np.minimum(errors, best + cap), best + cap), best


def rows_index(errors: FloatArray, lrs: list[float], wds: list[float], cap: float = DEFAULT_CAP) -> float:
    """The ``rows`` candidate (module docstring); near-best rows as ``results.separability`` defines them."""
    la, lw = np.log2(lrs), np.log2(wds)
    capped, best = _capped(errors, cap)
    near = best + max(1.0, 0.25 * best)
    on = lambda axis, v: int(np.flatnonzero(np.abs(axis - v) < 1e-6)[0]) if np.any(np.abs(axis - v) < 1e-6) else None  # noqa: E731
    r_l = r_al = 0.0
    for i in range(errors.shape[0]):
        if not np.any(np.isfinite(errors[i])) or np.nanmin(errors[i]) > near:
            continue
        j = int(np.nanargmin(errors[i]))
        for k in (1, 2):
            up, down, left, right = on(la, la[i] + k), on(la, la[i] - k), on(lw, lw[j] - k), on(lw, lw[j] + k)
            if None in (up, down, left, right):
                continue
            r_l += capped[up, j] + capped[down, j] - 2 * capped[i, j]
            r_al += capped[up, left] + capped[down, right] - 2 * capped[i, j]
    return float(np.clip(r_l / (r_l + r_al), 0, 1)) if r_l + r_al > 0 else math.nan


def quad_index(errors: FloatArray, lrs: list[float], wds: list[float], cap: float = DEFAULT_CAP) -> float:
    """The ``quad`` candidate (module docstring); NaN with fewer than 8 cells or a fit that is not a bowl."""
    x, y = np.meshgrid(np.log2(lrs), np.log2(wds), indexing="ij")
    ok = np.isfinite(errors) & (errors < np.nanmin(errors) + cap)
    if ok.sum() < 8:
        return math.nan
    px, py = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    design = np.stack([px * px, 2 * px * py, py * py, px, py, np.ones_like(px)], axis=1)
    a, b, c = np.linalg.lstsq(design, errors[ok], rcond=None)[0][:3]
    along = a - 2 * b + c
    return float(a / (a + along)) if a > 0 and along > 0 else math.nan


Grids = tuple[list[float], list[float], dict[int, FloatArray]]


def from_json(path: Path, optimizer: str) -> Grids:
    trials = [t for t in json.loads(path.read_text())["trials"] if t["optimizer"] == optimizer]
    lrs, wds = sorted({t["lr"] for t in trials}), sorted({t["wd"] for t in trials})
    grids: dict[int, FloatArray] = {}
    for t in trials:
        g = grids.setdefault(t["seed"], np.full((len(lrs), len(wds)), np.nan))
        if t["status"] == "completed":
            g[lrs.index(t["lr"]), wds.index(t["wd"])] = t["err"]
    return lrs, wds, grids


def synthetic(kind: str, seeds: int, noise: float, resolution: float) -> Grids:
    """A 9×9 grid in steps of 2^1 around α = λ = 2^-7; per-seed Gaussian noise (points), rounded to ``resolution``."""
    logs = np.arange(-11.0, -2.9, 1.0)
    x, y = np.meshgrid(logs + 7, logs + 7, indexing="ij")
    clean = 2.0 + (0.3 * (x + y) ** 2 + 0.05 * x**2 if kind == "valley" else 0.3 * x**2 + 0.3 * y**2)
    rng = np.random.default_rng(0)
    grids = {s: np.round((clean + rng.normal(0, noise, clean.shape)) / resolution) * resolution for s in range(seeds)}
    axis = (2.0**logs).tolist()
    return axis, axis, grids


DEFINITIONS: dict[str, Callable[[FloatArray, list[float], list[float]], float]] = {
    "now": lambda g, lrs, wds: analyze(g, lrs, wds).coupling_index,
    "rows": rows_index,
    "quad": quad_index,
}


def show(name: str, optimizer: str, grids: Grids) -> dict[str, float]:
    """Print one grid's per-seed values under each definition; returns each definition's spread over seeds."""
    lrs, wds, by_seed = grids
    spreads = {}
    parts = []
    for label, index in DEFINITIONS.items():
        values = [index(g, lrs, wds) for _, g in sorted(by_seed.items())]
        spreads[label] = float(np.nanmax(values) - np.nanmin(values)) if np.any(np.isfinite(values)) else math.nan
        parts.append(f"{label} " + " ".join(f"{v:4.2f}" for v in values[:4]) + f" ±{spreads[label]:.2f}")
    print(f"{name:<26} {optimizer:<6} " + "   ".join(parts))
    return spreads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="SQLAlchemy URL of a wdgrid store: every sweep with twins is shown too.")
    args = parser.parse_args()
    spreads: list[dict[str, float]] = []
    print("grid                       opt.   coupling index per seed (first 4) and spread over seeds, per definition")
    for label, path in (
        ("cpu-fig2 (first run)", DATA / "cpu_fig2_run.json"),
        ("cpu-fig2", DATA / "cpu_fig2_run_wide.json"),
    ):
        for optimizer in ("sgd", "sgdw", "adam", "adamw"):
            spreads.append(show(label, optimizer, from_json(path, optimizer)))
    if args.store:
        from results import SqlStorage
        from results.grids import seed_grids

        store = SqlStorage(args.store)
        for sweep in store.list_sweeps(limit=500)[0]:
            names = [g["optimizer"] for g in sweep.spec["grids"]]
            for l2, twin in TWINS.items():
                if l2 in names and twin in names:
                    for optimizer in (l2, twin):
                        grids = seed_grids(store, sweep.id, optimizer)
                        if len(grids[2]) > 1 and len(grids[0]) > 2 and len(grids[1]) > 2:
                            spreads.append(show(f"sweep {sweep.id} {sweep.name}"[:26], optimizer, grids))
    measured = len(spreads)
    for kind in ("valley", "bowl"):
        for noise in (0.1, 0.3):
            spreads.append(show(f"synthetic {kind} ±{noise}", "-", synthetic(kind, 8, noise, 0.1)))
    for group, part in (("measured", spreads[:measured]), ("synthetic", spreads[measured:])):
        means = {label: float(np.nanmean([s[label] for s in part])) for label in DEFINITIONS}
        print(f"mean spread over seeds, {group} grids: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
