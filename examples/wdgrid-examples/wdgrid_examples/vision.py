"""A model plugin: a small BatchNorm convnet for images of any size, with arguments.

wdgrid calls ``small_convnet(input_shape, n_classes, **model_args)`` with the shape of one example (C, H, W) and the
number of classes; ``Args`` (a pydantic model) says which ``model_args`` a spec may give, and the controller checks
them when a sweep is submitted. With ``dropout`` = 0 the forward pass is a pure function of weights and input, so
wdgrid may train many cells as one batched model; with dropout it trains them one at a time (it checks, per model).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=32, ge=4, le=256, description="Channels of the first block (doubled in the second).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")


class SmallConvNet(nn.Module):
    """Two conv + BatchNorm + ReLU blocks (width, 2·width channels), global average pooling, a linear head."""

    def __init__(self, channels: int, n_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        pooled: Tensor = self.features(x).mean(dim=(2, 3))  # global average pooling, in a form vmap batches natively
        logits: Tensor = self.head(self.dropout(pooled))
        return logits


def small_convnet(input_shape: tuple[int, ...], n_classes: int, **model_args: Any) -> nn.Module:
    """Two conv + BatchNorm + ReLU blocks (width, 2·width channels), global average pooling, a linear head."""
    a = Args.model_validate(model_args)
    if len(input_shape) != 3:
        raise ValueError(f"small_convnet takes images (C, H, W), got examples of shape {input_shape}")
    return SmallConvNet(input_shape[0], n_classes, a.width, a.dropout)


small_convnet.Args = Args  # type: ignore[attr-defined]  # how wdgrid finds a plugin's arguments
