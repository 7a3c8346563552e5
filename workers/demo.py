"""A one-minute demonstration of the four optimizers on MNIST-1D (``make demo``): a check that training works here.

Trains the built-in ``mlp`` with ``sgd``, ``sgdw``, ``adam`` and ``adamw`` under a cosine schedule through the one
training loop (``workers.train.train``) and reports the final top-1 test error. The decoupled λ comes from the
paper's normalized weight decay (λ_norm = 0.05, App. B.1); the L2 variants get the common L2 coefficient 5e-4. One
setting each is not a comparison — the best λ of an L2 variant depends on α, which is what a sweep shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweeps import N_TRAIN, OPTIMIZERS, TrainingConfig, normalized_weight_decay
from workers.train import load_data, resolve_device, train

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


def run_demo(epochs: int = 20, batch_size: int = 128, seed: int = 0) -> list[DemoResult]:
    """Train one MLP per optimizer for ``epochs`` epochs; deterministic for a given ``seed``."""
    lam = normalized_weight_decay(LAMBDA_NORM, batch_size, N_TRAIN["mnist1d"], epochs)
    configs = [
        TrainingConfig(
            dataset="mnist1d",
            model="mlp",
            optimizer=name,
            lr=BASE_LR[name],
            weight_decay=lam if name.endswith("w") else L2,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            schedule={"name": "cosine"},
        )
        for name in OPTIMIZERS
    ]
    device = resolve_device("auto")
    data = load_data(configs[0], device)  # once for the four runs
    results = []
    for config in configs:
        r = train(config, device=device, data=data)
        results.append(DemoResult(config.optimizer, config.lr, config.weight_decay, r.test_error, r.wall_time_s))
    return results
