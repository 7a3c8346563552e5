"""Does it reproduce? The paper's five claims (``../shared/PAPER.md``) at CPU scale, made through a running wdgrid
service exactly as a user would make them: POST a spec, watch its progress, download the trials, epochs, heatmaps
and the separability verdict, and judge the claim from those downloads.

    make reproduce                                   # all five, ~30 minutes on 2 cores, into docs/results/
    .venv/bin/python -m bench.reproduce --quick --out /tmp/r   # tiny grids, 2 epochs: the pipeline only (~3 min)
    .venv/bin/python -m bench.reproduce --url http://host:8000 # against your own controller ($WDGRID_API_TOKEN)

Without ``--url`` the script starts its own controller (``wdgrid serve``) on a free loopback port, with a fresh
SQLite store in ``--work`` (default ``.reproduce/``), and stops it at the end; the store stays, so every sweep can be
browsed afterwards: ``WDGRID_DATABASE_URL=sqlite:///.reproduce/wdgrid.db make run``, then ``/ui/sweeps/<id>``.

The claims, each a small set of sweeps (MNIST-1D, the BatchNorm CNN ``cnn1d``, batch 128):

1. **Separability** (Fig. 2): the ``cpu-fig2`` preset (4 optimizers × 7 α × 7 λ × 2 seeds, cosine, 20 epochs).
2. **Schedules** (Fig. 1): Adam and AdamW on cpu-fig2's grids under ``fixed``, ``step`` and ``cosine`` (the cosine
   sweep's cells are claim 1's, reused by the service, not trained again).
3. **Generalization**: Adam, AdamW, SGD and SGDW each at its best cell of claim 1, trained for twice the budget on
   8 seeds; λ carried over in normalized units (claim 4), so that the longer run is not over-regularized.
4. **Normalized weight decay** (App. B.1): AdamW at its best α, λ on a fine axis (steps of √2) around its best, at
   three budgets (10, 20, 40 epochs), once in raw units and once in normalized units: the best raw λ should shrink
   with the budget and the best λ_norm stay put.
5. **Warm restarts**: AdamWR (t_0 = 5, t_mult = 2: restarts after epochs 5 and 15) against AdamW with one cosine
   over the same 35 epochs, both at AdamW's best cell of claim 1 (raw λ): test error against epochs.

Each claim writes ``<out>/<name>.md`` (its specs, sweeps, tables per seed and mean, best errors, the verdict and why,
wall time, machine, git SHA) and its figures beside it; ``<out>/README.md`` is the table of all five. Verdicts are
computed from the numbers by the rules in each claim's function (``shows``, ``partly``, ``does not show``), never
written by hand. ``--quick`` runs the same code on 2 × 2 grids and 2-4 epochs: its verdicts mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pandas-stubs is not a dependency (yet)
from scipy import stats

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.cli._common import Snapshot, watch  # noqa: E402
from sweeps import SweepSpec, load_preset, normalized_weight_decay  # noqa: E402
from tests.processes import start_server, stop_server  # noqa: E402

SHOWS, PARTLY, NOT_SHOWN = "shows", "partly", "does not show"
RESTARTS: Final = {"name": "warm_restarts", "t_mult": 2}


# --- Scale ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """Every size the five claims use; :data:`FULL` is ``make reproduce``, :data:`QUICK` the tests' pipeline check."""

    grid_values: int | None  # α and λ values kept per axis of cpu-fig2's grids (None: all 7)
    epochs: int  # claims 1, 2 (cpu-fig2's 20)
    seeds: list[int]  # claims 1, 2
    long_epochs: int  # claim 3
    long_seeds: list[int]  # claim 3
    budgets: tuple[int, ...]  # claim 4, epochs
    wd_offsets: tuple[float, ...]  # claim 4: log2 λ around the best
    wd_seeds: list[int]  # claim 4
    t_0: int  # claim 5: first restart period, epochs
    restart_epochs: int  # claim 5: the budget (the end of a restart period)
    restart_seeds: list[int]  # claim 5
    concurrent_sweeps: int  # the own controller's WDGRID_MAX_CONCURRENT_SWEEPS


FULL: Final = Scale(
    grid_values=None,
    epochs=20,
    seeds=[0, 1],
    long_epochs=40,
    long_seeds=list(range(8)),
    budgets=(10, 20, 40),
    wd_offsets=tuple(k / 2 for k in range(-4, 5)),
    wd_seeds=[0, 1],
    t_0=5,
    restart_epochs=35,
    restart_seeds=[0, 1, 2],
    concurrent_sweeps=1,  # one sweep owns both cores: each claim's wall time is its own
)
QUICK: Final = Scale(
    grid_values=2,
    epochs=2,
    seeds=[0, 1],
    long_epochs=3,
    long_seeds=[0, 1],
    budgets=(1, 2),
    wd_offsets=(-1.0, 0.0, 1.0),
    wd_seeds=[0],
    t_0=1,
    restart_epochs=3,
    restart_seeds=[0],
    concurrent_sweeps=2,  # tiny sweeps: their start-ups overlap
)


# --- The service, as a user talks to it --------------------------------------------------------------------------
@dataclass
class Service:
    """A controller at ``url``; ``page`` is where a sweep's web page is, for the reports' links."""

    client: httpx.Client
    page: str

    def submit(self, *specs: SweepSpec) -> list[int]:
        """POST the specs (the controller queues them), then draw each one's progress until it ends; returns their
        ids. Every sweep must complete."""
        posted = []
        for spec in specs:
            response = self.client.post("/sweeps", json=spec.model_dump(mode="json", exclude_none=True))
            if response.status_code != 201:
                raise SystemExit(f"reproduce: POST /sweeps {spec.name}: {response.status_code} {response.text[:500]}")
            sweep = response.json()
            posted.append((int(sweep["id"]), int(sweep["n_cells"])))
            print(f"sweep {sweep['id']} '{spec.name}': {sweep['n_cells']} cells")
        for sid, n_cells in posted:

            def poll(sid: int = sid) -> Snapshot:
                s = self.client.get(f"/sweeps/{sid}").raise_for_status().json()
                return Snapshot(s["counts"], s["status"], s.get("eta_s"))

            last = watch(sid, n_cells, poll, every_s=2)
            if last.status != "completed" or last.counts["failed"]:
                raise SystemExit(f"reproduce: sweep {sid} ended {last.status} with {dict(last.counts)}")
        return [sid for sid, _ in posted]

    def trials(self, sid: int) -> pd.DataFrame:
        """The sweep's trials.csv: one row per cell, final test error in percent."""
        text = self.client.get(f"/sweeps/{sid}/trials.csv").raise_for_status().text
        return pd.read_csv(io.StringIO(text))

    def epochs(self, sid: int) -> pd.DataFrame:
        """The sweep's epochs.csv, the last attempt of each trial only (a retried trial's earlier epochs dropped)."""
        frame = pd.read_csv(io.StringIO(self.client.get(f"/sweeps/{sid}/epochs.csv").raise_for_status().text))
        last = frame.groupby("trial_id")["attempt"].transform("max")
        return frame[frame["attempt"] == last]

    def separability(self, sid: int) -> list[dict[str, Any]]:
        comparisons: list[dict[str, Any]] = (
            self.client.get(f"/sweeps/{sid}/separability").raise_for_status().json()["comparisons"]
        )
        return comparisons

    def heatmap(self, sid: int, path: Path) -> None:
        path.write_bytes(self.client.get(f"/sweeps/{sid}/heatmap.png").raise_for_status().content)

    def link(self, sid: int) -> str:
        return f"[sweep {sid}]({self.page}/ui/sweeps/{sid})"


@contextlib.contextmanager
def own_service(work: Path, concurrent_sweeps: int) -> Iterator[Service]:
    """``wdgrid serve`` on a free loopback port with a fresh SQLite store in ``work`` (the last run's is replaced)."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("wdgrid.db*"):
        old.unlink()
    db = work / "wdgrid.db"
    server = start_server(
        work,
        f"sqlite:///{db}",
        secrets.token_urlsafe(24),
        settings={"WDGRID_POLL_S": "1", "WDGRID_MAX_CONCURRENT_SWEEPS": str(concurrent_sweeps)},
    )
    try:
        with server.client() as client:
            client.timeout = httpx.Timeout(120)
            yield Service(client, "http://127.0.0.1:8000")
    finally:
        stop_server(server)


# --- Small helpers on the downloads -------------------------------------------------------------------------------
def shrink(spec: SweepSpec, keep: int | None, optimizers: tuple[str, ...] | None = None, **overrides: Any) -> SweepSpec:
    """``spec`` with its grids cut to ``optimizers`` and each axis to its ``keep`` middle values (None: all)."""
    grids = []
    for g in spec.grids:
        if optimizers is not None and g.optimizer not in optimizers:
            continue
        lrs, wds = g.lrs(), g.weight_decays()
        if keep is not None:
            lrs, wds = _middle(lrs, keep), _middle(wds, keep)
        grids.append({"optimizer": g.optimizer, "lr": lrs, "weight_decay": wds})
    return spec.model_validate(spec.model_dump(mode="json") | {"grids": grids} | overrides)


def derive(base: SweepSpec, name: str, description: str, **fields: Any) -> SweepSpec:
    """A spec made from claim 1's: its data, model, batch and seeds unless ``fields`` replace them."""
    return base.model_validate(base.model_dump(mode="json") | {"name": name, "description": description} | fields)


def _middle(values: list[float], keep: int) -> list[float]:
    start = max(0, (len(values) - keep) // 2)
    return values[start : start + keep]


def mean_grid(trials: pd.DataFrame, optimizer: str) -> pd.DataFrame:
    """Mean final test error (%) over seeds per (α, λ) of one optimizer, with the per-seed values' std and count."""
    rows = trials[(trials["optimizer"] == optimizer) & (trials["status"] == "completed")]
    return (
        rows.groupby(["lr", "weight_decay_given"])["test_error"]
        .agg(["mean", "std", "count"])
        .reset_index()
        .rename(columns={"weight_decay_given": "wd"})
    )


@dataclass(frozen=True)
class Best:
    """An optimizer's best cell by the mean over seeds: α, λ as given and raw, mean test error (%) and its seeds'."""

    optimizer: str
    lr: float
    wd: float
    wd_raw: float
    mean: float
    per_seed: dict[int, float]


def best_cell(trials: pd.DataFrame, optimizer: str) -> Best:
    grid = mean_grid(trials, optimizer)
    top = grid.loc[grid["mean"].idxmin()]
    rows = trials[
        (trials["optimizer"] == optimizer) & (trials["lr"] == top["lr"]) & (trials["weight_decay_given"] == top["wd"])
    ]
    return Best(
        optimizer,
        float(top["lr"]),
        float(top["wd"]),
        float(rows["weight_decay"].iloc[0]),
        float(top["mean"]),
        {int(s): float(e) for s, e in zip(rows["seed"], rows["test_error"], strict=True)},
    )


def log2(x: float) -> str:
    """A positive number as 2^k (k to 2 decimals) — the grids' own units."""
    return f"2^{math.log2(x):.2f}" if x > 0 else "0"


def spec_block(spec: SweepSpec) -> str:
    body = json.dumps(spec.model_dump(mode="json", exclude_none=True), indent=1, ensure_ascii=False)
    return f"<details><summary>spec <code>{spec.name}</code></summary>\n\n```json\n{body}\n```\n</details>\n"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided p of Welch's t-test that the means of a and b differ (NaN with fewer than 2 values or no spread)."""
    if min(len(a), len(b)) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def to_normalized(raw: float, spec: SweepSpec, epochs: float) -> float:
    """λ_norm of a raw per-step λ for ``spec``'s data and batch at a budget of ``epochs`` (App. B.1)."""
    return raw / normalized_weight_decay(1.0, spec.batch_size, spec.n_train(), epochs)


# --- The claims -------------------------------------------------------------------------------------------------------
@dataclass
class Claim:
    """One claim's outcome: the README table's row, and the report's body (markdown)."""

    name: str
    title: str
    paper: str
    measured: str = ""
    verdict: str = ""
    why: str = ""
    body: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass
class Context:
    service: Service
    scale: Scale
    out: Path
    best: dict[str, Best] = field(default_factory=dict)  # claim 1's best cells, which claims 3-5 start from
    base: SweepSpec | None = None  # claim 1's spec
    base_sweep: int = 0  # and its sweep


def claim_separability(ctx: Context) -> Claim:
    c = Claim(
        "separability",
        "1. Decoupling makes α and λ separable (Fig. 2)",
        "L2: a diagonal band of good (α, λ); SGDW and AdamW: axis-aligned",
    )
    spec = shrink(load_preset("cpu-fig2"), ctx.scale.grid_values, epochs=ctx.scale.epochs, seeds=ctx.scale.seeds)
    ctx.base = spec
    (sid,) = ctx.service.submit(spec)
    ctx.base_sweep = sid
    trials = ctx.service.trials(sid)
    ctx.best = {o: best_cell(trials, o) for o in ("sgd", "sgdw", "adam", "adamw")}
    ctx.service.heatmap(sid, ctx.out / "separability-heatmap.png")
    comparisons = ctx.service.separability(sid)
    shown, rows, reasons = 0, [], []
    for comp in comparisons:
        l2, dec = comp["l2"], comp["decoupled"]
        shown += comp["outcome"] == "l2_more_coupled"
        for seed in sorted(comp["l2_by_seed"], key=int):
            a, b = comp["l2_by_seed"][seed], comp["decoupled_by_seed"][seed]
            rows.append(
                [f"{l2} vs {dec}", seed, *(_num(x[k]) for k in ("coupling_index", "coupling_slope") for x in (a, b))]
            )
        reasons += [f"{l2} vs {dec}: {r['text']}" for r in comp["reasons"]]
    c.measured = "; ".join(f"{x['l2']} vs {x['decoupled']}: {x['outcome'].replace('_', ' ')}" for x in comparisons)
    c.verdict = SHOWS if shown == 2 else PARTLY if shown == 1 else NOT_SHOWN
    c.why = f"{shown} of 2 pairs have the larger coupling index with L2 on every seed" + (
        f" ({'; '.join(reasons)})" if reasons else ""
    )
    c.body += [
        f"Sweep: {ctx.service.link(sid)} ({len(trials)} cells). The service's verdict, seed by seed "
        "(`GET /sweeps/{id}/separability`; coupling index: 1 coupled, 1/3 a separable bowl; slope of the best λ "
        "against α: −1 a diagonal band, 0 axis-aligned):\n",
        table(["pair", "seed", "index L2", "index decoupled", "slope L2", "slope decoupled"], rows),
        "\n".join(f"- {x['sentence']}" for x in comparisons) + "\n",
        "".join(f"- caution: {r}\n" for r in reasons),
        "![heatmaps](separability-heatmap.png)\n",
        "Best cell of each optimizer (mean test error over seeds):\n",
        _best_table(ctx.best.values()),
        spec_block(spec),
    ]
    return c


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _best_table(bests: Any) -> str:
    rows = [
        [b.optimizer, log2(b.lr), log2(b.wd), f"{b.mean:.2f}", ", ".join(f"{e:.2f}" for e in b.per_seed.values())]
        for b in bests
    ]
    return table(["optimizer", "α", "λ", "mean test error %", "per seed"], rows)


def claim_schedules(ctx: Context) -> Claim:
    c = Claim(
        "schedules",
        "2. A schedule multiplier helps Adam(W); AdamW stays separable under each schedule (Fig. 1)",
        "cosine < step-drop < fixed for Adam and AdamW; AdamW's good region axis-aligned under each",
    )
    assert ctx.base is not None
    schedules: dict[str, dict[str, Any]] = {
        "fixed": {"name": "fixed"},
        "step": {"name": "step"},
        "cosine": {"name": "cosine"},
    }
    bests: dict[str, dict[str, Best]] = {}
    outcomes: dict[str, str] = {}
    # Claim 1's sweep is the cosine one: its Adam and AdamW cells are these cells (same grid, data and seeds).
    specs = [
        shrink(
            ctx.base,
            None,
            ("adam", "adamw"),
            name=f"reproduce-schedule-{name}",
            description=f"make reproduce, claim 2: claim 1's Adam and AdamW grids under the {name} schedule.",
            schedule=schedule,
        )
        for name, schedule in schedules.items()
        if name != "cosine"
    ]
    sids = dict(zip(schedules, [*ctx.service.submit(*specs), ctx.base_sweep], strict=True))
    for name, sid in sids.items():
        trials = ctx.service.trials(sid)
        bests[name] = {o: best_cell(trials, o) for o in ("adam", "adamw")}
        comp = next(x for x in ctx.service.separability(sid) if x["l2"] == "adam")
        outcomes[name] = comp["outcome"]
        ctx.service.heatmap(sid, ctx.out / f"schedules-{name}.png")
        c.body += [f"**{name}** — {ctx.service.link(sid)}: {comp['sentence']}\n", f"![{name}](schedules-{name}.png)\n"]
    rows = [
        [name]
        + [
            f"{bests[name][o].mean:.2f} at α {log2(bests[name][o].lr)}, λ {log2(bests[name][o].wd)}"
            for o in ("adam", "adamw")
        ]
        + [outcomes[name].replace("_", " ")]
        for name in schedules
    ]
    c.body.insert(
        0,
        "Best mean test error (%) per schedule, and the service's verdict on Adam vs AdamW:\n\n"
        + table(["schedule", "Adam", "AdamW", "verdict"], rows),
    )
    helps = [o for o in ("adam", "adamw") if bests["cosine"][o].mean < bests["fixed"][o].mean]
    separable = [s for s, o in outcomes.items() if o == "l2_more_coupled"]
    c.measured = (
        "best error fixed → step → cosine: "
        + "; ".join(f"{o} " + " → ".join(f"{bests[s][o].mean:.2f}" for s in schedules) for o in ("adam", "adamw"))
        + f"; Adam more coupled than AdamW under {len(separable)} of 3 schedules"
    )
    parts = len(helps) / 2 + len(separable) / 3
    c.verdict = SHOWS if parts == 2 else NOT_SHOWN if parts == 0 else PARTLY
    c.why = (
        f"cosine beats a fixed multiplier for {', '.join(helps) or 'neither'}; Adam (L2) is the more coupled on every "
        f"seed under {', '.join(separable) or 'no schedule'}"
    )
    c.body += [spec_block(s) for s in specs]
    return c


def claim_generalization(ctx: Context) -> Claim:
    s = ctx.scale
    c = Claim(
        "generalization",
        "3. AdamW generalizes better than Adam, and is competitive with SGD",
        "≈15 % relative lower test error than Adam (CIFAR-10, ImageNet32)",
    )
    assert ctx.base is not None
    base = ctx.base
    grids = [
        {"optimizer": o, "lr": [b.lr], "weight_decay": [to_normalized(b.wd_raw, base, base.epochs)]}
        for o, b in ctx.best.items()
    ]
    spec = derive(
        base,
        "reproduce-generalization",
        "make reproduce, claim 3: each optimizer at its best cell of claim 1, longer, on more seeds; λ in normalized "
        "units so that it carries over to the longer budget.",
        epochs=s.long_epochs,
        seeds=s.long_seeds,
        grids=grids,
        weight_decay_units="normalized",
    )
    (sid,) = ctx.service.submit(spec)
    trials = ctx.service.trials(sid)
    errors = {o: trials[trials["optimizer"] == o]["test_error"].tolist() for o in ctx.best}
    rows = [
        [
            o,
            f"{np.mean(e):.2f}",
            f"{np.std(e, ddof=1) if len(e) > 1 else math.nan:.2f}",
            len(e),
            ", ".join(f"{x:.2f}" for x in e),
            f"{ctx.best[o].mean:.2f}",
        ]
        for o, e in errors.items()
    ]
    adam, adamw = np.mean(errors["adam"]), np.mean(errors["adamw"])
    p = welch(errors["adam"], errors["adamw"])
    relative = 100 * (adam - adamw) / adam if adam else math.nan
    sgd_best = min(("sgd", "sgdw"), key=lambda o: float(np.mean(errors[o])))
    p_sgd = welch(errors["adamw"], errors[sgd_best])
    c.measured = (
        f"{s.long_epochs} epochs, {len(s.long_seeds)} seeds: Adam {adam:.2f} %, AdamW {adamw:.2f} % "
        f"({relative:+.1f} % relative, Welch p = {p:.2g}); best SGD ({sgd_best}) {np.mean(errors[sgd_best]):.2f} %"
    )
    significant = p < 0.05
    c.verdict = SHOWS if adamw < adam and significant else PARTLY if adamw < adam else NOT_SHOWN
    competitive = np.mean(errors["adamw"]) <= np.mean(errors[sgd_best]) or not p_sgd < 0.05
    c.why = (
        ("AdamW is lower" if adamw < adam else "AdamW is not lower")
        + (", by more than the seed-to-seed spread (p < 0.05)" if significant else ", within the seed-to-seed spread")
        + f"; against {sgd_best} AdamW is {'competitive' if competitive else 'worse'} (p = {p_sgd:.2g})"
    )
    c.body += [
        f"Sweep: {ctx.service.link(sid)}. Each optimizer at its best cell of claim 1 (α as found, λ carried over in "
        f"normalized units: λ_norm = λ·√(B·T/b) at claim 1's T = {base.epochs}), trained for {s.long_epochs} epochs "
        f"on seeds {s.long_seeds[0]}-{s.long_seeds[-1]}. Final test error (%):\n",
        table(["optimizer", "mean", "std", "seeds", "per seed", f"claim 1 ({base.epochs} epochs)"], rows),
        spec_block(spec),
    ]
    return c


def claim_normalized(ctx: Context) -> Claim:
    s = ctx.scale
    c = Claim(
        "normalized-weight-decay",
        "4. Normalized weight decay: the best λ_norm does not move with the budget (App. B.1)",
        "the best raw λ shrinks as the number of epochs grows; the best λ_norm stays put",
    )
    assert ctx.base is not None
    base, best = ctx.base, ctx.best["adamw"]
    centre = {"raw": best.wd_raw, "normalized": to_normalized(best.wd_raw, base, base.epochs)}
    found: dict[str, dict[int, float]] = {"raw": {}, "normalized": {}}
    curves: dict[str, dict[int, pd.DataFrame]] = {"raw": {}, "normalized": {}}
    rows = []
    runs = {}
    for units in ("raw", "normalized"):
        axis = [centre[units] * 2**k for k in s.wd_offsets]
        for epochs in s.budgets:
            runs[units, epochs] = derive(
                base,
                f"reproduce-wd-{units}-{epochs}",
                f"make reproduce, claim 4: AdamW at claim 1's best α, λ in {units} units on steps of √2 around claim "
                f"1's best, {epochs} epochs.",
                epochs=epochs,
                seeds=s.wd_seeds,
                weight_decay_units=units,
                grids=[{"optimizer": "adamw", "lr": [best.lr], "weight_decay": axis}],
            )
    for (units, epochs), sid in zip(runs, ctx.service.submit(*runs.values()), strict=True):
        grid = mean_grid(ctx.service.trials(sid), "adamw").sort_values("wd")
        curves[units][epochs] = grid
        found[units][epochs] = refined_minimum(np.log2(grid["wd"].to_numpy()), grid["mean"].to_numpy())
        i = int(grid["mean"].idxmin())
        rows.append(
            [
                units,
                epochs,
                ctx.service.link(sid),
                log2(float(grid.loc[i, "wd"])),
                f"2^{found[units][epochs]:.2f}",
                f"{grid.loc[i, 'mean']:.2f}",
            ]
        )
    figure = ctx.out / "normalized-weight-decay.png"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, units in zip(axes, ("raw", "normalized"), strict=True):
        for epochs, grid in curves[units].items():
            ax.plot(np.log2(grid["wd"]), grid["mean"], marker="o", label=f"{epochs} epochs")
        ax.set_xlabel(f"log2 λ ({units})")
        ax.set_title(f"AdamW, α = {log2(best.lr)}, λ in {units} units")
        ax.legend()
    axes[0].set_ylabel("test error % (mean over seeds)")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    raw = [found["raw"][e] for e in s.budgets]
    norm = [found["normalized"][e] for e in s.budgets]
    shrinks = all(b < a for a, b in itertools.pairwise(raw))
    # "Stays put": the best λ_norm moves by at most one step of the λ axis across the budgets.
    step = float(np.min(np.diff(s.wd_offsets)))
    put = float(np.ptp(norm)) <= step + 1e-9
    steadier = np.ptp(norm) < np.ptp(raw)
    expected = 0.5 * math.log2(s.budgets[-1] / s.budgets[0])
    c.measured = (
        f"best log2 λ at {'/'.join(map(str, s.budgets))} epochs: raw {' → '.join(f'{x:.2f}' for x in raw)}, "
        f"normalized {' → '.join(f'{x:.2f}' for x in norm)} (λ_norm predicts a raw shift of −{expected:.2f})"
    )
    c.verdict = SHOWS if shrinks and put else PARTLY if shrinks or steadier else NOT_SHOWN
    c.why = (
        f"the best raw λ {'shrinks' if shrinks else 'does not shrink steadily'} with the budget; the best λ_norm "
        f"moves {np.ptp(norm):.2f} octaves across budgets ({'within' if put else 'more than'} one step of the λ axis, "
        f"{step:.2f}) against the raw λ's {np.ptp(raw):.2f}"
    )
    c.body += [
        f"AdamW at claim 1's best α = {log2(best.lr)}; λ on steps of √2 around claim 1's best "
        f"(raw {log2(centre['raw'])}, "
        f"normalized {log2(centre['normalized'])}), seeds {s.wd_seeds}. The best λ is the grid's argmin of the mean "
        "test error, refined by a parabola through it and its two neighbours (in log2 λ):\n",
        table(["units", "epochs", "sweep", "best λ on the grid", "refined", "mean test error %"], rows),
        "![normalized weight decay](normalized-weight-decay.png)\n",
        *(spec_block(spec) for spec in runs.values()),
    ]
    return c


def refined_minimum(x: np.ndarray, y: np.ndarray) -> float:
    """The minimum of y over x: the argmin, moved to the vertex of the parabola through it and its neighbours when
    it has two and the parabola opens upward (clipped to the neighbours)."""
    i = int(np.argmin(y))
    if 0 < i < len(x) - 1:
        a, b, _ = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
        if a > 0:
            return float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))
    return float(x[i])


def claim_restarts(ctx: Context) -> Claim:
    s = ctx.scale
    c = Claim(
        "warm-restarts",
        "5. Warm restarts give AdamW better anytime performance (AdamWR)",
        "AdamWR reaches good errors up to 10× sooner than AdamW with one cosine",
    )
    assert ctx.base is not None
    base, best = ctx.base, ctx.best["adamw"]
    ends, period, t = [], float(s.t_0), 0.0
    while t + period <= s.restart_epochs:
        t += period
        ends.append(int(t))
        period *= 2
    specs = [
        derive(
            base,
            f"reproduce-restarts-{name}",
            f"make reproduce, claim 5: AdamW at claim 1's best cell (raw λ) under {name}, {s.restart_epochs} epochs.",
            epochs=s.restart_epochs,
            seeds=s.restart_seeds,
            schedule=schedule,
            weight_decay_units="raw",
            grids=[{"optimizer": "adamw", "lr": [best.lr], "weight_decay": [best.wd_raw]}],
        )
        for name, schedule in (("cosine", {"name": "cosine"}), ("warm_restarts", RESTARTS | {"t_0": s.t_0}))
    ]
    curves: dict[str, pd.Series] = {}
    for name, sid in zip(("cosine", "warm_restarts"), ctx.service.submit(*specs), strict=True):
        curves[name] = ctx.service.epochs(sid).groupby("epoch")["test_error"].mean()
        c.body.append(f"- {name}: {ctx.service.link(sid)}\n")
    cos, wr = curves["cosine"], curves["warm_restarts"]
    rows, wins = [], 0
    for e in ends:
        reached = cos[cos <= wr[e]]
        first = int(reached.index[0]) if len(reached) else None
        wins += e < s.restart_epochs and wr[e] < cos[e]
        rows.append(
            [
                e,
                f"{wr[e]:.2f}",
                f"{cos[e]:.2f}",
                "never" if first is None else first,
                "–" if first is None else f"{first / e:.1f}×",
            ]
        )
    early = [e for e in ends if e < s.restart_epochs]
    anytime_figure(cos, wr, ends, s, ctx.out / "warm-restarts.png")
    final = f"final {wr.iloc[-1]:.2f} vs {cos.iloc[-1]:.2f} %"
    c.measured = (
        f"AdamWR lower than one cosine at {wins} of {len(early)} restarts before the end "
        f"({', '.join(f'epoch {e}: {wr[e]:.2f} vs {cos[e]:.2f} %' for e in early)}); {final}"
    )
    c.verdict = SHOWS if early and wins == len(early) else PARTLY if wins else NOT_SHOWN
    c.why = (
        f"at the end of each restart period before the last, AdamWR's error against one cosine's "
        f"({wins}/{len(early)} lower); {final}"
    )
    c.body.insert(
        0,
        (
            f"AdamW at claim 1's best cell (α {log2(best.lr)}, raw λ {log2(best.wd_raw)}), seeds {s.restart_seeds}, "
            f"{s.restart_epochs} epochs. At the end of each AdamWR period (η_t back near 0) — and the epoch at which "
            "one cosine first gets as low:\n\n"
            + table(["epoch", "AdamWR %", "cosine %", "cosine reaches it at epoch", "speed-up"], rows)
            + "\n![anytime](warm-restarts.png)\n"
        ),
    )
    c.body += [spec_block(spec) for spec in specs]
    return c


def anytime_figure(cos: pd.Series, wr: pd.Series, ends: list[int], s: Scale, path: Path) -> None:
    """Test error against epochs, one cosine and AdamWR, log scale (errors span 1-90 %), restarts marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(cos.index, cos.to_numpy(), label=f"AdamW, cosine over {s.restart_epochs} epochs")
    ax.plot(wr.index, wr.to_numpy(), label=f"AdamWR, t_0 = {s.t_0}, t_mult = 2")
    for e in ends:
        ax.axvline(e, color="grey", lw=0.5)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error % (mean over seeds)")
    ax.grid(True, which="both", axis="y", lw=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CLAIMS: Final[list[Callable[[Context], Claim]]] = [
    claim_separability,
    claim_schedules,
    claim_generalization,
    claim_normalized,
    claim_restarts,
]


# --- Reports ----------------------------------------------------------------------------------------------------------
def machine() -> str:
    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except OSError:
        sha, dirty = "", ""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu or platform.machine()}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, git {sha.strip() or 'unknown'}{' (with uncommitted changes)' if dirty else ''}"
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def write_report(claim: Claim, out: Path, about: str) -> None:
    text = [
        f"# {claim.title}\n",
        f"**Paper:** {claim.paper}.  \n**Measured:** {claim.measured}.  \n"
        f"**Verdict: {claim.verdict}** — {claim.why}.\n",
        *claim.body,
        f"\nWall time {claim.wall_s:.0f} s. {about}\n",
    ]
    (out / f"{claim.name}.md").write_text("\n".join(text))


def write_index(claims: list[Claim], out: Path, about: str, wall_s: float, quick: bool) -> None:
    rows = [[f"[{c.title}]({c.name}.md)", c.paper, c.measured, f"**{c.verdict}**: {c.why}"] for c in claims]
    text = [
        "# Does it reproduce?\n",
        "Made by `make reproduce` (`bench/reproduce.py`) through the service, as a user would: MNIST-1D, the BatchNorm "
        "CNN cnn1d, batch 128, CPU scale."
        + (" **QUICK MODE: tiny grids, the verdicts mean nothing.**" if quick else "")
        + "\n",
        table(["claim", "what the paper shows", "what wdgrid measured", "verdict"], rows),
        f"\nAll five: {wall_s / 60:.1f} minutes. {about}\n",
        "The sweep links open the web page of the controller that ran them. `make reproduce` keeps its store in "
        "`.reproduce/` (not in git): `WDGRID_DATABASE_URL=sqlite:///.reproduce/wdgrid.db make run` serves it on "
        "http://127.0.0.1:8000 — on a fresh clone, after a `make reproduce` of its own.\n",
    ]
    (out / "README.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="Tiny grids and budgets: the pipeline only.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results", help="Reports and figures go here.")
    parser.add_argument("--work", type=Path, default=ROOT / ".reproduce", help="The own controller's store and logs.")
    parser.add_argument("--url", help="A running controller to use instead of one of our own ($WDGRID_API_TOKEN).")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    about = f"Machine: {machine()}."
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.url:
            token = os.environ.get("WDGRID_API_TOKEN", "")
            client = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            service = Service(stack.enter_context(client), args.url.rstrip("/"))
        else:
            service = stack.enter_context(own_service(args.work, scale.concurrent_sweeps))
            about += f" Store: `{args.work / 'wdgrid.db'}`."
        ctx = Context(service, scale, args.out)
        done = []
        for run in CLAIMS:
            t0 = time.monotonic()
            claim = run(ctx)
            claim.wall_s = time.monotonic() - t0
            write_report(claim, args.out, about)
            done.append(claim)
            print(f"\n{claim.title}: {claim.verdict} — {claim.measured} ({claim.wall_s:.0f} s)\n", flush=True)
    wall = time.monotonic() - started
    write_index(done, args.out, about, wall, args.quick)
    print(f"reproduce: {len(done)} claims in {wall / 60:.1f} min; {args.out / 'README.md'}")
    for c in done:
        print(f"  {c.verdict:>14}  {c.title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
