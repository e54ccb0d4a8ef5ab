"""Evaluation of models of continuations: energies of true and wrong futures, best-of-K
prediction error and sample diversity, probes and collapse of the encoder's features.

A model here has ``energy(past, future) -> [B]`` and ``embed(past) -> [B, D]``; models with
a decoder also have ``sample_futures(past, samples, generator) -> [B, K, T, C, H, W]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selfsup.data.sequences import ClipSet, reversed_future, shifted_future
from selfsup.energy import energy_auc
from selfsup.evaluate.collapse import collapse_report
from selfsup.evaluate.protocol import accuracy_metrics, raw_pixel_features

BEST_OF = (1, 5, 20)
_BATCH = 128


def _frames(uint8: Tensor, device: torch.device) -> Tensor:
    return uint8.to(device).float() / 255


def _batched(function: Callable[..., Tensor], *tensors: Tensor, device: torch.device) -> Tensor:
    """``function`` over batches of the uint8 clip tensors (as [0, 1] floats), concatenated on the CPU."""
    return torch.cat([
        function(*(_frames(t[start : start + _BATCH], device) for t in tensors)).float().cpu()
        for start in range(0, len(tensors[0]), _BATCH)
    ])


@torch.no_grad()
def continuation_energy_auc(model, clips: ClipSet, device: torch.device, shift: int = 4) -> dict[str, float]:
    """P(F(x, true continuation) < F(x, wrong one)) for three kinds of wrong continuation:
    ``other_clip`` (the next clip's future, rolled by one), ``reversed`` (the true future
    played backwards) and ``shifted`` (the true future moved ``shift`` pixels down and
    right)."""
    past, future = clips.past, clips.future
    true = _batched(model.energy, past, future, device=device)
    wrong = {
        "other_clip": future.roll(1, dims=0),
        "reversed": reversed_future(clips),
        "shifted": shifted_future(clips, (shift, shift)),
    }
    return {name: energy_auc(true, _batched(model.energy, past, y, device=device)) for name, y in wrong.items()}


@torch.no_grad()
def best_of_k(model, clips: ClipSet, device: torch.device, samples: tuple[int, ...] = BEST_OF, seed: int = 0) -> dict:
    """Multi-modality of the predicted futures: for K in ``samples``, the mean over clips of
    the smallest per-pixel squared error among the first K sampled futures (it can only
    fall with K; it stays flat for a model whose samples are all the same), and the
    diversity: the mean squared difference between two samples of one clip, over all
    pairs of the largest K."""
    most = max(samples)
    generator = torch.Generator(device=device).manual_seed(seed)
    best = {k: [] for k in samples}
    diversity = []
    for start in range(0, len(clips), _BATCH):
        past = _frames(clips.past[start : start + _BATCH], device)
        future = _frames(clips.future[start : start + _BATCH], device)
        futures = model.sample_futures(past, most, generator).float()  # [B, K, T, C, H, W]
        errors = (futures - future.unsqueeze(1)).pow(2).flatten(2).mean(dim=2)  # [B, K]
        for k in samples:
            best[k].append(errors[:, :k].min(dim=1).values.cpu())
        flat = futures.flatten(2)
        # Mean over pairs i != j of ||s_i - s_j||^2 / n, from the per-sample variance:
        # sum_{i,j} ||s_i - s_j||^2 = 2 K sum_i ||s_i - mean||^2.
        spread = (flat - flat.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2)) / flat.shape[2]
        diversity.append((2 * spread / (most - 1)).cpu() if most > 1 else torch.zeros(len(flat)))
    return {
        "best_of_k": {str(k): float(torch.cat(best[k]).mean()) for k in samples},
        "sample_diversity": float(torch.cat(diversity).mean()),
    }


@torch.no_grad()
def encode_clips(model, clips: ClipSet, device: torch.device) -> Tensor:
    """The encoder's features of the past frames of every clip [N, D]."""
    return _batched(model.embed, clips.past, device=device)


def probes(train_x: Tensor, train: ClipSet, test_x: Tensor, test: ClipSet, seeds: int) -> dict:
    """kNN, linear and few-shot accuracy of features on the clips' sprite classes."""
    return accuracy_metrics(train_x, train.labels, test_x, test.labels, train.num_classes, seeds=seeds)


def evaluate_video(model, train: ClipSet, test: ClipSet, device: torch.device, fewshot_seeds: int = 5,
                   random_init=None, raw_pixels: bool = True) -> dict:
    """The video part of ``summary.json``: ``energy_auc`` (other clip's future) and
    ``energy_auc_by_negative`` (other clip, reversed, shifted), ``best_of_k`` and
    ``sample_diversity`` (models with a decoder), probes of the encoder's features on the
    sprite class, their ``collapse`` diagnostics (models without a decoder), and ``baselines``: the same model at
    random initialisation and the raw pixels of the last past frame."""
    model.eval()
    aucs = continuation_energy_auc(model, test, device)
    result: dict = {"energy_auc": aucs["other_clip"], "energy_auc_by_negative": aucs}
    if hasattr(model, "sample_futures"):
        result.update(best_of_k(model, test, device))
    train_x, test_x = encode_clips(model, train, device), encode_clips(model, test, device)
    result.update(probes(train_x, train, test_x, test, fewshot_seeds))
    if not hasattr(model, "sample_futures"):
        # An energy measured between embeddings (JEPA) is zero for all pairs if the encoder
        # collapses; an energy measured in pixels cannot collapse that way, and a predictor's
        # features may well be low-rank without harm, so only the former is diagnosed.
        result["collapse"] = collapse_report(test_x)
    baselines = {}
    if random_init is not None:
        random_init.to(device).eval()
        baselines["random_init"] = probes(encode_clips(random_init, train, device), train,
                                          encode_clips(random_init, test, device), test, fewshot_seeds)
    if raw_pixels:
        baselines["raw_pixels"] = probes(raw_pixel_features(train.past[:, -1]), train,
                                         raw_pixel_features(test.past[:, -1]), test, fewshot_seeds)
    if baselines:
        result["baselines"] = baselines
    return result
