"""A one-minute demonstration of the four optimizers on MNIST-1D (what ``make run`` shows until the service lands).

Trains the same small MLP with ``sgd``, ``sgdw``, ``adam`` and ``adamw`` under a cosine schedule and reports the
final top-1 test error. The decoupled λ comes from the paper's normalized weight decay (λ_norm = 0.05, App. B.1);
the L2 variants get the common L2 coefficient 5e-4. One setting each is not a comparison — the best λ of an L2
variant depends on α, which is what a sweep shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workers.optimizers import OPTIMIZERS, make_optimizer, normalized_weight_decay, set_eta
from workers.schedules import make_schedule

__all__ = ["DemoResult", "run_demo"]

BASE_LR = {"sgd": 0.1, "sgdw": 0.1, "adam": 1e-3, "adamw": 1e-3}  # α per optimizer family
LAMBDA_NORM = 0.05
L2 = 5e-4  # a common L2 coefficient (per step, added to the gradient)


@dataclass(frozen=True)
class DemoResult:
    optimizer: str
    lr: float  # α
    weight_decay: float  # λ, raw per step
    test_error: float  # top-1, percent
    seconds: float


def _mnist1d(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)  # generated in memory: never downloads
    as_x = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return as_x(data["x"]), as_y(data["y"]), as_x(data["x_test"]), as_y(data["y_test"])


def run_demo(epochs: int = 20, batch_size: int = 128, seed: int = 0) -> list[DemoResult]:
    """Train one MLP per optimizer for ``epochs`` epochs; deterministic for a given ``seed``."""
    x, y, x_test, y_test = _mnist1d(seed=4242)
    steps_per_epoch = -(-len(x) // batch_size)
    lam = normalized_weight_decay(LAMBDA_NORM, batch_size, len(x), epochs)
    results = []
    for name in OPTIMIZERS:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        alpha = BASE_LR[name]
        wd = lam if name.endswith("w") else L2
        opt = make_optimizer(name, model.parameters(), lr=alpha, weight_decay=wd)
        schedule = make_schedule("cosine", epochs=epochs, steps_per_epoch=steps_per_epoch)
        start, step = time.perf_counter(), 0
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                set_eta(opt, schedule.multiplier(step))
                opt.step()
                step += 1
        with torch.no_grad():
            error = 100.0 * (model(x_test).argmax(1) != y_test).float().mean().item()
        results.append(DemoResult(name, alpha, wd, error, time.perf_counter() - start))
    return results
