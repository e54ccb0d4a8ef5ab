"""Optimisers: SGD with momentum, LARS, AdamW; weight decay kept off biases and norms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from selfsup.config import ConfigError
from selfsup.schedules import warmup_cosine

# SimCLR's and BYOL's LARS (eeta in their reference code).
DEFAULT_LARS_TRUST = 0.001


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman, Ginsburg 2017), as SimCLR, BYOL and
    Barlow Twins use it: for each parameter tensor w with gradient g,

        g <- g + weight_decay * w
        t  = trust_coefficient * ||w|| / ||g||   (1 when either norm is 0)
        g <- g * t
        v <- momentum * v + g ;  w <- w - lr * v

    so each step moves w by lr x trust_coefficient of its norm (before momentum). With
    ``clip`` (solo-learn's ``clip_lr``, used with trust 0.02 in its small-batch recipes) t
    becomes min(t / lr, 1): a step of trust_coefficient x ||w|| at most, and never more than
    plain SGD at lr would take. Groups with ``lars_exclude=True`` (biases and normalisation
    parameters) get neither weight decay nor the trust ratio, as in the SimCLR and BYOL
    reference code.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = DEFAULT_LARS_TRUST, clip: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, clip=clip,
                        lars_exclude=False, fixed_lr=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # Work on each process's own shard (all of a tensor without FSDP); the norms are
            # summed over the shards in one collective per group rather than one per tensor.
            weights, grads = [_local(p) for p in params], [_local(p.grad) for p in params]
            if not group["lars_exclude"]:
                grads = [g.add(w, alpha=group["weight_decay"]) for g, w in zip(grads, weights)]
                param_norms, grad_norms = _norms(weights, params), _norms(grads, params)
                trust = torch.where(
                    (param_norms > 0) & (grad_norms > 0), group["trust_coefficient"] * param_norms / grad_norms,
                    torch.ones_like(param_norms),
                )
                if group["clip"]:
                    trust = (trust / group["lr"]).clamp(max=1.0) if group["lr"] > 0 else torch.ones_like(trust)
                grads = [g.mul(t) for g, t in zip(grads, trust)]
            for param, weight, grad in zip(params, weights, grads):
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(param.grad).detach()  # the parameter's layout (a DTensor under FSDP)
                    _local(state["momentum_buffer"]).copy_(grad)
                else:
                    _local(state["momentum_buffer"]).mul_(group["momentum"]).add_(grad)
                weight.add_(_local(state["momentum_buffer"]), alpha=-group["lr"])
        return loss


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of ``tensor``: its shard under FSDP (sharing its storage), else itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _norms(tensors: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each whole tensor from this process's shards of them ([len(tensors)])."""
    sharded = [p for p in params if isinstance(p, DTensor)]
    if not sharded:
        return torch.stack([torch.linalg.vector_norm(t) for t in tensors])
    squares = torch.stack([torch.linalg.vector_norm(t).square() for t in tensors])
    dist.all_reduce(squares, group=sharded[0].device_mesh.get_group())
    return squares.sqrt()


def parameter_groups(model: nn.Module, weight_decay: float, fixed_lr_modules: Sequence[nn.Module] = ()) -> list[dict]:
    """Weights with decay; biases and normalisation parameters (1-d) without; and the same
    two for the ``fixed_lr_modules`` (SimSiam's predictor), flagged ``fixed_lr`` so that the
    learning-rate schedule keeps their rate at its base value."""
    fixed = {id(p) for module in fixed_lr_modules for p in module.parameters()}
    groups = []
    for fixed_lr in (False, True):
        decay, no_decay = [], []
        for parameter in model.parameters():
            if parameter.requires_grad and (id(parameter) in fixed) == fixed_lr:
                (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups += [
            {"params": decay, "weight_decay": weight_decay, "fixed_lr": fixed_lr},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "fixed_lr": fixed_lr},
        ]
    return [group for group in groups if group["params"]]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float,
                    fixed_lr_modules: Sequence[nn.Module] = (), fused: bool = False,
                    lars_trust: float = DEFAULT_LARS_TRUST, lars_clip: bool = False) -> torch.optim.Optimizer:
    """``fused``: torch's single-kernel SGD and AdamW (CUDA); LARS has no fused form."""
    groups = parameter_groups(model, weight_decay, fixed_lr_modules)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=lars_trust, clip=lars_clip)
    for group in groups:
        group.pop("lars_exclude", None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)
    raise ConfigError(f"train.optimizer: {name!r} is not one of sgd, lars, adamw")


class LearningRateSchedule:
    """The learning rate of every step: a linear warm-up over ``warmup_steps`` (at most a
    tenth of the run: short runs would spend most of their steps warming up), then a cosine
    decay to 0 at the planned end; groups flagged ``fixed_lr`` stay at the base rate."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int):
        self.optimizer, self.base_lr, self.warmup_steps = optimizer, base_lr, warmup_steps

    def apply(self, step: int, total_steps: int) -> float:
        """Set the rate of step ``step`` of ``total_steps`` in the optimiser; returns it."""
        lr = warmup_cosine(step, total_steps, min(self.warmup_steps, total_steps // 10), self.base_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr if group.get("fixed_lr") else lr
        return lr
