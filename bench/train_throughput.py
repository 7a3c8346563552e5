"""Training throughput: one cell at a time with ``train()`` against ``train_bundle()`` at K = 1, 4, 16, 64.

For each K a fresh process (as a runner's worker would be) alternates one-at-a-time ``train()`` cells with K-cell
bundles on the same data and device: bundle, cell, bundle, cell. The first bundle pays the process's warm-up (kernel
initialization); the second is the steady state of a worker that trains bundle after bundle (as the runner's
reused actors will). Ratios compare cell-steps per second within one process.

    .venv/bin/python bench/train_throughput.py                   # cnn1d 20 epochs, mlp/digits_cnn 10; resnet20 small
    .venv/bin/python bench/train_throughput.py --device cuda --ks 1 4 16 64

Printed per K: cell-epochs/s of train() and of the bundle (steady state and first, compilation included), their
ratio, peak memory (the process's peak RSS on CPU, peak allocated CUDA memory on a GPU), and the achieved GFLOP/s of
one cell and of the bundle — one cell's matmul and convolution FLOPs over one epoch (torch's FlopCounterMode), K times
for K cells, divided by the measured time — against this process's float32 matmul peak: how far from the limit.
cnn1d, then ``--small-models`` (mlp on MNIST-1D, digits_cnn on 8×8 digits), then resnet20 on CIFAR-shaped data.
Then the fixed cost of a cell — process start, imports, data, model build — against its training time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {"cnn1d": "mnist1d", "mlp": "mnist1d", "digits_cnn": "digits"}  # resnet20: random CIFAR-shaped images


def measure(model: str, k: int, device: str, epochs: int, n_train: int) -> dict[str, Any]:
    """One process: alternate bundles of K cells with single cells; return timings (run in a child process)."""
    import torch

    from sweeps import TrainingConfig
    from workers.bundle import train_bundle
    from workers.train import load_data, resolve_device, steps_per_epoch, train

    dev = resolve_device(device)
    base = {"model": model, "optimizer": "sgdw", "weight_decay": 5e-4, "epochs": epochs, "batch_size": 128}
    if model in DATASETS:
        base["dataset"] = DATASETS[model]
        data = load_data(TrainingConfig.from_dict(base | {"lr": 0.1}), dev)
    else:
        sys.path.insert(0, ROOT)  # run as a script: bench/ is on the path, the checkout is not
        from bench.gpu_check import random_data

        base["dataset"] = "cifar10"
        data = random_data(model, n_train, 256, dev)  # random uint8 images, the real augmentation path
    configs = [base | {"lr": 0.01 * 2 ** (i % 6)} for i in range(k)]
    steps = epochs * steps_per_epoch(data.n_train, 128)

    def timed(fn: Any) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    bundle_times, single_times = [], []
    for _ in range(2):
        bundle_times.append(timed(lambda: train_bundle(configs, device=dev, data=data)))
        single_times.append(timed(lambda: train(configs[0], device=dev, data=data)))
    peak = (
        torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    # Useful FLOPs: K cells do K times one cell's arithmetic however they are batched. Counted on one cell (torch's
    # FlopCounterMode counts a grouped convolution's backward as if it were not grouped, ~K times too much); matmuls
    # and convolutions only: the elementwise work of BatchNorm, ReLU, the loss and the optimizer is not in them.
    flops_single = epoch_flops(configs[:1], dev, data)
    return {
        "model": model,
        "k": k,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
        "steps_per_cell": steps,
        "epochs": epochs,
        "bundle_first_s": bundle_times[0],
        "bundle_steady_s": bundle_times[1],
        "single_s": statistics.median(single_times),
        "peak_mb": peak,
        "gflop_bundle": k * flops_single * epochs / 1e9,
        "gflop_single": flops_single * epochs / 1e9,
        "matmul_peak_gflops": matmul_peak(dev),
    }


def epoch_flops(configs: list[dict[str, Any]], dev: Any, data: Any) -> float:
    """Matmul and convolution FLOPs of one epoch of these cells, training and test evaluation both."""
    from torch.utils.flop_counter import FlopCounterMode

    from workers.bundle import train_bundle

    counter = FlopCounterMode(display=False)
    with counter:
        train_bundle([c | {"epochs": 1} for c in configs], device=dev, data=data)
    return float(counter.get_total_flops())


def matmul_peak(dev: Any) -> float:
    """This process's float32 matmul rate in GFLOP/s (best of 10 products of two 2048×2048 matrices, with the
    threads training uses): the roof the batched step's GFLOP/s is measured against."""
    import torch

    a, b = torch.randn(2048, 2048, device=dev), torch.randn(2048, 2048, device=dev)
    best = float("inf")
    for _ in range(10):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def fixed_cost(device: str) -> float:
    """Seconds for a fresh process to import torch and wdgrid, load MNIST-1D (cached) and build cnn1d."""
    code = (
        "from sweeps import TrainingConfig; from workers.train import load_data, resolve_device;"
        "from workers.models import build_model;"
        f"d = load_data(TrainingConfig('mnist1d', 'cnn1d', 'sgdw', 0.1, 0.0, 1, 128), resolve_device('{device}'));"
        "build_model('cnn1d', d.input_shape, d.n_classes)"
    )
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def child(args: argparse.Namespace, model: str, k: int, epochs: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", model, str(k), str(epochs), "--device", args.device]
    cmd += ["--resnet-train", str(args.resnet_train)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def report(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print(f"\n{first['model']}: {first['epochs']} epochs, {first['steps_per_cell']} steps per cell; {first['device']}")
    print(
        f"{'K':>3} {'train() cell-ep/s':>18} {'bundle cell-ep/s':>17} {'ratio':>6} "
        f"{'1st bundle cell-ep/s':>21} {'ratio':>6} {'peak MB':>8} {'GFLOP/s 1':>10} {'GFLOP/s K':>10} {'% of peak':>9}"
    )
    for r in rows:
        k, e = r["k"], r["epochs"]
        single = e / r["single_s"]
        steady = k * e / r["bundle_steady_s"]
        first = k * e / r["bundle_first_s"]
        print(
            f"{k:>3} {single:>18.2f} {steady:>17.2f} {steady / single:>6.2f} "
            f"{first:>21.2f} {first / single:>6.2f} {r['peak_mb']:>8.0f} {r['gflop_single'] / r['single_s']:>10.1f} "
            f"{r['gflop_bundle'] / r['bundle_steady_s']:>10.1f} "
            f"{100 * r['gflop_bundle'] / r['bundle_steady_s'] / r['matmul_peak_gflops']:>8.1f}%"
        )
    peaks = ", ".join(f"{r['matmul_peak_gflops']:.0f}" for r in rows)
    print(f"% of peak: of this process's float32 matmul rate (2048×2048, its threads), per K: {peaks} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--epochs", type=int, default=20, help="cnn1d epochs per bundle")
    parser.add_argument("--small-models", nargs="*", default=["mlp", "digits_cnn"], help="measured like cnn1d")
    parser.add_argument("--small-epochs", type=int, default=10, help="epochs per bundle of --small-models")
    parser.add_argument("--resnet-epochs", type=int, default=1)
    parser.add_argument("--resnet-train", type=int, default=512, help="random CIFAR-shaped training images")
    parser.add_argument("--resnet-ks", type=int, nargs="+", default=None, help="default: --ks, capped at 16 on CPU")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "K", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, k, epochs = args.child
        print(json.dumps(measure(model, int(k), args.device, int(epochs), args.resnet_train)))
        return

    import torch

    on_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    cnn = [child(args, "cnn1d", k, args.epochs) for k in args.ks]
    report(cnn)
    for model in args.small_models:
        report([child(args, model, k, args.small_epochs) for k in args.ks])
    resnet_ks = args.resnet_ks or (args.ks if on_gpu else [k for k in args.ks if k <= 16])
    if not args.skip_resnet:
        report([child(args, "resnet20", k, args.resnet_epochs) for k in resnet_ks])

    fixed = fixed_cost(args.device)
    print(f"\nfixed cost of a process (start, imports, data, model): {fixed:.2f} s")
    print(
        f"cnn1d cell, {cnn[0]['epochs']} epochs, trained alone: {statistics.median(r['single_s'] for r in cnn):.2f} s"
    )
    for r in cnn:
        train_s = r["bundle_steady_s"] / r["k"]
        print(
            f"  one process per bundle of K={r['k']:>2}: fixed cost {fixed / r['k']:.3f} s per cell = "
            f"{100 * fixed / r['k'] / train_s:.1f}% of its {train_s:.2f} s of training"
        )


if __name__ == "__main__":
    main()
