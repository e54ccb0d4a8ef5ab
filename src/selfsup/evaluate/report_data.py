"""The numbers behind the pictures of ``report.html`` for an image run.

:func:`image_report_data` measures, on a small held-out sample, what the summary table
cannot show: the few-shot curve over more label counts, the two energy distributions
behind the energy AUC, nearest-neighbour retrieval, a 2-D map of the features, the
singular-value spectrum and, for clustering methods, prototype usage. Everything comes
out as plain lists, floats and uint8 tensors, so :mod:`selfsup.report.html` only draws.

The 2-D map is scikit-learn's t-SNE (already a dependency) rather than UMAP: ``umap-learn``
would pull in numba and llvmlite for one picture, and on at most a thousand points t-SNE
takes a few seconds.
"""

from __future__ import annotations

import torch

from selfsup.augment.views import ViewMaker, seeded_generator
from selfsup.backbones import uses_convolutions
from selfsup.data import ImageSet, labelled_subset
from selfsup.energy import energy_auc
from selfsup.evaluate.fewshot import fewshot_accuracy
from selfsup.evaluate.pipeline import encode
from selfsup.evaluate.protocol import raw_pixel_features
from selfsup.methods import Method

__all__ = ["REPORT_SHOTS", "image_report_data"]

REPORT_SHOTS = (1, 2, 5, 10, 20, 50, 100)
_EVALUATION_SEED = 1234  # the energy pairs of selfsup.evaluate.pipeline, so the AUC matches in kind
_RETRIEVAL_QUERIES = 8
_RETRIEVAL_NEIGHBOURS = 8


def _sample(split: ImageSet, count: int, seed: int) -> ImageSet:
    """At most ``count`` rows of ``split``, drawn without replacement from ``seed``."""
    if len(split) <= count:
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return split.subset(keep, split.name + ":report")


@torch.no_grad()
def _energies(method: Method, images: torch.Tensor, view_maker: ViewMaker, device: torch.device) -> tuple[list[float], list[float]]:
    """Energies of compatible pairs (two views of image i) and incompatible pairs (view a of
    image i, view b of image i+1, wrapping around), built as the summary's energy AUC is."""
    channels_last = uses_convolutions(method)
    generator = seeded_generator(_EVALUATION_SEED, 0, device)
    batch = torch.cat([images, images[:1]]).to(device)
    view_a, view_b = view_maker(batch, generator)[:2]
    if channels_last:
        view_a, view_b = (v.contiguous(memory_format=torch.channels_last) for v in (view_a, view_b))
    n = len(images)
    compatible = method.energy(view_a[:n], view_b[:n]).float().cpu()
    incompatible = method.energy(view_a[:n], view_b[1:]).float().cpu()
    return compatible.tolist(), incompatible.tolist()


def _fewshot_curve(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   num_classes: int, seeds: int) -> dict[str, list[float]]:
    """Mean and std test top-1 at every shot count of :data:`REPORT_SHOTS` that the smallest
    training class can fill (larger counts would repeat the last point)."""
    counts = torch.bincount(train_y, minlength=num_classes)
    smallest = int(counts[counts > 0].min())
    shots = [s for s in REPORT_SHOTS if s <= smallest] or [1]
    result = fewshot_accuracy(train_x, train_y, test_x, test_y, num_classes, shots=shots, seeds=seeds)
    return {"shots": shots, "mean": [result[str(s)]["mean"] for s in shots], "std": [result[str(s)]["std"] for s in shots]}


def _spectrum(features: torch.Tensor) -> list[float]:
    """Singular values of the row-normalised, centred ``features``, largest first: a
    collapsed representation has few non-negligible ones."""
    z = torch.nn.functional.normalize(features.double(), dim=1)
    return torch.linalg.svdvals(z - z.mean(dim=0)).tolist()


def _tsne(features: torch.Tensor, seed: int) -> list[list[float]]:
    """A 2-D t-SNE map of ``features`` (cosine distance, PCA start)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 5:
        return [[0.0, 0.0] for _ in range(n)]
    # 500 iterations instead of sklearn's 1,000: half the time, the same map (1,000 Fashion-MNIST
    # test images: trustworthiness 0.920 at both, KL 0.726 against 0.705).
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", metric="cosine", random_state=seed,
                max_iter=500)
    return tsne.fit_transform(features.double().numpy()).tolist()


def _baseline_curves(train: ImageSet, test: ImageSet, num_classes: int, seeds: int, random_init: Method | None,
                     features, device: torch.device, channels_last: bool) -> dict[str, dict[str, list[float]]]:
    """The few-shot curves of raw pixels and, when given, the backbone at random init."""
    curves = {"raw_pixels": _fewshot_curve(raw_pixel_features(train.images), train.labels, raw_pixel_features(test.images),
                                           test.labels, num_classes, seeds)}
    if random_init is not None:
        random_init.to(device).eval()
        if channels_last:
            random_init.to(memory_format=torch.channels_last)
        curves["random_init"] = _fewshot_curve(features(random_init.embed, train.images), train.labels,
                                               features(random_init.embed, test.images), test.labels, num_classes, seeds)
    return curves


@torch.no_grad()
def image_report_data(
    method: Method,
    view_maker: ViewMaker,
    train: ImageSet,
    test: ImageSet,
    device: torch.device,
    random_init: Method | None = None,
    seed: int = 0,
    max_points: int = 1000,
    max_train: int = 5000,
    fewshot_seeds: int = 2,
    baseline_curves: dict[str, dict] | None = None,
) -> dict:
    """What the HTML report of an image run draws, measured on at most ``max_points``
    held-out images and ``max_train`` training images (``method`` is put in eval mode).
    ``baseline_curves`` (``{"raw_pixels" | "random_init": curve}`` of an earlier run on the
    same data and backbone) replaces drawing those curves again; ``random_init`` is then unused.

    Returns a dict; keys are absent where the data cannot give them (no labels, no test
    split, no prototypes):

    - ``labels``: the test labels used; ``class_names``;
    - ``fewshot``: ``{"run" | "raw_pixels" | "random_init": {"shots", "mean", "std"}}``;
    - ``energies``: ``{"compatible", "incompatible": [float], "auc": float}``;
    - ``retrieval``: ``{"queries": uint8 [Q, C, H, W], "query_labels", "neighbours": uint8
      [Q, K, C, H, W], "agree": [[bool]]}``, by cosine similarity of the backbone features;
    - ``map``: ``{"points": [[x, y]], "labels"}``, t-SNE of the test features;
    - ``spectrum``: ``{"features", "projections": [float]}``, singular values;
    - ``prototypes``: ``{"counts": [int]}``, test images per most likely prototype.
    """
    method.eval()
    channels_last = uses_convolutions(method)
    held_out = test if len(test) > 0 else train
    train_l = labelled_subset(_sample(train, max_train, seed + 1))
    points = _sample(held_out, max_points, seed)
    test_l = labelled_subset(points)
    data: dict = {"class_names": list(held_out.class_names)}

    def features(fn, images: torch.Tensor) -> torch.Tensor:
        return encode(fn, images, view_maker, device, channels_last)

    test_x = features(method.embed, points.images)
    compatible, incompatible = _energies(method, points.images, view_maker, device)
    data["energies"] = {"compatible": compatible, "incompatible": incompatible, "auc": energy_auc(torch.tensor(compatible), torch.tensor(incompatible))}
    data["spectrum"] = {"features": _spectrum(test_x), "projections": _spectrum(features(method.project, points.images))}
    if method.has_prototypes:
        assignments = features(method.prototype_probabilities, points.images)
        data["prototypes"] = {"counts": torch.bincount(assignments.argmax(dim=1), minlength=assignments.shape[1]).tolist()}

    labelled = len(train_l) > 0 and len(test_l) > 0
    point_labels = points.labels.tolist()
    data["map"] = {"points": _tsne(test_x, seed), "labels": point_labels}
    if not labelled:
        return data
    data["labels"] = test_l.labels.tolist()
    num_classes = max(train_l.num_classes, int(train_l.labels.max()) + 1, int(test_l.labels.max()) + 1)
    train_x = features(method.embed, train_l.images)
    test_lx = test_x[points.labels >= 0]

    curves = {"run": _fewshot_curve(train_x, train_l.labels, test_lx, test_l.labels, num_classes, fewshot_seeds)}
    if baseline_curves is not None:
        curves.update(baseline_curves)
    else:
        curves.update(_baseline_curves(train_l, test_l, num_classes, fewshot_seeds, random_init, features, device, channels_last))
    data["fewshot"] = curves

    # Retrieval: the first queries of the (shuffled) held-out sample, nearest train images by cosine.
    queries = min(_RETRIEVAL_QUERIES, len(test_l))
    k = min(_RETRIEVAL_NEIGHBOURS, len(train_l))
    q = torch.nn.functional.normalize(test_lx[:queries], dim=1)
    nearest = (q @ torch.nn.functional.normalize(train_x, dim=1).T).topk(k, dim=1).indices
    data["retrieval"] = {
        "queries": test_l.images[:queries].clone(),
        "query_labels": test_l.labels[:queries].tolist(),
        "neighbours": train_l.images[nearest].clone(),
        "agree": (train_l.labels[nearest] == test_l.labels[:queries, None]).tolist(),
    }
    return data
