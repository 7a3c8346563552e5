"""The model registry: networks a sweep can name, from MNIST-1D scale to the paper's Shake-Shake ResNets.

Every builder takes the input shape of one example (without the batch dimension) and the number of classes and
returns a fresh ``nn.Module`` whose parameters are initialized from torch's global RNG (seed it first).

==========================  ================  =========================================================
name                        data              what it is
==========================  ================  =========================================================
``mlp``                     MNIST-1D, digits  two hidden layers of 256 units, ReLU
``cnn1d``                   MNIST-1D          three Conv1d(k=5) + BatchNorm layers of 16 channels, linear head
``digits_cnn``              digits (8×8)      two 3×3 conv + BatchNorm layers (16, 32 channels), linear head
``resnet20``                CIFAR, ImageNet32 He et al. (2016) CIFAR ResNet-20: 3 stages × 3 basic blocks, 16/32/64
``shake_shake_26_2x64d``    CIFAR, ImageNet32 Gastaldi (2017), depth 26, widths 64/128/256: 11.65M parameters
``shake_shake_26_2x96d``    CIFAR, ImageNet32 the same at widths 96/192/384: 26.2M parameters
==========================  ================  =========================================================

At MNIST-1D scale the difference between L2 and decoupled decay only shows on a normalized network: with
BatchNorm the scale of a weight does not change the function, so decay only changes the effective learning rate,
which is exactly what couples α and λ under L2. ``cnn1d`` is that network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import torch
from torch import Tensor, nn

from sweeps import load_plugin
from workers.fused import (
    batch_norm_relu,
    batch_norm_relu_by_group,
    conv_batch_norm_relu,
    conv_batch_norm_relu_applies,
    grouped_conv1d,
    grouped_conv1d_applies,
)

__all__ = ["MODELS", "build_model", "count_parameters"]

Shape = tuple[int, ...]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- MNIST-1D and digits ---------------------------------------------------------------------------------------
class MLP(nn.Sequential):
    """Flatten, then Linear layers with a ReLU between each two; explicitly batched (:meth:`batched_forward`)."""

    def batched_forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """This network for K cells at once: ``params`` are this module's, stacked along a leading dimension K;
        ``x`` is one batch shared by all cells; returns K×B×classes logits.

        The first layer sees the same input in every cell, so it is one matmul against the K cells' weights side by
        side (B×(K·H)); the others are one ``baddbmm`` each (``_stacked_linear``). Three large kernels instead of 3·K
        small ones.
        """
        del buffers  # no BatchNorm: nothing to update
        linears = [i for i, m in enumerate(self) if isinstance(m, nn.Linear)]
        first = linears[0]
        w, b = params[f"{first}.weight"], params[f"{first}.bias"]  # K×H×n_in, K×H
        k, hidden = w.shape[0], w.shape[1]
        h = torch.addmm(b.reshape(-1), x.flatten(1), w.reshape(k * hidden, -1).T)  # B×(K·H)
        h = h.view(h.shape[0], k, hidden).transpose(0, 1)  # K×B×H
        for i in linears[1:]:
            h = _stacked_linear(torch.relu(h), params[f"{i}.weight"], params[f"{i}.bias"])
        return h


def _stacked_linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """K linear layers at once: ``h`` K×B×in, ``weight`` K×out×in, ``bias`` K×out; returns K×B×out, a transposed
    view of weight·hᵀ + bias (K×out×B).

    Why transposed: the backward's products then come in the layouts MKL runs fast. Computed as h·weightᵀ, the weight's
    gradient is hᵀ·grad with hᵀ a strided view, which took 2.3 ms per step for cnn1d's 16 heads (whose h was such a
    view then; they now read a contiguous h and take h·weightᵀ: ``CNN1d.batched_forward``) on an AMD EPYC core
    against 0.2 ms for grad·h here (``bench/batched_step.py``'s profile), and mlp's 16-cell step took 26.2 ms against
    21.8; the loss takes its logits as K×classes×B anyway (``workers.train.cross_entropies``), which this view already
    is in memory.
    """
    return torch.baddbmm(bias.unsqueeze(2), weight, h.mT).mT


def mlp(input_shape: Shape, n_classes: int) -> nn.Module:
    """Two hidden layers of 256 units with ReLU, on flattened inputs (MNIST-1D, digits); explicitly batched."""
    n_in = 1
    for d in input_shape:
        n_in *= d
    return MLP(nn.Flatten(), nn.Linear(n_in, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, n_classes))


def _batched_batch_norm(
    h: Tensor, bn: nn.Module, name: str, params: dict[str, Tensor], buffers: dict[str, Tensor]
) -> Tensor:
    """BatchNorm over B×(K·C)×… activations with K cells' stacked statistics: per channel = per cell and channel;
    the running estimates update in place in the stacked buffers, as each cell's own module would."""
    out = nn.functional.batch_norm(h, **_stacked_batch_norm(bn, name, params, buffers))
    _count_batch(bn, name, buffers)
    return out


def _stacked_batch_norm(
    bn: nn.Module, name: str, params: dict[str, Tensor], buffers: dict[str, Tensor]
) -> dict[str, Any]:
    """The arguments after the input of ``torch.nn.functional.batch_norm`` for K cells' stacked BatchNorm ``name``
    (``bn`` the module's own, for its mode and constants), over K·C channels: the running estimates are views of the
    stacked buffers, so that they update in place."""
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    return {
        "running_mean": buffers[f"{name}.running_mean"].view(-1),
        "running_var": buffers[f"{name}.running_var"].view(-1),
        "weight": params[f"{name}.weight"].reshape(-1),
        "bias": params[f"{name}.bias"].reshape(-1),
        "training": bn.training,
        "momentum": 0.1 if bn.momentum is None else bn.momentum,
        "eps": bn.eps,
    }


def _count_batch(bn: nn.Module, name: str, buffers: dict[str, Tensor]) -> None:
    """One more batch seen by stacked BatchNorm ``name`` in training mode, as each cell's module would count it."""
    if bn.training:
        buffers[f"{name}.num_batches_tracked"].add_(1)


class CNN1d(nn.Module):
    """Three Conv1d(k=5, 16 channels) + BatchNorm + ReLU layers (the last two with stride 2), then a linear head."""

    # Cells per batched model on a CPU (``workers.bundle.cpu_chunk``). bench/batched_step.py on one core of an AMD
    # EPYC, two pairs of runs alternating K = 8 and K = 16 with workers.fused's grouped convolutions: 1.11 and 1.14 ms
    # per cell and step at 16 against 1.59 and 1.30 at 8 (before those kernels, on a Xeon, 8 and 16 were within the
    # noise of each other).
    cpu_chunk: Final = 16

    def __init__(self, length: int, n_classes: int, channels: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, length
        for stride in (1, 2, 2):
            layers += [
                nn.Conv1d(c_in, channels, 5, stride=stride, padding=2, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            c_in, size = channels, (size + 2 * 2 - 5) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * size, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))

    def batched_forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """This network for K cells at once: ``params``/``buffers`` are this module's, stacked along a leading
        dimension K; ``x`` is one B×L batch shared by all cells; returns K×B×classes logits.

        The same arithmetic as ``forward``, with the K cells side by side as channel groups: activations are
        B×(K·C)×1×L, each convolution is one grouped convolution (groups = K; ``workers.fused``'s kernels where they
        apply, as oneDNN's grouped convolutions are slow on AVX2 CPUs), each BatchNorm with its ReLU is one fused
        operator over K·C channels (``workers.fused``) — per-channel statistics are per-cell statistics, and the
        running estimates update in place in the stacked buffers — and the heads are one ``baddbmm``, reading the
        last layer's output as it writes it (each cell's features in a block of their own). The first layer, whose
        one input channel is the same batch for every cell, is one fused operator from the batch to its ReLU where
        ``workers.fused`` has it (float32 on a CPU, training). A few large kernels instead of K small ones: that is
        what makes a bundle faster than its cells one at a time on a CPU (``bench/train_throughput.py``).

        The activations are 2-D images of height 1 in channels-last memory order: oneDNN's grouped convolution and
        PyTorch's BatchNorm run several times faster on it than on B×(K·C)×L (``bench/batched_step.py``: the step
        of 16 cells 1.3× faster on one core).
        """
        k = next(iter(params.values())).shape[0]
        h: Tensor | None = None
        for i in range(0, len(self.features), 3):
            conv, bn = self.features[i], self.features[i + 1]
            assert isinstance(conv, nn.Conv1d) and isinstance(bn, nn.BatchNorm1d)
            pad = conv.padding
            assert isinstance(pad, tuple)  # a width, not a padding mode ("same"), in this network
            w = params[f"features.{i}.weight"].flatten(0, 1)  # (K·C_out)×C_in×width
            norm = _stacked_batch_norm(bn, f"features.{i + 1}", params, buffers)
            if h is None and conv_batch_norm_relu_applies(x, w, norm["weight"], bn.training):
                # The first layer: one input channel, the same batch for every cell. Convolution, BatchNorm and ReLU
                # as one operator that never stores the K·C channels' convolution output (workers.fused).
                h = conv_batch_norm_relu(x, w, stride=conv.stride[0], padding=pad[0], **norm)
            else:
                if h is None:
                    # B×K×1×L: every cell sees the same batch. Expanded, not one shared convolution of K·C outputs:
                    # oneDNN returns that one in the other memory order, and converting it costs more than the
                    # convolution.
                    h = x.view(x.shape[0], 1, 1, -1).expand(-1, k, -1, -1)
                    h = h.contiguous(memory_format=torch.channels_last)
                geometry = {"groups": k, "stride": conv.stride[0], "padding": pad[0]}
                if grouped_conv1d_applies(h, w, **geometry):
                    h = grouped_conv1d(h, w, **geometry)  # workers.fused: several times oneDNN's speed on AVX2
                else:
                    h = nn.functional.conv2d(
                        h,
                        w.unsqueeze(2).contiguous(memory_format=torch.channels_last),  # (K·C_out)×C_in×1×width
                        stride=(1, conv.stride[0]),
                        padding=(0, pad[0]),
                        groups=k,
                    )
                if i + 3 < len(self.features):
                    h = batch_norm_relu(h, **norm)
                else:
                    # The last layer: each cell's features K×B×(L·C), in (position, channel) order, as the heads read
                    # them (workers.fused writes them so: no copy between the two).
                    h = batch_norm_relu_by_group(h, groups=k, **norm)
            _count_batch(bn, f"features.{i + 1}", buffers)
        assert h is not None and h.dim() == 3, "cnn1d has more than one layer"
        # Each cell's head weights K×classes×(C·L), the module's (C, L) flattening order, put in the features' (L, C)
        # order. h·weightᵀ (not _stacked_linear's weight·hᵀ): the gradient of h then comes K×B×(L·C), contiguous, the
        # layout the last layer's backward reads.
        channels = params[f"features.{len(self.features) - 3}.weight"].shape[1]
        w = params["head.weight"].unflatten(2, (channels, -1)).transpose(2, 3).flatten(2)
        return torch.baddbmm(params["head.bias"].unsqueeze(1), h, w.mT)


def cnn1d(input_shape: Shape, n_classes: int) -> nn.Module:
    """Three Conv1d(k=5) + BatchNorm layers of 16 channels and a linear head (MNIST-1D); explicitly batched."""
    if len(input_shape) != 1:
        raise ValueError(f"cnn1d needs 1-D examples (like MNIST-1D), got shape {input_shape}")
    return CNN1d(input_shape[0], n_classes)


class DigitsCNN(nn.Sequential):
    """Conv2d + BatchNorm + ReLU layers, then Flatten and a linear head; explicitly batched (``batched_forward``)."""

    def batched_forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """This network for K cells at once (``params``/``buffers`` stacked along a leading dimension K, ``x`` one
        B×C×H×W batch shared by all cells; returns K×B×classes logits), the cells side by side as channel groups as
        in :meth:`CNN1d.batched_forward`: the first convolution sees the same input in every cell, so it is one
        convolution with K·C_out output channels; the next are grouped (groups = K); BatchNorm runs over K·C
        channels; the heads are one ``baddbmm``."""
        k = next(iter(params.values())).shape[0]
        h, shared = x, True
        for i, layer in enumerate(self):
            if isinstance(layer, nn.Conv2d):
                w = params[f"{i}.weight"].flatten(0, 1)  # (K·C_out)×C_in×kh×kw
                groups = 1 if shared else k
                h = nn.functional.conv2d(h, w, stride=layer.stride, padding=layer.padding, groups=groups)
                shared = False
            elif isinstance(layer, nn.BatchNorm2d):
                h = _batched_batch_norm(h, layer, str(i), params, buffers)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.Linear):
                # Each cell's features in the module's own (C, H, W) flattening order, cells first.
                h = h.reshape(h.shape[0], k, -1).transpose(0, 1)  # K×B×(C·H·W)
                h = _stacked_linear(h, params[f"{i}.weight"], params[f"{i}.bias"])
            elif not isinstance(layer, nn.Flatten):
                raise TypeError(f"DigitsCNN cannot batch a {type(layer).__name__}")
        return h


def digits_cnn(input_shape: Shape, n_classes: int) -> nn.Module:
    """Two 3×3 conv + BatchNorm layers (16, 32 channels) and a linear head (8×8 digits); explicitly batched."""
    if len(input_shape) != 3:
        raise ValueError(f"digits_cnn needs C×H×W images, got shape {input_shape}")
    c, h, w = input_shape
    return DigitsCNN(
        nn.Conv2d(c, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * ((h + 1) // 2) * ((w + 1) // 2), n_classes),
    )


# --- CIFAR ResNet-20 (He et al. 2016, option A shortcuts) ---------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            # Option A: subsample and zero-pad the channels (no parameters), as in the CIFAR experiments of He et al.
            shortcut = nn.functional.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad))
        return torch.relu(out + shortcut)


class ResNet20(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(c_in, width, 2 if i > 0 and j == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet20(input_shape: Shape, n_classes: int) -> nn.Module:
    """He et al. (2016) CIFAR ResNet-20: 3 stages × 3 basic blocks, 16/32/64 channels (0.27M parameters)."""
    return ResNet20(input_shape[0], n_classes)


# --- Shake-Shake (Gastaldi 2017) --------------------------------------------------------------------------------
def shake(a: Tensor, b: Tensor, training: bool) -> Tensor:
    """Shake-Shake-Image: α·a + (1 − α)·b forward and β·a + (1 − β)·b backward, α and β drawn independently for
    every image from U(0, 1); the plain average at test time."""
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    # The value is α·a + (1−α)·b; the gradient sees only the first term: β for a, 1 − β for b.
    return beta * a + (1 - beta) * b + ((alpha - beta) * (a - b)).detach()


class ShakeBranch(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class ShakeShortcut(nn.Module):
    """Where the shape changes: two strided 1×1 convolutions to half width each (the second on the input shifted by
    one pixel), concatenated and batch-normalized."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        a = self.conv1(nn.functional.avg_pool2d(x, 1, self.stride))
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        b = self.conv2(nn.functional.avg_pool2d(shifted, 1, self.stride))
        return self.bn(torch.cat([a, b], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.branch1 = ShakeBranch(c_in, c_out, stride)
        self.branch2 = ShakeBranch(c_in, c_out, stride)
        self.shortcut: nn.Module = (
            nn.Identity() if c_in == c_out and stride == 1 else ShakeShortcut(c_in, c_out, stride)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + shake(self.branch1(x), self.branch2(x), self.training)


class ShakeShake(nn.Module):
    """Depth 26 = 2 + 6·4: a 3×3 stem to 16 channels, three stages of four blocks at widths k, 2k, 4k."""

    def __init__(self, in_channels: int, n_classes: int, width: int, blocks_per_stage: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        blocks: list[nn.Module] = []
        c_in = 16
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            for j in range(blocks_per_stage):
                blocks.append(ShakeBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.blocks(self.stem(x))).mean(dim=(2, 3)))


def shake_shake_26_2x64d(input_shape: Shape, n_classes: int) -> nn.Module:
    """Gastaldi (2017) Shake-Shake, depth 26, widths 64/128/256 (11.65M parameters): the paper's network."""
    return ShakeShake(input_shape[0], n_classes, width=64)


def shake_shake_26_2x96d(input_shape: Shape, n_classes: int) -> nn.Module:
    """Shake-Shake, depth 26, widths 96/192/384 (26.2M parameters)."""
    return ShakeShake(input_shape[0], n_classes, width=96)


# wdgrid's own models; pyproject.toml registers them as ``wdgrid.models`` entry points, like any plugin.
MODELS: Final[dict[str, Callable[[Shape, int], nn.Module]]] = {
    "mlp": mlp,
    "cnn1d": cnn1d,
    "digits_cnn": digits_cnn,
    "resnet20": resnet20,
    "shake_shake_26_2x64d": shake_shake_26_2x64d,
    "shake_shake_26_2x96d": shake_shake_26_2x96d,
}


def build_model(name: str, input_shape: Shape, n_classes: int, **args: Any) -> nn.Module:
    """Build an installed model plugin (a built-in or a package's ``wdgrid.models`` entry point) with its arguments;
    ``sweeps.PluginError`` naming it when it is not installed (on this worker)."""
    model = load_plugin("model", name)(tuple(input_shape), n_classes, **args)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
