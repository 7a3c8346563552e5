"""The smallest complete trainer plugin: a classifier trained on cross-entropy, the job wdgrid's own loop does, written
as a trainer — a template to copy when your loop needs something the built-in one does not do (another loss, extra
metrics, a different evaluation), and what ``bench/trainer_overhead.py`` times against the built-in loop.

It uses the spec's data set and model through the context, the cell's paper-exact optimizer, η_t from the sweep's
schedule before every step, reports the built-in metrics' names (so its grids read like the built-in loop's) plus the
test accuracy, and checkpoints every epoch so a retried cell continues where it stopped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sweeps import TrainingConfig
from workers.data import steps_per_epoch
from workers.trainer import TrainerContext


def classifier(config: TrainingConfig, ctx: TrainerContext) -> None:
    """Cross-entropy classification, as wdgrid's own loop (without its batched cells): reports train_loss,
    test_loss, test_error (percent) and test_accuracy (percent) every epoch."""
    data = ctx.data()
    model = ctx.model(data.input_shape, data.n_classes)
    optimizer = ctx.make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation
    if ctx.resume_state is not None:
        model.load_state_dict(ctx.resume_state["model"])
        optimizer.load_state_dict(ctx.resume_state["optimizer"])
        generator.set_state(ctx.resume_state["generator"])
    steps = steps_per_epoch(data.n_train, config.batch_size)
    step = ctx.epoch * steps
    for _ in range(ctx.epoch, config.epochs):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=ctx.device)
        seen = 0
        for x, y in data.batches(config.batch_size, generator, torch.float32):
            loss: Tensor = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ctx.set_eta(optimizer, step, steps)
            optimizer.step()
            step += 1
            total += loss.detach().double() * y.shape[0]
            seen += y.shape[0]
        model.eval()
        test_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
        wrong = torch.zeros((), dtype=torch.long, device=ctx.device)
        with torch.no_grad():
            for x, y in data.test_batches(1024, torch.float32):
                logits = model(x)
                test_loss += nn.functional.cross_entropy(logits, y, reduction="sum").double()
                wrong += (logits.argmax(1) != y).sum()
        error = 100.0 * wrong.item() / data.n_test
        ctx.report(
            {
                "train_loss": total.item() / seen,
                "test_loss": test_loss.item() / data.n_test,
                "test_error": error,
                "test_accuracy": 100.0 - error,
            }
        )
        ctx.checkpoint(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
        )


classifier.METRICS = ("train_loss", "test_loss", "test_error", "test_accuracy")  # type: ignore[attr-defined]
