"""Losses with cross-sample terms give the same value and gradients (to 1e-12 in float64)
when the batch is split over 2 gloo processes as on one process holding it all."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import distributed
from selfsup.losses import barlow_twins, info_nce, vicreg

# Process groups of 2 gloo processes on the CPU.
pytestmark = pytest.mark.distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOSSES = {
    "info_nce": lambda a, b: info_nce(a, b, temperature=0.2),
    "barlow_twins": barlow_twins,
    "vicreg": vicreg,
}


def _worker(rank: int, port: int, name: str, z_a: torch.Tensor, z_b: torch.Tensor, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        share = len(z_a) // WORLD
        local_a = z_a[rank * share : (rank + 1) * share].clone().requires_grad_()
        local_b = z_b[rank * share : (rank + 1) * share].clone().requires_grad_()
        loss = LOSSES[name](local_a, local_b)
        # DDP averages gradients over ranks; reproduce that on the inputs' gradients.
        (loss / WORLD).backward()
        value = distributed.all_reduce_mean(loss)
        results[rank] = (value.item(), local_a.grad.clone(), local_b.grad.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_split_over_processes_equals_one_process(name):
    batch = 8
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(2, batch, 5, generator=generator, dtype=torch.float64)

    whole_a, whole_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    expected = LOSSES[name](whole_a, whole_b)
    expected.backward()

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), name, z_a, z_b, results), nprocs=WORLD, join=True)
    share = batch // WORLD
    for rank in range(WORLD):
        value, grad_a, grad_b = results[rank]
        assert value == pytest.approx(expected.item(), rel=1e-10)
        assert torch.allclose(grad_a, whole_a.grad[rank * share : (rank + 1) * share], atol=1e-12)
        assert torch.allclose(grad_b, whole_b.grad[rank * share : (rank + 1) * share], atol=1e-12)


def _moco_worker(rank: int, port: int, results) -> None:
    from selfsup.backbones import build_backbone
    from selfsup.methods import StepInfo, build_method

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)  # the same initial weights and queue on every rank
        backbone, dim = build_backbone("convnet-small", 1, width=4)
        moco = build_method({"name": "moco-v2", "hidden_dim": 16, "projection_dim": 8, "queue_size": 10}, backbone, dim)
        views = [torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(rank + s)) for s in (10, 20)]
        moco(views)
        moco.on_step_end(StepInfo(0, 1, 1))
        results[rank] = (moco.queue.rows.clone(), int(moco.queue.next), moco._keys(views[1]))
    finally:
        dist.destroy_process_group()


def test_moco_queue_enqueues_the_keys_of_every_rank_in_rank_order():
    results = mp.Manager().dict()
    mp.spawn(_moco_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
    queue_0, position_0, keys_0 = results[0]
    queue_1, position_1, keys_1 = results[1]
    assert torch.equal(queue_0, queue_1) and position_0 == position_1 == 6
    expected = torch.nn.functional.normalize(torch.cat([keys_0, keys_1]), dim=1)
    assert torch.allclose(queue_0[:6], expected, atol=1e-6)


def _deepcluster_worker(rank: int, port: int, results) -> None:
    from selfsup.backbones import build_backbone
    from selfsup.methods import Batch, StepInfo, build_method

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        backbone, dim = build_backbone("convnet-small", 1, width=4)
        method = build_method(
            {"name": "deepcluster-v2", "hidden_dim": 16, "projection_dim": 8, "prototypes": 3, "heads": 1, "dataset_size": 12},
            backbone, dim,
        )
        views = [torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(rank + s)) for s in (10, 20)]
        indices = torch.tensor([0, 1, 2]) + 6 * rank
        method(views, Batch(indices=indices))
        method.on_step_end(StepInfo(0, 1, 1))
        results[rank] = (method.memory.clone(), method.project(torch.cat(views)).detach())
    finally:
        dist.destroy_process_group()


def test_deepcluster_memory_bank_holds_every_ranks_embeddings():
    results = mp.Manager().dict()
    mp.spawn(_deepcluster_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
    memory_0, z_0 = results[0]
    memory_1, z_1 = results[1]
    assert torch.equal(memory_0, memory_1)
    for rank, z in ((0, z_0), (1, z_1)):
        rows = torch.arange(3) + 6 * rank
        # Global crop c of the batch is stored in memory[c]; training-mode BN makes the
        # projections depend on the batch, so compare with the same batch's projections.
        assert torch.allclose(memory_0[0, rows], z[:3], atol=1e-5)
        assert torch.allclose(memory_0[1, rows], z[3:], atol=1e-5)
    assert memory_0[:, 3:6].abs().sum() == 0 and memory_0[:, 9:].abs().sum() == 0
