"""The results store's contract (``results.Storage``), run against every backend: SQLite file, SQLite in memory,
PostgreSQL. Real databases, no mocks."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from results import (
    FINISHED,
    ConflictError,
    EpochRecord,
    FinalMetrics,
    NotFoundError,
    Provenance,
    SqlStorage,
    StaleAttemptError,
    Storage,
    SweepBusyError,
    TransitionError,
    upgrade,
)
from results._tables import Base
from sweeps import SweepSpec, bundles, cells, expand
from tests.factories import epoch_record, make_spec

REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A settable UTC clock, so that leases can expire without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[SqlStorage]:
    with SqlStorage(store_url, clock=clock) as s:
        yield s


class TestStorageContract:
    # --- Sweeps ---------------------------------------------------------------------------------------------------
    def test_create_sweep_stores_the_spec_and_one_pending_trial_per_cell(self, store: Storage):
        spec = make_spec()
        sweep = store.create_sweep(expand(spec))
        assert (sweep.status, sweep.fingerprint, sweep.name) == ("pending", spec.fingerprint(), "test sweep")
        assert SweepSpec.model_validate(store.get_sweep(sweep.id).spec) == spec
        assert sweep.created_at.tzinfo is not None
        trials, count = store.trials(sweep.id)
        assert count == len(trials) == spec.n_cells()
        by_cell = {t.cell_id: t for t in trials}
        bundle_of = {c.cell_id: b.bundle_id for b in bundles(spec) for c in b.cells}
        for cell in cells(spec):
            t = by_cell[cell.cell_id]
            assert (t.status, t.attempts, t.final) == ("pending", 0, None)
            assert (t.optimizer, t.lr, t.weight_decay, t.seed) == (
                cell.optimizer,
                cell.lr,
                cell.weight_decay,
                cell.seed,
            )
            assert t.bundle_id == bundle_of[cell.cell_id]
            assert t.config == cell.config.as_dict()
        assert store.status_counts(sweep.id)["pending"] == spec.n_cells()

    def test_create_sweep_is_idempotent_on_its_key(self, store: Storage):
        first = store.create_sweep(expand(make_spec()), idempotency_key="k1")
        assert store.create_sweep(expand(make_spec()), idempotency_key="k1") == first
        assert store.list_sweeps()[1] == 1
        with pytest.raises(ConflictError, match="k1"):
            store.create_sweep(expand(make_spec(epochs=5)), idempotency_key="k1")
        assert store.create_sweep(expand(make_spec())).id != first.id  # without a key, the same spec is a new sweep

    def test_unknown_ids_raise_not_found(self, store: Storage):
        with pytest.raises(NotFoundError):
            store.get_sweep(999)
        with pytest.raises(NotFoundError):
            store.get_trial(999)
        with pytest.raises(NotFoundError):
            store.record_epochs([epoch_record(999, 1, 1)])

    def test_list_sweeps_pages_and_filters(self, store: Storage):
        ids = [store.create_sweep(expand(make_spec(epochs=e))).id for e in (1, 2, 3, 4, 5)]
        store.set_sweep_status(ids[1], "running")
        rows, count = store.list_sweeps(offset=1, limit=2)
        assert count == 5 and [r.id for r in rows] == ids[1:3]
        rows, count = store.list_sweeps(status="running")
        assert count == 1 and rows[0].id == ids[1]

    def test_sweep_status_transitions(self, store: Storage, clock: Clock):
        sweep = store.create_sweep(expand(make_spec()))
        running = store.set_sweep_status(sweep.id, "running")
        assert running.started_at == clock.now and running.finished_at is None
        assert store.set_sweep_status(sweep.id, "running") == running  # same status: no-op
        clock.advance(10)
        done = store.set_sweep_status(sweep.id, "completed")
        assert done.finished_at == clock.now
        with pytest.raises(TransitionError, match="completed"):
            store.set_sweep_status(sweep.id, "running")
        with pytest.raises(TransitionError, match="only failed or cancelled sweeps resume"):
            store.resume_sweep(sweep.id)
        assert store.get_sweep(sweep.id) == done

    # --- Claims, leases, attempts ---------------------------------------------------------------------------------
    def test_claims_hand_out_each_pending_trial_once(self, store: Storage, clock: Clock):
        spec = make_spec()
        sweep = store.create_sweep(expand(spec))
        first = store.trials(sweep.id, limit=1)[0][0]
        claimed = store.claim_trial(sweep.id, lease_seconds=30, trial_id=first.id)
        assert claimed is not None and claimed.id == first.id
        assert store.claim_trial(sweep.id, lease_seconds=30, trial_id=first.id) is None  # claimed already
        assert (claimed.status, claimed.attempts) == ("running", 1)
        assert claimed.lease_expires_at == clock.now + timedelta(seconds=30)
        ids = {claimed.id}
        while (t := store.claim_trial(sweep.id, lease_seconds=30)) is not None:
            ids.add(t.id)
        assert len(ids) == spec.n_cells()
        assert store.status_counts(sweep.id)["running"] == spec.n_cells()

    def test_concurrent_claimers_never_share_a_trial(self, shared_store_url: str):
        spec = make_spec()
        with SqlStorage(shared_store_url) as setup:
            sweep = setup.create_sweep(expand(spec))
        got: list[int] = []
        lock = threading.Lock()

        def claimer() -> None:
            with SqlStorage(shared_store_url, migrate=False) as s:
                while (t := s.claim_trial(sweep.id, lease_seconds=60)) is not None:
                    with lock:
                        got.append(t.id)

        threads = [threading.Thread(target=claimer) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(got) == sorted(set(got)) and len(got) == spec.n_cells()

    # --- Epochs and results ---------------------------------------------------------------------------------------
    def test_record_epoch_is_idempotent_and_never_duplicates(self, store: Storage):
        sweep = store.create_sweep(expand(make_spec()))
        t = store.claim_trial(sweep.id, lease_seconds=60)
        assert t is not None
        assert store.record_epochs([epoch_record(t.id, 1, 1)]) == 1
        assert store.record_epochs([epoch_record(t.id, 1, 1)]) == 0  # a replay: no-op
        assert store.record_epochs([epoch_record(t.id, 1, 1), epoch_record(t.id, 1, 2), epoch_record(t.id, 1, 3)]) == 2
        with pytest.raises(ConflictError, match="epoch 2"):
            store.record_epochs([epoch_record(t.id, 1, 4), epoch_record(t.id, 1, 2, test_error=1.0)])
        assert [e.epoch for e in store.epochs(t.id)] == [1, 2, 3]  # the conflicting call wrote nothing
        with pytest.raises(StaleAttemptError):
            store.record_epochs([epoch_record(t.id, 2, 1)])  # attempt 2 has not been claimed

    def test_floats_round_trip_exactly(self, store: Storage):
        values = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, 2.0**-1022]
        sweep = store.create_sweep(
            expand(make_spec(grids=[{"optimizer": "sgd", "lr": [1 / 3, 0.1 + 0.2], "weight_decay": [5e-324]}]))
        )
        t = store.claim_trial(sweep.id, lease_seconds=60)
        assert t is not None and t.lr in (1 / 3, 0.1 + 0.2) and t.weight_decay == 5e-324
        for i, v in enumerate(values, start=1):
            store.record_epochs([EpochRecord(trial_id=t.id, attempt=1, epoch=i, train_loss=v, test_error=v)])
        stored = store.epochs(t.id)
        assert [e.train_loss for e in stored] == values
        assert [e.test_error for e in stored] == values

    def test_non_finite_metrics_read_back_as_none_on_every_backend(self, store: Storage):
        sweep = store.create_sweep(expand(make_spec()))
        t = store.claim_trial(sweep.id, lease_seconds=60)
        assert t is not None
        store.record_epochs(
            [EpochRecord(trial_id=t.id, attempt=1, epoch=1, train_loss=math.inf, test_loss=-math.inf, test_error=90.0)]
        )
        store.record_epochs([EpochRecord(trial_id=t.id, attempt=1, epoch=2, train_loss=math.nan, test_error=90.0)])
        assert (
            store.record_epochs([EpochRecord(trial_id=t.id, attempt=1, epoch=2, train_loss=math.nan, test_error=90.0)])
            == 0
        )
        e1, e2 = store.epochs(t.id)
        assert (e1.train_loss, e1.test_loss, e1.test_error) == (None, None, 90.0)
        assert (e2.train_loss, e2.test_error) == (None, 90.0)
        done = store.finish_trial(t.id, 1, "diverged", final=FinalMetrics(test_error=90.0, train_loss=math.nan))
        assert done.status == "diverged" and done.final is not None
        assert (done.final.test_error, done.final.train_loss) == (90.0, None)

    def test_finish_trial_stores_result_and_provenance_once(self, store: Storage, clock: Clock):
        sweep = store.create_sweep(expand(make_spec()))
        t = store.claim_trial(sweep.id, lease_seconds=60)
        assert t is not None
        final = FinalMetrics(
            test_error=12.5, train_error=3.0, test_loss=0.4, train_loss=0.1, wall_time_s=9.5, epochs_done=3
        )
        prov = Provenance(git_sha="abc123", package_versions={"torch": "2.14.1"}, device="cpu", host="node1")
        done = store.finish_trial(t.id, 1, "completed", final=final, provenance=prov)
        assert (done.status, done.final, done.provenance, done.lease_expires_at) == ("completed", final, prov, None)
        assert done.finished_at == clock.now
        assert store.finish_trial(t.id, 1, "completed", final=final, provenance=prov) == done  # replay: no-op
        with pytest.raises(StaleAttemptError):
            store.finish_trial(t.id, 1, "failed", error="late")

    def test_finished_since_counts_the_trials_finished_from_then_on(self, store: Storage, clock: Clock):
        sweep = store.create_sweep(expand(make_spec()))
        early = store.claim_trial(sweep.id, lease_seconds=60)
        assert early is not None
        store.finish_trial(early.id, 1, "completed", final=FinalMetrics(test_error=10.0))
        clock.advance(10)
        since = clock.now
        late, running = store.claim_trial(sweep.id, lease_seconds=60), store.claim_trial(sweep.id, lease_seconds=60)
        assert late is not None and running is not None
        store.finish_trial(late.id, 1, "diverged", final=FinalMetrics(test_error=90.0))
        assert store.finished_since(sweep.id, since) == 1
        assert store.finished_since(sweep.id, since - timedelta(seconds=10)) == 2
        assert store.finished_since(sweep.id + 1, since - timedelta(seconds=10)) == 0

    def test_cancel_and_resume_keep_finished_trials(self, store: Storage):
        spec = make_spec()
        sweep = store.create_sweep(expand(spec))
        store.set_sweep_status(sweep.id, "running")
        a = store.claim_trial(sweep.id, lease_seconds=60)
        b = store.claim_trial(sweep.id, lease_seconds=60)
        c = store.claim_trial(sweep.id, lease_seconds=60)
        assert a and b and c
        store.finish_trial(a.id, 1, "completed", final=FinalMetrics(test_error=10.0))
        store.finish_trial(b.id, 1, "diverged", final=FinalMetrics(test_error=90.0))
        assert store.cancel_sweep(sweep.id) == spec.n_cells() - 2
        assert store.get_sweep(sweep.id).status == "cancelled"
        with pytest.raises(StaleAttemptError):
            store.finish_trial(c.id, 1, "completed")  # cancelled under the worker's feet
        assert {t.cell_id for s in FINISHED for t in store.trials(sweep.id, status=s)[0]} == {a.cell_id, b.cell_id}
        assert store.resume_sweep(sweep.id) == spec.n_cells() - 2
        counts = store.status_counts(sweep.id)
        assert (counts["pending"], counts["completed"], counts["diverged"], counts["cancelled"]) == (
            spec.n_cells() - 2,
            1,
            1,
            0,
        )
        assert store.get_sweep(sweep.id).status == "pending"
        assert store.get_trial(c.id).attempts == 1  # attempts count claims over the trial's life

    def test_every_attempt_is_recorded_with_where_it_ran_and_how_it_ended(self, store: Storage, clock: Clock):
        sweep = store.create_sweep(expand(make_spec()))
        t = store.claim_trial(sweep.id, lease_seconds=60)
        assert t is not None
        store.locate_attempt(t.id, 1, host="node-a", node="n1", pid=11)
        store.record_epochs([epoch_record(t.id, 1, 1)])
        clock.advance(5)
        second = store.retry_trial(t.id, 1, error="worker died", lease_seconds=60)
        assert (second.status, second.attempts) == ("running", 2)
        assert second.lease_expires_at == clock.now + timedelta(seconds=60)
        with pytest.raises(StaleAttemptError):
            store.retry_trial(t.id, 1, error="late", lease_seconds=60)  # attempt 1 is over
        store.locate_attempt(t.id, 2, host="node-b", node="n2", pid=22)
        store.record_epochs([epoch_record(t.id, 2, 1), epoch_record(t.id, 2, 2)])
        store.finish_trial(t.id, 2, "completed", final=FinalMetrics(test_error=10.0))
        attempts = store.attempts(t.id)
        assert [(a.attempt, a.status, a.error, a.host, a.node, a.pid) for a in attempts] == [
            (1, "failed", "worker died", "node-a", "n1", 11),
            (2, "completed", None, "node-b", "n2", 22),
        ]
        assert attempts[0].finished_at == attempts[1].started_at == clock.now
        assert [(e.attempt, e.epoch) for e in store.epochs(t.id)] == [(1, 1), (2, 1), (2, 2)]
        # a driver taken over and cancellations close attempts too
        store.acquire_sweep(sweep.id, "host:1:a", lease_seconds=10)
        u = store.claim_trial(sweep.id, lease_seconds=10)
        assert u is not None
        clock.advance(11)
        store.acquire_sweep(sweep.id, "host:2:b", lease_seconds=10)  # the first driver's lease expired
        v = store.claim_trial(sweep.id, lease_seconds=10, trial_id=u.id)
        assert v is not None and v.attempts == 2
        store.cancel_sweep(sweep.id)
        assert [a.status for a in store.attempts(u.id)] == ["lost", "cancelled"]
        assert sum(len(store.attempts(t.id)) for t in store.trials(sweep.id)[0]) == 4

    def test_record_epochs_of_several_trials_writes_all_or_nothing(self, store: Storage):
        sweep = store.create_sweep(expand(make_spec()))
        a = store.claim_trial(sweep.id, lease_seconds=60)
        b = store.claim_trial(sweep.id, lease_seconds=60)
        assert a and b
        assert store.record_epochs([epoch_record(a.id, 1, 1), epoch_record(b.id, 1, 1)]) == 2
        with pytest.raises(ConflictError):
            store.record_epochs([epoch_record(a.id, 1, 2), epoch_record(b.id, 1, 1, test_error=1.0)])  # b's differs
        assert [e.epoch for e in store.epochs(a.id)] == [1]  # a's epoch 2 was rolled back with the conflict

    def test_a_new_sweep_reuses_finished_cells_of_an_earlier_sweep_with_its_fingerprint(self, store: Storage):
        spec = make_spec()
        first = store.create_sweep(expand(spec))
        done = store.claim_trial(first.id, lease_seconds=60)
        wild = store.claim_trial(first.id, lease_seconds=60)
        assert done and wild
        store.record_epochs([epoch_record(done.id, 1, 1), epoch_record(done.id, 1, 2, test_error=9.5)])
        prov = Provenance(git_sha="abc", package_versions={"torch": "2"}, device="cpu", host="h")
        final = FinalMetrics(test_error=9.5, epochs_done=2)
        store.finish_trial(done.id, 1, "completed", final=final, provenance=prov)
        store.finish_trial(wild.id, 1, "diverged", final=FinalMetrics(epochs_done=0))
        other = store.create_sweep(expand(make_spec(seeds=[7])))  # another fingerprint: never a source
        second = store.create_sweep(expand(spec.model_copy(update={"name": "again"})))
        assert store.reuse_finished(other.id) == {}
        assert store.reuse_finished(second.id) == {first.id: 2}
        assert store.reuse_finished(second.id) == {}  # nothing pending is left to fill from there
        by_cell = {t.cell_id: t for t in store.trials(second.id)[0]}
        copy = by_cell[done.cell_id]
        assert (copy.status, copy.attempts, copy.final, copy.provenance) == ("completed", 1, final, prov)
        assert [(e.attempt, e.epoch, e.test_error) for e in store.epochs(copy.id)] == [(1, 1, 55.0), (1, 2, 9.5)]
        (attempt,) = store.attempts(copy.id)
        assert attempt.error == f"reused: trial {done.id} of sweep {first.id}, attempt 1"
        assert by_cell[wild.cell_id].status == "diverged"
        assert store.status_counts(second.id)["pending"] == spec.n_cells() - 2

    def test_one_driver_at_a_time_and_a_dead_ones_trials_go_back_to_the_queue(self, store: Storage, clock: Clock):
        sweep = store.create_sweep(expand(make_spec()))
        assert store.acquire_sweep(sweep.id, "host:1:a", lease_seconds=30) == 0
        assert store.acquire_sweep(sweep.id, "host:1:a", lease_seconds=30) == 0  # again: still ours
        t = store.claim_trial(sweep.id, lease_seconds=30)
        assert t is not None
        with pytest.raises(SweepBusyError, match="host:1:a"):
            store.acquire_sweep(sweep.id, "host:2:b", lease_seconds=30)
        clock.advance(20)
        assert store.renew_sweep(sweep.id, "host:1:a", lease_seconds=30)  # the driver and its trials until +50 s
        assert store.get_trial(t.id).lease_expires_at == clock.now + timedelta(seconds=30)
        clock.advance(20)
        with pytest.raises(SweepBusyError):
            store.acquire_sweep(sweep.id, "host:2:b", lease_seconds=30)
        # a holder known to be dead is replaced at once; its running trial is re-queued, its attempt lost
        assert store.acquire_sweep(sweep.id, "host:2:b", lease_seconds=30, holder_dead=lambda h: h == "host:1:a") == 1
        assert not store.renew_sweep(sweep.id, "host:1:a", lease_seconds=30)  # the old driver learns it lost
        assert store.get_trial(t.id).status == "pending"
        assert [(a.status, a.error) for a in store.attempts(t.id)] == [("lost", "its driver host:1:a stopped")]
        store.release_sweep(sweep.id, "host:1:a")  # not the holder: a no-op
        assert store.get_sweep(sweep.id).driver == "host:2:b"
        store.release_sweep(sweep.id, "host:2:b")
        assert store.get_sweep(sweep.id).driver is None
        # an expired lease can be taken over too
        store.acquire_sweep(sweep.id, "host:3:c", lease_seconds=30)
        clock.advance(31)
        assert store.acquire_sweep(sweep.id, "host:4:d", lease_seconds=30) == 0
        # cancelling a sweep ends its driver's hold
        store.cancel_sweep(sweep.id)
        assert not store.renew_sweep(sweep.id, "host:4:d", lease_seconds=30)

    def test_trials_filter_and_grid_reads_one_optimizer(self, store: Storage):
        spec = make_spec()
        sweep = store.create_sweep(expand(spec))
        rows, count = store.trials(sweep.id, optimizer="adamw", limit=2)
        assert count == 6 and len(rows) == 2 and {r.optimizer for r in rows} == {"adamw"}
        t = store.claim_trial(sweep.id, lease_seconds=60, trial_id=rows[0].id)
        assert t is not None
        store.finish_trial(t.id, 1, "completed", final=FinalMetrics(test_error=7.25))
        grid = store.grid(sweep.id, "adamw")
        assert len(grid) == 6
        assert [(p.lr, p.weight_decay, p.seed) for p in grid] == sorted((p.lr, p.weight_decay, p.seed) for p in grid)
        assert [p.value for p in grid if p.trial_id == t.id] == [7.25]
        assert store.trials(sweep.id, status="completed")[1] == 1

    # --- Schema ---------------------------------------------------------------------------------------------------
    def test_migrations_build_exactly_the_orm_schema(self, store: SqlStorage):
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []

    def test_upgrade_from_the_first_revision_keeps_data(self, store_url: str):
        engine = SqlStorage(store_url, migrate=False).engine
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO sweeps (name, spec, fingerprint, status, created_at) "
                    "VALUES ('old', '{}', 'f00', 'pending', '2025-01-01 00:00:00')"
                )
            )
            assert "ix_trials_sweep_status" not in {i["name"] for i in sa.inspect(conn).get_indexes("trials")}
        upgrade(engine)
        with engine.connect() as conn:
            assert "ix_trials_sweep_status" in {i["name"] for i in sa.inspect(conn).get_indexes("trials")}
            assert conn.execute(sa.text("SELECT name, fingerprint FROM sweeps")).all() == [("old", "f00")]
        engine.dispose()


# --- A writer killed mid-transaction ------------------------------------------------------------------------------
WRITER = """
import sys
from results import EpochRecord, SqlStorage
from sweeps import expand
from tests.factories import epoch_record, make_spec

store = SqlStorage(sys.argv[1])
sweep = store.create_sweep(expand(make_spec()))
trial = store.claim_trial(sweep.id, lease_seconds=600)
for epoch in range(1, 51):  # fifty committed epochs, one transaction each
    store.record_epochs([epoch_record(trial.id, 1, epoch)])
big = [epoch_record(trial.id, 1, e) for e in range(1000, 200_000)]
print(trial.id, flush=True)
# One huge transaction (seconds long): it must vanish as a whole when the process is killed.
store.record_epochs(big)
print("done", flush=True)
"""


def test_a_killed_writer_leaves_a_consistent_database(shared_store_url: str):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, shared_store_url], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    trial_id = int(proc.stdout.readline())
    time.sleep(1.0)  # inside the big transaction, which takes about 3 s on SQLite and longer on PostgreSQL
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    assert proc.wait() == -signal.SIGKILL and "done" not in rest
    with SqlStorage(shared_store_url) as store:
        if store.engine.dialect.name == "sqlite":
            with store.engine.connect() as conn:
                assert conn.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
        assert [e.epoch for e in store.epochs(trial_id)] == list(range(1, 51))
        last = store.epochs(trial_id)[-1]
        assert last == epoch_record(trial_id, 1, 50)
        trial = store.get_trial(trial_id)
        assert (trial.status, trial.attempts) == ("running", 1)
        # The store still takes writes after the crash.
        assert store.record_epochs([epoch_record(trial_id, 1, 51)]) == 1
