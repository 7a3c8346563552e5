"""bench/gpu_check.py runs on a CPU at tiny sizes, so the script a GPU machine runs once is known to work: every model
agrees between train() and train_bundle(), the throughput table prints, and a smoke sweep finishes through
`wdgrid run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_passes_on_a_cpu_at_tiny_sizes():
    # Shake-Shake (≈75 s here for both sizes in two precisions) trains one cell at a time on any device: its
    # agreement is train()'s own (tests/workers/test_bundle.py); left out to keep make test short.
    models = ["mlp", "cnn1d", "digits_cnn", "resnet20"]
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--models", *models]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    agreement = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in models]
    checked = {(row[0], row[1]) for row in agreement if row[-1] == "ok" and row[1] in ("float32", "float64")}
    assert checked == {(m, p) for m in models for p in ("float32", "float64")}
    for model in ("mlp", "cnn1d", "digits_cnn"):  # the CPU batches every model that has its own batched forward
        assert any(row[:4] == [model, "float32", "batched", "(explicit)"] for row in agreement)
    throughput = [row for row in agreement if row[1] in ("1", "4")]
    assert {(row[0], row[1]) for row in throughput} == {
        ("cnn1d", "1"),
        ("cnn1d", "4"),
        ("resnet20", "1"),
        ("resnet20", "4"),
    }
    assert "(c) wdgrid run --preset smoke: sweep completed, 8 cells ['completed'], trained on ['cpu']" in out
    assert out.rstrip().endswith("gpu_check: ok")
