"""Is wdgrid ready for a GPU? One prepared script: every built-in model on the device, bundles against one cell at a
time, and a smoke sweep end to end. Within ~8 minutes on one CUDA GPU; ``--device cpu`` runs the same code paths at
tiny sizes (``tests/bench/test_gpu_check.py`` does, in ``make test``).

    .venv/bin/python bench/gpu_check.py                  # CUDA when present, else the CPU at tiny sizes
    .venv/bin/python bench/gpu_check.py --device cpu     # the tiny CPU run

(a) **Agreement.** Every built-in model trains a few steps on random data of its input shape, each of 3 cells alone
    through ``train()`` and the 3 together through ``train_bundle()`` (batched where the model batches on this
    device), under one precision policy: the largest relative difference of the cells' final train and test losses.
    Tolerances: float64 1e-6 (the same arithmetic, summed in another order); float32 2e-2 (on a GPU, cuDNN runs
    float32 convolutions in TF32 — 10-bit mantissas — and a grouped convolution rounds otherwise than K plain ones).
(b) **Throughput and (d) peak memory.** cnn1d (MNIST-1D-shaped) and resnet20 (CIFAR-shaped) bundles of K cells
    against one cell at a time in the same process, alternating: cell-steps per second, their ratio, and the peak
    memory of each K (CUDA: the allocator's peak; CPU: the process's peak RSS). A K that does not fit says so. The
    goal on a GPU: cnn1d ≥ 10× at K = 64.
(c) **A smoke sweep end to end**: ``wdgrid run --preset smoke`` into a fresh SQLite store; every cell must finish, and
    on a GPU every cell must have trained on it (the store's provenance says where).

Exit status 0 when (a) and (c) hold; the tables are printed either way.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from sweeps import TrainingConfig  # noqa: E402
from workers.bundle import batchable, train_bundle  # noqa: E402
from workers.data import DeviceData  # noqa: E402
from workers.models import MODELS  # noqa: E402
from workers.train import resolve_device, steps_per_epoch, train  # noqa: E402

SHAPES = {"mlp": (40,), "cnn1d": (40,), "digits_cnn": (1, 8, 8)}  # the rest: 3×32×32 images (CIFAR, ImageNet32)
TOLERANCE = {"float64": 1e-6, "float32": 2e-2}


def random_data(model: str, n_train: int, n_test: int, device: torch.device) -> DeviceData:
    """Random examples of ``model``'s input shape, 10 classes: features for the small models, uint8 images with
    normalization and crop + flip augmentation (the real image path) for the CIFAR models."""
    gen = torch.Generator().manual_seed(0)
    labels = lambda n: torch.randint(0, 10, (n,), generator=gen)  # noqa: E731
    shape = SHAPES.get(model)
    if shape is not None:
        x = lambda n: torch.randn((n, *shape), generator=gen)  # noqa: E731
        return DeviceData(model, x(n_train), labels(n_train), x(n_test), labels(n_test), 10).to(device)
    img = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)  # noqa: E731
    return DeviceData(
        "cifar10",
        img(n_train),
        labels(n_train),
        img(n_test),
        labels(n_test),
        10,
        mean=torch.full((3,), 0.5),
        std=torch.full((3,), 0.25),
        augment=True,
    ).to(device)


def configs(model: str, k: int, precision: str, batch_size: int, epochs: int = 1) -> list[dict[str, Any]]:
    """K cells of one bundle: AdamW at K learning rates around 1e-3 (small steps: the check compares, not trains)."""
    base: dict[str, Any] = {"dataset": "cifar10" if model not in SHAPES else "mnist1d", "model": model}
    base["optimizer"] = "adamw"
    base |= {"weight_decay": 1e-4, "epochs": epochs, "batch_size": batch_size, "precision": precision, "seed": 0}
    return [base | {"lr": 1e-3 * (1 + i / 4)} for i in range(k)]


def agreement(device: torch.device, tiny: bool, models: list[str]) -> list[dict[str, Any]]:
    """(a): per model and precision, how the bundle trained it and the largest relative loss difference."""
    n_train, batch = (8, 4) if tiny else (512, 128)
    rows = []
    for model in models:
        data = random_data(model, n_train, batch, device)
        for precision in ("float32", "float64"):
            start = time.perf_counter()
            cells = configs(model, 3, precision, batch)
            kind = batchable(TrainingConfig.from_dict(cells[0]), data)
            bundle = train_bundle(cells, device=device, data=data)
            alone = [train(c, device=device, data=data) for c in cells]
            worst = 0.0
            for b, a in zip(bundle, alone, strict=True):
                if b.status != "completed" or a.status != "completed":
                    worst = float("inf")
                    continue
                last_b, last_a = b.history[-1], a.history[-1]
                for x, y in ((last_b.train_loss, last_a.train_loss), (last_b.test_loss, last_a.test_loss)):
                    worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
            batched = kind == "explicit" or (kind == "vmap" and device.type == "cuda")
            rows.append(
                {
                    "model": model,
                    "precision": precision,
                    "bundle": f"batched ({kind})" if batched else "one at a time",
                    "steps": steps_per_epoch(n_train, batch),
                    "rel_diff": worst,
                    "ok": worst <= TOLERANCE[precision],
                    "seconds": time.perf_counter() - start,
                }
            )
            print(_agreement_line(rows[-1]), flush=True)
    return rows


def _agreement_line(r: dict[str, Any]) -> str:
    verdict = "ok" if r["ok"] else f"FAILS (tolerance {TOLERANCE[r['precision']]:.0e})"
    return (
        f"{r['model']:<22} {r['precision']:<8} {r['bundle']:<18} {r['steps']:>5} {r['rel_diff']:>12.2e} "
        f"{r['seconds']:>6.1f}  {verdict}"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], object]) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(device: torch.device, model: str, ks: list[int], n_train: int, batch: int) -> list[dict[str, Any]]:
    """(b) and (d): cell-steps/s of K-cell bundles against one cell at a time, alternating, after a warm-up."""
    data = random_data(model, n_train, batch, device)
    steps = steps_per_epoch(n_train, batch)
    one = configs(model, 1, "float32", batch)
    train(one[0], device=device, data=data)  # warm-up: kernels, cuDNN's choices
    rows = []
    for k in ks:
        cells = configs(model, k, "float32", batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            train_bundle(cells, device=device, data=data)  # this K's warm-up
            bundle_s = _timed(device, functools.partial(train_bundle, cells, device=device, data=data))
        except torch.OutOfMemoryError:
            rows.append({"model": model, "k": k, "oom": True})
            print(f"{model:<9} {k:>4}  out of memory", flush=True)
            continue
        peak = _peak_mb(device)
        single_s = _timed(device, lambda: train(one[0], device=device, data=data))
        single, bundled = steps / single_s, k * steps / bundle_s
        rows.append({"model": model, "k": k, "oom": False, "peak_mb": peak, "single": single, "bundle": bundled})
        print(f"{model:<9} {k:>4} {single:>14.1f} {bundled:>14.1f} {bundled / single:>7.2f} {peak:>9.0f}", flush=True)
    return rows


def smoke(device: torch.device, folder: str) -> tuple[bool, str]:
    """(c): ``wdgrid run --preset smoke`` in a fresh store; ok when every cell finished (on the GPU, on a GPU)."""
    from results import SqlStorage

    url = f"sqlite:///{folder}/gpu-check.db"
    cmd = [os.path.join(os.path.dirname(sys.executable), "wdgrid"), "run", "--preset", "smoke", "--db", url]
    if device.type != "cuda":
        cmd += ["--gpus-per-trial", "0"]
    env = dict(os.environ, WDGRID_DATA_DIR=os.path.join(folder, "data"))
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return False, f"wdgrid run exited {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    with SqlStorage(url, migrate=False) as store:
        (sweep,), _ = store.list_sweeps(limit=1)
        trials, _ = store.trials(sweep.id, limit=100)
    statuses = sorted({t.status for t in trials})
    devices = sorted({t.provenance.device or "?" for t in trials})
    finished = all(t.status in ("completed", "diverged") for t in trials)
    on_device = device.type != "cuda" or all((t.provenance.device or "").startswith("cuda") for t in trials)
    line = f"sweep {sweep.status}, {len(trials)} cells {statuses}, trained on {devices}, {wall:.0f} s end to end"
    return finished and on_device and sweep.status == "completed", line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="bundle sizes [GPU: 1 16 64 256; CPU: 1 4]")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="for (a) [all]")
    parser.add_argument("--skip-smoke", action="store_true", help="leave out (c), the sweep through `wdgrid run`")
    args = parser.parse_args()
    device = resolve_device(args.device)
    tiny = device.type != "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; sizes: {'tiny (CPU)' if tiny else 'GPU'}")

    print("\n(a) train() alone vs train_bundle(), 3 cells, one epoch of random data")
    print(f"{'model':<22} {'dtype':<8} {'bundle':<18} {'steps':>5} {'max rel diff':>12} {'s':>6}  verdict")
    agree = agreement(device, tiny, args.models)

    ks = args.ks or ([1, 4] if tiny else [1, 16, 64, 256])
    print("\n(b, d) throughput: cell-steps/s of one cell alone and of a K-cell bundle (float32), peak memory")
    print(f"{'model':<9} {'K':>4} {'alone steps/s':>14} {'bundle c-st/s':>14} {'ratio':>7} {'peak MB':>9}")
    for model, n_train, batch in (("cnn1d", 4000, 128), ("resnet20", 2048, 128)):
        throughput(device, model, ks, *((64, 16) if tiny else (n_train, batch)))
    if tiny:
        print("(the goal, cnn1d ≥ 10× at K = 64, is a GPU's; these are tiny CPU sizes)")

    smoke_ok, smoke_line = True, "not run (--skip-smoke)"
    if not args.skip_smoke:
        with tempfile.TemporaryDirectory(prefix="wdgrid-gpu-check-") as folder:
            smoke_ok, smoke_line = smoke(device, folder)
    print(f"\n(c) wdgrid run --preset smoke: {smoke_line}: {'ok' if smoke_ok else 'FAILS'}")

    ok = all(r["ok"] for r in agree) and smoke_ok
    print(f"\ngpu_check: {'ok' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
