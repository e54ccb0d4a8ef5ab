"""DeepCluster-v2, SwAV, DINO and PAWS: they train on tiny digits without collapsing, and their
per-step machinery (prototypes, schedules, centre, memory bank, support set) does what the
papers say."""

import dataclasses

import pytest
import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.augment.views import RECIPES, ViewMaker, seeded_generator
from selfsup.backbones import build_backbone
from selfsup.config import Config
from selfsup.data import fashion_mnist_available, load_splits
from selfsup.evaluate.pipeline import evaluate_method
from selfsup.heads import fit_dino_outputs, fit_prototypes
from selfsup.losses import sinkhorn
from selfsup.methods import Batch, StepInfo, build_method
from selfsup.methods.deepcluster import DeepClusterV2, spherical_kmeans
from selfsup.methods.dino import DINO
from selfsup.methods.paws import PAWS
from selfsup.methods.swav import SwAV
from selfsup.modalities import modality_of
from selfsup.train.logging import read_metrics
from selfsup.train.trainer import Trainer

SMALL_HEADS = {
    "deepcluster-v2": ["method.hidden_dim=64", "method.projection_dim=32"],
    "swav": ["method.hidden_dim=64", "method.projection_dim=32"],
    # DINO needs a wider head than the others to keep its bottleneck spread on 1,437 images.
    "dino": ["backbone.width=16", "method.hidden_dim=256", "method.bottleneck_dim=64", "method.output_dim=256"],
    # PAWS pulls the images of a class together; at the CIFAR-10 recipe's lr (3.2) the tiny
    # run's embeddings end up in tight class clusters that read as collapse.
    "paws": ["method.hidden_dim=64", "method.projection_dim=32", "train.lr=0.8"],
}
# DINO's loss is not expected to fall early: the teacher sharpens (temperature warm-up) and
# moves (EMA) while the student learns.
LOSS_FALLS = ("deepcluster-v2", "swav", "paws")


def _config(tmp_path, tiny_overrides, name, *extra):
    overrides = [o for o in tiny_overrides if not o.startswith("method.")]
    return config_module.apply_overrides(
        Config(),
        overrides + [f"method.name={name}", *SMALL_HEADS[name], "train.epochs=6", f"out={tmp_path / 'run'}", *extra],
    )


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(SMALL_HEADS))
def test_method_trains_without_collapsing(tmp_path, tiny_overrides, name):
    summary = runs.pretrain(_config(tmp_path, tiny_overrides, name, "eval.baselines=false"))
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    losses = [r["loss"] for r in records]
    if name in LOSS_FALLS:
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert not summary["collapse"]["collapsed"], summary["collapse"]
    assert summary["knn_top1"] > 0.5
    if name != "paws":  # the clustering methods report how the images use the prototypes
        usage = summary["collapse"]["prototypes"]
        assert usage["used"] > 5 and usage["largest_share"] < 0.9
        assert {"prototype_used", "prototype_largest_share", "prototype_entropy"} <= records[-1].keys()


def _tiny(cls, **options):
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet-small", 1, width=4)
    return build_method({"name": cls.name, **options}, backbone, dim)


def _views(count=16, recipe="multicrop", size=16):
    images = (torch.rand(count, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    maker = ViewMaker(dataclasses.replace(RECIPES[recipe], global_size=size, local_size=7, local_crops=2), (0.5,), (0.25,))
    return maker(images, seeded_generator(0, 0))


def test_prototype_and_output_counts_are_fitted_to_the_data():
    assert fit_prototypes(60_000) == 3000 and fit_prototypes(1_437) == 143 and fit_prototypes(50) == 10
    assert fit_dino_outputs(60_000) == 4096 and fit_dino_outputs(1_281_167) == 65536 and fit_dino_outputs(100) == 64
    assert SwAV.fit_options({"prototypes": 0}, 1_437)["prototypes"] == 143
    assert SwAV.fit_options({"prototypes": 77}, 1_437)["prototypes"] == 77


def test_swav_prototypes_are_normalised_each_step_and_frozen_in_the_first_epoch():
    swav = _tiny(SwAV, hidden_dim=16, projection_dim=8, prototypes=12)
    with torch.no_grad():
        swav.prototypes.weight.mul_(3.0)
    swav.on_step_start(StepInfo(0, 100, 10))
    assert torch.allclose(swav.prototypes.weight.norm(dim=1), torch.ones(12))
    swav(_views()).loss.backward()
    assert swav.prototypes.weight.grad is None  # frozen: excluded from the graph
    assert next(swav.backbone.parameters()).grad is not None

    swav.zero_grad()
    swav.on_step_start(StepInfo(10, 100, 10))
    output = swav(_views())
    output.loss.backward()
    assert swav.prototypes.weight.grad is not None and swav.prototypes.weight.grad.abs().sum() > 0
    # Codes come from Sinkhorn: every image's code is a distribution over the prototypes.
    assert torch.allclose(output.assignments.sum(dim=1), torch.ones(16), atol=1e-5)


def test_swav_queue_keeps_the_newest_global_embeddings_and_joins_sinkhorn_when_full():
    swav = _tiny(SwAV, hidden_dim=16, projection_dim=8, prototypes=12, queue_size=24)
    info = StepInfo(0, 100, 10)
    swav.on_step_start(info)
    views = _views()
    swav(views)
    assert swav.queue.stored().numel() == 0  # the forward pass changes no state
    swav.on_step_end(info)
    # The two global crops are projected together (one pass per crop size, shared BN statistics).
    global_z = swav.project(torch.cat(views[:2])).detach().chunk(2)
    assert not swav.queue.full and torch.allclose(swav.queue.stored(), torch.stack(global_z, dim=1), atol=1e-6)
    swav(_views())
    swav.on_step_end(info)
    assert swav.queue.full and int(swav.queue.next) == 8  # 32 rows into 24 slots: the ring wrapped
    # Once full, Sinkhorn's equal partition runs over the queue and the batch together.
    queued = swav.prototypes(swav.queue.rows[:, 0])
    scores = swav.prototypes(global_z[0])
    expected = sinkhorn(torch.cat([queued, scores]), swav.epsilon, swav.sinkhorn_iterations)[len(queued):]
    torch.testing.assert_close(swav._codes(scores, scores, 0), expected)


def test_dino_schedules_centre_and_frozen_last_layer():
    dino = _tiny(DINO, hidden_dim=16, bottleneck_dim=8, output_dim=32)
    dino.on_step_start(StepInfo(0, 100, 10))
    assert dino.teacher_temperature == pytest.approx(0.04) and dino.freeze_last_layer
    dino.on_step_start(StepInfo(15, 100, 10))
    assert dino.teacher_temperature == pytest.approx(0.055) and not dino.freeze_last_layer
    dino.on_step_start(StepInfo(30, 100, 10))
    assert dino.teacher_temperature == pytest.approx(0.07)
    dino.on_step_start(StepInfo(99, 100, 10))
    assert dino.teacher_temperature == pytest.approx(0.07)
    dino.on_step_end(StepInfo(0, 100, 10))
    assert dino.momentum == pytest.approx(0.996)
    dino.on_step_end(StepInfo(100, 100, 10))
    assert dino.momentum == pytest.approx(1.0)

    views = _views(recipe="dino")
    teacher_mean = dino.teacher(torch.cat(views[:2])).mean(dim=0)
    dino.on_step_start(StepInfo(0, 100, 10))
    dino(views).loss.backward()
    assert not dino.center.any()  # the forward pass changes no state
    dino.on_step_end(StepInfo(0, 100, 10))
    assert torch.allclose(dino.center, 0.1 * teacher_mean, atol=1e-6)  # c <- 0.9 * 0 + 0.1 * mean
    assert dino.head.last_layer.weight.grad is None  # frozen during the first epoch
    assert all(p.grad is None for p in dino.teacher.parameters())  # the teacher learns only by EMA


def test_spherical_kmeans_recovers_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=1)
    labels = torch.arange(200) % 4
    points = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(200, 16, generator=generator), dim=1)
    found, assignments = spherical_kmeans(points, 4, 10, torch.Generator().manual_seed(3))
    # The same partition up to renaming, and centroids on the true centres.
    for cluster in range(4):
        assert len(set(assignments[labels == cluster].tolist())) == 1
    assert len(set(assignments.tolist())) == 4
    assert torch.allclose(found.norm(dim=1), torch.ones(4))
    assert (found @ centres.T).max(dim=1).values.min() > 0.99


def test_deepcluster_fills_its_memory_clusters_it_and_updates_it_per_step():
    method = _tiny(DeepClusterV2, hidden_dim=16, projection_dim=8, prototypes=5, heads=2, dataset_size=32)
    views = _views(count=32)

    def training_views():
        yield [v[:16] for v in views], torch.arange(16)
        yield [v[16:] for v in views], torch.arange(16, 32)

    method.on_epoch_start(StepInfo(0, 10, 10), training_views)
    assert bool(method.memory_filled) and torch.allclose(method.memory.norm(dim=2), torch.ones(2, 32))
    assert method.assignments.min() >= 0 and method.assignments.max() < 5
    assert torch.allclose(method.centroids.norm(dim=2), torch.ones(2, 5))
    # Head 0 clusters global crop 0, head 1 global crop 1: each label is the nearest centroid.
    for head in range(2):
        nearest = (method.memory[head % 2] @ method.centroids[head].T).argmax(dim=1)
        assert torch.equal(nearest, method.assignments[head])

    before = method.memory.clone()
    indices = torch.tensor([3, 7, 30, 31])
    output = method([v[indices] for v in views], Batch(indices=indices))
    output.loss.backward()
    assert torch.equal(method.memory, before)  # the forward pass changes no state
    method.on_step_end(StepInfo(0, 10, 10))
    changed = (method.memory != before).any(dim=2).any(dim=0)
    assert changed[indices].all() and not changed[[i for i in range(32) if i not in indices.tolist()]].any()
    assert next(method.backbone.parameters()).grad is not None
    with pytest.raises(ValueError, match="indices"):
        method(views)


def test_paws_needs_a_support_batch_and_labels():
    paws = _tiny(PAWS, hidden_dim=16, projection_dim=8, labels_per_class=2)
    assert paws.support_per_class == 2
    with pytest.raises(ValueError, match="support"):
        paws(_views())
    with pytest.raises(ValueError, match="labels_per_class"):
        _tiny(PAWS, labels_per_class=0)


@pytest.mark.e2e
@pytest.mark.skipif(not fashion_mnist_available(), reason="needs dataset-fashion-mnist (installed by .ci/run)")
def test_paws_with_labels_beats_random_init_on_few_shot(tmp_path):
    # 4,000 Fashion-MNIST images at 16 px for 10 epochs (about 30 s): on the 1,437 tiny digits
    # a width-8 network at random init is already as good as PAWS gets in a few epochs.
    train, _, test = load_splits("fashion-mnist", 1, 16)
    subset = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:4000], "fashion-mnist:4000")
    config = config_module.apply_overrides(Config(), [
        "method.name=paws", "data.source=fashion-mnist", "backbone.width=16", "method.hidden_dim=128",
        "method.projection_dim=64", "method.labels_per_class=10", "train.epochs=10", "train.batch_size=128",
        f"out={tmp_path / 'run'}",
    ])
    config = runs.resolve(config, subset)
    method, views = runs.build_model(config), modality_of(config).build_view_maker(config)
    Trainer(method, views, subset, config, tmp_path / "run").fit()
    result = evaluate_method(method, views, subset, test.subset(torch.arange(2000), "fashion-mnist:test-2000"),
                             torch.device("cpu"), fewshot_seeds=5, energy_images=200, random_init=runs.build_model(config),
                             raw_pixels=False)
    paws, random_init = result["fewshot"], result["baselines"]["random_init"]["fewshot"]
    assert paws["1"] > random_init["1"] and paws["10"] > random_init["10"] + 0.02, (paws, random_init)


def test_paws_embeds_supports_with_the_global_views_in_one_batch_norm_pass():
    """suncet's paws_train.py runs encoder(supports + views): the supports share the global
    views' batch statistics; the local crops get a pass of their own."""
    from selfsup.losses import paws as paws_loss

    method = _tiny(PAWS, hidden_dim=16, projection_dim=8, labels_per_class=2).train()
    views = _views(recipe="paws")
    supports, labels = views[0][:8], torch.arange(4).repeat(2)
    loss = method(views, Batch(support_views=supports, support_labels=labels)).loss
    together = method.project(torch.cat([supports, views[0], views[1]]))
    smoothed = torch.nn.functional.one_hot(labels, 4).float() * 0.9 + 0.1 / 4
    anchors = [*together[8:].chunk(2), *method.project(torch.cat(views[2:])).chunk(len(views) - 2)]
    assert torch.allclose(loss, paws_loss(anchors, together[:8], smoothed, 0.1, 0.25, True), atol=1e-6)
    separate = method.project(supports)  # its own statistics: another embedding of the same images
    assert not torch.allclose(separate, together[:8], atol=1e-4)


def test_paws_views_are_the_cifar10_configuration():
    recipe = RECIPES[PAWS.default_recipe]
    assert (recipe.global_scale, recipe.local_crops, recipe.local_scale) == ((0.75, 1.0), 6, (0.3, 0.75))
    assert (recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue, recipe.jitter_p) == (0.4, 0.4, 0.4, 0.1, 0.8)
    assert recipe.grayscale_p == 0 and recipe.solarize_p == (0.2,) and recipe.blur_p == (0.0,) and recipe.local_blur_p == 0
