"""bench/coupling_index.py on the kept grids: it runs, and the claim the README quotes from it holds."""

from __future__ import annotations

import re

import pytest

from bench import coupling_index


def test_the_anchored_index_varies_less_from_seed_to_seed_than_the_best_cell_one(capsys: pytest.CaptureFixture[str]):
    coupling_index.main([])
    out = capsys.readouterr().out
    spreads = {
        group: dict(re.findall(r"([\w-]+) ([\d.]+)", line.split(":", 1)[1]))
        for group, line in (
            (g, next(x for x in out.splitlines() if f"{g} grids" in x)) for g in ("measured", "synthetic")
        )
    }
    for group in ("measured", "synthetic"):
        assert float(spreads[group]["anchored"]) < float(spreads[group]["best-cell"])
    assert "digits (noisy)" in out and "sgd−sgdw" in out
