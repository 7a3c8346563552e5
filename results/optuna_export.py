"""Optuna interop: a sweep's trials as Optuna studies, so ``optuna-dashboard`` and ``optuna.visualization`` open them.

One study per (sweep, optimizer), named ``sweep-<id>-<optimizer>``, its direction the sweep's objective's
(``minimize`` for ``min``). Each finished trial becomes one Optuna trial:

- params ``lr`` (α) and ``weight_decay`` (λ, raw per step), each a ``FloatDistribution(log=True)`` over the grid's
  range (linear, with a warning, where the range includes 0: a log distribution needs values > 0);
- value = the final value of the sweep's objective (top-1 test error in percent by default); intermediate values =
  that metric per epoch (the trial's last attempt; epochs without a finite value are left out);
- user attributes: ``seed``, ``status`` (the store's), ``trial_id``, ``cell_id``; the study's user attributes hold the
  sweep's name, id and fingerprint and the units.

State: ``completed`` → COMPLETE. ``diverged`` → **FAIL**, not PRUNED: a pruned trial in Optuna means a pruner
stopped a healthy run early, and samplers (TPE) read its intermediate values as evidence; a diverged run has no
objective value at all, and FAIL says that (its ``status`` attribute says why). ``failed`` → FAIL too. Pending,
running and cancelled trials are not facts yet and are not exported.

Importances: :func:`param_importances` is Optuna's fANOVA (seeded) on one study. It attributes variance to ``lr`` and
to ``weight_decay`` one at a time; the α×λ interaction — the very thing that tells L2 from decoupled decay — belongs
to neither and is dropped by the normalization (see the README). Read it beside :mod:`results.separability`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np
import optuna

from results._contract import Storage
from results._records import TrialRecord
from results.export import objective
from results.separability import PERCENT_METRICS, Separability
from sweeps import Objective

__all__ = ["export_sweep", "importance_report", "param_importances", "study_name"]

log = logging.getLogger(__name__)

_EXPORTED: Final = ("completed", "diverged", "failed")


def study_name(sweep_id: int, optimizer: str) -> str:
    """The Optuna study name of one optimizer of one sweep."""
    return f"sweep-{sweep_id}-{optimizer}"


def _distribution(name: str, values: list[float]) -> Any:
    low, high = min(values), max(values)
    if low <= 0:
        log.warning("%s includes %r: exported with a linear distribution (log needs values > 0)", name, low)
        return optuna.distributions.FloatDistribution(low, high)
    return optuna.distributions.FloatDistribution(low, high, log=True)


def _frozen(store: Storage, t: TrialRecord, distributions: dict[str, Any], goal: Objective) -> Any:
    epochs = store.epochs(t.id, attempt=t.attempts) if t.attempts else []
    intermediate = {e.epoch: v for e in epochs if (v := e.metric(goal.metric)) is not None and math.isfinite(v)}
    value = t.final.metric(goal.metric) if t.final is not None else None
    complete = t.status == "completed" and value is not None
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
        value=value if complete else None,
        params={"lr": t.lr, "weight_decay": t.weight_decay},
        distributions=distributions,
        user_attrs={"seed": t.seed, "status": t.status, "trial_id": t.id, "cell_id": t.cell_id},
        intermediate_values=intermediate,
    )


def export_sweep(store: Storage, sweep_id: int, storage: str, *, overwrite: bool = False) -> dict[str, str]:
    """Write one Optuna study per optimizer of the sweep into ``storage`` (an Optuna storage URL, e.g.
    ``sqlite:///optuna.db``) as the module docstring says; returns {optimizer: study name}. A study of that name
    already there raises Optuna's ``DuplicatedStudyError`` unless ``overwrite``, which deletes it first."""
    sweep = store.get_sweep(sweep_id)
    goal = objective(sweep)
    by_optimizer: dict[str, list[TrialRecord]] = {}
    offset = 0
    while True:
        page, total = store.trials(sweep_id, offset=offset)
        for t in page:
            by_optimizer.setdefault(t.optimizer, []).append(t)
        offset += len(page)
        if not page or offset >= total:
            break
    names = {}
    for optimizer, trials in sorted(by_optimizer.items()):
        name = study_name(sweep_id, optimizer)
        if overwrite and name in optuna.study.get_all_study_names(storage):
            optuna.delete_study(study_name=name, storage=storage)
        direction: Literal["minimize", "maximize"] = "minimize" if goal.mode == "min" else "maximize"
        study = optuna.create_study(storage=storage, study_name=name, direction=direction)
        for key, value in {
            "sweep_name": sweep.name,
            "sweep_id": sweep.id,
            "fingerprint": sweep.fingerprint,
            "optimizer": optimizer,
            "objective": goal.metric,
            "units": f"value: final {goal.metric}"
            + (" (%)" if goal.metric in PERCENT_METRICS else "")
            + "; lr: α; weight_decay: λ raw per step",
        }.items():
            study.set_user_attr(key, value)
        distributions = {
            "lr": _distribution("lr", [t.lr for t in trials]),
            "weight_decay": _distribution("weight_decay", [t.weight_decay for t in trials]),
        }
        study.add_trials([_frozen(store, t, distributions, goal) for t in trials if t.status in _EXPORTED])
        names[optimizer] = name
    return names


def param_importances(storage: str, name: str, *, seed: int = 0) -> dict[str, float]:
    """Optuna's fANOVA importances (seeded, normalized to sum to 1) of ``lr`` and ``weight_decay`` in one exported
    study, over its COMPLETE trials. Single-parameter shares: they cannot show the α×λ interaction."""
    study = optuna.load_study(study_name=name, storage=storage)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    result = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {str(k): float(v) for k, v in result.items()}


def importance_report(
    storage: str, names: Mapping[str, str], by_seed: Mapping[str, Mapping[int, Separability]], *, seed: int = 0
) -> str:
    """One line per exported optimizer: Optuna's fANOVA importances of ``lr`` and ``weight_decay`` beside the mean
    over seeds of the separability numbers (``by_seed`` as :func:`results.separability.report` builds them).
    ``names`` is what :func:`export_sweep` returned; optimizers missing from ``by_seed`` show importances only."""
    lines = []
    for optimizer, name in sorted(names.items()):
        imp = param_importances(storage, name, seed=seed)
        lr, wd = imp.get("lr", math.nan), imp.get("weight_decay", math.nan)
        line = f"{optimizer:>8}  fANOVA lr {lr:.2f}  weight_decay {wd:.2f}"
        seeds = by_seed.get(optimizer, {})
        if seeds:
            values = {
                f: float(np.nanmean([getattr(s, f) for s in seeds.values()]))
                for f in ("coupling_index", "coupling_slope", "interaction_share")
            }
            line += "  |  " + "  ".join(f"{f} {v:+.2f}" for f, v in values.items()) + f"  (mean of {len(seeds)} seeds)"
        lines.append(line)
    return "\n".join(lines)
