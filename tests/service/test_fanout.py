"""The runner on a real embedded Ray (2 CPUs) and a real SQLite store: every cell exactly once, epochs streamed,
finished cells never retrained, crashed workers retried from their checkpoint, divergence kept as a result, cancel
within seconds. The driver killed mid-sweep is in ``test_runner_resume.py``; a two-node cluster in
``test_cluster.py``."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune

from results import FinalMetrics, SqlStorage, Storage, TrialRecord
from service.fanout import RunOptions, init_ray, plan_chunks, run_sweep
from sweeps import SweepSpec, expand
from tests.factories import epoch_record, make_spec, write_cifar
from workers.train import train

FAST = RunOptions(checkpoint_interval_s=0, heartbeat_s=0.5, lease_seconds=30)


@pytest.fixture(scope="module", autouse=True)
def embedded_ray() -> Iterator[None]:
    import ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    with SqlStorage(f"sqlite:///{tmp_path / 'wdgrid.db'}") as s:
        yield s


def small_spec(**overrides: Any) -> SweepSpec:
    """mlp on MNIST-1D, 3 epochs: sgd 2×2 and adamw 2×1 grids, one seed — 6 cells in 2 bundles."""
    grids = [
        {"optimizer": "sgd", "lr": [0.05, 0.1], "weight_decay": [0.0, 0.0005]},
        {"optimizer": "adamw", "lr": [0.001, 0.002], "weight_decay": [0.001]},
    ]
    return make_spec(**({"epochs": 3, "seeds": [0], "grids": grids} | overrides))


def all_trials(store: Storage, sweep_id: int) -> list[TrialRecord]:
    return store.trials(sweep_id)[0]


def train_like_a_worker(config: dict[str, Any]) -> list[float]:
    """Test losses per epoch of ``train(config)`` with one torch thread, as a 1-CPU trial trains (the thread count
    changes the order of floating-point sums, so only equal counts give bit-equal numbers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [m.test_loss for m in train(config).history]
    finally:
        torch.set_num_threads(threads)


# --- Planning (no Ray) --------------------------------------------------------------------------------------------
def test_chunks_keep_bundles_apart_and_give_every_slot_work(store: Storage):
    spec = make_spec(
        seeds=[0], grids=[{"optimizer": "sgd", "lr": [0.1 * i for i in range(1, 9)], "weight_decay": [0.0]}]
    )
    sweep = store.create_sweep(expand(spec))
    trials = all_trials(store, sweep.id)
    chunks = plan_chunks(trials, slots=2, max_cells=16)
    assert [len(c) for c in chunks] == [2, 2, 2, 2]  # 4 trials for 2 slots, not one trial of 8 cells
    assert sorted(t.id for c in chunks for t in c) == sorted(t.id for t in trials)
    assert [t.lr for c in chunks for t in c] == sorted(t.lr for t in trials)
    spec = small_spec(seeds=[0, 1])
    sweep = store.create_sweep(expand(spec))
    chunks = plan_chunks(all_trials(store, sweep.id), slots=1, max_cells=3)
    assert all(len({t.bundle_id for t in c}) == 1 for c in chunks)
    assert max(len(c) for c in chunks) <= 3 and sum(len(c) for c in chunks) == spec.n_cells()


def test_options_name_the_bad_field():
    with pytest.raises(ValueError, match="cpus_per_trial"):
        RunOptions(cpus_per_trial=0)
    with pytest.raises(ValueError, match="max_retries"):
        RunOptions(max_retries=-1)
    with pytest.raises(ValueError, match="lease_seconds"):
        RunOptions(lease_seconds=2, heartbeat_s=1)
    with pytest.raises(ValueError, match="shares"):
        RunOptions(shares=0)


def test_sweeps_that_share_the_cluster_each_take_an_equal_share_of_its_slots():
    from service.fanout import _trial_resources

    # This module's Ray has 2 CPUs: one sweep alone takes both slots; two at once one each; more never starve one.
    assert [_trial_resources(RunOptions(shares=n))[1] for n in (1, 2, 3)] == [2, 1, 1]
    assert _trial_resources(RunOptions(shares=2, max_concurrent_trials=1))[1] == 1


# --- Running ------------------------------------------------------------------------------------------------------
def test_every_cell_trains_once_with_its_epochs_streamed_into_the_store(store: Storage):
    spec = small_spec()
    sweep = store.create_sweep(expand(spec))
    summary = run_sweep(store, sweep.id, FAST)
    assert (summary.status, summary.finished, summary.reused, summary.retries) == ("completed", 6, 0, 0)
    assert store.get_sweep(sweep.id).status == "completed"
    assert store.get_sweep(sweep.id).driver is None  # released
    trials = all_trials(store, sweep.id)
    assert {t.status for t in trials} == {"completed"}
    for t in trials:
        assert t.attempts == 1
        epochs = store.epochs(t.id)
        assert [(e.attempt, e.epoch) for e in epochs] == [(1, 1), (1, 2), (1, 3)]
        assert t.final is not None and t.final.test_error == epochs[-1].test_error and t.final.epochs_done == 3
        assert t.provenance.device == "cpu" and t.provenance.package_versions
        assert t.provenance.package_versions["torch"] and t.provenance.host
        (attempt,) = store.attempts(t.id)
        assert attempt.status == "completed" and attempt.node and attempt.pid and attempt.pid != os.getpid()
    # what the runner stored is what train() gives for the cell's config, to the last bit (CPU is deterministic)
    one = trials[-1]
    assert [e.test_loss for e in store.epochs(one.id)] == train_like_a_worker(one.config)
    # a second run of a completed sweep does nothing
    again = run_sweep(store, sweep.id, FAST)
    assert (again.status, again.finished, again.reused) == ("completed", 0, 6)


def test_finished_cells_are_never_trained_again(store: Storage):
    sweep = store.create_sweep(expand(small_spec()))
    done = store.claim_trial(sweep.id, lease_seconds=60)
    assert done is not None
    store.record_epochs([epoch_record(done.id, 1, 1, test_error=12.5)])
    store.finish_trial(done.id, 1, "completed", final=FinalMetrics(test_error=12.5, epochs_done=1))
    summary = run_sweep(store, sweep.id, FAST)
    assert (summary.status, summary.reused, summary.finished) == ("completed", 1, 5)
    kept = store.get_trial(done.id)
    assert (kept.attempts, kept.final and kept.final.test_error) == (1, 12.5)  # not retrained: our fake result stays
    assert len(store.epochs(done.id)) == 1


def test_a_diverged_cell_is_a_result_and_is_not_retried(store: Storage):
    grids = [{"optimizer": "sgd", "lr": [0.05, 1e6], "weight_decay": [0.0]}]
    sweep = store.create_sweep(expand(small_spec(grids=grids)))
    summary = run_sweep(store, sweep.id, FAST)
    assert summary.status == "completed" and summary.retries == 0
    by_lr = {t.lr: t for t in all_trials(store, sweep.id)}
    assert by_lr[1e6].status == "diverged" and by_lr[1e6].attempts == 1
    assert by_lr[0.05].status == "completed"


class KillWorkerOnce(tune.Callback):
    """SIGKILLs the worker process of the first trial that reports an epoch ≥ 2: a crash Ray cannot see coming."""

    def __init__(self) -> None:
        self.killed: int | None = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.killed is None and any(m["epoch"] >= 2 for _, m in result.get("epochs", [])):
            self.killed = result["where"]["pid"]
            os.kill(self.killed, signal.SIGKILL)


def test_a_killed_worker_is_retried_from_its_checkpoint_and_every_attempt_is_recorded(store: Storage):
    spec = small_spec(epochs=4, grids=[{"optimizer": "adamw", "lr": [0.001, 0.002], "weight_decay": [0.001]}])
    sweep = store.create_sweep(expand(spec))
    killer = KillWorkerOnce()
    summary = run_sweep(store, sweep.id, FAST, callbacks=[killer])
    assert killer.killed is not None
    assert (summary.status, summary.retries) == ("completed", 1)
    restarted = [t for t in all_trials(store, sweep.id) if t.attempts == 2]
    assert restarted, "the killed trial's cells should have a second attempt"
    for t in restarted:
        first, second = store.attempts(t.id)
        assert (first.status, first.pid) == ("failed", killer.killed)
        assert first.error and "died" in first.error.lower()
        assert second.status == "completed" and second.pid != killer.killed
        epochs = {(e.attempt, e.epoch): e for e in store.epochs(t.id)}
        # attempt 2 holds all four epochs: those before the checkpoint repeated from it, then the rest trained anew
        assert sorted(e for a, e in epochs if a == 2) == [1, 2, 3, 4]
        assert epochs[(2, 1)].test_loss == epochs[(1, 1)].test_loss
        # resuming from the checkpoint gives exactly the uninterrupted run's numbers
        assert [epochs[(2, e)].test_loss for e in range(1, 5)] == train_like_a_worker(t.config)


def test_a_trainer_plugins_killed_cell_resumes_from_its_own_checkpoint(store: Storage):
    # The example package's character-level LM: its trainer checkpoints through the context every epoch.
    spec = make_spec(
        dataset="python_source",
        dataset_args={"chars": 12_000, "block": 16},
        model="char_transformer",
        model_args={"d_model": 16, "layers": 1, "heads": 2},
        trainer="char_lm",
        objective={"metric": "val_loss"},
        epochs=4,
        batch_size=64,
        seeds=[0],
        grids=[{"optimizer": "adamw", "lr": [0.003], "weight_decay": [0.001]}],
    )
    sweep = store.create_sweep(expand(spec))
    killer = KillWorkerOnce()
    summary = run_sweep(store, sweep.id, FAST, callbacks=[killer])
    assert killer.killed is not None and (summary.status, summary.retries) == ("completed", 1)
    [t] = all_trials(store, sweep.id)
    assert t.attempts == 2 and t.final is not None and t.final.metric("val_loss") is not None
    assert t.provenance.package_versions and "wdgrid-examples" in t.provenance.package_versions
    epochs = {(e.attempt, e.epoch): e for e in store.epochs(t.id)}
    assert sorted(e for a, e in epochs if a == 2) == [1, 2, 3, 4]
    # Epochs up to the checkpoint came back from it (the same wall time: not trained again), the rest trained anew,
    # and the whole run ends with the uninterrupted run's numbers.
    assert epochs[(2, 1)].wall_time_s == epochs[(1, 1)].wall_time_s
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = train(t.config)
    finally:
        torch.set_num_threads(threads)
    assert [epochs[(2, e)].metric("val_loss") for e in range(1, 5)] == [m.extra["val_loss"] for m in whole.history]


def test_a_cell_past_its_time_limit_fails_once_with_the_reason_and_is_not_retried(store: Storage):
    spec = small_spec(epochs=100_000 // 100, cell_time_limit_s=2.0, grids=[small_spec().grids[1].model_dump()])
    sweep = store.create_sweep(expand(spec))
    started = time.monotonic()
    summary = run_sweep(store, sweep.id, FAST)
    assert time.monotonic() - started < 120 and summary.retries == 0
    for t in all_trials(store, sweep.id):
        assert (t.status, t.attempts) == ("failed", 1)
        assert t.error is not None and "stopped after 2 s of training" in t.error and "cell_time_limit_s" in t.error
    assert store.get_sweep(sweep.id).status == "failed"


def test_a_step_that_does_not_return_ends_its_worker_and_fails_its_chunk_once(store: Storage, tmp_path: Path):
    # One step of the 26 2x96d Shake-Shake network on 64 CIFAR images takes 15-50 s on one CPU thread: far past a
    # 1 s time limit, which the check between steps cannot enforce while the step runs (as with a step stuck in native
    # code). The watchdog ends the worker 2 s past the limit; the chunk's second cell, never started, fails with it.
    write_cifar(tmp_path, per_file=13)
    grids = [{"optimizer": "sgdw", "lr": [0.1, 0.05], "weight_decay": [0.0]}]
    model = {"dataset": "cifar10", "model": "shake_shake_26_2x96d", "batch_size": 64}
    spec = make_spec(**model, epochs=1, seeds=[0], grids=grids, cell_time_limit_s=1.0)
    sweep = store.create_sweep(expand(spec))
    options = RunOptions(
        checkpoint_interval_s=0,
        heartbeat_s=0.5,
        lease_seconds=30,
        data_dir=str(tmp_path),
        hang_grace_s=2.0,
        cells_per_trial=2,
        max_concurrent_trials=1,
    )
    started = time.monotonic()
    summary = run_sweep(store, sweep.id, options)
    assert time.monotonic() - started < 120
    assert summary.retries == 0  # stopped, not restarted: a retry would hang the same way
    trials = all_trials(store, sweep.id)
    assert [(t.status, t.attempts) for t in trials] == [("failed", 1), ("failed", 1)]
    for t in trials:
        assert t.error is not None and "did not return 2 s after the cell's time limit of 1 s" in t.error
    (attempt,) = store.attempts(trials[0].id)
    assert attempt.pid is not None
    deadline = time.monotonic() + 30
    while _alive(attempt.pid):  # the worker process itself was ended, not left computing beside the next trial
        assert time.monotonic() < deadline, "the hung worker process is still alive"
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_exception_in_training_is_retried_then_the_cells_fail(store: Storage, tmp_path: Path, monkeypatch):
    # CIFAR-10 is not in the (empty) data directory: every attempt fails when it loads the data.
    grids = [{"optimizer": "sgd", "lr": [0.1], "weight_decay": [0.0]}]
    sweep = store.create_sweep(expand(make_spec(dataset="cifar10", model="resnet20", epochs=1, seeds=[0], grids=grids)))
    summary = run_sweep(store, sweep.id, RunOptions(max_retries=1, heartbeat_s=0.5, lease_seconds=30))
    assert (summary.status, summary.retries) == ("failed", 1)
    sweep_after = store.get_sweep(sweep.id)
    assert sweep_after.status == "failed" and sweep_after.error and "1 of 1 cells failed" in sweep_after.error
    (t,) = all_trials(store, sweep.id)
    assert t.status == "failed" and t.attempts == 2
    assert [a.status for a in store.attempts(t.id)] == ["failed", "failed"]
    assert all(a.error and "cifar-10-batches-py" in a.error for a in store.attempts(t.id))


def test_a_cancelled_sweep_stops_within_seconds_and_keeps_finished_cells(store: Storage):
    grids = [{"optimizer": "sgd", "lr": [0.01 * i for i in range(1, 7)], "weight_decay": [0.0]}]
    sweep = store.create_sweep(expand(small_spec(epochs=60, grids=grids)))
    cancelled_at: list[float] = []

    def cancel_after_first_cell() -> None:
        with SqlStorage(store.url, migrate=False) as other:  # another process would do the same
            while not other.trials(sweep.id, status="completed", limit=1)[1]:
                time.sleep(0.2)
            other.cancel_sweep(sweep.id)
            cancelled_at.append(time.monotonic())

    canceller = threading.Thread(target=cancel_after_first_cell)
    canceller.start()
    summary = run_sweep(store, sweep.id, RunOptions(cells_per_trial=1, heartbeat_s=0.5, lease_seconds=30))
    returned = time.monotonic()
    canceller.join()
    assert summary.status == "cancelled" and summary.stopped_because == "cancelled"
    assert returned - cancelled_at[0] < 10
    counts = store.status_counts(sweep.id)
    assert counts["completed"] >= 1 and counts["running"] == counts["pending"] == 0
    assert counts["completed"] + counts["cancelled"] == 6
    for t in all_trials(store, sweep.id):
        if t.status == "cancelled" and t.attempts:
            assert store.attempts(t.id)[-1].status == "cancelled"


def test_the_driver_callback_pickles_without_its_store_and_reopens_it(store: Storage):
    # Tune may pickle callbacks (experiment state): a live engine (locks, connections) must not go with them.
    import pickle

    from service._result_writer import Chunk, Lease, ResultWriter, StopWhenAsked

    sweep = store.create_sweep(expand(small_spec()))
    writer = ResultWriter(store, sweep.id, "host:1:x", {"k": Chunk("k", [1, 2])}, Lease(FAST.lease_seconds, 0.2))
    copy = pickle.loads(pickle.dumps(StopWhenAsked(writer)))
    assert copy.writer._store is None and copy.writer.chunks["k"].trial_ids == [1, 2]
    assert copy.writer.store.get_sweep(sweep.id).id == sweep.id  # reopened from its URL
    assert not copy.stop_all()


def test_a_trial_too_big_for_the_cluster_is_refused_before_the_sweep_is_touched(store: Storage):
    from service.fanout import ClusterError

    sweep = store.create_sweep(expand(small_spec()))
    with pytest.raises(ClusterError, match="no trial of 4 CPUs"):
        run_sweep(store, sweep.id, RunOptions(cpus_per_trial=4))
    after = store.get_sweep(sweep.id)
    assert (after.status, after.driver) == ("pending", None)
