"""How fast the results store takes epoch metrics and serves a grid, on SQLite (a file) and on PostgreSQL.

Everything goes through the real ``results.Storage`` API:

- epoch rows per second, one ``record_epochs`` call (one transaction) per epoch, as the driver records them when
  they arrive; and batched, ``record_epochs`` with 100 epochs per call;
- the time to read one optimizer's α×λ final-error grid (``Storage.grid``: 25 α × 25 λ × 2 seeds = 1250 rows) of
  one sweep from a database that holds 100,000 trials (20 sweeps of 5000 cells: 19 plus the write benchmark's).

Setup that is not measured: the 100,000 trials are created with ``create_sweep``; their final test errors are then
filled in by one SQL UPDATE (a deterministic placeholder value, so the grid query reads real non-NULL numbers).

    .venv/bin/python bench/store.py                       # SQLite in a temp dir + PostgreSQL at $WDGRID_TEST_PG_URL
    .venv/bin/python bench/store.py --pg-url ''           # SQLite only

Runs in about a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from results import EpochRecord, SqlStorage, Storage
from sweeps import SweepSpec, expand

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SWEEPS, SEEDS = 19, 2  # 4 optimizers × 25 α × 25 λ × 2 seeds = 5000 cells per sweep


def spec(epochs: int) -> SweepSpec:
    axis = {"base": 2, "start": -12, "stop": 0, "step": 0.5}  # 25 values
    return SweepSpec.model_validate(
        {
            "dataset": "mnist1d",
            "model": "cnn1d",
            "epochs": epochs,
            "batch_size": 128,
            "schedule": {"name": "cosine"},
            "seeds": list(range(SEEDS)),
            "grids": [{"optimizer": o, "lr": axis, "weight_decay": axis} for o in ("sgd", "sgdw", "adam", "adamw")],
        }
    )


def metrics(trial_id: int, epoch: int) -> EpochRecord:
    return EpochRecord(
        trial_id=trial_id,
        attempt=1,
        epoch=epoch,
        train_loss=1.0 / epoch,
        train_error=40.0 / epoch,
        test_loss=1.1 / epoch,
        test_error=45.0 / epoch,
        eta=0.5,
        wall_time_s=0.1 * epoch,
    )


def write_rates(store: Storage, seconds: float) -> tuple[float, float]:
    """(rows/s one epoch per call, rows/s 100 epochs per call), each measured for about ``seconds``."""
    sweep = store.create_sweep(expand(spec(epochs=1000)))
    single = store.claim_trial(sweep.id, lease_seconds=3600)
    batched = store.claim_trial(sweep.id, lease_seconds=3600)
    assert single is not None and batched is not None
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += 1
        store.record_epochs([metrics(single.id, n)])
    one = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        store.record_epochs([metrics(batched.id, n + i) for i in range(1, 101)])
        n += 100
    return one, n / (time.perf_counter() - start)


def grid_read(store: SqlStorage, repeats: int) -> tuple[int, float, int]:
    """(trials in the database, median seconds to read one optimizer's grid of one sweep, rows in that grid)."""
    ids = [store.create_sweep(expand(spec(epochs=e))).id for e in range(1, SWEEPS + 1)]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE trials SET status = 'completed', final_test_error = 5.0 + (id % 97) * 0.5, epochs_done = 1")
        )
        n_trials = conn.execute(sa.text("SELECT count(*) FROM trials")).scalar_one()
    target = ids[len(ids) // 2]
    times, rows = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        grid = store.grid(target, "adamw")
        times.append(time.perf_counter() - start)
        rows = len(grid)
        assert all(p.value is not None for p in grid)
    return n_trials, statistics.median(times), rows


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema on the server at ``url``, dropped afterwards; yields a URL that uses it."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    schema = f"wdgrid_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(label: str, url: str, seconds: float, repeats: int) -> None:
    with SqlStorage(url) as store:
        one, batch = write_rates(store, seconds)
        n_trials, read_s, rows = grid_read(store, repeats)
    print(f"{label:<22} {one:>14,.0f} {batch:>16,.0f} {n_trials:>12,} {rows:>10,} {read_s * 1000:>13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default=os.environ.get("WDGRID_TEST_PG_URL", PG_DEFAULT), help="'' to skip")
    parser.add_argument("--seconds", type=float, default=5.0, help="per write measurement")
    parser.add_argument("--repeats", type=int, default=20, help="grid reads; the median is reported")
    args = parser.parse_args()

    print(
        f"{'backend':<22} {'rows/s (1/call)':>14} {'rows/s (100/call)':>16} {'trials in db':>12} {'grid rows':>10} "
        f"{'grid read ms':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite (file, WAL)", f"sqlite:///{Path(tmp) / 'bench.db'}", args.seconds, args.repeats)
    if args.pg_url:
        with pg_schema(args.pg_url) as url:
            run("postgresql", url, args.seconds, args.repeats)


if __name__ == "__main__":
    main()
