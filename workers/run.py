"""What every way of training a cell shares: its results (:class:`EpochMetrics`, :class:`CellResult`), how a run is
stopped, and its setup (device, data set, schedule). wdgrid's own loop (``workers.train``) and trainer plugins
(``workers.trainer``) both build on it; ``workers.train`` re-exports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import torch

from sweeps import TrainingConfig
from workers.data import Data, load_dataset, steps_per_epoch
from workers.schedules import Schedule, make_schedule

__all__ = [
    "CellResult",
    "EpochMetrics",
    "RunStatus",
    "StopTraining",
    "TimeLimitExceeded",
    "TrainingDeadline",
    "build_schedule",
    "keep_freed_memory",
    "load_data",
    "resolve_device",
    "time_limit_error",
]

RunStatus = Literal["completed", "diverged", "stopped", "timed_out"]


class StopTraining(Exception):
    """Raise from ``on_epoch`` or ``on_checkpoint`` to end the run cleanly; it returns with status ``stopped``."""


class TimeLimitExceeded(StopTraining):
    """The cell trained longer than its time limit: it ends with status ``timed_out`` (a failure, not retried)."""


class TrainingDeadline:
    """When the training running in this process must stop (``time.perf_counter`` seconds; inf: no training, or no
    limit). The loops check their time limit between steps and publish it here while they train, so that a watchdog
    thread (``workers.trainable``) can end a step that never returns to be checked: one stuck in native code."""

    at: float = math.inf

    @classmethod
    def set(cls, at: float) -> None:
        cls.at = at

    @classmethod
    def clear(cls) -> None:
        cls.at = math.inf


def time_limit_error(limit_s: float) -> str:
    """What a timed-out cell's trial says: one line."""
    return (
        f"stopped after {limit_s:g} s of training: the cell's time limit (the spec's cell_time_limit_s; by default "
        "one hour per epoch)"
    )


# --- Results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochMetrics:
    """Measured after one epoch. Errors are top-1 in percent; losses are mean cross-entropy; ``eta`` is η_t of the
    epoch's last step; ``wall_time_s`` is seconds of training since the run started (resumes included). A trainer
    plugin's metrics of other names are in ``extra``; the built-in ones it does not report are NaN."""

    epoch: int  # 1-based
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    eta: float
    wall_time_s: float
    extra: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    """The outcome of one cell's training. ``status`` is ``completed``, ``diverged`` (a non-finite loss; ``history``
    ends with the last epoch measured before it), ``stopped`` (a callback raised :class:`StopTraining`) or
    ``timed_out`` (it trained longer than its time limit; ``error`` says so)."""

    config: TrainingConfig
    status: RunStatus
    history: list[EpochMetrics]
    device: str
    wall_time_s: float  # seconds, whole run
    diverged_at_epoch: int | None = None
    error: str | None = None

    @property
    def final(self) -> EpochMetrics | None:
        return self.history[-1] if self.history else None

    @property
    def test_error(self) -> float:
        """Final top-1 test error in percent (NaN when no epoch was measured)."""
        return self.history[-1].test_error if self.history else math.nan


# --- Setup ------------------------------------------------------------------------------------------------------
# glibc's malloc.h: mallopt's parameter numbers.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES: Final = 32 * 2**20
"""Blocks up to this size come from the heap, not from a fresh ``mmap`` each (32 MiB: glibc's ceiling on 64-bit)."""
TRIM_THRESHOLD_BYTES: Final = 256 * 2**20
"""Free memory at the top of the heap that the process keeps instead of handing it back to the kernel."""


@functools.cache
def keep_freed_memory() -> bool:
    """Have this process's ``malloc`` keep the memory a CPU training step frees, for the next step; True if it could
    (glibc), False elsewhere (another C library: nothing changes). Once per process; the loop calls it on the CPU.

    Why: a step allocates and frees the same few activation-sized blocks (a batched cnn1d step of 16 cells: 5 MiB
    each) every time. glibc's default serves them from ``mmap`` or trims them from the heap top when freed, so the
    next step takes fresh pages from the kernel, one page fault per 4 KiB. ``bench/batched_step.py``, one thread,
    three runs each way alternating: the 16-cell step 19.3-21.1 ms with this, 27.5-33.5 ms without. The price: up to
    ``TRIM_THRESHOLD_BYTES`` of freed memory stays with the process, which a trial's next step reuses anyway.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # only glibc has it: its mallopt numbers are the above
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    # The order matters: setting the trim threshold alone turns glibc's dynamic mmap threshold off at its 128 KiB
    # start, which makes every large block a fresh mmap (measured: the step 2x slower).
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_data(config: TrainingConfig, device: torch.device, data_dir: str | Path | None = None) -> Data:
    """The config's data set on ``device`` (whole, or streamed from there); ``data_dir`` None:
    ``workers.data.DEFAULT_DATA_DIR``."""
    return load_dataset(config.dataset, Path(data_dir) if data_dir else None, **config.dataset_args).to(device)


def build_schedule(config: TrainingConfig, n_train: int, *, per_epoch: int | None = None) -> Schedule:
    """The config's schedule over ``per_epoch`` steps an epoch (None: the loop's batches of ``n_train``)."""
    params: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in config.schedule.items() if k != "name"
    }
    return make_schedule(
        str(config.schedule["name"]),
        epochs=config.epochs,
        steps_per_epoch=per_epoch or steps_per_epoch(n_train, config.batch_size),
        **params,
    )
