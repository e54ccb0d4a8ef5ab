"""The evaluation protocol reads every masked-image and predictive image method: energy AUC
and collapse diagnostics (their `energy`, `project`), features for the probes (`embed`)."""

import dataclasses

import pytest
import torch

from selfsup.augment.views import RECIPES, ViewMaker
from selfsup.backbones.vit import VisionTransformer, ViTSize
from selfsup.evaluate.pipeline import energy_and_collapse
from selfsup.methods import build_method, method_class


@pytest.mark.parametrize("name", ["mae", "ijepa", "lejepa"])
def test_energy_and_collapse_diagnostics_run_on_the_method(name):
    torch.manual_seed(0)
    backbone = VisionTransformer(ViTSize(32, 2, 2), in_channels=1, image_size=16, patch_size=4, pool="mean")
    options = {"name": name, **({"projection_dim": 16, "hidden_dim": 32} if name == "lejepa" else {})}
    method = build_method(options, backbone, 32).eval()
    recipe = dataclasses.replace(RECIPES[method_class(name).default_recipe], global_size=16, local_size=8)
    images = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8)
    auc, collapse = energy_and_collapse(method, images, ViewMaker(recipe, (0.5,), (0.25,)), torch.device("cpu"))
    assert 0.0 <= auc <= 1.0
    assert {"std_sqrt_d", "effective_rank", "collapsed"} <= collapse.keys()
    assert method.embed(torch.zeros(3, 1, 16, 16)).shape == (3, 32)
