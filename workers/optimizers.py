"""The paper's optimizers: SGD with momentum (Algorithm 1) and Adam (Algorithm 2) of Loshchilov & Hutter (ICLR 2019),
each with L2 regularization (``sgd``, ``adam``) or with decoupled weight decay (``sgdw``, ``adamw``).

Coupled versus decoupled decay lives here and nowhere else. The conventions:

- ``lr`` is α, the base learning rate. ``weight_decay`` is λ, raw and applied per optimizer step (not the paper's
  normalized λ_norm: ``sweeps.normalized_weight_decay`` converts that, once, when a sweep expands).
- Every param group carries ``eta``, the schedule multiplier η_t (default 1.0). The training loop sets it before each
  ``step()`` (:func:`set_eta`, with a schedule from ``workers.schedules``); ``step()`` applies it exactly where the
  algorithms put it.

======  ==========================================================  =======================================
name    what λ does in one step                                     scaled by
======  ==========================================================  =======================================
sgd     g ← ∇f + λθ, then m ← β1·m + η_t·α·g;  θ ← θ − m            η_t·α, through the momentum buffer
sgdw    m ← β1·m + η_t·α·∇f;  θ ← θ − m − η_t·λ·θ_{t−1}             η_t only — NOT α (the paper's point)
adam    g ← ∇f + λθ before the moment estimates m̂, v̂               α·η_t/√v̂: less decay where v̂ is large
adamw   θ ← θ − η_t·(α·m̂/(√v̂ + ε) + λ·θ_{t−1})                     η_t only — NOT α
======  ==========================================================  =======================================

Where ``torch.optim`` differs (and why wdgrid has its own optimizers):

- ``torch.optim.SGD`` keeps lr outside the momentum buffer (``buf ← β·buf + g; θ ← θ − lr·buf``). With lr = α·η_t
  that equals Algorithm 1 only while η_t is constant: when η_t changes, torch rescales the whole history in the
  buffer, the paper only the new gradient. torch has no SGDW.
- ``torch.optim.AdamW`` decays by ``lr·weight_decay``, so with lr = α·η_t the decay is α·η_t·λ: an extra factor α.
  The paper's AdamW equals torch's with ``weight_decay = λ/α``, a value that has to change whenever α does — the
  coupling the paper removes. ``torch.optim.Adam(weight_decay=λ)`` is the same as ``adam`` here.
- Neither optimizer here uses torch.optim's own ``weight_decay`` machinery; both update with ``torch._foreach_*``
  kernels, as torch's ``foreach`` implementations do.

Bundles (``workers.bundle``) train K grid cells as one model whose parameters are stacked along a leading dimension
of size K; for them ``lr`` and ``weight_decay`` may be 1-D tensors of K per-cell values, which broadcast over each
parameter's leading dimension. The arithmetic is the same; only the coefficients differ per cell.

The paper decays every weight, biases and normalization parameters included, and so does a plain
``make_optimizer(name, model.parameters(), ...)``. :func:`param_groups` offers the common alternative (no decay on
parameters with fewer than two dimensions) as an option.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final, Literal

import torch
from torch import Tensor, nn
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = [
    "OPTIMIZERS",
    "OptimizerName",
    "PaperAdam",
    "PaperSGD",
    "make_optimizer",
    "param_groups",
    "set_eta",
]

OptimizerName = Literal["sgd", "sgdw", "adam", "adamw"]
OPTIMIZERS: Final[tuple[OptimizerName, ...]] = ("sgd", "sgdw", "adam", "adamw")
DECOUPLED: Final[frozenset[str]] = frozenset({"sgdw", "adamw"})


Coef = float | Tensor  # a hyperparameter: one number, or a 1-D tensor of per-cell values for stacked parameters


def _check_coef(name: str, value: float | Tensor) -> Coef:
    """Like :func:`_check` (>= 0, finite), but also accepts a 1-D floating tensor of per-cell values."""
    if not isinstance(value, Tensor):
        return _check(name, value)
    if value.dim() != 1 or not value.is_floating_point():
        raise ValueError(f"{name} must be a number or a 1-D floating tensor of per-cell values, got {value!r}")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0 in every cell, got {value.tolist()}")
    return value


def _per_param(coef: Coef, params: list[Tensor]) -> float | list[Tensor]:
    """A float stays a float; a per-cell tensor becomes one view per parameter that broadcasts over its cells."""
    if isinstance(coef, Tensor):
        return [coef.to(p.dtype).view(-1, *([1] * (p.dim() - 1))) for p in params]
    return coef


def _axpy_(ys: list[Tensor], xs: list[Tensor], a: float | list[Tensor]) -> None:
    """ys += a·xs for a number or per-parameter coefficient tensors."""
    if isinstance(a, list):
        torch._foreach_addcmul_(ys, xs, a)
    else:
        torch._foreach_add_(ys, xs, alpha=a)


def _axpy(ys: list[Tensor], xs: list[Tensor], a: float | list[Tensor]) -> list[Tensor]:
    """ys + a·xs as new tensors (the inputs stay untouched)."""
    if isinstance(a, list):
        return list(torch._foreach_addcmul(ys, xs, a))
    return list(torch._foreach_add(ys, xs, alpha=a))


def _nonzero(coef: Coef) -> bool:
    # A per-cell tensor is applied as is: checking it would cost a host sync per step.
    return isinstance(coef, Tensor) or coef != 0


def _check(name: str, value: float, *, positive: bool = False, below_one: bool = False) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming the argument when it is out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    if below_one and v >= 1:
        raise ValueError(f"{name} must be < 1, got {value!r}")
    return v


class _PaperOptimizer(Optimizer, ABC):
    """What both algorithms share: the ``eta`` group entry, range checks on every group, the closure protocol."""

    decoupled: bool

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        # A group may override lr, weight_decay or eta (e.g. weight_decay=0 for biases); check what it ended up with.
        group = self.param_groups[-1]
        for key in ("lr", "weight_decay"):
            group[key] = _check_coef(key, group[key])
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Checks run before every step (cheap: per-cell tensors are checked once, when the group is added)."""
        for key in ("lr", "weight_decay"):
            if not isinstance(group[key], Tensor):
                group[key] = _check(key, group[key])
        group["eta"] = _check("eta", group["eta"])

    @property
    @abstractmethod
    def name(self) -> OptimizerName:
        """The registry name of this optimizer: ``sgd``, ``sgdw``, ``adam`` or ``adamw``."""

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        states: list[dict[str, Any]] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{self.name} does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            states.append(self.state[p])
        return params, grads, states

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one optimizer step with each group's current ``eta`` (η_t). Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # eta is set by the training loop between steps; check it here, where a bad value would do harm.
            self._check_group(group)
            params, grads, states = self._gather(group)
            if params:
                self._update(group, params, grads, states)
        return loss

    @abstractmethod
    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """Apply one step of the algorithm to the parameters of ``group`` that have gradients."""


class PaperSGD(_PaperOptimizer):
    """Algorithm 1: SGD with momentum, with L2 regularization (``decoupled=False``) or decoupled decay (SGDW).

    Per step t, for each parameter θ with gradient ∇f (α = ``lr``, λ = ``weight_decay``, β1 = ``momentum``,
    η_t = the group's ``eta``)::

        g   ← ∇f + λ·θ_{t−1}            (sgd only: L2)
        m_t ← β1·m_{t−1} + η_t·α·g      (m_0 = 0: η_t·α sits inside the buffer)
        θ_t ← θ_{t−1} − m_t − η_t·λ·θ_{t−1}   (the last term for sgdw only: scaled by η_t, not by α)
    """

    def __init__(
        self, params: ParamsT, *, lr: Coef, weight_decay: Coef = 0.0, momentum: float = 0.9, decoupled: bool
    ) -> None:
        self.decoupled = decoupled
        defaults = {
            "lr": _check_coef("lr", lr),
            "weight_decay": _check_coef("weight_decay", weight_decay),
            "momentum": _check("momentum", momentum, below_one=True),
            "eta": 1.0,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        group["momentum"] = _check("momentum", group["momentum"], below_one=True)

    @property
    def name(self) -> OptimizerName:
        return "sgdw" if self.decoupled else "sgd"

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        alpha, lam, beta1, eta = group["lr"], group["weight_decay"], group["momentum"], group["eta"]
        for p, state in zip(params, states, strict=True):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        bufs = [state["momentum_buffer"] for state in states]

        if _nonzero(lam) and not self.decoupled:
            grads = _axpy(grads, params, _per_param(lam, params))  # L2: g + λθ (p.grad itself stays untouched)
        torch._foreach_mul_(bufs, beta1)
        _axpy_(bufs, grads, _per_param(eta * alpha, params))  # η_t·α inside the buffer, as in Algorithm 1
        if _nonzero(lam) and self.decoupled:
            # θ_{t−1} − η_t·λ·θ_{t−1}, taken before m_t is subtracted so that the decay sees θ_{t−1}.
            torch._foreach_mul_(params, _per_param(1.0 - eta * lam, params))
        torch._foreach_sub_(params, bufs)


class PaperAdam(_PaperOptimizer):
    """Algorithm 2: Adam, with L2 regularization (``decoupled=False``) or decoupled weight decay (AdamW).

    Per step t (counted per parameter from 1), with α = ``lr``, λ = ``weight_decay``, (β1, β2) = ``betas``,
    ε = ``eps`` and η_t = the group's ``eta``::

        g   ← ∇f + λ·θ_{t−1}            (adam only: L2, before the moment estimates)
        m_t ← β1·m_{t−1} + (1 − β1)·g;   v_t ← β2·v_{t−1} + (1 − β2)·g²
        m̂_t ← m_t / (1 − β1^t);         v̂_t ← v_t / (1 − β2^t)
        θ_t ← θ_{t−1} − η_t·(α·m̂_t / (√v̂_t + ε) + λ·θ_{t−1})   (the λ term for adamw only: scaled by η_t, not α)
    """

    def __init__(
        self,
        params: ParamsT,
        *,
        lr: Coef,
        weight_decay: Coef = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decoupled: bool,
    ) -> None:
        self.decoupled = decoupled
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        defaults = {
            "lr": _check_coef("lr", lr),
            "weight_decay": _check_coef("weight_decay", weight_decay),
            "betas": (
                _check("betas[0]", betas[0], below_one=True),
                _check("betas[1]", betas[1], below_one=True),
            ),
            "eps": _check("eps", eps),
            "eta": 1.0,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        group["eps"] = _check("eps", group["eps"])
        beta1, beta2 = group["betas"]
        group["betas"] = (
            _check("betas[0]", beta1, below_one=True),
            _check("betas[1]", beta2, below_one=True),
        )

    @property
    def name(self) -> OptimizerName:
        return "adamw" if self.decoupled else "adam"

    def _update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        alpha, lam, eps, eta = group["lr"], group["weight_decay"], group["eps"], group["eta"]
        beta1, beta2 = group["betas"]
        for p, state in zip(params, states, strict=True):
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        # Steps are counted per parameter (a parameter without a gradient does not advance), so the bias
        # corrections are per parameter too.
        bias1 = [1.0 - beta1 ** state["step"] for state in states]
        bias2_sqrt = [math.sqrt(1.0 - beta2 ** state["step"]) for state in states]

        if _nonzero(lam) and not self.decoupled:
            grads = _axpy(grads, params, _per_param(lam, params))  # L2: g + λθ before the moments
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)  # m ← β1·m + (1 − β1)·g
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        # √v̂ + ε = √v / √(1 − β2^t) + ε
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, eps)
        if _nonzero(lam) and self.decoupled:
            # − η_t·λ·θ_{t−1}, before the Adam step moves θ
            torch._foreach_mul_(params, _per_param(1.0 - eta * lam, params))
        if isinstance(alpha, Tensor):
            # per-cell step sizes: θ ← θ − (η_t·α_k / (1 − β1^t))·m / (√v̂ + ε)
            updates = list(torch._foreach_div(exp_avgs, denom))
            alphas = _per_param(alpha, params)
            assert isinstance(alphas, list)
            steps = [a * (-eta / b) for a, b in zip(alphas, bias1, strict=True)]
            _axpy_(params, updates, steps)
        else:
            torch._foreach_addcdiv_(params, exp_avgs, denom, [-eta * alpha / b for b in bias1])


def make_optimizer(
    name: str,
    params: ParamsT,
    *,
    lr: float | Tensor,
    weight_decay: float | Tensor,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Build one of the paper's four optimizers by name.

    Args:
        name: ``sgd`` (SGD + momentum, L2), ``sgdw`` (decoupled), ``adam`` (Adam, L2) or ``adamw`` (decoupled).
        params: parameters or param groups, as for any ``torch.optim`` optimizer; a group may set its own
            ``weight_decay`` (see :func:`param_groups`), ``lr`` or ``eta``.
        lr: α, the base learning rate; the step is α·η_t. A 1-D tensor gives one α per cell of stacked parameters.
        weight_decay: λ, raw, per optimizer step (convert λ_norm with ``sweeps.normalized_weight_decay`` first); a
            1-D tensor gives one λ per cell of stacked parameters.
        momentum: β1 of SGD's momentum buffer (``sgd``, ``sgdw``; ignored by Adam).
        betas: (β1, β2) of Adam's moment estimates (``adam``, ``adamw``; ignored by SGD).
        eps: ε added to √v̂ (``adam``, ``adamw``).

    Every group starts with ``eta`` = 1.0; set η_t with :func:`set_eta` before each step.

    Raises:
        ValueError: an unknown ``name``, or a negative or non-finite value, naming the argument.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    decoupled = name in DECOUPLED
    if name in ("sgd", "sgdw"):
        return PaperSGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, decoupled=decoupled)
    return PaperAdam(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, decoupled=decoupled)


def set_eta(optimizer: torch.optim.Optimizer, eta: float) -> None:
    """Set the schedule multiplier η_t of every param group; the next ``step()`` uses it."""
    eta = _check("eta", eta)
    for group in optimizer.param_groups:
        group["eta"] = eta


def param_groups(model: nn.Module, *, decay_all: bool = True) -> list[dict[str, Any]]:
    """Param groups for :func:`make_optimizer`, with or without decay on biases and normalization parameters.

    ``decay_all=True`` (the default, and what the paper does) puts every parameter in one group decayed by λ.
    ``decay_all=False`` exempts parameters with fewer than two dimensions (biases, BatchNorm/LayerNorm scales and
    shifts) by giving them their own group with ``weight_decay`` 0 — a common practice (nanoGPT, timm), not the
    paper's setup.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.dim() >= 2]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
