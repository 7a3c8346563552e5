"""The driver process's side of a Tune run (``service.fanout``): :class:`ResultWriter`, the Tune callback that writes
what the chunks report into the store (the driver is its sweep's only writer), and the stopper that ends the run when
the sweep is cancelled or taken over. Imported only when a sweep runs (it imports Ray Tune); classes live at module
level so that Tune can pickle them.

Words: a *cell* is one training run and one store trial; a *chunk* is the cells one Tune trial trains together (Ray's
"trial" appears here only where Tune's API names it); the *driver* is the process that runs a sweep, known to the
store by its *driver id* ``host:pid:nonce``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from results import EpochRecord, FinalMetrics, Provenance, SqlStorage, StaleAttemptError, Storage

__all__ = ["Chunk", "Lease", "ResultWriter", "StopWhenAsked", "chunk_dirname"]

log = logging.getLogger("service.fanout")


@dataclass(frozen=True)
class Lease:
    """How the driver holds its sweep: the lease's length and how often it is renewed (seconds)."""

    seconds: float
    heartbeat_s: float


@dataclass
class Chunk:
    key: str
    trial_ids: list[int]  # store trial ids, in the chunk's cell order


@dataclass
class Progress:
    attempt: dict[int, int] = field(default_factory=dict)  # store trial id -> its running attempt
    located: set[tuple[int, int]] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    retries: int = 0


class ResultWriter(tune.Callback):
    """Writes what the chunks report into the store, and renews the driver's lease. Tune may pickle callbacks: the
    store (an engine with locks) is left out of the pickle and reopened from its URL if ever needed."""

    def __init__(
        self,
        store: Storage,
        sweep_id: int,
        driver_id: str,
        chunks: dict[str, Chunk],
        lease: Lease,
        *,
        objective: str = "test_error",
    ):
        self._store: Storage | None = store
        self.retry_s = getattr(store, "retry_s", 0.0)  # the driver's patience with its database, kept on reopening
        self.objective = objective  # the metric a completed cell must have reported
        self.url = store.url
        self.sweep_id, self.driver_id, self.chunks, self.lease = sweep_id, driver_id, chunks, lease
        self.progress = Progress()
        self.stopping: str | None = None
        self._next_beat = time.monotonic() + lease.heartbeat_s

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> Storage:
        if self._store is None:
            self._store = SqlStorage(self.url, migrate=False, retry_s=self.retry_s)
        return self._store

    def _chunk(self, trial: tune.experiment.Trial) -> Chunk:
        chunk: Chunk = self.chunks[trial.config["chunk"]["key"]]
        return chunk

    def _running(self, chunk: Chunk) -> list[int]:
        p = self.progress
        return [t for t in chunk.trial_ids if t in p.attempt and t not in p.finished]

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        chunk = self._chunk(trial)
        if chunk.key in self.progress.started or self.stopping:
            return  # a restart after a failure: on_trial_recover already began the next attempts
        self.progress.started.add(chunk.key)
        for trial_id in chunk.trial_ids:
            record = self.store.claim_trial(self.sweep_id, lease_seconds=self.lease.seconds, trial_id=trial_id)
            if record is not None:
                self.progress.attempt[trial_id] = record.attempts

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if self.stopping == "lost":
            return  # another driver owns the sweep now
        chunk, p = self._chunk(trial), self.progress
        where = result.get("where") or {}
        for trial_id in self._running(chunk):
            if (trial_id, p.attempt[trial_id]) not in p.located:
                p.located.add((trial_id, p.attempt[trial_id]))
                self.store.locate_attempt(trial_id, p.attempt[trial_id], **where)
        records = []
        for index, m in result.get("epochs", []):
            trial_id = chunk.trial_ids[index]
            if trial_id in p.attempt and trial_id not in p.finished:
                records.append(EpochRecord(trial_id=trial_id, attempt=p.attempt[trial_id], **m))
        try:
            self.store.record_epochs(records)
        except StaleAttemptError as exc:  # cancelled meanwhile: the epochs are facts, but nobody waits for them
            log.info("sweep %d: epochs not written: %s", self.sweep_id, exc)
        prov = result.get("provenance") or {}
        for index, r in result.get("finished", []):
            trial_id = chunk.trial_ids[index]
            if trial_id not in p.attempt or trial_id in p.finished:
                continue
            p.finished.add(trial_id)
            last = r["last"] or {}
            status = r["status"] if r["status"] in ("completed", "diverged") else "failed"
            final = FinalMetrics(
                test_error=last.get("test_error"),
                train_error=last.get("train_error"),
                test_loss=last.get("test_loss"),
                train_loss=last.get("train_loss"),
                wall_time_s=r["wall_time_s"],
                epochs_done=r["epochs_done"],
                extra=last.get("extra") or None,
            )
            provenance = Provenance(prov.get("git_sha"), prov.get("package_versions"), r["device"], where.get("host"))
            error = r.get("error")  # a cell that ran out of time says so
            if status == "completed" and final.metric(self.objective) is None:
                # A trainer that never reports the sweep's objective has no result to put in the grid: say so.
                built_in = ("train_loss", "train_error", "test_loss", "test_error")
                reported = [k for k in built_in if _finite(last.get(k))] + sorted(last.get("extra") or {})
                status = "failed"
                error = (
                    f"the last epoch does not report the sweep's objective {self.objective!r} "
                    f"(it reports: {', '.join(reported) or 'nothing'})"
                )
            self._finish(trial_id, status, final=final, provenance=provenance, error=error)

    def _finish(self, trial_id: int, status: Any, **kwargs: Any) -> None:
        try:
            self.store.finish_trial(trial_id, self.progress.attempt[trial_id], status, **kwargs)
        except StaleAttemptError as exc:  # cancelled, or taken over by another driver
            log.info("sweep %d: trial %d not finished: %s", self.sweep_id, trial_id, exc)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        running = self._running(self._chunk(trial))
        if not running:
            return  # every cell of it has a result (a hung step's worker ends so): Tune's restart retries no cell
        error = _error_text(trial)
        self.progress.retries += 1
        for trial_id in running:
            try:
                record = self.store.retry_trial(
                    trial_id, self.progress.attempt[trial_id], error=error, lease_seconds=self.lease.seconds
                )
            except StaleAttemptError:
                continue
            self.progress.attempt[trial_id] = record.attempts
        log.warning("sweep %d: restarting a crashed trial (%s)", self.sweep_id, error.splitlines()[-1])

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        for trial_id in self._running(self._chunk(trial)):
            self.progress.finished.add(trial_id)
            self._finish(trial_id, "failed", error=error)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.stopping:
            return  # stopped on purpose: the cells stay cancelled (or belong to the new driver)
        for trial_id in self._running(self._chunk(trial)):
            self.progress.finished.add(trial_id)
            self._finish(trial_id, "failed", error="the trial ended without a result for this cell")

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if self.stopping or now < self._next_beat:
            return
        self._next_beat = now + self.lease.heartbeat_s
        if not self.store.renew_sweep(self.sweep_id, self.driver_id, lease_seconds=self.lease.seconds):
            status = self.store.get_sweep(self.sweep_id).status
            self.stopping = "cancelled" if status == "cancelled" else "lost"
            log.warning("sweep %d: %s; stopping its trials", self.sweep_id, self.stopping)


class StopWhenAsked(tune.Stopper):
    """Stops every trial once the driver is told to (the sweep was cancelled or taken over)."""

    def __init__(self, writer: ResultWriter) -> None:
        self.writer = writer

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.writer.stopping is not None


def chunk_dirname(trial: Any) -> str:
    """A chunk's Tune folder: its Tune trial id (short, unique within the run)."""
    return str(trial.trial_id)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _error_text(trial: tune.experiment.Trial) -> str:
    """The last failure Tune recorded for a trial: its error file's last block, shortened."""
    path = trial.error_file
    text = Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
    block = text.rsplit("Failure # ", 1)[-1].strip()
    lines = [line for line in block.splitlines() if line.strip()]
    if not lines:
        return "the trial failed (Ray gave no error text)"
    # The exception's own line is the most useful one; keep some context above it.
    return "\n".join(lines[-12:])[-2000:]
