"""LeJEPA: the loss is the paper's formula over every view, global crops included (a version
that left the global views out of either term gives another value), the energy is the
prediction term's distance, and a short run on digits lowers the loss without collapsing."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from selfsup import runs
from selfsup.augment.views import RECIPES, ViewMaker, seeded_generator
from selfsup.backbones import build_backbone
from selfsup.config import ConfigError
from selfsup.losses.sigreg import random_directions
from selfsup.methods import Batch, build_method
from selfsup.methods.lejepa import LeJEPA
from selfsup.train.logging import read_metrics

GLOBAL, LOCAL, BATCH, SLICES, LAMBDA = 2, 6, 5, 16, 0.05


def tiny_lejepa(**options) -> LeJEPA:
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet-small", 1, width=4)
    options = {"hidden_dim": 16, "projection_dim": 8, "num_slices": SLICES, **options}
    return build_method({"name": "lejepa", **options}, backbone, dim).double()


def calibrated(model: LeJEPA, views: list[torch.Tensor]) -> LeJEPA:
    """``model`` in eval mode with its BatchNorm statistics the views' own (a random network's
    default statistics leave the embeddings of different images nearly equal). In eval mode
    each view's projection is per-sample, so projecting the views one at a time gives what
    the method's batched passes give."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the passes below
    model.train()
    with torch.no_grad():
        for view in views:
            model.project(view)
    return model.eval()


@pytest.fixture(scope="module")
def views():
    """The lejepa recipe's views of a few random 16 px images: 2 global crops, then 6 local."""
    recipe = dataclasses.replace(RECIPES["lejepa"], global_size=16, local_size=8)
    images = torch.randint(0, 256, (BATCH, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    made = ViewMaker(recipe, mean=(0.5,), std=(0.25,))(images, seeded_generator(0, 0))
    assert [v.shape[-1] for v in made] == [16] * GLOBAL + [8] * LOCAL
    return [v.double() for v in made]


def epps_pulley_numpy(x: np.ndarray, t_max: float = 5.0, num_points: int = 17) -> float:
    """N ∫ |φ̂(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt, trapezoidal rule on linspace(-t_max, t_max)."""
    t = np.linspace(-t_max, t_max, num_points)
    ecf = np.array([np.mean(np.exp(1j * tk * x)) for tk in t])
    integrand = np.abs(ecf - np.exp(-(t**2) / 2)) ** 2 * np.exp(-(t**2) / 2)
    return len(x) * float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)))


def naive_terms(z: list[np.ndarray], centre_views: list[int], loss_views: list[int], directions: np.ndarray) -> tuple[float, float]:
    """Eq. (7) (averaged over the K dimensions, as Algorithm 2) and (1/V) Σ_v SIGReg, with loops:
    each view in ``loss_views`` predicts the mean of ``centre_views``, SIGReg on each of them."""
    batch, dim = z[0].shape
    prediction = 0.0
    for v in loss_views:
        for n in range(batch):
            for k in range(dim):
                centre = sum(z[g][n, k] for g in centre_views) / len(centre_views)
                prediction += (centre - z[v][n, k]) ** 2
    prediction /= len(loss_views) * batch * dim
    statistics = [epps_pulley_numpy(z[v] @ directions[:, m]) for v in loss_views for m in range(directions.shape[1])]
    return prediction, float(np.mean(statistics))


def test_loss_is_the_paper_formula_over_all_views(views):
    model = calibrated(tiny_lejepa(), views)
    output = model(views, Batch(generator=torch.Generator().manual_seed(7)))

    z = [model.project(view).detach().numpy() for view in views]
    directions = random_directions(8, SLICES, torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    every = list(range(GLOBAL + LOCAL))
    prediction, regulariser = naive_terms(z, list(range(GLOBAL)), every, directions)
    expected = (1 - LAMBDA) * prediction + LAMBDA * regulariser
    assert output.loss.item() == pytest.approx(expected, rel=1e-9)
    assert output.metrics["prediction"] == pytest.approx(prediction, rel=1e-9)
    assert output.metrics["sigreg"] == pytest.approx(regulariser, rel=1e-9)
    assert torch.allclose(output.embeddings, model.project(views[0]), atol=1e-12)

    # A loss that leaves the global views out (local views pulled to the global centre, SIGReg
    # on the local views only, as a published implementation once did) is another value.
    local = list(range(GLOBAL, GLOBAL + LOCAL))
    local_prediction, local_regulariser = naive_terms(z, list(range(GLOBAL)), local, directions)
    assert abs(local_prediction - prediction) > 1e-3 * prediction
    assert abs(local_regulariser - regulariser) > 1e-3 * regulariser
    dropped = (1 - LAMBDA) * local_prediction + LAMBDA * local_regulariser
    assert abs(dropped - output.loss.item()) > 1e-3 * abs(dropped)
    # So is a centre taken over all views (MINIMAL.md's shortcut when every view is global).
    all_centre, _ = naive_terms(z, every, every, directions)
    assert abs(all_centre - prediction) > 1e-3 * prediction


def test_training_mode_sends_gradients_through_every_view(views):
    model = tiny_lejepa().train()
    inputs = [view.clone().requires_grad_() for view in views]
    output = model(inputs, Batch(generator=torch.Generator().manual_seed(3)))
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert all(view.grad is not None and view.grad.abs().sum() > 0 for view in inputs)  # no stop-gradient anywhere
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_directions_are_redrawn_each_step(views):
    model = tiny_lejepa().eval()
    first = model(views, Batch(generator=torch.Generator().manual_seed(0))).metrics["sigreg"]
    again = model(views, Batch(generator=torch.Generator().manual_seed(0))).metrics["sigreg"]
    other = model(views, Batch(generator=torch.Generator().manual_seed(1))).metrics["sigreg"]
    assert first == again and first != other


def test_energy_is_the_prediction_distance(views):
    model = tiny_lejepa().eval()
    x, y = views[0], views[1]
    energy = model.energy(x, y)
    assert energy.shape == (BATCH,)
    zx, zy = model.project(x), model.project(y)
    assert torch.allclose(energy, ((zx - zy) ** 2).mean(dim=1))
    assert torch.allclose(model.energy(x, x), torch.zeros(BATCH, dtype=torch.float64))
    # A view is closer to itself than to any other image's view.
    others = model.energy(x, x.roll(1, dims=0))
    assert (others > model.energy(x, x)).all()


def test_options_are_checked():
    assert LeJEPA.option_defaults()["lambda_sigreg"] == 0.05
    assert LeJEPA.default_recipe == "lejepa" and LeJEPA.summary.startswith("regularised")
    for bad in ({"lambda_sigreg": 1.5}, {"num_slices": 0}, {"integration_points": 1}, {"global_views": 0}):
        with pytest.raises(ConfigError):
            tiny_lejepa(**bad)
    model = tiny_lejepa(global_views=3).eval()
    with pytest.raises(ValueError, match="global crops"):
        model([torch.zeros(2, 1, 16, 16)] * 2 + [torch.zeros(2, 1, 8, 8)], Batch(generator=torch.Generator()))


@pytest.mark.e2e
def test_lejepa_lowers_its_loss_without_collapsing(tmp_path, tiny_overrides):
    from selfsup import config as config_module
    from selfsup.config import Config

    config = config_module.apply_overrides(
        Config(), tiny_overrides + ["method.name=lejepa", "backbone.name=convnet-small", "method.num_slices=128", "data.size=16", "augment.local_crops=2",
                                    "train.epochs=1", "train.log_every=2", "eval.enabled=false", f"out={tmp_path / 'run'}"]
    )
    summary = runs.pretrain(config)
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    losses = [r["loss"] for r in records]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert summary["collapse_alarm_step"] is None
    assert records[-1]["effective_rank"] > 2, records[-1]
    resolved = runs.load_run(tmp_path / "run").config
    assert resolved.augment.recipe == "lejepa" and resolved.augment.local_crops == 2
    assert resolved.train.optimizer == "adamw"
    assert resolved.backbone.name == "convnet-small"  # any backbone is allowed; vit-tiny-small is the default
