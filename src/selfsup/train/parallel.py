"""How a method is spread over the processes of a run (``train.strategy``), and what trades
compute for memory or speed on the way: activation checkpointing and ``torch.compile``.

- ``ddp``: every process holds the whole method; torch's ``DistributedDataParallel``
  averages the gradients in buckets, overlapped with backward. ``find_unused_parameters``
  is on because SwAV's prototypes and DINO's last layer take no gradient during their first
  epoch; ``broadcast_buffers`` is off because BatchNorm statistics and SwAV's queue belong
  to their process (as in the reference code), and each process's are checkpointed.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on every residual block (the
  backbone's and an EMA teacher's), then on the whole method: parameters, gradients and
  optimiser state are split over the processes, each block gathered just before it runs and
  freed after. On CUDA with bf16 the blocks compute in bf16 and reduce gradients in fp32
  (``MixedPrecisionPolicy``); the fp32 shards stay the master weights.

One process needs neither: the method runs as it is.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from selfsup import distributed
from selfsup.backbones import blocks


def checkpoint_activations(method: nn.Module) -> int:
    """Keep only each residual block's input during forward and recompute the block in
    backward (Chen et al. 2016, "Training deep nets with sublinear memory cost"); returns the
    number of blocks. The parameter names stay as they were, so checkpoints do not change,
    and BatchNorm's running statistics are updated once per step, not again when the block
    is recomputed."""
    found = blocks(method)
    for block in found:
        contexts = functools.partial(_recompute_contexts, block)
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False, context_fn=contexts)
    return len(found)


def _recompute_contexts(block: nn.Module) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _batch_statistics_only(block)


@contextlib.contextmanager
def _batch_statistics_only(block: nn.Module):
    """BatchNorm layers whose running statistics stay as they are (momentum 0: the same
    operations, so the same tensors saved for backward) and whose batch count goes back:
    what the recomputation of a block must do, the step having updated them once already."""
    layers = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for module in layers:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, (momentum, count) in zip(layers, saved):
            module.momentum = momentum
            module.num_batches_tracked.copy_(count)


def compile_blocks(method: nn.Module) -> int:
    """``torch.compile`` each residual block in place (as torchtitan does: one graph per block
    compiles once and reuses it for all blocks of a shape; FSDP's hooks stay outside the
    graphs); returns the number of blocks."""
    found = blocks(method)
    for block in found:
        block.compile()
    return len(found)


def distribute(method: nn.Module, strategy: str, device: torch.device, bf16: bool) -> nn.Module:
    """Spread ``method`` over the process group by ``strategy``; returns the module whose
    ``forward`` the trainer calls (DDP's wrapper, or ``method`` itself)."""
    if distributed.world_size() == 1:
        return method
    if strategy == "ddp":
        with warnings.catch_warnings():  # its successor option still syncs buffers at init
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            return nn.parallel.DistributedDataParallel(
                method, device_ids=[device] if device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=True,
            )
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in blocks(method):
        fully_shard(block, mp_policy=policy)
    fully_shard(method, mp_policy=policy)
    # Evaluation (online kNN, clustering passes) calls embed() rather than forward().
    register_fsdp_forward_method(method, "embed")
    return method


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module``'s parameters are split over processes (FSDP)."""
    return isinstance(module, FSDPModule) or any(isinstance(p, DTensor) for p in module.parameters())
