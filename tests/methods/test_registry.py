"""A method is one subclass: naming it registers it, its constructor's annotations check its
options, and `selfsup pretrain` runs it with nothing else touched (ARCHITECTURE.md's recipe)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config, ConfigError
from selfsup.heads import ProjectionHead
from selfsup.losses import info_nce
from selfsup.methods import METHODS, Method, TwoViewMethod, method_class


@pytest.fixture
def toy_method():
    class ToyContrastive(TwoViewMethod):
        """InfoNCE on a one-layer projector: a method written the way the recipe says."""

        name = "toy-contrastive"
        summary = "contrastive: a test method"
        train_recipe = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "epochs": 1}

        def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 16, temperature: float = 0.5):
            super().__init__(backbone)
            self.projector = ProjectionHead(backbone_dim, projection_dim, projection_dim, layers=1)
            self.temperature = temperature

        def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
            return info_nce(z_a, z_b, self.temperature)

    try:
        yield ToyContrastive
    finally:
        METHODS.pop(ToyContrastive.name)


def test_a_named_subclass_registers_itself_and_shared_bases_do_not(toy_method):
    assert method_class("toy-contrastive") is toy_method
    assert "" not in METHODS and all(name == cls.name for name, cls in METHODS.items())
    assert set(METHODS) >= {"simclr", "swav", "mlm", "word2vec", "lvp", "jepa"}
    assert list(METHODS)[:3] == ["moco-v2", "moco-v3", "simclr"]  # grouped by family, contrastive first


def test_a_second_method_of_the_same_name_is_refused(toy_method):
    with pytest.raises(TypeError, match="toy-contrastive"):
        type("Another", (Method,), {"name": "toy-contrastive"})


def test_options_are_checked_against_the_constructors_annotations(toy_method):
    assert toy_method.option_defaults() == {"projection_dim": 16, "temperature": 0.5}
    assert toy_method.resolve_options({"name": "toy-contrastive", "temperature": 1}) == {
        "name": "toy-contrastive", "projection_dim": 16, "temperature": 1.0,
    }
    with pytest.raises(ConfigError, match="method.projection_dim must be an integer, got 'wide'"):
        toy_method.resolve_options({"name": "toy-contrastive", "projection_dim": "wide"})
    with pytest.raises(ConfigError, match="unknown config key 'method.width'.*allowed: projection_dim, temperature"):
        toy_method.resolve_options({"name": "toy-contrastive", "width": 3})


@pytest.mark.e2e
def test_pretrain_runs_a_method_that_is_only_a_subclass(toy_method, tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("method.")]
    config = config_module.apply_overrides(Config(), [*overrides, "method.name=toy-contrastive", "eval.baselines=false",
                                                      f"out={tmp_path / 'run'}"])
    summary = runs.pretrain(config)
    recorded = config_module.load(tmp_path / "run" / runs.CONFIG_FILE)
    assert recorded.method == {"name": "toy-contrastive", "projection_dim": 16, "temperature": 0.5}
    assert recorded.train.optimizer == "sgd" and summary["steps"] == 22 and summary["knn_top1"] > 0.5
