"""How steady is the coupling index from seed to seed? The definition in use beside the one it replaced, and a third.
Issue 19 asked for a headline number anchored on more than the single best cell. This bench prints, on the same
grids, each seed's value and the spread over seeds (max − min) of:

- ``anchored``: the index as ``results.separability`` defines it since issue 19 — anchored on every near-best row's
  and column's best cell, α moved by 2^±k (k = 1, 2) with both moves of a k required (second differences), sums
  over anchors;
- ``best-cell``: the definition until issue 19 — from the single best cell, α moved by 2^k for k in ±1, ±2, each
  move one-sided (mean regret with λ fixed against mean regret with α·λ fixed);
- ``quad``: a least-squares quadratic a·x² + 2b·xy + c·y² + … (x = log2 α, y = log2 λ) over every finite cell within
  the cap of the best; index = a / (a + (a − 2b + c)): the cost of moving α with λ fixed against the cost along
  α·λ fixed, exactly the coupling index of a quadratic landscape (1/3 for an isotropic bowl).

Grids: the two measured cpu-fig2 runs kept in ``tests/results/data/``; with ``--store URL``, every sweep of that store
with an L2 optimizer beside its twin on several seeds (``make reproduce`` keeps its store in ``.reproduce/``); and
synthetic landscapes of known coupling (a diagonal valley, a separable bowl) with independent noise per seed, rounded
to a test set's resolution (0.1 points). Per pair, the difference L2 − decoupled on each seed is printed too: a
steadier index is no use if it stops telling the two apart.

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


def best_cell_index(errors: FloatArray, lrs: list[float], wds: list[float], cap: float = DEFAULT_CAP) -> float:
    """The ``best-cell`` definition (module docstring), as ``results.separability`` had it until issue 19."""
    la, lw = np.log2(lrs), np.log2(wds)
    capped, best = _capped(errors, cap)
    bi, bj = np.unravel_index(int(np.nanargmin(errors)), errors.shape)
    r_l, r_al = [], []
    for k in (-2, -1, 1, 2):
        i, j = np.flatnonzero(np.abs(la - la[bi] - k) < 1e-6), np.flatnonzero(np.abs(lw - lw[bj] + k) < 1e-6)
        if i.size and j.size:
            r_l.append(capped[i[0], bj] - best)
            r_al.append(capped[i[0], j[0]] - best)
    if not r_l or np.mean(r_l) + np.mean(r_al) <= 0:
        return math.nan
    return float(np.mean(r_l) / (np.mean(r_l) + np.mean(r_al)))


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
    "anchored": lambda g, lrs, wds: analyze(g, lrs, wds).coupling_index,
    "best-cell": best_cell_index,
    "quad": quad_index,
}


def show(name: str, optimizer: str, grids: Grids) -> dict[str, list[float]]:
    """Print one grid's per-seed values under each definition (and their spread); returns the values."""
    lrs, wds, by_seed = grids
    values: dict[str, list[float]] = {}
    parts = []
    for label, index in DEFINITIONS.items():
        values[label] = [index(g, lrs, wds) for _, g in sorted(by_seed.items())]
        parts.append(f"{label} " + " ".join(f"{v:4.2f}" for v in values[label][:4]) + f" ±{_spread(values[label]):.2f}")
    print(f"{name:<26} {optimizer:<6} " + "   ".join(parts))
    return values


def _spread(values: list[float]) -> float:
    return float(np.nanmax(values) - np.nanmin(values)) if np.any(np.isfinite(values)) else math.nan


def show_pair(name: str, l2: str, twin: str, a: dict[str, list[float]], b: dict[str, list[float]]) -> None:
    """Print L2 − decoupled per seed under each definition: what the verdict rests on."""
    parts = []
    for label in DEFINITIONS:
        diffs = np.subtract(a[label], b[label])
        parts.append(f"{label} " + " ".join(f"{d:+.2f}" for d in diffs[:4]) + f" (> 0 on {int(np.sum(diffs > 0))})")
    print(f"{name:<26} {l2}−{twin:<6} " + "   ".join(parts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="SQLAlchemy URL of a wdgrid store: every sweep with twins is shown too.")
    args = parser.parse_args(argv)
    measured: list[dict[str, list[float]]] = []
    print("grid                       opt.   coupling index per seed (first 4) and spread over seeds, per definition")
    sources: list[tuple[str, Callable[[str], Grids], list[str]]] = [
        ("cpu-fig2 (first run)", lambda o: from_json(DATA / "cpu_fig2_run.json", o), ["sgd", "sgdw", "adam", "adamw"]),
        ("cpu-fig2", lambda o: from_json(DATA / "cpu_fig2_run_wide.json", o), ["sgd", "sgdw", "adam", "adamw"]),
        ("digits (noisy)", lambda o: from_json(DATA / "digits_run.json", o), ["sgd", "sgdw"]),
    ]
    if args.store:
        from results import SqlStorage
        from results.grids import seed_grids

        store = SqlStorage(args.store)
        for sweep in store.list_sweeps(limit=500)[0]:
            names = [g["optimizer"] for g in sweep.spec["grids"]]
            pairs = [o for l2, twin in TWINS.items() if l2 in names and twin in names for o in (l2, twin)]
            grids = {o: seed_grids(store, sweep.id, o) for o in pairs}
            if pairs and all(len(g[2]) > 1 and len(g[0]) > 2 and len(g[1]) > 2 for g in grids.values()):
                sources.append((f"sweep {sweep.id} {sweep.name}"[:26], grids.__getitem__, pairs))
    for name, grids_of, optimizers in sources:
        values = {o: show(name, o, grids_of(o)) for o in optimizers}
        measured += values.values()
        for l2, twin in TWINS.items():
            if l2 in values and twin in values:
                show_pair(name, l2, twin, values[l2], values[twin])
    synthetic_values = []
    for kind in ("valley", "bowl"):
        for noise in (0.1, 0.3):
            synthetic_values.append(show(f"synthetic {kind} ±{noise}", "-", synthetic(kind, 8, noise, 0.1)))
    for group, part in (("measured", measured), ("synthetic", synthetic_values)):
        means = {label: float(np.nanmean([_spread(v[label]) for v in part])) for label in DEFINITIONS}
        print(f"mean spread over seeds, {group} grids: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
