"""Expansion of a sweep into cells (one training run each) and bundles (cells that one worker process trains).

A cell's :class:`TrainingConfig` is *what* it trains — data set, model, optimizer, α, λ (raw, per step), schedule,
epochs, batch size, seed and precision — and nothing about *where* (device, data directory), which is not part of a
run's identity. Its ``cell_id`` is the first 16 hex digits of the sha256 of that config in canonical JSON: the same
training run has the same id in every sweep, process and Python version, whether its λ was given raw or normalized.
Resume and result reuse key on it. This is the only training config type: the spec expands into it here, the store
keeps it (``TrainingConfig.as_dict``), and the worker trains it (``TrainingConfig.from_dict``).

A bundle is the cells of one sweep that share optimizer and seed — and so, within a sweep, everything but (α, λ):
the training worker's ``train_bundle`` trains them in one process over one data loader. Its ``bundle_id`` is the
sha256 prefix of its sorted cell ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sweeps._spec import OPTIMIZERS, PRECISIONS, OptimizerName, Precision, SweepSpec, canonical_json

__all__ = ["Bundle", "Cell", "SweepPlan", "TrainingConfig", "bundles", "cells", "expand"]

_ID_HEX_DIGITS = 16


@dataclass(frozen=True)
class TrainingConfig:
    """One cell's training run: everything that determines its numbers, and nothing else.

    Attributes:
        dataset, model: registry names.
        optimizer: ``sgd``, ``sgdw``, ``adam`` or ``adamw``.
        lr: α, the base learning rate (the step is α·η_t).
        weight_decay: λ, raw, per optimizer step (already converted from λ_norm where the sweep used it).
        epochs: passes over the training set (T).
        batch_size: examples per optimizer step (b).
        seed: initialization, batch order and augmentation.
        schedule: ``{"name": fixed|step|cosine|warm_restarts, ...its arguments, times in epochs}``.
        precision: ``float32``, ``float64`` or ``bfloat16`` (see ``sweeps.Precision``).
        dataset_args, model_args: the plugins' arguments (JSON objects).
        trainer: a trainer plugin that owns the loop, or None for wdgrid's own; trainer_args: its arguments.
    """

    dataset: str
    model: str
    optimizer: str
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    seed: int = 0
    schedule: Mapping[str, Any] = field(default_factory=lambda: {"name": "cosine"})
    precision: Precision = "float32"
    dataset_args: Mapping[str, Any] = field(default_factory=dict)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    trainer: str | None = None
    trainer_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if "name" not in self.schedule:
            raise ValueError("schedule must name its kind: {'name': 'cosine', ...}")
        if self.trainer is None and self.trainer_args:
            raise ValueError("trainer_args need a trainer")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrainingConfig:
        """Build from plain data (:meth:`as_dict`, or a stored trial's config); unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**config)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data: what the store keeps and a worker receives. Without a trainer the trainer fields are
        left out, so every cell of wdgrid's own loop keeps the id it had before trainers existed."""
        d = asdict(self)
        for name in ("schedule", "dataset_args", "model_args", "trainer_args"):
            d[name] = dict(getattr(self, name))
        if self.trainer is None:
            del d["trainer"], d["trainer_args"]
        return d

    def cell_id(self) -> str:
        """The run's stable id: sha256 prefix of :meth:`as_dict` in canonical JSON."""
        return _short_sha(canonical_json(self.as_dict()))


@dataclass(frozen=True)
class Cell:
    """One training run of a sweep: its config, its id, and λ as the spec gave it (raw, or λ_norm when the sweep's
    units are ``normalized``; the config holds the raw per-step λ the optimizer gets)."""

    cell_id: str
    config: TrainingConfig = field(hash=False)  # the id stands for it (a schedule dict does not hash)
    weight_decay_given: float = 0.0

    @property
    def optimizer(self) -> OptimizerName:
        return self.config.optimizer  # type: ignore[return-value]  # checked against OPTIMIZERS on creation

    @property
    def lr(self) -> float:
        """α."""
        return self.config.lr

    @property
    def weight_decay(self) -> float:
        """λ, raw, per optimizer step."""
        return self.config.weight_decay

    @property
    def seed(self) -> int:
        return self.config.seed


@dataclass(frozen=True)
class Bundle:
    """Cells of one sweep that share optimizer and seed and differ only in (α, λ), ordered by (α, λ)."""

    bundle_id: str
    optimizer: OptimizerName
    seed: int
    cells: tuple[Cell, ...]


def _short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_ID_HEX_DIGITS]


def cells(spec: SweepSpec) -> tuple[Cell, ...]:
    """Every cell of the sweep: grids in spec order, then seeds, α and λ in spec order. λ is converted to raw here,
    once."""
    schedule = spec.schedule.model_dump(mode="json")
    out = []
    for grid in spec.grids:
        for seed in spec.seeds:
            for lr in grid.lrs():
                for given in grid.weight_decays():
                    config = TrainingConfig(
                        dataset=spec.dataset,
                        model=spec.model,
                        optimizer=grid.optimizer,
                        lr=lr,
                        weight_decay=spec.raw_weight_decay(given),
                        epochs=spec.epochs,
                        batch_size=spec.batch_size,
                        seed=seed,
                        schedule=schedule,
                        precision=spec.precision,
                        dataset_args=spec.dataset_args,
                        model_args=spec.model_args,
                        trainer=spec.trainer,
                        trainer_args=spec.trainer_args,
                    )
                    out.append(Cell(config.cell_id(), config, given))
    # Distinct λ_norm values could in principle round to one raw λ; the store keys trials on cell_id, so refuse.
    if len({c.cell_id for c in out}) != len(out):
        raise ValueError("two cells of the sweep train the same run (equal raw λ after normalization)")
    return tuple(out)


def bundles(spec: SweepSpec, *, max_size: int | None = None) -> tuple[Bundle, ...]:
    """The sweep's cells grouped by (optimizer, seed), each group sorted by (α, λ) and, with ``max_size``, cut into
    consecutive chunks of at most ``max_size`` cells. Deterministic: the same spec gives the same bundles."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    groups: dict[tuple[OptimizerName, int], list[Cell]] = {}
    for cell in cells(spec):
        groups.setdefault((cell.optimizer, cell.seed), []).append(cell)
    out = []
    for (optimizer, seed), members in groups.items():
        members.sort(key=lambda c: (c.lr, c.weight_decay))
        size = max_size or len(members)
        for i in range(0, len(members), size):
            chunk = tuple(members[i : i + size])
            bundle_id = _short_sha(",".join(sorted(c.cell_id for c in chunk)))
            out.append(Bundle(bundle_id, optimizer, seed, chunk))
    return tuple(out)


@dataclass(frozen=True)
class SweepPlan:
    """A spec expanded once, as the store takes it: the spec, its fingerprint, and its bundles (every cell, each with
    its training config and id)."""

    spec: SweepSpec
    fingerprint: str
    bundles: tuple[Bundle, ...]

    @property
    def cells(self) -> tuple[Cell, ...]:
        """Every cell, bundle by bundle."""
        return tuple(c for b in self.bundles for c in b.cells)


def expand(spec: SweepSpec) -> SweepPlan:
    """The spec's :class:`SweepPlan`: what ``Storage.create_sweep`` stores."""
    return SweepPlan(spec, spec.fingerprint(), bundles(spec))
