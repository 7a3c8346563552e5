"""Expansion of a sweep into cells (one training run each) and bundles (cells that one worker process trains).

A cell is (optimizer, α, λ, seed) plus the sweep's training settings. Its ``cell_id`` is the first 16 hex digits of
the sha256 of its training config (:func:`training_config` without ``device``) in canonical JSON: the same training
run has the same id in every sweep, process and Python version, whether its λ was given raw or normalized. Resume
and result reuse key on it.

A bundle is the cells of one sweep that share optimizer and seed — and so, within a sweep, model, data, epochs,
batch size and schedule — and differ only in (α, λ): the training worker's ``train_bundle`` trains them in one
process over one data loader. Its ``bundle_id`` is the sha256 prefix of its sorted cell ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypedDict

from sweeps._spec import OptimizerName, SweepSpec, canonical_json

__all__ = ["Bundle", "Cell", "TrainingConfig", "bundles", "cells", "training_config"]

_ID_HEX_DIGITS = 16


class TrainingConfig(TypedDict):
    """The flat config the training worker takes for one cell. ``lr`` is α; ``weight_decay`` is λ, raw and per
    optimizer step; ``schedule`` is ``{"name": ..., **params}`` with times in epochs; ``device`` is ``"auto"``
    (CUDA when present, else CPU)."""

    dataset: str
    model: str
    optimizer: str
    lr: float
    weight_decay: float
    schedule: dict[str, Any]
    epochs: int
    batch_size: int
    seed: int
    device: str


@dataclass(frozen=True)
class Cell:
    """One training run of a sweep.

    Attributes:
        cell_id: stable id of the training run (see the module docstring).
        optimizer: ``sgd``, ``sgdw``, ``adam`` or ``adamw``.
        lr: α.
        weight_decay: λ raw, per optimizer step — what the optimizer gets.
        weight_decay_given: λ as the spec gives it (raw, or λ_norm when the sweep's units are ``normalized``).
        seed: the random seed.
    """

    cell_id: str
    optimizer: OptimizerName
    lr: float
    weight_decay: float
    weight_decay_given: float
    seed: int


@dataclass(frozen=True)
class Bundle:
    """Cells of one sweep that share optimizer and seed and differ only in (α, λ), ordered by (α, λ)."""

    bundle_id: str
    optimizer: OptimizerName
    seed: int
    cells: tuple[Cell, ...]


def _short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_ID_HEX_DIGITS]


def _config(spec: SweepSpec, optimizer: str, lr: float, weight_decay: float, seed: int) -> TrainingConfig:
    return TrainingConfig(
        dataset=spec.dataset,
        model=spec.model,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        schedule=spec.schedule.model_dump(mode="json"),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        seed=seed,
        device="auto",
    )


def cells(spec: SweepSpec) -> tuple[Cell, ...]:
    """Every cell of the sweep: grids in spec order, then seeds, α and λ in spec order."""
    out = []
    for grid in spec.grids:
        for seed in spec.seeds:
            for lr in grid.lrs():
                for given in grid.weight_decays():
                    raw = spec.raw_weight_decay(given)
                    config = dict(_config(spec, grid.optimizer, lr, raw, seed))
                    del config["device"]  # where a run trains does not change what it is
                    out.append(Cell(_short_sha(canonical_json(config)), grid.optimizer, lr, raw, given, seed))
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


def training_config(spec: SweepSpec, cell: Cell) -> TrainingConfig:
    """The flat config the training worker takes for ``cell`` of ``spec`` (``weight_decay`` raw, per step)."""
    return _config(spec, cell.optimizer, cell.lr, cell.weight_decay, cell.seed)
