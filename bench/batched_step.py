"""Where a batched training step's time goes on a CPU (issue 17, goals 4 and 5): one cnn1d step (forward, backward,
the paper's SGDW step) of K cells as one batched model (``workers.bundle.StackedCells``, the cells side by side as
channel groups) against one cell's step (``workers.train.OneCell``), on the same MNIST-1D batches.

Printed:

- per thread count (1: what a 1-CPU trial gets; 2: this machine): ms per step of one cell and of the K-cell model,
  their ratio (how many times one cell's throughput the batched model reaches), and the batched step's achieved
  GFLOP/s (one cell's matmul and convolution FLOPs, torch's FlopCounterMode, times K) against this process's
  float32 matmul peak at those threads; then the K-cell step unfused (PyTorch's own convolution,
  BatchNorm and ReLU operators instead of ``workers.fused``'s) and its ratio;
- the batched step's operators as torch.profiler ranks them (self CPU time, 1 thread);
- one convolution layer of the K cells (cnn1d's second: 16 → 16 channels, width 5, stride 2, 40 → 20 positions,
  batch 128) as one grouped convolution, oneDNN's on B×(K·C)×L and on channels-last B×(K·C)×1×L activations and
  ``workers.fused``'s on the latter, forward and each half of its backward, against K single-cell ones;
- with ``--compile``, the batched step under ``torch.compile`` (inductor): its compile time and step time.

The process keeps the memory a step frees (``workers.run.keep_freed_memory``, as the training loop does on a CPU);
``--default-malloc`` leaves glibc's defaults, to compare whole runs of this script with and without it.

Rounds alternate the three (one cell, batched, batched unfused); the table gives medians over rounds.

    .venv/bin/python bench/batched_step.py [--k 16] [--rounds 5] [--compile] [--default-malloc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import workers.fused  # noqa: E402
from bench.train_throughput import matmul_peak  # noqa: E402
from sweeps import TrainingConfig  # noqa: E402
from workers.bundle import StackedCells  # noqa: E402
from workers.run import keep_freed_memory  # noqa: E402
from workers.train import Cells, OneCell, PrecisionPolicy, cross_entropies, load_data, resolve_device  # noqa: E402

BASE: dict[str, Any] = {
    "dataset": "mnist1d",
    "model": "cnn1d",
    "optimizer": "sgdw",
    "weight_decay": 5e-4,
    "epochs": 1,
    "batch_size": 128,
}
Step = Callable[[torch.Tensor, torch.Tensor], None]


def make_step(cells: Cells, k: int, compiled: bool = False) -> Step:
    """One training step of ``cells``: forward, the sum of the per-cell mean losses, backward, optimizer step."""

    def losses(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropies(cells.forward(x), y, k, "mean")  # the training loop's own loss

    loss_fn = torch.compile(losses, dynamic=False) if compiled else losses

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        total = loss_fn(x, y).sum()
        cells.optimizer.zero_grad(set_to_none=True)
        total.backward()
        cells.optimizer.step()

    return step


def unfused(step: Step) -> Step:
    """``step`` with PyTorch's own operators for what ``workers.fused`` fuses (``ENABLED`` off while it runs)."""

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        workers.fused.ENABLED = False
        try:
            step(x, y)
        finally:
            workers.fused.ENABLED = True

    return run


def per_step_ms(step: Step, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return (time.perf_counter() - start) / len(batches) * 1e3


def step_flops(step: Step, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(*batch)
    return float(counter.get_total_flops())


def bench_kernels(k: int, rounds: int) -> None:
    """cnn1d's second convolution for K cells: one grouped convolution (oneDNN's) on B×(K·C)×L activations, the
    same on channels-last B×(K·C)×1×L images, ``workers.fused``'s on those (what ``CNN1d.batched_forward`` runs where
    the kernels are built), and K single-cell convolutions."""
    b, c, length, stride = 128, 16, 40, 2
    out_len = (length + 4 - 5) // stride + 1
    backward = torch.ops.aten.convolution_backward

    def conv(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, mask: list[bool]) -> Any:
        if x.dim() == 3 and x.shape[1] == length:  # workers.fused's rows: batch × positions × channels
            assert kernels is not None
            if not any(mask):
                return kernels.grouped_conv_forward(x, w, k, stride, 2)
            return kernels.grouped_conv_backward(g, x, w, k, stride, 2, mask[0], mask[1])
        groups, two_d = x.shape[1] // c, x.dim() == 4
        st, pad = ([1, stride], [0, 2]) if two_d else ([stride], [2])
        if not any(mask):
            return (F.conv2d if two_d else F.conv1d)(x, w, stride=st, padding=pad, groups=groups)
        return backward(g, x, w, None, st, pad, [1] * len(st), False, [0] * len(st), groups, mask)

    cl = torch.channels_last
    kinds = {
        "grouped": (torch.randn(b, k * c, length), torch.randn(k * c, c, 5), torch.randn(b, k * c, out_len), 1),
        "chan-last": (
            torch.randn(b, k * c, 1, length).contiguous(memory_format=cl),
            torch.randn(k * c, c, 1, 5).contiguous(memory_format=cl),
            torch.randn(b, k * c, 1, out_len).contiguous(memory_format=cl),
            1,
        ),
        f"{k} single": (torch.randn(b, c, length), torch.randn(c, c, 5), torch.randn(b, c, out_len), k),
    }
    kernels = workers.fused.extension()
    if kernels is not None:
        kinds["wdgrid"] = (torch.randn(b, length, k * c), torch.randn(k * c, c, 5), torch.randn(b, out_len, k * c), 1)
    parts = {"forward": [False, False, False], "backward, input": [True, False, False]}
    parts["backward, weight"] = [False, True, False]
    mflop = 2 * b * out_len * k * c * c * 5 / 1e6
    print(
        f"\none convolution layer of {k} cells (16→16 channels, width 5, stride 2, batch 128; {mflop:.1f} MFLOP "
        "each part), 1 thread, ms"
    )
    print(f"{'':18} " + " ".join(f"{name:>10}" for name in kinds))
    for part, mask in parts.items():
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(rounds):
            for name, (x, w, g, repeat) in kinds.items():
                start = time.perf_counter()
                for _ in range(20 * repeat):
                    conv(x, w, g, mask)
                times[name].append((time.perf_counter() - start) / 20 * 1e3)
        print(f"{part:18} " + " ".join(f"{statistics.median(times[name]):10.2f}" for name in kinds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=16, help="cells in the batched model (default 16, the CPU chunk)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per thread count (default 5)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the batched step")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc defaults")
    args = parser.parse_args(argv)
    kept = False if args.default_malloc else keep_freed_memory()
    dev = resolve_device("cpu")
    configs = [TrainingConfig.from_dict(BASE | {"lr": 0.01 * 2 ** (i % 6)}) for i in range(args.k)]
    data = load_data(configs[0], dev)
    policy = PrecisionPolicy.of(configs[0].precision)
    batches = list(data.batches(128, torch.Generator().manual_seed(0), policy.dtype))
    one = make_step(OneCell(configs[0], data, dev, policy), 1)
    stacked = make_step(StackedCells(configs, data, dev, policy), args.k)
    stacked_unfused = unfused(make_step(StackedCells(configs, data, dev, policy), args.k))
    flops = step_flops(one, batches[0]) * args.k  # useful work: K cells do K times one cell's arithmetic
    arms = (one, stacked, stacked_unfused)

    print(f"cnn1d on MNIST-1D, batch 128, {len(batches)} steps per pass, K = {args.k}; medians of {args.rounds} rounds")
    print(f"freed memory kept for the next step (workers.run.keep_freed_memory): {'yes' if kept else 'no'}")
    fused = "built" if workers.fused.extension() is not None else "NOT available: both K-cell columns are unfused"
    print(f"fused kernels (workers.fused: BatchNorm+ReLU, the first layer): {fused}")
    print(
        f"{'threads':>7} {'one cell ms':>12} {'K cells ms':>11} {'ms/cell':>8} {'ratio':>6} {'GFLOP/s':>8} "
        f"{'% peak':>7} {'unfused ms':>11} {'ratio':>6}"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for step in arms:
            per_step_ms(step, batches[:4])  # warm-up: kernels, allocator
        times: dict[Step, list[float]] = {step: [] for step in arms}
        for i in range(args.rounds):
            for step in arms if i % 2 == 0 else arms[::-1]:
                times[step].append(per_step_ms(step, batches))
        t1, tk, tu = (statistics.median(times[step]) for step in arms)
        peak = matmul_peak(dev)
        achieved = flops / (tk / 1e3) / 1e9
        print(
            f"{threads:>7} {t1:>12.2f} {tk:>11.2f} {tk / args.k:>8.2f} {t1 * args.k / tk:>6.2f} "
            f"{achieved:>8.1f} {100 * achieved / peak:>6.1f}% {tu:>11.2f} {t1 * args.k / tu:>6.2f}  "
            f"(matmul peak {peak:.0f} GFLOP/s)"
        )

    torch.set_num_threads(1)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        per_step_ms(stacked, batches)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nthe batched step's operators, 1 thread ({total / 1e3 / len(batches):.1f} ms per step)")
    for e in events[:8]:
        share = 100 * e.self_cpu_time_total / total
        print(f"  {e.key:40} {share:5.1f}%  {e.self_cpu_time_total / 1e3 / len(batches):6.2f} ms/step")

    bench_kernels(args.k, args.rounds)

    if args.compile:
        compiled = make_step(StackedCells(configs, data, dev, policy), args.k, compiled=True)
        start = time.perf_counter()
        per_step_ms(compiled, batches[:1])
        compile_s = time.perf_counter() - start
        per_step_ms(compiled, batches)  # a shorter last batch compiles once more
        compiled_ms = statistics.median(per_step_ms(compiled, batches) for _ in range(args.rounds))
        eager_ms = statistics.median(per_step_ms(stacked, batches) for _ in range(args.rounds))
        print(
            f"\ntorch.compile of the batched step, 1 thread: compile {compile_s:.1f} s; "
            f"{compiled_ms:.2f} ms per step against {eager_ms:.2f} eager"
        )


if __name__ == "__main__":
    main()
