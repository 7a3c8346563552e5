"""bench/batched_step.py runs on a tiny bundle and prints every table the README quotes from it (not its timings:
those are the bench's, on a quiet machine)."""

from __future__ import annotations

import re

import pytest

from bench import batched_step


def test_the_batched_step_bench_prints_ratios_operators_and_kernels(capsys: pytest.CaptureFixture[str]):
    batched_step.main(["--k", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+([12])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"] and all(float(v) > 0 for r in rows for v in r[1:])
    assert "_GroupedConvBackward" in out  # the profile names the convolutions (workers.fused's, built by make test)
    assert re.search(r"^\s+grouped\s+chan-last\s+2 single\s+wdgrid$", out, re.M)
    for part in ("forward", "backward, input", "backward, weight"):
        assert re.search(rf"^{part}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), part
