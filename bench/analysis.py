"""Analysis speed: the grid CSV, the four-panel Figure-2 PNG and the separability report of one large sweep.

Builds a SQLite store (in a temporary folder) holding a sweep of 4 optimizers × 20×20 (α, λ) cells × 3 seeds, all
written through the real store API, with synthetic final errors: a diagonal valley for sgd/adam (the best λ ∝ 1/α,
as with L2), an axis-aligned bowl for sgdw/adamw, seed noise, and a diverged corner at large α. Then times, from the
store: the four grid CSVs, the four-panel twins PNG, and the separability report; it prints the report too.

    .venv/bin/python bench/analysis.py
    .venv/bin/python bench/analysis.py --real RESULTS.json --png docs/cpu-fig2-twins.png   # a real measured grid

``--real`` takes a JSON list of {optimizer, lr, wd (raw λ), seed, status, err (final test error %)} of the
``cpu-fig2`` preset's cells, stores them as that preset's sweep, and draws its twins PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from results import EpochRecord, FinalMetrics, SqlStorage, Storage, TrialRecord
from results.figures import twins_png
from results.grids import cell_stats, grid_csv, seed_grids
from results.separability import report
from sweeps import SweepSpec, expand, load_preset

OPTIMIZERS = ("sgd", "sgdw", "adam", "adamw")


def big_spec(n: int, seeds: int) -> SweepSpec:
    axis = {"base": 2, "start": -n + 1, "stop": 0, "step": 1}
    return SweepSpec.model_validate(
        {
            "name": "analysis bench",
            "dataset": "mnist1d",
            "model": "cnn1d",
            "epochs": 3,
            "batch_size": 128,
            "schedule": {"name": "cosine"},
            "seeds": list(range(seeds)),
            "grids": [{"optimizer": o, "lr": axis, "weight_decay": axis} for o in OPTIMIZERS],
        }
    )


def synthetic_error(optimizer: str, lr: float, wd: float, seed: int) -> float | None:
    """Final test error (%): a diagonal valley for L2, an axis-aligned bowl for decoupled decay; None = diverged."""
    la, lw = math.log2(lr), math.log2(wd)
    if la > -1.5 and lw > -4:
        return None
    noise = np.random.default_rng(zlib.crc32(repr((optimizer, la, lw, seed)).encode())).normal(0, 0.3)
    if optimizer in ("sgd", "adam"):
        return float(2 + 0.4 * (la + lw + 16) ** 2 + 0.05 * (la + 8) ** 2 + noise)
    return float(2 + 0.15 * (la + 8) ** 2 + 0.15 * (lw + 10) ** 2 + noise)


def measured_spec(path: Path) -> SweepSpec:
    """The cpu-fig2 preset with the axes of the measured run in ``path`` (the preset's axes moved since)."""
    data = json.loads(path.read_text())
    trials = data["trials"] if isinstance(data, dict) else data
    grids = [
        {
            "optimizer": o,
            "lr": sorted({t["lr"] for t in trials if t["optimizer"] == o}),
            "weight_decay": sorted({t["wd"] for t in trials if t["optimizer"] == o}),
        }
        for o in OPTIMIZERS
    ]
    spec = load_preset("cpu-fig2").model_dump(mode="json") | {"grids": grids}
    return SweepSpec.model_validate(spec)


def measured(path: Path) -> Callable[[str, float, float, int], float | None]:
    """The final test error (%) of each cell of a measured cpu-fig2 run (``--real``'s JSON); None = diverged."""
    data = json.loads(path.read_text())
    trials = data["trials"] if isinstance(data, dict) else data  # the test fixture's layout, or a bare list
    rows = {(r["optimizer"], r["lr"], r["wd"], r["seed"]): r for r in trials}

    def error(o: str, lr: float, wd: float, seed: int) -> float | None:
        r = rows[(o, lr, wd, seed)]
        return None if r["status"] == "diverged" else float(r["err"])

    return error


def finish(store: Storage, t: TrialRecord, error: float | None) -> None:
    """Finish a claimed trial through the store's API: 3 epochs and ``error`` (final test error %), or diverged."""
    a = t.attempts
    if error is None:
        store.record_epochs([EpochRecord(trial_id=t.id, attempt=a, epoch=1, train_loss=math.inf)])
        store.finish_trial(t.id, a, "diverged", final=FinalMetrics(train_loss=math.inf, epochs_done=1))
        return
    epochs = [EpochRecord(trial_id=t.id, attempt=a, epoch=e, test_error=error + 10.0 * (3 - e) / 3) for e in (1, 2, 3)]
    store.record_epochs(epochs)
    store.finish_trial(t.id, a, "completed", final=FinalMetrics(test_error=error, epochs_done=3))


def fill(
    store: Storage, spec: SweepSpec, error_of: Callable[[str, float, float, int], float | None], *, leave: int = 0
) -> tuple[int, list[TrialRecord]]:
    """Create the sweep and run its trials through the store's API (claim, 3 epochs, finish), all but the last
    ``leave``, which stay claimed (running); returns the sweep's id and those."""
    sweep = store.create_sweep(expand(spec))
    trials = []
    while (t := store.claim_trial(sweep.id, lease_seconds=3600)) is not None:
        trials.append(t)
    for t in trials[: len(trials) - leave]:
        finish(store, t, error_of(t.optimizer, t.lr, t.weight_decay, t.seed))
    return sweep.id, trials[len(trials) - leave :]


def analyze_sweep(store: Storage, sweep_id: int, png: Path, out: Path) -> None:
    start = time.perf_counter()
    stats = {o: cell_stats(store, sweep_id, o) for o in OPTIMIZERS}
    for o, s in stats.items():
        grid_csv(s, out / f"grid-{o}.csv")
    t_csv = time.perf_counter() - start

    start = time.perf_counter()
    twins_png(stats, png)
    t_png = time.perf_counter() - start

    start = time.perf_counter()
    comparisons = report({o: seed_grids(store, sweep_id, o) for o in OPTIMIZERS})
    t_sep = time.perf_counter() - start

    cells = sum(len(s) for s in stats.values())
    print(f"{cells} (α, λ) cells over {len(OPTIMIZERS)} optimizers")
    print(f"grid CSVs (4, from the store): {t_csv:6.2f} s")
    print(f"four-panel twins PNG:          {t_png:6.2f} s  -> {png}")
    print(f"separability report:           {t_sep:6.2f} s")
    for c in comparisons:
        print(c.verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20, help="α and λ values per optimizer")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--real", type=Path, help="JSON of measured cpu-fig2 trials (see the module docstring)")
    parser.add_argument("--png", type=Path, help="where to write the twins PNG (default: the temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        store = SqlStorage(f"sqlite:///{out / 'bench.db'}")
        start = time.perf_counter()
        if args.real:
            sweep_id, _ = fill(store, measured_spec(args.real), measured(args.real))
        else:
            sweep_id, _ = fill(store, big_spec(args.size, args.seeds), synthetic_error)
        print(f"store filled in {time.perf_counter() - start:.1f} s (setup, not timed below)")
        analyze_sweep(store, sweep_id, args.png or out / "twins.png", out)
        store.close()


if __name__ == "__main__":
    main()
