"""What the API returns: one schema family per resource, frozen, unknown keys rejected. Units are in every field's
description (they become the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, field_validator
from pydantic.fields import FieldInfo

from results import SweepRecord, TrialRecord, TrialStatus
from results.separability import ReasonCode
from sweeps import PluginDescription, SweepSpec, list_presets, load_preset

__all__ = [
    "AttemptPublic",
    "CellDetail",
    "CellPublic",
    "CellsPublic",
    "ComparisonPublic",
    "EpochPublic",
    "HeatmapPublic",
    "PluginPublic",
    "PresetPublic",
    "PresetSubmission",
    "Problem",
    "ReasonPublic",
    "SeparabilityPublic",
    "SeparabilityValues",
    "SweepPublic",
    "SweepSubmission",
    "SweepsPublic",
    "TrialDetail",
    "TrialPublic",
    "TrialsPublic",
    "UnfinishedPairPublic",
]


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.+@-]+)+[/\\]")


def one_line(error: str | None) -> str | None:
    """An error as API clients see it: its last line (the exception's own), without the server's directories
    (``/srv/app/x.py`` → ``x.py``), at most 500 characters. The whole traceback stays in the driver's log."""
    if not error:
        return error
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return _PATH.sub("", lines[-1] if lines else "")[:500]


class _Public(BaseModel):
    # from_attributes: the store's frozen records convert field by field (Model.model_validate(record)).
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)


class SweepPublic(_Public):
    id: int = Field(description="The sweep's id (the {sweep_id} of its routes).")
    name: str = Field(description="The spec's name.")
    fingerprint: str = Field(description="sha256 of the canonical spec: equal specs have equal fingerprints.")
    status: Literal["pending", "running", "completed", "failed", "cancelled"] = Field(
        description="pending (queued), running, completed (every cell finished), failed, cancelled."
    )
    created_at: datetime = Field(description="UTC.")
    started_at: datetime | None = Field(description="UTC; when a driver first ran it.")
    finished_at: datetime | None = Field(description="UTC.")
    error: str | None = Field(description="Why the sweep failed, when it did.")
    counts: dict[TrialStatus, int] = Field(description="Trials (cells) in each status.")
    n_cells: int = Field(description="Cells of the sweep: optimizers × seeds × α × λ.")
    progress: float = Field(description="Finished (completed, diverged or failed) cells / cells, 0..1.")
    elapsed_s: float | None = Field(description="Seconds since it started (to its end once finished).")
    eta_s: float | None = Field(
        description="Seconds left at the rate cells have trained so far (reused cells not counted); null until one has."
    )
    spec: dict[str, Any] = Field(description="The spec as submitted (λ raw per step unless weight_decay_units says).")
    reused_cells: int = Field(
        description="Cells filled from finished trials of earlier sweeps with the same fingerprint (not trained again)."
    )
    reused_from: dict[int, int] = Field(description="Earlier sweep id -> cells reused from it.")

    @classmethod
    def of(
        cls, sweep: SweepRecord, counts: dict[TrialStatus, int], now: datetime, *, trained: int | None = None
    ) -> SweepPublic:
        """``trained``: cells finished since the sweep started (``Storage.finished_since``), the rate behind the
        ETA; cells reused from earlier sweeps finished in no time and would make it far too short."""
        total = sum(counts.values())
        done = counts["completed"] + counts["diverged"] + counts["failed"]
        elapsed = None
        if sweep.started_at is not None:
            elapsed = ((sweep.finished_at or now) - sweep.started_at).total_seconds()
        eta = None
        rated = done if trained is None else trained
        if sweep.status == "running" and elapsed is not None and rated:
            eta = elapsed / rated * (total - done)
        elif sweep.status == "completed":
            eta = 0.0
        return cls(
            id=sweep.id,
            name=sweep.name,
            fingerprint=sweep.fingerprint,
            status=sweep.status,
            created_at=sweep.created_at,
            started_at=sweep.started_at,
            finished_at=sweep.finished_at,
            error=one_line(sweep.error),
            counts=counts,
            n_cells=total,
            progress=done / total if total else 0.0,
            elapsed_s=elapsed,
            eta_s=eta,
            spec=sweep.spec,
            reused_cells=sweep.reused_cells,
            reused_from=sweep.reused_from or {},
        )


class SweepsPublic(_Public):
    data: list[SweepPublic] = Field(description="This page, by id.")
    count: int = Field(description="All sweeps that match the filter (not only this page).")


class TrialPublic(_Public):
    id: int = Field(description="The trial's id (one trial per cell of a sweep).")
    cell_id: str = Field(description="Stable id of the training run (the same in every sweep).")
    bundle_id: str = Field(description="The cells trained together as one batched model share it.")
    optimizer: str = Field(description="sgd, sgdw, adam or adamw (the paper's Algorithms 1-2).")
    lr: float = Field(description="α, the base learning rate.")
    weight_decay: float = Field(description="λ, raw, per optimizer step (what the optimizer used).")
    weight_decay_given: float = Field(description="λ as the spec gave it (raw, or λ_norm when normalized).")
    seed: int = Field(description="Seed of initialization and batch order.")
    status: TrialStatus = Field(description="pending, running, completed, diverged (a result), failed, cancelled.")
    attempts: int = Field(description="Claims of this cell so far (retries and resumes included).")
    started_at: datetime | None = Field(description="UTC; when its latest attempt started.")
    finished_at: datetime | None = Field(description="UTC.")
    error: str | None = Field(description="Why it failed or diverged, when it did.")
    test_error: float | None = Field(description="Final top-1 test error, percent.")
    train_error: float | None = Field(description="Final train error over the last epoch's batches, percent.")
    test_loss: float | None = Field(description="Final mean test cross-entropy.")
    train_loss: float | None = Field(description="Final mean train cross-entropy (last epoch).")
    wall_time_s: float | None = Field(description="Training seconds.")
    epochs_done: int | None = Field(description="Epochs trained (fewer than the spec's when it diverged).")
    metrics: dict[str, float | None] | None = Field(
        description="A trainer plugin's other metrics of the last epoch, by name (val_loss, ...); null: none."
    )
    device: str | None = Field(description="Where it trained: cpu or cuda:N.")
    host: str | None = Field(description="Host name of the machine that trained it.")
    git_sha: str | None = Field(description="wdgrid's git commit that trained it, when known.")

    @classmethod
    def of(cls, t: TrialRecord) -> TrialPublic:
        f = t.final
        return cls(
            id=t.id,
            cell_id=t.cell_id,
            bundle_id=t.bundle_id,
            optimizer=t.optimizer,
            lr=t.lr,
            weight_decay=t.weight_decay,
            weight_decay_given=t.weight_decay_given,
            seed=t.seed,
            status=t.status,
            attempts=t.attempts,
            started_at=t.started_at,
            finished_at=t.finished_at,
            error=one_line(t.error),
            test_error=f.test_error if f else None,
            train_error=f.train_error if f else None,
            test_loss=f.test_loss if f else None,
            train_loss=f.train_loss if f else None,
            wall_time_s=f.wall_time_s if f else None,
            epochs_done=f.epochs_done if f else None,
            metrics=f.extra if f else None,
            device=t.provenance.device,
            host=t.provenance.host,
            git_sha=t.provenance.git_sha,
        )


class TrialsPublic(_Public):
    data: list[TrialPublic] = Field(description="This page, by id.")
    count: int = Field(description="Trials matching the filters, on all pages.")


class EpochPublic(_Public):
    attempt: int = Field(description="The attempt (1-based) that trained this epoch.")
    epoch: int = Field(description="1-based.")
    train_loss: float | None = Field(description="Mean train cross-entropy over the epoch's batches.")
    train_error: float | None = Field(description="Percent.")
    test_loss: float | None = Field(description="Mean test cross-entropy after the epoch.")
    test_error: float | None = Field(description="Top-1, percent.")
    eta: float | None = Field(description="η_t, the schedule multiplier, at the epoch's last step.")
    wall_time_s: float | None = Field(description="Seconds of training since the attempt started.")
    extra: dict[str, float | None] | None = Field(
        default=None, description="A trainer plugin's other metrics of this epoch, by name; null: none."
    )


class AttemptPublic(_Public):
    attempt: int = Field(description="1-based; a retry or resume is the next.")
    status: str = Field(description="running, completed, diverged, failed, lost (driver or lease gone), cancelled.")
    started_at: datetime = Field(description="UTC.")
    finished_at: datetime | None = Field(description="UTC.")
    error: str | None = Field(description="Why it ended, when it failed or was lost (one line; the log has more).")

    @field_validator("error")
    @classmethod
    def _short(cls, error: str | None) -> str | None:
        return one_line(error)

    host: str | None = Field(description="Host name of the machine it ran on.")
    node: str | None = Field(description="Ray node id.")


class TrialDetail(TrialPublic):
    config: dict[str, Any] = Field(description="The resolved training config the worker ran.")
    attempts_detail: list[AttemptPublic] = Field(description="Every attempt, oldest first.")
    epochs: list[EpochPublic] = Field(description="Every attempt's epochs, by attempt then epoch.")


class CellPublic(_Public):
    """One (α, λ) cell of one optimizer's grid over the seeds: ``results.grids.cell_stats``, the numbers of the CSV
    grids and of the heatmaps."""

    lr: float = Field(description="α.")
    weight_decay: float = Field(description="λ, raw per step.")
    weight_decay_given: float = Field(description="λ as the spec gave it (raw, or λ_norm when normalized).")
    mean: float | None = Field(description="Mean over completed seeds of the final objective (null: none).")
    std: float | None = Field(description="Sample std over completed seeds (null for fewer than 2).")
    n: int = Field(description="Seeds completed with a finite value.")
    n_diverged: int = Field(description="Seeds that diverged (counted, never averaged in).")
    n_trials: int = Field(description="Seeds of the cell (trials).")
    state: Literal["ok", "diverged", "partly diverged", "unfinished"] = Field(
        description="ok (every finished seed completed), diverged, partly diverged, unfinished (no seed finished)."
    )
    finished_at: datetime | None = Field(description="UTC; when the cell's latest seed finished.")


class HeatmapPublic(_Public):
    optimizer: str = Field(description="sgd, sgdw, adam or adamw.")
    lrs: list[float] = Field(description="The grid's α values, ascending (empty with since: axes do not change).")
    weight_decays: list[float] = Field(
        description="The grid's λ values (raw per step), ascending (empty with since: axes do not change)."
    )
    cells: list[CellPublic] = Field(description="Every cell, or (with since) those whose seeds finished since then.")
    best: list[tuple[float, float]] = Field(
        description="The best cells as (α, λ), best first: about one in eight, 1 to 10 (those the PNG circles)."
    )


class CellsPublic(_Public):
    metric: str = Field(description="The sweep's objective (test_error, percent, unless the spec names another).")
    mode: Literal["min", "max"] = Field(description="Whether lower (min) or higher (max) is better.")
    scale: tuple[float, float] = Field(
        description="The colour scale (low, high) of every heatmap of the sweep: the PNG's (results.grids)."
    )
    heatmaps: list[HeatmapPublic] = Field(description="One per optimizer, in the spec's order.")
    cursor: datetime = Field(
        description="Pass as since= to get only the cells that changed after this answer (UTC; a few seconds "
        "before now, so that a cell written while this answer was read is sent again, not missed)."
    )


class CellDetail(_Public):
    optimizer: str = Field(description="sgd, sgdw, adam or adamw.")
    lr: float = Field(description="α.")
    weight_decay: float = Field(description="λ, raw per step.")
    trials: list[TrialDetail] = Field(description="The cell's trials (one per seed), with attempts and epochs.")


class PresetPublic(_Public):
    name: str = Field(description='POST {"preset": name} to run it.')
    description: str = Field(description="What it sweeps, and what it costs.")


class PluginPublic(_Public):
    kind: Literal["model", "dataset", "trainer"] = Field(
        description="What a spec names it as: model, dataset or trainer."
    )
    name: str = Field(description="Its name in a spec (the entry point's name).")
    entry_point: str = Field(description="module:attribute of the code that runs.")
    package: str = Field(description="The installed distribution that registers it.")
    version: str = Field(description="That distribution's version (it goes into each trial's provenance).")
    doc: str = Field(description="The first paragraph of its docstring.")
    args_schema: dict[str, Any] | None = Field(
        description="JSON schema of its arguments (model_args / dataset_args / trainer_args); null: it takes none."
    )
    metrics: list[str] | None = Field(
        description="A trainer's metrics, reported every epoch: what the spec's objective may name (null: not "
        "declared, or not a trainer; wdgrid's own loop reports test_error, test_loss, train_error, train_loss)."
    )
    error: str | None = Field(description="Why it cannot be imported here, when it cannot.")

    @classmethod
    def of(cls, d: PluginDescription) -> PluginPublic:
        i = d.info
        return cls(
            kind=i.kind,
            name=i.name,
            entry_point=i.value,
            package=i.package,
            version=i.version,
            doc=d.doc,
            args_schema=d.args_schema,
            metrics=None if d.metrics is None else list(d.metrics),
            error=d.error,
        )


class Problem(_Public):
    """Every error but a validation error (401, 404, 409): one sentence saying what is wrong."""

    detail: str = Field(description="What is wrong, in one sentence.")


class SeparabilityValues(_Public):
    """One seed's grid (``results.separability.Separability``); null where the statistic is undefined."""

    coupling_index: float | None = Field(
        description="r_λ / (r_λ + r_αλ): cost of moving α by 2^±1, 2^±2 with λ fixed vs with α·λ fixed, summed "
        "over every good row's and column's best cell. 1 fully coupled, about 1/3 an isotropic separable bowl."
    )
    anchors: int = Field(
        description="How many cells the coupling index is anchored on (each near-best row's and column's best cell)."
    )
    coupling_slope: float | None = Field(
        description="Slope of log2(best λ of a row) against log2 α over the near-best rows: ≈ −1 coupled, ≈ 0 not."
    )
    interaction_share: float | None = Field(
        description="Share (0..1) of the grid's sum of squares the additive model f(α) + g(λ) leaves unexplained."
    )
    topk_log_corr: float | None = Field(
        description="Pearson correlation of log2 α and log2 λ over the best cells: negative for a diagonal band."
    )
    best_lr: float = Field(description="α of the seed's best cell.")
    best_weight_decay: float = Field(description="λ (raw per step) of the seed's best cell.")
    best_value: float = Field(description="The objective at the best cell (test error in percent by default).")
    regret: float | None = Field(
        description="Mean cost of one move behind the coupling index: the size of the differences it rests on."
    )
    resolution: float | None = Field(
        description="Smallest difference between two distinct values of the grid (one test example, for errors)."
    )


class ReasonPublic(_Public):
    code: ReasonCode = Field(
        description="single_seed, seeds_disagree, within_spread, best_on_edge, below_resolution or too_few_cells."
    )
    text: str = Field(description="What it means, and what would resolve it.")


class ComparisonPublic(_Public):
    l2: str = Field(description="The L2-regularized optimizer (sgd or adam).")
    decoupled: str = Field(description="Its decoupled twin (sgdw or adamw).")
    outcome: Literal["l2_more_coupled", "not_more_coupled", "inconclusive"] = Field(
        description="l2_more_coupled: the L2 grid has the larger coupling index on every seed (the paper's claim); "
        "not_more_coupled: on no seed; inconclusive: see reasons."
    )
    reasons: list[ReasonPublic] = Field(description="Why it is inconclusive (empty otherwise).")
    sentence: str = Field(description="The outcome in words, with the mean coupling indexes.")
    coupled_seeds: int = Field(description="Seeds on which the L2 grid has the larger coupling index.")
    n_seeds: int = Field(description="Seeds compared (completed on both grids).")
    verdict: str = Field(description="The sentence, then every statistic's per-seed values and mean, a line each.")
    l2_by_seed: dict[str, SeparabilityValues] = Field(description="By seed (as a string).")
    decoupled_by_seed: dict[str, SeparabilityValues] = Field(description="By seed (as a string).")


class UnfinishedPairPublic(_Public):
    l2: str = Field(description="The L2-regularized optimizer.")
    decoupled: str = Field(description="Its decoupled twin.")
    finished: int = Field(description="Cells of the two that finished.")
    cells: int = Field(description="All cells of the two.")


class SeparabilityPublic(_Public):
    comparisons: list[ComparisonPublic] = Field(
        description="One per L2 optimizer beside its twin whose cells have all finished."
    )
    unfinished: list[UnfinishedPairPublic] = Field(
        description="The pairs with cells still pending or running: analysed once they finish."
    )


# --- What POST /sweeps takes ----------------------------------------------------------------------------------------
class _PresetName(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str = Field(
        description="A built-in sweep (GET /presets) by name.",
        json_schema_extra={"enum": [p.name for p in list_presets()]},
    )

    @field_validator("preset")
    @classmethod
    def _known(cls, name: str) -> str:
        known = [p.name for p in list_presets()]
        if name not in known:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(known)}")
        return name

    def spec(self) -> SweepSpec:
        """The preset with this submission's overrides, validated as a whole (``pydantic.ValidationError`` whose
        ``loc`` names the spec field)."""
        overrides = {k: v for k, v in self.model_dump(mode="json", exclude_unset=True).items() if k != "preset"}
        return load_preset(self.preset, **overrides)


def _override(info: FieldInfo) -> tuple[Any, Any]:
    """A spec field as an optional override: its constraints and validators apply to a given value, not to None."""
    inner = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    extra = info.json_schema_extra
    return (Optional[inner], Field(default=None, description=info.description, json_schema_extra=extra))  # noqa: UP045


# Every top-level field of the spec, optional: an override replaces the preset's value, and is checked here on its
# own (type, range) and again, merged, by PresetSubmission.spec().
PresetSubmission = create_model(
    "PresetSubmission",
    __base__=_PresetName,
    __doc__="A built-in sweep by name; any other key is one of the spec's top-level fields and replaces the preset's "
    "value, and the merged spec is validated as a whole.",
    **{name: _override(info) for name, info in SweepSpec.model_fields.items()},  # type: ignore[call-overload]
)


def _submission_kind(body: Any) -> str:
    preset = (isinstance(body, dict) and "preset" in body) or isinstance(body, _PresetName)
    return "preset" if preset else "spec"


if TYPE_CHECKING:  # a class made by create_model is a value to mypy; its base says what the route may call
    SweepSubmission = SweepSpec | _PresetName
else:
    SweepSubmission = Annotated[
        Annotated[SweepSpec, Tag("spec")] | Annotated[PresetSubmission, Tag("preset")],
        Discriminator(_submission_kind),
    ]
"""The body of ``POST /sweeps``: a whole :class:`~sweeps.SweepSpec`, or a :class:`PresetSubmission`. The tag (``spec``
or ``preset``) appears in pydantic's error locations; the API's 422 handler drops it, so that a location names the
field as the user wrote it (``body.epochs``)."""
SUBMISSION_TAGS = ("spec", "preset")
