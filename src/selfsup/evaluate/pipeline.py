"""The evaluation protocol applied to a trained method, with its baselines beside it.

For a method and a labelled held-out split it measures: kNN (k=20, k=200), linear probe and
few-shot accuracy of the backbone features (:mod:`selfsup.evaluate.protocol`); the energy
AUC, P(F(x, x') < F(x, y')) for x' another view of x and y' a view of another image; and
the collapse diagnostics of the projected embeddings (and of the prototype assignments,
for clustering methods). The same accuracy metrics are taken
for raw pixels and for the same backbone at random initialisation, so every result comes
with the two numbers it has to beat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from selfsup.augment.views import ViewMaker, seeded_generator
from selfsup.backbones import uses_convolutions
from selfsup.data import ImageSet, labelled_subset
from selfsup.energy import energy_auc
from selfsup.evaluate.collapse import collapse_report, prototype_usage
from selfsup.evaluate.protocol import raw_pixel_features, split_accuracy_metrics
from selfsup.methods import Method

_EVALUATION_SEED = 1234


@torch.no_grad()
def encode(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    view_maker: ViewMaker,
    device: torch.device,
    channels_last: bool = False,
    batch_size: int = 1024,
    description: str | None = None,
) -> torch.Tensor:
    """Apply ``fn`` (e.g. ``method.embed``) to the evaluation view of uint8 ``images``, in batches."""
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=description, unit="batch", leave=False, disable=None if description else True):
        batch = view_maker.eval_view(images[start : start + batch_size].to(device))
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        chunks.append(fn(batch).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def energy_and_collapse(
    method: Method, images: torch.Tensor, view_maker: ViewMaker, device: torch.device
) -> tuple[float, dict]:
    """Energy AUC and collapse diagnostics on held-out ``images`` (uint8).

    Two augmented views of every image are drawn from a fixed seed; compatible pairs are
    (view a of image i, view b of image i), incompatible pairs (view a of image i, view b of
    image i+1, wrapping around), so every image appears once in each role. For a method whose
    energy scores a hidden part (``energy_within_view``: MAE, I-JEPA) the pairs are (view a of
    image i, view a of image i) against (view a of image i, view a of image i+1): the true
    hidden part against one from another image. The energies are
    the method's own ``energy``, so methods that define F differently are measured by it.
    """
    channels_last = uses_convolutions(method)
    generator = seeded_generator(_EVALUATION_SEED, 0, device)
    compatible, incompatible, z_a, z_b = [], [], [], []
    chunk = 512
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk + 1].to(device)  # one extra row: image i+1 of the last
        if start + chunk >= len(images):
            batch = torch.cat([batch, images[:1].to(device)])  # wrap around
        views = view_maker(batch, generator)
        if len(views) < 2:  # a one-view recipe (MAE, I-JEPA): a second, independent draw
            views = views + view_maker(batch, generator)
        view_a, view_b = views[:2]
        if channels_last:
            view_a, view_b = (v.contiguous(memory_format=torch.channels_last) for v in (view_a, view_b))
        n = len(batch) - 1
        other = view_a if method.energy_within_view else view_b  # the hidden part of the same view
        compatible.append(method.energy(view_a[:n], other[:n]).float().cpu())
        incompatible.append(method.energy(view_a[:n], other[1:]).float().cpu())
        z_a.append(method.project(view_a[:n]).float().cpu())
        z_b.append(method.project(view_b[:n]).float().cpu())
    auc = energy_auc(torch.cat(compatible), torch.cat(incompatible))
    z = encode(method.project, images, view_maker, device, channels_last)
    report = collapse_report(z, torch.cat(z_a), torch.cat(z_b))
    if method.has_prototypes:
        usage = prototype_usage(encode(method.prototype_probabilities, images, view_maker, device, channels_last))
        report["prototypes"] = usage
        report["reasons"] = report["reasons"] + usage["reasons"]
        report["collapsed"] = bool(report["reasons"])
    return auc, report


def evaluate_method(
    method: Method,
    view_maker: ViewMaker,
    train_split: ImageSet,
    test_split: ImageSet,
    device: torch.device,
    fewshot_seeds: int = 5,
    energy_images: int = 2000,
    random_init: Method | None = None,
    raw_pixels: bool = True,
) -> dict:
    """The evaluation part of ``summary.json`` for ``method`` (put in eval mode here)."""
    method.eval()
    result: dict = {}
    held_out = test_split if len(test_split) > 0 else train_split  # energy needs no labels
    train_split = labelled_subset(train_split)
    test_split = labelled_subset(test_split)
    labelled = len(train_split) > 0 and len(test_split) > 0
    channels_last = uses_convolutions(method)
    if labelled:
        train_x = encode(method.embed, train_split.images, view_maker, device, channels_last, description="embed train")
        test_x = encode(method.embed, test_split.images, view_maker, device, channels_last, description="embed test")
        result.update(split_accuracy_metrics(train_x, train_split, test_x, test_split, fewshot_seeds))
    auc, collapse = energy_and_collapse(method, held_out.images[:energy_images], view_maker, device)
    result["energy_auc"] = auc
    result["collapse"] = collapse

    baselines: dict = {}
    if labelled and raw_pixels:
        baselines["raw_pixels"] = split_accuracy_metrics(
            raw_pixel_features(train_split.images), train_split, raw_pixel_features(test_split.images), test_split, fewshot_seeds
        )
    if labelled and random_init is not None:
        random_init.to(device).eval()
        if channels_last:
            random_init.to(memory_format=torch.channels_last)
        train_x = encode(random_init.embed, train_split.images, view_maker, device, channels_last, description="embed train (random init)")
        test_x = encode(random_init.embed, test_split.images, view_maker, device, channels_last, description="embed test (random init)")
        baselines["random_init"] = split_accuracy_metrics(train_x, train_split, test_x, test_split, fewshot_seeds)
    if baselines:
        result["baselines"] = baselines
    return result

