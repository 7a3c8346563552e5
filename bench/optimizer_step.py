"""Time per ``step()`` of the paper's four optimizers against their closest torch.optim counterparts (foreach).

The parameter list has exactly the shapes of the paper's 26 2x64d Shake-Shake ResNet (11.65M parameters in 161
tensors). A and B alternate within one run, so machine noise hits both; the figure that matters is the ratio
ours / torch of the median step times. Goal: ≤ 1.5 on CPU.

    .venv/bin/python bench/optimizer_step.py [--device auto|cpu|cuda] [--rounds 30] [--dtype float32|float64]

Counterparts: sgd ↔ SGD(momentum=0.9, weight_decay=λ); sgdw ↔ SGD(momentum=0.9) (torch has no SGDW; ours does one
more multiply for the decay); adam ↔ Adam(weight_decay=λ); adamw ↔ AdamW(weight_decay=λ/α).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from workers.optimizers import OPTIMIZERS, make_optimizer

LR = {"sgd": 0.1, "sgdw": 0.1, "adam": 1e-3, "adamw": 1e-3}
WD = 1e-4


def shake_shake_26_2x64d_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of Gastaldi's 26 2x64d Shake-Shake: a 3x3 stem conv to 16 channels, three stages of four
    blocks at widths 64/128/256, each block two branches (ReLU-conv3x3-BN-ReLU-conv3x3-BN), a shortcut of two
    1x1 convs to half width each plus BN where the shape changes, and a linear classifier to 10 classes."""
    shapes: list[tuple[int, ...]] = [(16, 3, 3, 3), (16,), (16,)]
    c_in = 16
    for width in (64, 128, 256):
        for block in range(4):
            for _branch in range(2):
                shapes += [(width, c_in, 3, 3), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            if block == 0:
                shapes += [(width // 2, c_in, 1, 1), (width // 2, c_in, 1, 1), (width,), (width,)]
            c_in = width
    return [*shapes, (10, 256), (10,)]


def torch_counterpart(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    lr = LR[name]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=WD, foreach=True)
    if name == "sgdw":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=WD, foreach=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=WD / lr, foreach=True)


def make_params(device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shake_shake_26_2x64d_shapes():
        p = (0.01 * torch.randn(shape, generator=gen, dtype=dtype)).to(device).requires_grad_()
        p.grad = (0.01 * torch.randn(shape, generator=gen, dtype=dtype)).to(device)
        params.append(p)
    return params


def time_steps(step: Callable[[], object], device: torch.device, n: int) -> float:
    """Seconds per step, averaged over ``n`` consecutive steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=30, help="A/B alternations per optimizer")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    shapes = shake_shake_26_2x64d_shapes()
    n_params = sum(torch.Size(s).numel() for s in shapes)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"parameter list: 26 2x64d Shake-Shake shapes, {n_params / 1e6:.2f}M parameters in {len(shapes)} tensors")
    print(f"device: {where}; dtype {args.dtype}; torch {torch.__version__}")
    print(f"timing: median of {args.rounds} alternating A/B blocks of {args.steps} steps each")
    print(f"{'optimizer':<10}{'ours ms/step':>14}{'torch ms/step':>15}{'ratio':>8}   torch counterpart")
    ratios = []
    for name in OPTIMIZERS:
        ours_params, theirs_params = make_params(device, dtype), make_params(device, dtype)
        ours = make_optimizer(name, ours_params, lr=LR[name], weight_decay=WD)
        theirs = torch_counterpart(name, theirs_params)
        for opt in (ours, theirs):  # warm-up: allocate state, first-step paths
            for _ in range(3):
                opt.step()
        a, b = [], []
        for _ in range(args.rounds):  # alternate A and B so that noise hits both alike
            a.append(time_steps(ours.step, device, args.steps))
            b.append(time_steps(theirs.step, device, args.steps))
        ours_ms, theirs_ms = 1e3 * statistics.median(a), 1e3 * statistics.median(b)
        ratios.append(ours_ms / theirs_ms)
        counterpart = type(theirs).__name__ + ("(wd=0)" if name == "sgdw" else "")
        print(f"{name:<10}{ours_ms:>14.2f}{theirs_ms:>15.2f}{ours_ms / theirs_ms:>8.2f}   {counterpart}")
    print(f"worst ratio {max(ratios):.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
