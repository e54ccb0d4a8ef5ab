"""The device a run uses, rank helpers and a gradient-preserving all-gather.

This is the only module that touches ``torch.distributed``; everything else calls these
helpers, which fall back to the single-process behaviour when no process group is
initialised, so every loss and the trainer run unchanged on one CPU.

Why a custom all-gather: ``torch.distributed.all_gather`` returns tensors detached from
the graph, so a loss computed on the gathered batch would send no gradient to the other
ranks' embeddings. :func:`gather_with_grad` returns the concatenated global batch and,
in backward, sums the incoming gradients over ranks (an all-reduce) and hands each rank
the slice that belongs to its own inputs. With the loss averaged over the global batch,
the gradients then equal those of one process holding the whole batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from selfsup.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """The device of ``train.device``: 'auto' is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
    return torch.device(name)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 of the process group, or of the torchrun launch once the group is gone."""
    return rank() == 0 if is_initialized() else int(os.environ.get("RANK", "0")) == 0


def init_from_environment(device: torch.device) -> bool:
    """Initialise the default process group when launched by ``torchrun``.

    Returns True when running distributed. Uses NCCL on CUDA and gloo on CPU.
    """
    if is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def broadcast_object(value):
    """Rank 0's ``value`` on every rank (e.g. a run directory named after the time)."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _collective_device() -> torch.device:
    """Where a tensor of a collective must live: NCCL works on the GPU only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_int(value: int) -> int:
    """Rank 0's integer on every rank, cheaply (a tensor broadcast, for per-step decisions)."""
    if world_size() == 1:
        return value
    holder = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.broadcast(holder, src=0)
    return int(holder.item())


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    if world_size() == 1:
        return flag
    holder = torch.tensor([int(flag)], dtype=torch.long, device=_collective_device())
    dist.all_reduce(holder, op=dist.ReduceOp.MAX)
    return bool(holder.item())


def shutdown() -> None:
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch_size = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.batch_size
        return grad[start : start + ctx.batch_size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` [b, ...] from every rank into [world_size * b, ...].

    Gradients flow back to every rank's inputs (summed over ranks). Identity on one
    process. All ranks must pass the same batch size.
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather without gradient (for evaluation features, queues, statistics)."""
    if world_size() == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (in place on a copy); identity on one process."""
    if world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (on a copy, no gradient); identity on one process."""
    if world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def barrier() -> None:
    if is_initialized():
        dist.barrier()
