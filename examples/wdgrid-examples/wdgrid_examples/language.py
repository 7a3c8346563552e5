"""A character-level transformer language model, swept with wdgrid: a data set, a model and a trainer plugin.

Where AdamW matters most today is language models, and they are not classifiers: the objective is the validation
loss of next-character prediction, and the loop is the model's own. Three plugins make that sweepable:

- data set ``python_source``: the Python standard library's own ``.py`` files (on every machine that runs wdgrid,
  nothing to download), read as bytes in sorted order until ``chars`` bytes, cut into blocks of ``block`` + 1 bytes;
  the last 10 % of the blocks are the validation set. Returned as two ``Dataset`` s streamed by wdgrid
  (``workers.data.StreamedData``), each item (``block`` input bytes, the ``block`` bytes after each). The text differs
  between Python versions: compare sweeps run on one.
- model ``char_transformer``: a small GPT (token and position embeddings, pre-norm causal self-attention blocks,
  a linear head over the 256 byte values); ``d_model``, ``layers`` and ``heads`` are its arguments.
- trainer ``char_lm``: trains it with the cell's optimizer (the paper's, from ``ctx.make_optimizer``), η_t from
  the sweep's schedule every step, and reports ``train_loss`` (mean over the epoch's batches, nats per character),
  ``val_loss`` (nats per character) and ``val_bpc`` (bits per character) after each epoch; it checkpoints weights,
  optimizer and RNG states every epoch, so a retried cell continues where it stopped.

A spec: ``{"dataset": "python_source", "model": "char_transformer", "trainer": "char_lm",
"objective": {"metric": "val_loss", "mode": "min"}, ...}`` (README, "Your own model").
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from sweeps import TrainingConfig
from workers.data import StreamedData, steps_per_epoch
from workers.trainer import TrainerContext

VOCAB = 256  # bytes


# --- Data set -------------------------------------------------------------------------------------------------------
class SourceArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chars: int = Field(default=200_000, ge=1000, le=20_000_000, description="Bytes of source text to read.")
    block: int = Field(default=64, ge=4, le=1024, description="Context length in characters.")


class Blocks(Dataset[tuple[Tensor, Tensor]]):
    """Consecutive, non-overlapping blocks of a byte string: item i is (bytes, the same bytes shifted by one)."""

    def __init__(self, text: Tensor, block: int) -> None:
        self.text, self.block = text, block

    def __len__(self) -> int:
        return (len(self.text) - 1) // self.block

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        start = i * self.block
        chunk = self.text[start : start + self.block + 1]
        return chunk[:-1], chunk[1:]


def read_source(chars: int) -> bytes:
    """The first ``chars`` bytes of the standard library's ``.py`` files, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = bytearray()
    for path in sorted(root.glob("*.py")):
        out += path.read_bytes()
        if len(out) >= chars:
            break
    return bytes(out[:chars])


def python_source(data_dir: Path, **dataset_args: Any) -> StreamedData:
    """The Python standard library's source as bytes, for next-character prediction (90 % train, 10 % validation)."""
    a = SourceArgs.model_validate(dataset_args)
    text = torch.frombuffer(bytearray(read_source(a.chars)), dtype=torch.uint8).long()
    n_blocks = (len(text) - 1) // a.block
    cut = (n_blocks - n_blocks // 10) * a.block
    train, test = Blocks(text[: cut + 1], a.block), Blocks(text[cut:], a.block)
    return StreamedData("python_source", train, test, n_classes=VOCAB, input_shape=(a.block,))


python_source.Args = SourceArgs  # type: ignore[attr-defined]


# --- Model ----------------------------------------------------------------------------------------------------------
class ModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(default=64, ge=8, le=1024, description="Width of the residual stream.")
    layers: int = Field(default=2, ge=1, le=24, description="Transformer blocks.")
    heads: int = Field(default=4, ge=1, le=32, description="Attention heads (d_model must be a multiple).")


class CharTransformer(nn.Module):
    """A small GPT over bytes: B×T token ids → B×T×vocab logits, causal."""

    def __init__(self, block: int, vocab: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(block, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            heads,
            dim_feedforward=4 * d_model,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.mask: Tensor
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        h = self.tokens(x) + self.positions(torch.arange(t, device=x.device))
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        logits: Tensor = self.head(self.norm(h))
        return logits


def char_transformer(input_shape: tuple[int, ...], n_classes: int, **model_args: Any) -> nn.Module:
    """A small causal transformer over characters (a GPT): d_model 64, 2 blocks, 4 heads by default."""
    a = ModelArgs.model_validate(model_args)
    if a.d_model % a.heads:
        raise ValueError(f"d_model {a.d_model} is not a multiple of heads {a.heads}")
    return CharTransformer(input_shape[0], n_classes, a.d_model, a.layers, a.heads)


char_transformer.Args = ModelArgs  # type: ignore[attr-defined]


# --- Trainer --------------------------------------------------------------------------------------------------------
class TrainerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip: float = Field(default=1.0, ge=0, le=1e6, description="Gradient norm clipping (0: none).")


def _val_loss(model: nn.Module, data: StreamedData) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in data.test_batches(256, torch.float32):
            logits = model(x)
            total += float(nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            n += y.numel()
    model.train()
    return total / n


def char_lm(config: TrainingConfig, ctx: TrainerContext) -> None:
    """Next-character prediction with cross-entropy; reports train_loss, val_loss (nats per character) and
    val_bpc (bits per character) every epoch, and checkpoints every epoch."""
    args = TrainerArgs.model_validate(dict(ctx.args))
    data = ctx.data()
    if not isinstance(data, StreamedData):
        raise TypeError(f"char_lm reads token blocks streamed from Datasets; data set {config.dataset!r} is not one")
    model = ctx.model(data.input_shape, data.n_classes)
    optimizer = ctx.make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(config.seed)  # batch order
    steps = steps_per_epoch(data.n_train, config.batch_size)  # the batches data.batches gives an epoch
    if ctx.resume_state is not None:  # a retried cell: continue after the last checkpointed epoch
        model.load_state_dict(ctx.resume_state["model"])
        optimizer.load_state_dict(ctx.resume_state["optimizer"])
        generator.set_state(ctx.resume_state["generator"])
    step = ctx.epoch * steps
    model.train()
    for _ in range(ctx.epoch, config.epochs):
        total, batches = 0.0, 0
        for x, y in data.batches(config.batch_size, generator, torch.float32):
            loss: Tensor = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            ctx.set_eta(optimizer, step, steps)
            optimizer.step()
            step += 1
            total, batches = total + loss.item(), batches + 1
        val = _val_loss(model, data)
        ctx.report({"train_loss": total / batches, "val_loss": val, "val_bpc": val / math.log(2)})
        ctx.checkpoint(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
        )


char_lm.Args = TrainerArgs  # type: ignore[attr-defined]
char_lm.METRICS = ("train_loss", "val_loss", "val_bpc")  # type: ignore[attr-defined]
