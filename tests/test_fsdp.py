"""FSDP2 and DDP through `selfsup.train.parallel` on 2 gloo processes: the same losses,
gradients and weights as the reference, and sharded checkpoints that resume exactly."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from selfsup.backbones import build_backbone
from selfsup.methods import StepInfo, build_method
from selfsup.train import checkpoint
from selfsup.train.optim import build_optimizer
from selfsup.train.parallel import checkpoint_activations, distribute, is_sharded

pytestmark = pytest.mark.distributed

WORLD, BATCH, STEPS = 2, 8, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _swav():
    backbone, dim = build_backbone("regnety-200mf-small", 1, image_size=16)
    return build_method({"name": "swav", "prototypes": 10, "hidden_dim": 32, "projection_dim": 16}, backbone, dim), "lars"


def _dino():
    # LayerNorm only (no BatchNorm in the head), so one process on the whole batch is the
    # exact reference: BatchNorm's statistics are per process.
    backbone, dim = build_backbone("vit-tiny-small", 1, image_size=16)
    options = {"name": "dino", "output_dim": 20, "hidden_dim": 32, "bottleneck_dim": 16, "head_batch_norm": False}
    return build_method(options, backbone, dim), "sgd"


BUILDERS = {"swav": _swav, "dino": _dino}


def _views(step: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return [torch.randn(BATCH, 1, size, size, generator=generator) for size in (16, 16, 8, 8)]


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def _train(name: str, strategy: str, rank: int, world: int, checkpointing: bool = False, steps=range(STEPS),
           save_at: int | None = None, save_dir=None, resume_from=None):
    """(losses, first step's gradients, final state) of ``steps`` steps on this process's
    share of each batch; the first step freezes SwAV's prototypes and DINO's last layer."""
    torch.manual_seed(0)
    method, optimizer_name = BUILDERS[name]()
    if checkpointing:
        checkpoint_activations(method)
    model = distribute(method, strategy, torch.device("cpu"), bf16=False)
    optimizer = build_optimizer(optimizer_name, method, 0.1, 1e-4, 0.9)
    if resume_from is not None:
        checkpoint.load_checkpoint(resume_from, method, optimizer)
    losses, gradients = [], None
    share = BATCH // world
    for step in steps:
        info = StepInfo(step, 10, 1)
        method.on_step_start(info)
        output = model([v[rank * share : (rank + 1) * share] for v in _views(step)], None)
        optimizer.zero_grad()
        output.loss.backward()
        if gradients is None:
            gradients = {n: _full(p.grad) for n, p in method.named_parameters() if p.grad is not None}
        optimizer.step()
        method.on_step_end(info)
        loss = output.loss.detach().clone()
        if world > 1:
            dist.all_reduce(loss)
        losses.append(loss.item() / world)
        if save_at is not None and step + 1 == save_at:
            checkpoint.save_checkpoint(save_dir, step + 1, method, optimizer, {}, full_model=False)
    return losses, gradients, {key: _full(value) for key, value in method.state_dict().items()}, is_sharded(method)


def _worker(rank: int, port: int, results, jobs) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for key, job in jobs.items():
            result = _train(rank=rank, world=WORLD, **job)
            if rank == 0:
                results[key] = result
    finally:
        dist.destroy_process_group()


def _spawn(jobs: dict) -> dict:
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results, jobs), nprocs=WORLD, join=True)
    return dict(results)


def _close(a: dict, b: dict, tolerance: float) -> None:
    """Every tensor of ``a`` within ``tolerance`` of ``b``'s, relative to the tensor's scale
    when it exceeds 1 (float32 gradients of a few hundred differ in their last bits)."""
    assert a.keys() == b.keys()
    for key in a:
        if a[key].numel():
            difference = (a[key].double() - b[key].double()).abs().max().item()
            scale = max(1.0, b[key].double().abs().max().item())
            assert difference <= tolerance * scale, (key, difference, scale)


def test_fsdp_swav_on_regnety_matches_ddp():
    """BatchNorm makes one process on the whole batch a different computation; DDP on the
    same two processes is the reference (DDP against one process is tested on DINO)."""
    results = _spawn({
        "fsdp": {"name": "swav", "strategy": "fsdp"},
        "ddp": {"name": "swav", "strategy": "ddp"},
        "fsdp_checkpointed": {"name": "swav", "strategy": "fsdp", "checkpointing": True},
    })
    (fsdp_losses, fsdp_grads, fsdp_state, sharded), (ddp_losses, ddp_grads, ddp_state, ddp_sharded) = results["fsdp"], results["ddp"]
    assert sharded and not ddp_sharded
    assert fsdp_losses == pytest.approx(ddp_losses, abs=1e-5)
    _close(fsdp_grads, ddp_grads, 1e-5)
    _close(fsdp_state, ddp_state, 1e-5)
    # Recomputing the blocks in backward changes nothing but memory.
    checkpointed_losses, _, checkpointed_state, _ = results["fsdp_checkpointed"]
    assert checkpointed_losses == pytest.approx(fsdp_losses, abs=1e-6)
    _close(checkpointed_state, fsdp_state, 1e-6)


def test_fsdp_and_ddp_dino_on_vit_tiny_match_one_process_on_the_whole_batch():
    one_losses, one_grads, one_state, _ = _train("dino", "ddp", rank=0, world=1)
    results = _spawn({"fsdp": {"name": "dino", "strategy": "fsdp"}, "ddp": {"name": "dino", "strategy": "ddp"}})
    for strategy in ("fsdp", "ddp"):
        losses, grads, state, _ = results[strategy]
        assert losses == pytest.approx(one_losses, abs=1e-5)
        _close(grads, one_grads, 1e-5)
        _close(state, one_state, 1e-5)


def test_sharded_checkpoint_resumes_bit_identical_and_assembles_on_one_process(tmp_path):
    folder = tmp_path / "checkpoints"
    results = _spawn({
        "straight": {"name": "swav", "strategy": "fsdp", "steps": range(4), "save_at": 2, "save_dir": folder},
        "two": {"name": "swav", "strategy": "fsdp", "steps": range(2)},
    })
    saved = checkpoint.latest_checkpoint(folder)
    assert (saved / checkpoint.SHARDED_DIR).is_dir() and not (saved / checkpoint.MODEL_FILE).exists()
    assert sorted(p.name for p in (saved / checkpoint.BUFFERS_DIR).iterdir()) == ["rank-00000.safetensors", "rank-00001.safetensors"]
    resumed = _spawn({"resumed": {"name": "swav", "strategy": "fsdp", "steps": range(2, 4), "resume_from": saved}})
    straight_state, resumed_state = results["straight"][2], resumed["resumed"][2]
    assert all(torch.equal(straight_state[k], resumed_state[k]) for k in straight_state)

    # One process assembles the whole model from the shards (for evaluation and export) ...
    torch.manual_seed(1)
    whole, _ = _swav()
    checkpoint.load_checkpoint(saved, whole)
    at_step_two = results["two"][2]
    assert all(torch.equal(whole.state_dict()[k], at_step_two[k]) for k in at_step_two)
    # ... but cannot resume training from them without FSDP.
    with pytest.raises(checkpoint.CheckpointError, match="train.strategy=fsdp"):
        checkpoint.load_checkpoint(saved, whole, build_optimizer("lars", whole, 0.1, 1e-4, 0.9))
