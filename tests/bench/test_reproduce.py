"""`make reproduce`'s pipeline, on tiny grids (`bench/reproduce.py --quick`): a controller of its own, every claim's
sweeps through HTTP, the downloads, a report per claim and the table of all five. The verdicts of such tiny grids
mean nothing; that they are computed, written and linked does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.reproduce import NOT_SHOWN, PARTLY, SHOWS, refined_minimum, shrink
from sweeps import SweepSpec, load_preset

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["separability", "schedules", "generalization", "normalized-weight-decay", "warm-restarts"]


@pytest.mark.timeout(900)
def test_quick_reproduce_writes_every_claim_from_sweeps_it_ran_through_the_service(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, "-m", "bench.reproduce", "--quick", "--out", str(out), "--work", str(work)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    index = (out / "README.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert [re.search(r"\]\(([^)]+)\.md\)", r).group(1) for r in rows] == NAMES  # type: ignore[union-attr]
    assert "QUICK MODE" in index
    linked: set[int] = set()
    for name in NAMES:
        report = (out / f"{name}.md").read_text()
        verdict = re.search(r"\*\*Verdict: ([a-z ]+)\*\*", report)
        assert verdict and verdict.group(1) in (SHOWS, PARTLY, NOT_SHOWN), name
        assert "git " in report and "Wall time" in report
        for figure in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
            assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        # Every spec shown is one the service accepted: valid, and linked to the sweep that ran it.
        specs = re.findall(r"```json\n(.*?)\n```", report, re.S)
        assert specs, name
        for text in specs:
            SweepSpec.model_validate(json.loads(text))
        linked |= {int(i) for i in re.findall(r"\[sweep (\d+)\]\(http://127\.0\.0\.1:8000/ui/sweeps/\1\)", report)}
    # 1 (claim 1) + 2 (fixed, step; cosine is claim 1's) + 1 + 4 (2 units × 2 budgets) + 2 sweeps, all completed,
    # in the store the reports point at.
    assert linked == set(range(1, 11))
    assert (work / "wdgrid.db").stat().st_size > 0


def test_refined_minimum_is_the_vertex_of_the_parabola_through_the_best_cell_and_its_neighbours() -> None:
    x = np.array([-8.0, -7.5, -7.0, -6.5, -6.0])
    assert refined_minimum(x, (x + 6.8) ** 2 + 3) == pytest.approx(-6.8)
    assert refined_minimum(x, np.array([5.0, 4.0, 3.0, 2.0, 1.0])) == -6.0  # on the edge: the edge, not beyond
    assert refined_minimum(x, np.array([5.0, 4.0, 1.0, 1.0, 1.0])) == pytest.approx(-6.75)  # a tie: between


def test_shrink_keeps_the_middle_of_each_axis_and_the_named_optimizers() -> None:
    spec = shrink(load_preset("cpu-fig2"), 2, ("adam", "adamw"), epochs=2)
    assert [g.optimizer for g in spec.grids] == ["adam", "adamw"]
    assert spec.grids[0].lrs() == [2.0**-8, 2.0**-7] and spec.grids[0].weight_decays() == [2.0**-8, 2.0**-7]
    assert spec.epochs == 2
