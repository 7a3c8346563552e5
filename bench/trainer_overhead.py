"""The cost of a trainer plugin against wdgrid's own loop, on the same model, data and cell.

The example package's ``classifier`` trainer (``examples/wdgrid-examples``) does the built-in loop's job — one cell,
cross-entropy, the paper's optimizer, η_t every step, evaluation after every epoch — through ``TrainerContext``
(``ctx.report`` and ``ctx.checkpoint`` every epoch included). One process trains the same cell alternately with the
built-in loop (A) and with the trainer (B), ``--rounds`` times each after one warm-up of both, so the machine's
drift hits both alike; it prints each one's median seconds per cell, the B/A ratio per round and its median, and
checks the two reach test errors within a point of each other (their arithmetic differs slightly: the built-in loop
sums per-cell losses in float64); both hand their state to a checkpoint callback every epoch, as in a worker.

    .venv/bin/python bench/trainer_overhead.py                      # mlp and cnn1d on MNIST-1D, 5 epochs, CPU
    .venv/bin/python bench/trainer_overhead.py --models cnn1d --epochs 10 --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn1d"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from sweeps import TrainingConfig
    from workers.train import load_data, resolve_device, train

    torch.set_num_threads(1)  # as a 1-CPU Ray trial trains
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, 1 thread, {args.epochs} epochs, {args.rounds} rounds")
    print(f"{'model':<8} {'built-in s/cell':>16} {'trainer s/cell':>15} {'ratio B/A (median)':>19}  per round")
    for model in args.models:
        base: dict[str, Any] = {
            "dataset": "mnist1d",
            "model": model,
            "optimizer": "adamw",
            "lr": 2e-3,
            "weight_decay": 1e-3,
            "epochs": args.epochs,
            "batch_size": 128,
        }
        builtin = TrainingConfig.from_dict(base)
        plugin = TrainingConfig.from_dict(base | {"trainer": "classifier"})
        data = load_data(builtin, device)
        saved: list[Any] = []

        def run(config: TrainingConfig, data: Any = data, saved: list[Any] = saved) -> tuple[float, float]:
            started = time.perf_counter()
            result = train(config, device=device, data=data, on_checkpoint=lambda s: saved.append(copy.copy(s)))
            saved.clear()
            return time.perf_counter() - started, result.test_error

        run(builtin), run(plugin)  # warm-up: kernels, allocator
        a_times, b_times, ratios, errors = [], [], [], []
        for _ in range(args.rounds):
            (a, a_error), (b, b_error) = run(builtin), run(plugin)
            a_times.append(a)
            b_times.append(b)
            ratios.append(b / a)
            errors.append((a_error, b_error))
        a_error, b_error = errors[-1]
        per_round = " ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{model:<8} {statistics.median(a_times):>16.3f} {statistics.median(b_times):>15.3f} "
            f"{statistics.median(ratios):>19.3f}  {per_round}"
        )
        print(f"{'':<8} final test error: built-in {a_error:.2f} %, trainer {b_error:.2f} %")
        if abs(a_error - b_error) > 1.0:
            raise SystemExit(f"{model}: the two loops disagree by more than a point: not the same job")


if __name__ == "__main__":
    main()
