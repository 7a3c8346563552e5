"""``workers.fused``: BatchNorm + ReLU as one CPU operator gives PyTorch's numbers, and runs unfused where it must."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workers import fused

ROOT = Path(__file__).resolve().parents[2]


def _inputs(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    # A mean far from zero next to the spread: the variance must not come from a difference of large numbers.
    x = (torch.randn(shape, generator=g, dtype=dtype) * 0.5 + 20).contiguous(memory_format=torch.channels_last)
    t = {
        "x": x,
        "running_mean": torch.randn(c, generator=g, dtype=dtype),
        "running_var": torch.rand(c, generator=g, dtype=dtype) + 0.5,
        "weight": torch.randn(c, generator=g, dtype=dtype),
        "bias": torch.randn(c, generator=g, dtype=dtype),
    }
    # No gradient arrives where the pre-activation is within 1e-3 of the ReLU's kink: there float32 rounding may
    # decide the mask either way, each as right as the other, and the check would compare coin flips.
    x64, mean64, var64, w64, b64 = (t[k].double() for k in ("x", "running_mean", "running_var", "weight", "bias"))
    pre = F.batch_norm(x64, mean64, var64, w64, b64, training=True)
    grad = torch.randn(shape, generator=g, dtype=dtype) * (pre.abs() > 1e-3)
    return t | {"grad": grad.contiguous(memory_format=torch.channels_last)}


def _run(op: str, t: dict[str, torch.Tensor], training: bool = True) -> dict[str, torch.Tensor]:
    x, w, b = (t[k].clone().requires_grad_() for k in ("x", "weight", "bias"))
    mean, var = t["running_mean"].clone(), t["running_var"].clone()
    args = (x, mean, var, w, b)
    if op == "fused":
        y = fused.batch_norm_relu(*args, training=training, momentum=0.1, eps=1e-5)
    else:
        y = torch.relu(F.batch_norm(*args, training=training, momentum=0.1, eps=1e-5))
    y.backward(t["grad"])
    assert x.grad is not None and w.grad is not None and b.grad is not None
    return {"y": y, "running_mean": mean, "running_var": var, "x.grad": x.grad, "w.grad": w.grad, "b.grad": b.grad}


def test_the_fused_kernels_build_on_this_machine():
    assert (
        fused.extension() is not None
    )  # make test installs a C++ compiler where it is missing (make kernels), as the Dockerfile does


def _assert_as_close_as_pytorch(
    ours: dict[str, torch.Tensor],
    exact: dict[str, torch.Tensor],
    pytorch_float32: dict[str, torch.Tensor],
    times: float,
) -> None:
    """Each of ``ours`` within ``times`` PyTorch's own float32 error against float64 (``exact``), or 1e-6 of its
    scale."""
    for name, expected in exact.items():
        scale = expected.abs().max().item()
        theirs = (pytorch_float32[name].double() - expected).abs().max().item()
        error = (ours[name].double() - expected).abs().max().item()
        assert error <= max(times * theirs, 1e-6 * scale), (name, error, theirs)


@pytest.mark.parametrize("shape", [(128, 256, 1, 40), (3, 24, 1, 7), (2, 5, 3, 4)])
def test_fused_batch_norm_relu_gives_pytorch_s_numbers_and_gradients(shape):
    t = _inputs(shape)
    ours, exact = _run("fused", t), _run("pytorch", {k: v.double() for k, v in t.items()})
    pytorch_float32 = _run("pytorch", t)
    # Against PyTorch in float64: as close as PyTorch's own float32 operators come, or closer (which sums its float32
    # mean over all rows unshifted: with activations around 20, ~1e-5 relative off).
    _assert_as_close_as_pytorch(ours, exact, pytorch_float32, times=2)
    assert ours["y"].is_contiguous(memory_format=torch.channels_last)


def _assert_channels_last_like(y: torch.Tensor, expected: torch.Tensor) -> None:
    """``y`` has ``expected``'s shape and the strides PyTorch gives such a tensor in channels-last (oneDNN's
    convolutions pick their layout from them)."""
    assert y.shape == expected.shape
    assert y.stride() == torch.empty_like(y, memory_format=torch.channels_last).stride()


def _operators(y: torch.Tensor) -> set[str]:
    """The names of the backward functions that made ``y``."""
    names, seen, todo = set(), set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and id(fn) not in seen:
            seen.add(id(fn))
            names.add(type(fn).__name__)
            todo.extend(f for f, _ in fn.next_functions)
    return names


def test_the_fused_operator_runs_where_it_applies_and_pytorch_s_elsewhere():
    t = _inputs((4, 8, 1, 6))
    y = fused.batch_norm_relu(
        t["x"], t["running_mean"].clone(), t["running_var"].clone(), t["weight"].clone().requires_grad_(), t["bias"],
        training=True, momentum=0.1, eps=1e-5,
    )  # fmt: skip
    assert "_BatchNormReLUBackward" in _operators(y)
    elsewhere = {
        "float64": (_inputs((4, 8, 1, 6), torch.float64), True),
        "eval mode": (t, False),
        "not channels-last": ({**t, "x": t["x"].contiguous(), "grad": t["grad"].contiguous()}, True),
    }
    for what, (inputs, training) in elsewhere.items():
        ours, theirs = _run("fused", inputs, training), _run("pytorch", inputs, training)
        for name, expected in theirs.items():
            assert torch.equal(ours[name], expected), (what, name)  # the very same operators: bit for bit


def _by_group(y: torch.Tensor, groups: int) -> torch.Tensor:
    """B×C×H×W as groups × B × (H·W·C/groups): each group's features of an example in (h, w, channel) order."""
    b, c, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, h * w, groups, c // groups).permute(2, 0, 1, 3).reshape(groups, b, -1)


@pytest.mark.parametrize(("shape", "groups"), [((16, 64, 1, 10), 4), ((3, 32, 2, 3), 2), ((4, 48, 1, 5), 6)])
def test_batch_norm_relu_by_group_is_batch_norm_relu_laid_out_by_group(shape, groups):
    t = _inputs(shape)
    outs: dict[str, dict[str, torch.Tensor]] = {}
    for how in ("by group", "then copied"):
        x, w, b = (t[k].clone().requires_grad_() for k in ("x", "weight", "bias"))
        mean, var = t["running_mean"].clone(), t["running_var"].clone()
        if how == "by group":
            y = fused.batch_norm_relu_by_group(
                x, mean, var, w, b, groups=groups, training=True, momentum=0.1, eps=1e-5
            )  # fmt: skip
        else:
            y = _by_group(fused.batch_norm_relu(x, mean, var, w, b, training=True, momentum=0.1, eps=1e-5), groups)
        y.backward(_by_group(t["grad"], groups))
        assert x.grad is not None and w.grad is not None and b.grad is not None
        outs[how] = {"y": y, "mean": mean, "var": var, "x.grad": x.grad, "w.grad": w.grad, "b.grad": b.grad}
        if how == "by group":
            # Fused where a group's channels are a multiple of 16 (the kernels write the layout: no copy); with 8 (48
            # channels in 6 groups) batch_norm_relu and a copy.
            fused_here = (shape[1] // groups) % 16 == 0
            assert ("CloneBackward0" not in _operators(y)) == fused_here
            assert "_BatchNormReLUBackward" in _operators(y)
    for name, expected in outs["then copied"].items():
        assert torch.equal(outs["by group"][name], expected), name  # the same sums in the same order: bit for bit


def test_batch_norm_relu_by_group_needs_groups_that_divide_the_channels():
    t = _inputs((4, 32, 1, 5))
    with pytest.raises(ValueError, match="3 groups do not divide 32 channels"):
        fused.batch_norm_relu_by_group(
            t["x"], t["running_mean"], t["running_var"], t["weight"], t["bias"], groups=3, training=True,
            momentum=0.1, eps=1e-5,
        )  # fmt: skip


PROBE = """
import logging, sys, torch
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
from workers import fused
assert fused.extension() is None
x = torch.randn(4, 8, 1, 6).contiguous(memory_format=torch.channels_last)
y = fused.batch_norm_relu(x, torch.zeros(8), torch.ones(8), torch.ones(8), torch.zeros(8), training=True,
                          momentum=0.1, eps=1e-5)
assert torch.equal(y, torch.relu(torch.nn.functional.batch_norm(x, torch.zeros(8), torch.ones(8), torch.ones(8),
                                                                torch.zeros(8), training=True)))
print("unfused")
"""


def test_without_a_compiler_it_says_so_once_and_runs_unfused(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    env["CXX"] = str(tmp_path / "no-such-compiler")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "unfused"
    warnings = [line for line in out.stderr.splitlines() if line.startswith("workers.fused:")]
    assert len(warnings) == 1 and "BatchNorm and ReLU run unfused" in warnings[0], out.stderr[-2000:]


def test_the_numbers_do_not_depend_on_the_number_of_threads():
    # cnn1d's first layer (5120 rows: 80 whole blocks of 64 rows, split among the threads) and 3849 rows (the last
    # block cut short).
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs[threads] = [_run("fused", _inputs(shape)) for shape in [(128, 256, 1, 40), (3, 64, 1, 1283)]]
            runs[threads] += [_run_conv("fused", _conv_inputs(*case), *case[-2:]) for case in CONV_CASES[:2]]
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        for ours, one in zip(runs[threads], runs[1], strict=True):
            for name, expected in one.items():
                assert torch.equal(ours[name], expected), (threads, name)


def test_the_kernels_share_torch_s_openmp_runtime():
    # Built with OpenMP, the library needs libgomp.so.1; the process must map one such file, torch's (not the
    # system's beside it), so that torch.set_num_threads governs the kernels' threads too. (scikit-learn's wheel brings
    # its own runtime under another name, for its own code.)
    assert fused.extension() is not None
    maps = Path("/proc/self/maps").read_text().splitlines()
    runtimes = {Path(line.split()[-1]) for line in maps if line.endswith("/libgomp.so.1")}
    assert runtimes == {Path(torch.__file__).parent / "lib" / "libgomp.so.1"}, runtimes


def _conv_inputs(batch: int, length: int, c: int, width: int, stride: int, pad: int, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {
        "x": torch.randn(batch, length, generator=g, dtype=dtype) * 3 + 5,  # a mean far from zero, as above
        "conv_weight": torch.randn(c, 1, width, generator=g, dtype=dtype) * 0.5,
        "running_mean": torch.randn(c, generator=g, dtype=dtype),
        "running_var": torch.rand(c, generator=g, dtype=dtype) + 0.5,
        "weight": torch.randn(c, generator=g, dtype=dtype),
        "bias": torch.randn(c, generator=g, dtype=dtype),
    }
    x64, w64 = t["x"].double().unsqueeze(1), t["conv_weight"].double()
    z = F.conv1d(x64, w64, stride=stride, padding=pad)
    pre = F.batch_norm(z, None, None, t["weight"].double(), t["bias"].double(), training=True)
    grad = torch.randn(pre.shape, generator=g, dtype=dtype) * (pre.abs() > 1e-3)  # no coin flips at the kink
    return t | {"grad": grad.unsqueeze(2).contiguous(memory_format=torch.channels_last)}


def _run_conv(op: str, t: dict[str, torch.Tensor], stride: int, pad: int) -> dict[str, torch.Tensor]:
    cw, w, b = (t[k].clone().requires_grad_() for k in ("conv_weight", "weight", "bias"))
    mean, var = t["running_mean"].clone(), t["running_var"].clone()
    if op == "fused":
        y = fused.conv_batch_norm_relu(
            t["x"], cw, mean, var, w, b, stride=stride, padding=pad, training=True, momentum=0.1, eps=1e-5
        )
    else:
        z = F.conv1d(t["x"].unsqueeze(1), cw, stride=stride, padding=pad)
        y = torch.relu(F.batch_norm(z, mean, var, w, b, training=True, momentum=0.1, eps=1e-5)).unsqueeze(2)
    y.backward(t["grad"])
    assert cw.grad is not None and w.grad is not None and b.grad is not None
    return {"y": y, "running_mean": mean, "running_var": var, "conv.grad": cw.grad, "w.grad": w.grad, "b.grad": b.grad}


# cnn1d's first layer for 16 cells; a stride and a width 3 with a partial last block of rows; width 7, 5 channels.
CONV_CASES = [(128, 40, 256, 5, 1, 2), (67, 7, 24, 3, 2, 1), (2, 9, 5, 7, 1, 3)]


@pytest.mark.parametrize(("batch", "length", "c", "width", "stride", "pad"), CONV_CASES)
def test_the_fused_first_layer_gives_pytorch_s_numbers_and_gradients(batch, length, c, width, stride, pad):
    t = _conv_inputs(batch, length, c, width, stride, pad)
    ours = _run_conv("fused", t, stride, pad)
    exact = _run_conv("pytorch", {k: v.double() for k, v in t.items()}, stride, pad)
    _assert_as_close_as_pytorch(ours, exact, _run_conv("pytorch", t, stride, pad), times=2)
    _assert_channels_last_like(ours["y"], exact["y"])
    assert "_ConvBatchNormReLUBackward" in _operators(ours["y"])


def test_the_fused_first_layer_applies_only_where_it_can():
    t = _conv_inputs(4, 10, 8, 5, 1, 2)
    x, cw, w = t["x"], t["conv_weight"], t["weight"]
    assert fused.conv_batch_norm_relu_applies(x, cw, w, training=True)
    refused = {
        "eval mode": (x, cw, w, False),
        "float64": (x.double(), cw.double(), w.double(), True),
        "an input that takes a gradient": (x.clone().requires_grad_(), cw, w, True),
        "width 4": (x, cw[..., :4], w, True),
        "two input channels": (x, torch.cat([cw, cw], 1), w, True),
        "no BatchNorm weight": (x, cw, None, True),
    }
    for what, args in refused.items():
        assert not fused.conv_batch_norm_relu_applies(*args), what
    with pytest.raises(ValueError, match="conv_batch_norm_relu_applies"):
        fused.conv_batch_norm_relu(
            x, cw, t["running_mean"], t["running_var"], w, t["bias"], stride=1, padding=2, training=False,
            momentum=0.1, eps=1e-5,
        )  # fmt: skip


def _grouped_inputs(
    batch: int, length: int, groups: int, c_in: int, c_out: int, width: int, stride: int, pad: int
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, groups * c_in, 1, length, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(groups * c_out, c_in, width, generator=g) / (c_in * width) ** 0.5
    out_len = (length + 2 * pad - width) // stride + 1
    grad = torch.randn(batch, groups * c_out, 1, out_len, generator=g).contiguous(memory_format=torch.channels_last)
    return {"x": x, "weight": weight, "grad": grad}


def _run_grouped(op: str, t: dict[str, torch.Tensor], groups: int, stride: int, pad: int) -> dict[str, torch.Tensor]:
    x, w = t["x"].clone().requires_grad_(), t["weight"].clone().requires_grad_()
    if op == "fused":
        y = fused.grouped_conv1d(x, w, groups=groups, stride=stride, padding=pad)
    else:
        y = F.conv2d(x, w.unsqueeze(2), stride=(1, stride), padding=(0, pad), groups=groups)
    y.backward(t["grad"])
    assert x.grad is not None and w.grad is not None
    return {"y": y, "x.grad": x.grad, "w.grad": w.grad}


# (batch, length, groups, c_in, c_out, width, stride, pad): cnn1d's layers 2 and 3 for 16 cells; 32 outputs per
# group, stride 1; 32 inputs, width 7, stride 3 (a residue no tap reaches); no padding; padding wider than the
# input (output positions that see only zeros); one group.
GROUPED_CASES = [
    (128, 40, 16, 16, 16, 5, 2, 2),
    (128, 20, 16, 16, 16, 5, 2, 2),
    (7, 13, 3, 16, 32, 3, 1, 1),
    (5, 9, 2, 32, 16, 7, 3, 3),
    (4, 11, 2, 16, 16, 5, 1, 0),
    (3, 4, 2, 16, 16, 3, 1, 5),
    (2, 6, 1, 16, 16, 2, 4, 0),
]


@pytest.mark.parametrize(("batch", "length", "groups", "c_in", "c_out", "width", "stride", "pad"), GROUPED_CASES)
def test_the_grouped_convolution_gives_pytorch_s_numbers_and_gradients(
    batch, length, groups, c_in, c_out, width, stride, pad
):
    t = _grouped_inputs(batch, length, groups, c_in, c_out, width, stride, pad)
    ours = _run_grouped("fused", t, groups, stride, pad)
    exact = _run_grouped("pytorch", {k: v.double() for k, v in t.items()}, groups, stride, pad)
    # Float32 sums in another order than oneDNN's: within a few times its rounding of the same sums.
    _assert_as_close_as_pytorch(ours, exact, _run_grouped("pytorch", t, groups, stride, pad), times=4)
    _assert_channels_last_like(ours["y"], exact["y"])
    assert "_GroupedConvBackward" in _operators(ours["y"])


def test_the_grouped_convolution_s_numbers_do_not_depend_on_the_number_of_threads():
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs[threads] = [
                _run_grouped("fused", _grouped_inputs(*case), *case[2:3], *case[-2:]) for case in GROUPED_CASES[:3]
            ]
    finally:
        torch.set_num_threads(before)
    for threads in (2, 3):
        for ours, one in zip(runs[threads], runs[1], strict=True):
            for name, expected in one.items():
                assert torch.equal(ours[name], expected), (threads, name)


def test_the_grouped_convolution_applies_only_where_it_can():
    t = _grouped_inputs(4, 10, 2, 16, 16, 5, 1, 2)
    x, w = t["x"], t["weight"]
    geometry = {"groups": 2, "stride": 1, "padding": 2}
    assert fused.grouped_conv1d_applies(x, w, **geometry)
    refused = {
        "float64": (x.double(), w.double(), geometry),
        "not channels-last": (x.contiguous(), w, geometry),
        "height 2": (torch.cat([x, x], 2).contiguous(memory_format=torch.channels_last), w, geometry),
        "8 input channels per group": (x[:, :16].contiguous(memory_format=torch.channels_last), w[:, :8], geometry),
        "8 output channels per group": (x, w[:16], geometry),
        "width 17": (x, torch.cat([w, w, w, w], 2)[..., :17], geometry),
        "groups that do not divide the channels": (x, w, geometry | {"groups": 3}),
        "stride 0": (x, w, geometry | {"stride": 0}),
        "the input shorter than the width": (x[..., :2], w, geometry | {"padding": 1}),
    }
    for what, (xx, ww, geo) in refused.items():
        assert not fused.grouped_conv1d_applies(xx, ww, **geo), what
    with pytest.raises(ValueError, match="grouped_conv1d_applies"):
        fused.grouped_conv1d(x, w[:16], **geometry)
