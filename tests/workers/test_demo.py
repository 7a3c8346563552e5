"""The demo that ``make run`` shows: real training on MNIST-1D that learns."""

from __future__ import annotations

from workers.demo import run_demo
from workers.optimizers import OPTIMIZERS


def test_every_optimizer_learns_far_better_than_chance():
    results = run_demo(epochs=4)
    assert [r.optimizer for r in results] == list(OPTIMIZERS)
    for r in results:
        assert r.test_error < 75.0, r  # chance is 90 % on 10 classes
    assert results[0].weight_decay != results[1].weight_decay  # L2 and decoupled λ are on different scales
