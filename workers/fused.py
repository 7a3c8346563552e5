"""Fused CPU kernels for the batched models' elementwise work: BatchNorm (training mode) followed by ReLU as one
operator, forward and backward (``workers/fused.cpp``), for channels-last float32 activations; and a convolution of
one input channel shared by every output channel with the BatchNorm and ReLU after it (cnn1d's first layer).

Why: in cnn1d's batched step on a CPU, BatchNorm and ReLU — forward, and backward above all — cost about as much as
the convolutions between them, although their arithmetic is negligible: every operator is its own passes over
megabytes of activations. Fused, the forward reads its input twice and writes once, the backward reads twice and
writes once, and the ReLU's output is not kept (the backward recomputes its mask). ``bench/batched_step.py``
times the batched step both ways (the first layer below included): 16 cells 14.4 ms per step fused against 19.1
unfused on one thread, 10.1 against 12.7 on two (the kernels split the rows among torch's threads).

cnn1d's first layer convolves the one input channel, the same batch for all K cells, into K·16 channels: its output is
5 MiB for 16 cells, its input 20 KiB. :func:`conv_batch_norm_relu` never stores the convolution's output or its
gradient: every pass recomputes the rows it needs from the input, and the backward sums the convolution's weight
gradient in its last pass.

The grouped convolutions between those layers (each cell's 16 channels into its own 16) are here too,
:func:`grouped_conv1d`: oneDNN runs such grouped convolutions far below its ungrouped speed — on an AMD EPYC (AVX2)
core 15-30 GFLOP/s, its convolutions of layers 2 and 3 more than half of the batched step — because each group is a
tiny problem; these kernels keep a tile of output rows × 16 channels in registers and reach 45-70 GFLOP/s there, forward
and backward (``bench/batched_step.py`` prints both).

The kernels are C++ built for this machine's CPU on first use (``torch.utils.cpp_extension``: a C++ compiler and
ninja; ~30 s, once per machine and source version, kept in torch's extensions folder, ``TORCH_EXTENSIONS_DIR``).
``make run`` and ``make test`` build them ahead (``make kernels``: ``python -m workers.fused``), so that no trial
waits for the compiler. Where they cannot be built (no compiler, no Python headers), :func:`batch_norm_relu` runs
PyTorch's own operators — the same function up to float rounding — and says so once in the log.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ENABLED",
    "batch_norm_relu",
    "conv_batch_norm_relu",
    "conv_batch_norm_relu_applies",
    "extension",
    "grouped_conv1d",
    "grouped_conv1d_applies",
]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused.cpp")
# -march=native: the code is for this CPU (the build's name carries the CPU's features, so that a shared extensions
# folder never hands it to another kind). -fopenmp: at::parallel_for's threads (ATen's OpenMP backend is inline in
# its headers); the library then needs libgomp.so.1, which the process already has
# loaded from torch's wheel, so the kernels share torch's thread pool and its torch.set_num_threads.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp")
LDFLAGS = ("-fopenmp",)

ENABLED = True
"""False: :func:`batch_norm_relu` always runs PyTorch's operators and :func:`conv_batch_norm_relu_applies` says no (for
benches comparing the two)."""


def _cpu_features() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line for line in lines if line.startswith("flags")), platform.processor())


def _build_name() -> str:
    """The build's name: a digest of the source, the flags, Python's and torch's versions and this CPU's features."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (" ".join(FLAGS + LDFLAGS), sys.version, torch.__version__, platform.machine(), _cpu_features()):
        digest.update(part.encode())
    return f"wdgrid_fused_{digest.hexdigest()[:16]}"


def _build_root() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "wdgrid"


@functools.cache
def extension() -> ModuleType | None:
    """The compiled kernels (built now if this machine has none yet), or None where they cannot be built."""
    name = _build_name()
    where = _build_root() / name
    built = where / f"{name}.so"
    try:
        if built.exists():
            # Load the library itself: torch's loader would first ask ninja whether it is up to date, which needs a
            # compiler on the machine even when nothing is to be built.
            spec = importlib.util.spec_from_file_location(name, built)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        where.mkdir(parents=True, exist_ok=True)
        log.info("building wdgrid's fused CPU kernels into %s (once, ~30 s)", where)
        built_module: ModuleType = load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=list(FLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(where),
            verbose=False,
        )
        return built_module
    except Exception as e:  # no compiler, no ninja, a failed build: PyTorch's operators instead
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("wdgrid's fused CPU kernels are not available (%s): BatchNorm and ReLU run unfused", reason)
        return None


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the Python package ``ninja`` (a dependency) has it beside the interpreter, which
    is not on PATH where the virtual environment is not activated (a Ray worker, ``.venv/bin/wdgrid``)."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


class _BatchNormReLU(torch.autograd.Function):
    """relu(batch_norm(x)) in training mode over N×C rows, returned as groups × N × (C/groups) (each group's channels
    a block of its own; groups 1: the N×C rows); updates the running statistics in place."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        momentum: float,
        eps: float,
        groups: int,
    ) -> Tensor:
        kernels = extension()
        assert kernels is not None
        y, mean, invstd = kernels.forward(x, weight, bias, running_mean, running_var, momentum, eps, groups)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        kernels = extension()
        assert kernels is not None
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = kernels.backward(
            grad_y.contiguous(), x, weight, bias, mean, invstd, ctx.groups
        )
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class _ConvBatchNormReLU(torch.autograd.Function):
    """relu(batch_norm(conv1d(x, weight))) in training mode, ``x`` batch × length (one input channel for all output
    channels); returns (batch · positions) × C rows; updates the running statistics in place. ``x`` takes no
    gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        conv_weight: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        stride: int,
        padding: int,
        momentum: float,
        eps: float,
    ) -> Tensor:
        kernels = extension()
        assert kernels is not None
        y, mean, invstd = kernels.conv_forward(
            x, conv_weight, stride, padding, weight, bias, running_mean, running_var, momentum, eps
        )
        ctx.save_for_backward(x, conv_weight, weight, bias, mean, invstd)
        ctx.geometry = stride, padding
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        kernels = extension()
        assert kernels is not None
        x, conv_weight, weight, bias, mean, invstd = ctx.saved_tensors
        stride, padding = ctx.geometry
        grads = kernels.conv_backward(grad_y.contiguous(), x, conv_weight, stride, padding, weight, bias, mean, invstd)
        return (None, *grads, None, None, None, None, None, None)


class _GroupedConv(torch.autograd.Function):
    """A grouped Conv1d of batch × positions × (groups·C_in) rows into batch × out positions × (groups·C_out)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, groups: int, stride: int, padding: int) -> Tensor:
        kernels = extension()
        assert kernels is not None
        ctx.save_for_backward(x, weight)
        ctx.geometry = groups, stride, padding
        y: Tensor = kernels.grouped_conv_forward(x, weight, groups, stride, padding)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        kernels = extension()
        assert kernels is not None
        x, weight = ctx.saved_tensors
        input_grad, weight_grad = ctx.needs_input_grad[:2]
        grad_x, grad_w = kernels.grouped_conv_backward(
            grad_y.contiguous(), x, weight, *ctx.geometry, input_grad, weight_grad
        )
        return (grad_x if input_grad else None, grad_w if weight_grad else None, None, None, None)


def _fusable(x: Tensor, weight: Tensor | None, bias: Tensor | None, training: bool) -> bool:
    return (
        ENABLED
        and training
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and x.shape[0] * x.shape[2] * x.shape[3] > 1
        and weight is not None
        and bias is not None
        and weight.dtype == bias.dtype == torch.float32
        and extension() is not None
    )


def batch_norm_relu(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """``relu(torch.nn.functional.batch_norm(x, ...))``, the same arguments; fused (one operator each way) for a
    channels-last float32 B×C×H×W ``x`` on the CPU in training mode where the kernels are built, else PyTorch's own
    operators. Fused, the result equals PyTorch's up to float rounding (sums taken in another order)."""
    if not _fusable(x, weight, bias, training):
        out = torch.nn.functional.batch_norm(
            x, running_mean, running_var, weight, bias, training=training, momentum=momentum, eps=eps
        )
        return torch.relu(out)
    assert weight is not None and bias is not None
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view: channels-last memory is rows of C channels
    y = _BatchNormReLU.apply(rows, weight, bias, running_mean, running_var, momentum, eps, 1)
    return y.view(b, h, w, c).permute(0, 3, 1, 2)


def batch_norm_relu_by_group(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    groups: int,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """:func:`batch_norm_relu` laid out for a consumer per group of channels: returns groups × B × (H·W·C/groups),
    group g's features of example b in (h, w, channel) order; ``groups`` divides C. cnn1d's last layer hands each
    cell's features to that cell's linear head so. Fused (channels per group a multiple of 16), the kernels write
    this layout and read their gradient in it: no copy either way (the copies took 0.8 ms of cnn1d's 11 ms step for
    16 cells); else :func:`batch_norm_relu` and a copy."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"batch_norm_relu_by_group: {groups} groups do not divide {c} channels")
    if not (_fusable(x, weight, bias, training) and (c // groups) % 16 == 0):
        y = batch_norm_relu(x, running_mean, running_var, weight, bias, training=training, momentum=momentum, eps=eps)
        return y.permute(0, 2, 3, 1).reshape(b, h * w, groups, -1).permute(2, 0, 1, 3).reshape(groups, b, -1)
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)
    out: Tensor = _BatchNormReLU.apply(rows, weight, bias, running_mean, running_var, momentum, eps, groups)
    return out.view(groups, b, -1)


def conv_batch_norm_relu_applies(x: Tensor, conv_weight: Tensor, weight: Tensor | None, training: bool) -> bool:
    """Whether :func:`conv_batch_norm_relu` runs for this batch ``x`` (batch × length: one input channel, no
    gradient) and ``conv_weight`` (C × 1 × width, width 3, 5 or 7): float32 on the CPU in training mode, with a
    BatchNorm ``weight``, where the kernels are built. Where not, run the convolution, :func:`batch_norm_relu` after."""
    return (
        ENABLED
        and training
        and x.device.type == "cpu"
        and x.dtype == conv_weight.dtype == torch.float32
        and x.dim() == 2
        and not x.requires_grad
        and conv_weight.dim() == 3
        and conv_weight.shape[1] == 1
        and conv_weight.shape[2] in (3, 5, 7)
        and weight is not None
        and weight.dtype == torch.float32
        and extension() is not None
    )


def conv_batch_norm_relu(
    x: Tensor,
    conv_weight: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    stride: int,
    padding: int,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """``relu(batch_norm(conv1d(x.unsqueeze(1), conv_weight, stride=stride, padding=padding), ...))`` as one
    operator each way, where :func:`conv_batch_norm_relu_applies` (in training mode only): ``x`` batch × length,
    ``conv_weight`` C × 1 × width (no bias); returns batch × C × 1 × positions, channels-last (the layout
    :func:`batch_norm_relu` and oneDNN's convolutions take next). Equals PyTorch's operators up to float rounding."""
    if not conv_batch_norm_relu_applies(x, conv_weight, weight, training):
        raise ValueError("conv_batch_norm_relu: not for these inputs (see conv_batch_norm_relu_applies)")
    b = x.shape[0]
    rows = _ConvBatchNormReLU.apply(
        x.contiguous(), conv_weight.flatten(1), weight, bias, running_mean, running_var, stride, padding, momentum, eps
    )
    return rows.view(b, 1, -1, rows.shape[1]).permute(0, 3, 1, 2)  # channels-last strides, as batch_norm_relu's


def grouped_conv1d_applies(x: Tensor, weight: Tensor, *, groups: int, stride: int, padding: int) -> bool:
    """Whether :func:`grouped_conv1d` runs for ``x`` (B × (groups·C_in) × 1 × L, channels-last) and ``weight``
    ((groups·C_out) × C_in × width): float32 on the CPU, C_in and C_out multiples of 16, width at most 16, where the
    kernels are built. Where not, run ``torch.nn.functional.conv2d``."""
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and x.shape[2] == 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and weight.dim() == 3
        and groups >= 1
        and stride >= 1
        and x.shape[1] == groups * weight.shape[1]
        and weight.shape[0] % groups == 0
        and weight.shape[1] % 16 == 0
        and (weight.shape[0] // groups) % 16 == 0
        and 1 <= weight.shape[2] <= 16
        and padding >= 0
        and x.shape[3] + 2 * padding >= weight.shape[2]
        and x.shape[0] > 0
        and extension() is not None
    )


def grouped_conv1d(x: Tensor, weight: Tensor, *, groups: int, stride: int, padding: int) -> Tensor:
    """``conv2d(x, weight.unsqueeze(2), stride=(1, stride), padding=(0, padding), groups=groups)`` — a grouped Conv1d
    (no bias) of a height-1 channels-last ``x`` B × (groups·C_in) × 1 × L with ``weight`` (groups·C_out) × C_in ×
    width — where :func:`grouped_conv1d_applies`; returns B × (groups·C_out) × 1 × L_out, channels-last. Equals
    PyTorch's up to float rounding (the sums in another order); the same numbers whatever the number of threads."""
    if not grouped_conv1d_applies(x, weight, groups=groups, stride=stride, padding=padding):
        raise ValueError("grouped_conv1d: not for these inputs (see grouped_conv1d_applies)")
    b, _, _, length = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, length, -1)  # a view: channels-last memory is rows of channels
    y = _GroupedConv.apply(rows, weight.contiguous(), groups, stride, padding)
    return y.view(b, 1, y.shape[1], y.shape[2]).permute(0, 3, 1, 2)


if __name__ == "__main__":  # `make install`: build the kernels ahead, or say why not
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kernels = extension()
    log.info(
        "wdgrid: fused CPU kernels %s", "ready" if kernels is not None else "not available (BatchNorm and ReLU unfused)"
    )
