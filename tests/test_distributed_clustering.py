"""Sinkhorn, DINO's centre, and the clustering and semi-supervised losses give the same
codes, centre, values and gradients (float64, to 1e-10) when the batch is split over 2 gloo
processes as on one process holding it all."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import distributed
from selfsup.losses import dino, dino_center, paws, sinkhorn, swav_multicrop

# Process groups of 2 gloo processes on the CPU.
pytestmark = pytest.mark.distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    share = len(tensor) // WORLD
    return tensor[rank * share : (rank + 1) * share]


# name -> (loss of the inputs, which inputs each rank holds a share of (rows split over the
# ranks; the others every rank holds whole), how many leading inputs take gradients)
CASES = {
    "paws": (lambda v0, v1, v2, s, y: paws([v0, v1, v2], s, y), (True,) * 5, 4),
    "paws-same-supports-on-every-rank": (lambda v0, v1, v2, s, y: paws([v0, v1, v2], s, y), (True,) * 3 + (False,) * 2, 4),
    "dino": (lambda s0, s1, s2, t0, t1, c: dino([s0, s1, s2], [t0, t1], c), (True,) * 5 + (False,), 3),
    "swav": (lambda a, b, c: swav_multicrop([a, b, c], [sinkhorn(a), sinkhorn(b)]), (True,) * 3, 3),
}
BATCH = 8


def _inputs() -> dict[str, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    paws_inputs = [randn(BATCH, 4), randn(BATCH, 4), randn(BATCH, 4), randn(6, 4), torch.eye(3, dtype=torch.float64).repeat(2, 1)]
    return {
        "sinkhorn": [randn(BATCH, 5)],
        "dino_center": [randn(BATCH, 5), randn(BATCH, 5), randn(5)],
        "paws": paws_inputs,
        "paws-same-supports-on-every-rank": paws_inputs,
        "dino": [randn(BATCH, 5) for _ in range(5)] + [randn(5)],
        "swav": [randn(BATCH, 5) for _ in range(3)],
    }


def _local_inputs(name: str, tensors: list[torch.Tensor], rank: int) -> list[torch.Tensor]:
    _, split, differentiable = CASES[name]
    local = [(_shard(t, rank) if s else t).clone() for t, s in zip(tensors, split)]
    return [t.requires_grad_() if i < differentiable else t for i, t in enumerate(local)]


def _worker(rank: int, port: int, inputs: dict, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        (scores,) = inputs["sinkhorn"]
        teacher_0, teacher_1, center = inputs["dino_center"]
        out = {
            "sinkhorn": sinkhorn(_shard(scores, rank)),
            "dino_center": dino_center(center, [_shard(teacher_0, rank), _shard(teacher_1, rank)]),
        }
        for name, (loss_fn, _, differentiable) in CASES.items():
            local = _local_inputs(name, inputs[name], rank)
            loss = loss_fn(*local)
            # DDP averages gradients over ranks; reproduce that on the inputs' gradients.
            (loss / WORLD).backward()
            value = distributed.all_reduce_mean(loss)
            out[name] = (value.item(), [t.grad.clone() for t in local[:differentiable]])
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def split_results():
    """Every rank's outputs, from one 2-process run (spawning costs seconds)."""
    inputs = _inputs()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), inputs, results), nprocs=WORLD, join=True)
    return inputs, [results[rank] for rank in range(WORLD)]


def test_sinkhorn_and_dino_center_split_over_processes_equal_one_process(split_results):
    inputs, results = split_results
    (scores,) = inputs["sinkhorn"]
    teacher_0, teacher_1, center = inputs["dino_center"]
    expected_codes, expected_center = sinkhorn(scores), dino_center(center, [teacher_0, teacher_1])
    for rank, out in enumerate(results):
        assert torch.allclose(out["sinkhorn"], _shard(expected_codes, rank), atol=1e-12)
        assert torch.allclose(out["dino_center"], expected_center, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_loss_split_over_processes_equals_one_process(name, split_results):
    inputs, results = split_results
    loss_fn, split, differentiable = CASES[name]
    whole = [t.clone().requires_grad_() if i < differentiable else t for i, t in enumerate(inputs[name])]
    expected = loss_fn(*whole)
    expected.backward()
    for out in results:
        assert out[name][0] == pytest.approx(expected.item(), rel=1e-10)
    for i in range(differentiable):
        if split[i]:
            for rank, out in enumerate(results):
                assert torch.allclose(out[name][1][i], _shard(whole[i].grad, rank), atol=1e-10)
        else:
            # An input every rank holds whole (as a shared network computes it on every
            # rank): its gradient, summed over ranks, is the one-process gradient.
            assert torch.allclose(sum(out[name][1][i] for out in results), whole[i].grad, atol=1e-10)
