"""The REST routes. Thin: each reads or writes the store through a dependency; domain errors become status codes in
one place (``service.main``). Routes are plain ``def``: the store is synchronous, so FastAPI runs them in its thread
pool and a slow CSV never blocks the event loop."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from results import NotFoundError, Separability, Storage, SweepRecord, TrialRecord, TrialStatus
from results.export import GridMetric, NoTwinsError
from service.deps import MAX_ID, SchedulerDep, SettingsDep, StoreDep, SweepDep, require_token
from service.schemas import (
    AttemptPublic,
    CellDetail,
    CellPublic,
    CellsPublic,
    ComparisonPublic,
    EpochPublic,
    HeatmapPublic,
    PluginPublic,
    PresetPublic,
    Problem,
    ReasonPublic,
    SeparabilityPublic,
    SeparabilityValues,
    SweepPublic,
    SweepsPublic,
    SweepSubmission,
    TrialDetail,
    TrialPublic,
    TrialsPublic,
    UnfinishedPairPublic,
)
from sweeps import SweepSpec, expand, list_presets

__all__ = ["cells", "public", "router"]

router = APIRouter(
    dependencies=[Depends(require_token)],
    responses={401: {"model": Problem, "description": "Missing or wrong bearer token (the server has a token)."}},
)

Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Items to skip (pagination).")]
TrialId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The trial's id.")]
OptimizerName = Literal["sgd", "sgdw", "adam", "adamw"]
_CSV: dict[str, Any] = {"text/csv": {}}
_CACHE: dict[tuple[Any, ...], tuple[Any, float, Any]] = {}  # view -> (version, built at, value); oldest first
_CACHE_SIZE = 64  # views (one version each): a 5000-cell sweep's cells are a few MB
_CACHE_LOCK = threading.Lock()
_BUILDING: dict[tuple[Any, ...], threading.Lock] = {}  # one build of a view at a time: the others wait for it
# While a sweep runs, a view may be this many seconds behind its trials: 50 pollers of a training sweep would
# otherwise rebuild it on nearly every request (bench/load.py). Less than CURSOR_OVERLAP, so that a cells cursor
# never passes a cell the view did not hold yet.
STALE_S: Final = 1.0
# A cells answer's cursor lies this far before the moment it was read: a trial whose finish was being committed
# while the answer was read (its finished_at a little earlier) is sent again next time, never missed.
CURSOR_OVERLAP: Final = timedelta(seconds=3)
_T = TypeVar("_T")
_PNG: dict[str, Any] = {"image/png": {}}
# Error responses, documented per route (their bodies: service.schemas.Problem).
_404: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such sweep, trial or grid."}}
_409: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "Not possible in the sweep's state."}}


def _cached(store: Storage, sweep: SweepRecord, what: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    """A view of a sweep's results (a grid CSV, the heatmaps' cells), rebuilt when a trial of it changed status —
    while the sweep runs, at most once every :data:`STALE_S` seconds — and kept in one version only: pollers mostly
    get the cached one (a grid through pandas costs ~10 ms, every heatmap of a 5000-cell sweep ~20 ms; the status
    counts that version it ~1 ms). A finished sweep's views are always its final ones."""
    version = tuple(sorted(store.status_counts(sweep.id).items()))
    key = (store.url, sweep.id, *what)

    def fresh() -> _T | None:
        entry = _CACHE.get(key)
        if entry is None:
            return None
        built_version, built_at, value = entry
        running = sweep.status in ("pending", "running")
        ok = built_version == version or (running and time.monotonic() - built_at < STALE_S)
        return value if ok else None

    if (value := fresh()) is not None:
        return value
    with _CACHE_LOCK:
        building = _BUILDING.setdefault(key, threading.Lock())
    with building:
        if (value := fresh()) is not None:  # built by another request meanwhile
            return value
        value = build()
        with _CACHE_LOCK:
            _CACHE.pop(key, None)
            _CACHE[key] = (version, time.monotonic(), value)
            while len(_CACHE) > _CACHE_SIZE:
                _BUILDING.pop(old := next(iter(_CACHE)), None)
                _CACHE.pop(old)
    return value


def _public(store: Storage, sweep_id: int) -> SweepPublic:
    return public(store, store.get_sweep(sweep_id), datetime.now(UTC))


def public(store: Storage, sweep: SweepRecord, now: datetime) -> SweepPublic:
    """The sweep as the API shows it: status, counts, progress and ETA at ``now``."""
    trained = None
    if sweep.status == "running" and sweep.started_at is not None:
        trained = store.finished_since(sweep.id, sweep.started_at)
    return SweepPublic.of(sweep, store.status_counts(sweep.id), now, trained=trained)


@router.post(
    "/sweeps",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses={
        400: {"model": Problem, "description": "The body could not be read (not UTF-8)."},
        409: {"model": Problem, "description": "The Idempotency-Key was used for another spec."},
    },
    tags=["sweeps"],
)
def create_sweep(
    store: StoreDep,
    scheduler: SchedulerDep,
    settings: SettingsDep,
    response: Response,
    body: Annotated[
        SweepSubmission,
        Body(
            description="A sweep spec (see README, 'Sweep specs'), or a preset with top-level overrides.",
            openapi_examples={
                "preset": {"value": {"preset": "smoke"}},
                "preset with overrides": {"value": {"preset": "cpu-fig2", "epochs": 5, "seeds": [0]}},
            },
        ),
    ],
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="Retrying a POST with the same key returns the same sweep."),
    ] = None,
    reuse: Annotated[
        bool, Query(description="Fill cells from finished trials of earlier sweeps with the same fingerprint.")
    ] = True,
) -> SweepPublic:
    """Submit a sweep: it is queued (FIFO) and starts when a slot is free. Cells an earlier sweep of the same spec
    already finished are reused, not trained again (``reuse=false`` trains everything); the response says how many."""
    if isinstance(body, SweepSpec):
        spec = body
    else:
        try:
            spec = body.spec()
        except ValidationError as exc:  # the merged spec: its locations are the spec's own fields
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    spec.check_limits(settings.spec_limits())  # SpecLimitError: a 422 naming the field (service.main)
    spec.check_data_paths(settings.data_root())  # DataPathError: the same
    sweep = store.create_sweep(expand(spec), idempotency_key=idempotency_key)
    fresh = sweep.status == "pending" and sweep.started_at is None
    if reuse and fresh:
        store.reuse_finished(sweep.id)
    scheduler.wake()
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return _public(store, sweep.id)


@router.get("/sweeps", response_model=SweepsPublic, tags=["sweeps"])
def list_sweeps(
    store: StoreDep,
    status_: Annotated[
        Literal["pending", "running", "completed", "failed", "cancelled"] | None,
        Query(alias="status", description="Only sweeps in this status."),
    ] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Sweeps per page.")] = 100,
) -> SweepsPublic:
    """Sweeps by id, optionally of one status, a page at a time."""
    page, count = store.list_sweeps(status=status_, offset=offset, limit=limit)
    now = datetime.now(UTC)
    return SweepsPublic(data=[public(store, s, now) for s in page], count=count)


@router.get("/sweeps/{sweep_id}", response_model=SweepPublic, responses=_404, tags=["sweeps"])
def get_sweep(store: StoreDep, sweep: SweepDep) -> SweepPublic:
    """A sweep's status, trial counts, progress, elapsed time and ETA."""
    return public(store, sweep, datetime.now(UTC))  # SweepDep already read it


@router.post("/sweeps/{sweep_id}/cancel", response_model=SweepPublic, responses=_404 | _409, tags=["sweeps"])
def cancel_sweep(store: StoreDep, sweep: SweepDep) -> SweepPublic:
    """Cancel: unfinished cells become cancelled (a running driver stops within seconds); finished ones stay."""
    store.cancel_sweep(sweep.id)
    return _public(store, sweep.id)


@router.post("/sweeps/{sweep_id}/resume", response_model=SweepPublic, responses=_404 | _409, tags=["sweeps"])
def resume_sweep(store: StoreDep, scheduler: SchedulerDep, sweep: SweepDep) -> SweepPublic:
    """Re-queue a failed or cancelled sweep's failed and cancelled cells; finished cells are kept."""
    store.resume_sweep(sweep.id)
    scheduler.wake()
    return _public(store, sweep.id)


@router.get("/sweeps/{sweep_id}/trials", response_model=TrialsPublic, responses=_404, tags=["trials"])
def list_trials(
    store: StoreDep,
    sweep: SweepDep,
    optimizer: Annotated[OptimizerName | None, Query(description="Only this optimizer's trials.")] = None,
    status_: Annotated[TrialStatus | None, Query(alias="status", description="Only trials in this status.")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Trials per page.")] = 100,
) -> TrialsPublic:
    """A sweep's trials (one per cell), optionally of one optimizer or status, a page at a time."""
    page, count = store.trials(sweep.id, status=status_, optimizer=optimizer, offset=offset, limit=limit)
    return TrialsPublic(data=[TrialPublic.of(t) for t in page], count=count)


@router.get("/sweeps/{sweep_id}/trials/{trial_id}", response_model=TrialDetail, responses=_404, tags=["trials"])
def get_trial(store: StoreDep, sweep: SweepDep, trial_id: TrialId) -> TrialDetail:
    """One trial with its config, every attempt and every epoch's metrics."""
    trial = store.get_trial(trial_id)
    if trial.sweep_id != sweep.id:
        raise NotFoundError(f"sweep {sweep.id} has no trial {trial_id}")
    return _detail(store, trial)


def _instant(text: str) -> datetime:
    """An ISO 8601 date and time (a cells answer's cursor); naive means UTC. A 422 naming ``since`` otherwise (a
    number is not taken for seconds since 1970: the schema says date-time)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        error = {"type": "datetime_from_iso", "loc": ("query", "since"), "msg": "Input should be an ISO 8601 date-time"}
        raise RequestValidationError([error | {"input": text}]) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _detail(store: Storage, trial: TrialRecord) -> TrialDetail:
    return TrialDetail(
        **TrialPublic.of(trial).model_dump(),
        config=trial.config,
        attempts_detail=[AttemptPublic.model_validate(a) for a in store.attempts(trial.id)],
        epochs=[EpochPublic.model_validate(e) for e in store.epochs(trial.id)],
    )


@router.get("/sweeps/{sweep_id}/cells", response_model=CellsPublic, responses=_404, tags=["results"])
def cells(
    store: StoreDep,
    sweep: SweepDep,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="A previous answer's cursor (ISO 8601; UTC unless it says): only the cells whose seeds "
            "finished since then.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> CellsPublic:
    """Every optimizer's α × λ cells (mean ± std of the objective over seeds, diverged seeds, state), its best
    cells and the colour scale: the numbers of the heatmaps and CSV grids, as data (the web page draws them). With
    ``since``, only the cells that changed: a live view of a 5000-cell sweep polls a few cells, not the grid."""
    from results.export import heatmaps, objective

    cursor = datetime.now(UTC) - CURSOR_OVERLAP
    maps, scale = _cached(store, sweep, ("cells",), lambda: heatmaps(store, sweep))
    after = None if since is None else _instant(since)
    goal = objective(sweep)

    def changed(cell: dict[str, Any]) -> bool:
        return after is None or (cell["finished_at"] is not None and cell["finished_at"] >= after)

    return CellsPublic(
        metric=goal.metric,
        mode=goal.mode,
        scale=scale,
        cursor=cursor,
        heatmaps=[
            HeatmapPublic(
                optimizer=m.optimizer,
                lrs=m.lrs if after is None else [],
                weight_decays=m.weight_decays if after is None else [],
                cells=[CellPublic(**c) for c in m.cells if changed(c)],
                best=[(b["lr"], b["weight_decay"]) for b in m.best],
            )
            for m in maps
        ],
    )


@router.get("/sweeps/{sweep_id}/cells/{optimizer}", response_model=CellDetail, responses=_404, tags=["results"])
def cell(
    store: StoreDep,
    sweep: SweepDep,
    optimizer: Annotated[OptimizerName, PathParam(description="Whose grid.")],
    lr: Annotated[float, Query(description="The cell's α, exactly as the cells route gives it.")],
    weight_decay: Annotated[
        float, Query(description="The cell's λ (raw per step), exactly as the cells route gives it.")
    ],
) -> CellDetail:
    """One cell's trials (one per seed) with every attempt and every epoch: its learning curves."""
    points = [p for p in store.grid(sweep.id, optimizer) if p.lr == lr and p.weight_decay == weight_decay]
    if not points:
        raise NotFoundError(f"sweep {sweep.id} has no {optimizer} cell at lr={lr!r}, weight_decay={weight_decay!r}")
    trials = [_detail(store, store.get_trial(p.trial_id)) for p in points]
    return CellDetail(optimizer=optimizer, lr=lr, weight_decay=weight_decay, trials=trials)


@router.get(
    "/sweeps/{sweep_id}/grid.csv",
    response_class=Response,
    responses={200: {"content": _CSV}, **_404},
    tags=["results"],
)
def grid_csv(
    store: StoreDep,
    sweep: SweepDep,
    optimizer: Annotated[OptimizerName, Query(description="Whose grid.")],
    metric: Annotated[
        GridMetric,
        Query(description="mean or std over seeds of the sweep's objective (test error % by default), n, n_diverged."),
    ] = "mean",
) -> Response:
    """One optimizer's α × λ grid (α down the rows, λ raw per step across) of the final value of the sweep's
    objective over seeds (test error in percent unless the spec names another): ``mean`` (diverged cells marked),
    ``std``, ``n`` (completed seeds) or ``n_diverged``."""
    from results.export import grid_text

    text = _cached(store, sweep, ("grid", optimizer, metric), lambda: grid_text(store, sweep, optimizer, metric))
    return _file(text.encode(), "text/csv", f"sweep-{sweep.id}-{optimizer}-{metric}.csv")


@router.get(
    "/sweeps/{sweep_id}/trials.csv",
    response_class=Response,
    responses={200: {"content": _CSV}, **_404},
    tags=["results"],
)
def trials_csv(store: StoreDep, sweep: SweepDep) -> Response:
    """Every trial, one row each: grid place, status, final metrics (percent, seconds), provenance, then a
    trainer's other final metrics by name."""
    from results.export import trials_csv as text

    return _file(text(store, sweep.id).encode(), "text/csv", f"sweep-{sweep.id}-trials.csv")


@router.get(
    "/sweeps/{sweep_id}/epochs.csv",
    response_class=Response,
    responses={200: {"content": _CSV}, **_404},
    tags=["results"],
)
def epochs_csv(store: StoreDep, sweep: SweepDep) -> Response:
    """Every stored epoch of every attempt of every trial (errors in percent, η_t, wall time in seconds)."""
    from results.export import epochs_csv as text

    return _file(text(store, sweep.id).encode(), "text/csv", f"sweep-{sweep.id}-epochs.csv")


@router.get(
    "/sweeps/{sweep_id}/heatmap.png",
    response_class=Response,
    responses={200: {"content": _PNG}, **_404},
    tags=["results"],
)
def heatmap(
    store: StoreDep,
    sweep: SweepDep,
    optimizer: Annotated[
        OptimizerName | None, Query(description="One optimizer's heatmap; default: each L2 beside its twin.")
    ] = None,
) -> Response:
    """Figure-2 heatmaps: one optimizer's, or (default) each L2 optimizer beside its decoupled twin when both ran."""
    from results.export import heatmap_png_bytes

    return _file(heatmap_png_bytes(store, sweep, optimizer), "image/png", f"sweep-{sweep.id}-heatmap.png")


@router.get(
    "/sweeps/{sweep_id}/separability", response_model=SeparabilityPublic, responses=_404 | _409, tags=["results"]
)
def separability(store: StoreDep, sweep: SweepDep) -> SeparabilityPublic:
    """Each L2 optimizer against its decoupled twin, seed by seed: coupling index, slope, interaction share, top-k
    correlation and the verdict in words (``results.separability``)."""
    from results.export import separability as analyse
    from results.export import unfinished_pairs

    try:
        waiting = unfinished_pairs(store, sweep)
        comparisons = analyse(store, sweep, waiting)
    except NoTwinsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None

    def number(value: float) -> float | None:
        return value if math.isfinite(value) else None

    def values(by_seed: Mapping[int, Separability]) -> dict[str, SeparabilityValues]:
        return {
            str(seed): SeparabilityValues(
                coupling_index=number(s.coupling_index),
                anchors=s.anchors,
                coupling_slope=number(s.coupling_slope),
                interaction_share=number(s.interaction_share),
                topk_log_corr=number(s.topk_log_corr),
                best_lr=s.best_lr,
                best_weight_decay=s.best_wd,
                best_value=s.best_error,
                regret=number(s.regret),
                resolution=number(s.resolution),
            )
            for seed, s in by_seed.items()
        }

    return SeparabilityPublic(
        comparisons=[
            ComparisonPublic(
                l2=c.l2,
                decoupled=c.decoupled,
                outcome=c.outcome,
                reasons=[ReasonPublic(code=r.code, text=r.text) for r in c.reasons],
                sentence=c.sentence,
                coupled_seeds=c.coupled_seeds,
                n_seeds=c.n_seeds,
                verdict=c.verdict,
                l2_by_seed=values(c.l2_by_seed),
                decoupled_by_seed=values(c.decoupled_by_seed),
            )
            for c in comparisons
        ],
        unfinished=[UnfinishedPairPublic(**vars(p)) for p in waiting],
    )


@router.get("/plugins", response_model=list[PluginPublic], tags=["presets"])
def plugins() -> list[PluginPublic]:
    """Every installed model, data set and trainer a spec may name (wdgrid's own and other packages'), with its
    docstring, its arguments' schema, a trainer's metrics, and the package and version it comes from."""
    from sweeps import PluginKind, describe

    kinds: tuple[PluginKind, ...] = ("model", "dataset", "trainer")
    return [PluginPublic.of(d) for kind in kinds for d in describe(kind)]


@router.get("/presets", response_model=list[PresetPublic], tags=["presets"])
def presets() -> list[PresetPublic]:
    """The built-in sweeps (POST ``{"preset": name}`` to run one)."""
    return [PresetPublic(name=p.name, description=p.description) for p in list_presets()]


def _file(content: bytes, media_type: str, filename: str) -> Response:
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
