"""The supervised reference: the same backbone trained with every label for a wall-clock budget."""

import dataclasses

import pytest
import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.augment.views import RECIPES, ViewMaker
from selfsup.backbones import build_backbone
from selfsup.config import Config, ConfigError
from selfsup.data import load_splits
from selfsup.train.budget import CALIBRATION_STEPS
from selfsup.train.supervised import supervised_accuracy


def test_supervised_training_fits_the_budget_learns_and_leaves_the_encoder_alone():
    _, train, test = load_splits("digits", 1, 16)
    torch.manual_seed(0)
    encoder, dim = build_backbone("convnet-small", 1, 8)
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    view_maker = ViewMaker(dataclasses.replace(RECIPES["small-images"], global_size=16), (0.3,), (0.3,))
    result = supervised_accuracy(encoder, dim, train, test, view_maker, seconds=4.0, seed=0, device=torch.device("cpu"))
    assert result["top1"] > 0.5  # chance is 0.1: about two passes over 1,437 labelled digits
    assert result["steps"] > CALIBRATION_STEPS.stop  # the schedule was fitted to the measured step time
    assert result["epochs"] == pytest.approx(result["steps"] / -(-len(train) // 64), abs=1e-3)
    assert result["seconds"] < 4.0 * 1.5
    assert all(torch.equal(before[key], value) for key, value in encoder.state_dict().items())
    with pytest.raises(ValueError, match="seconds"):
        supervised_accuracy(encoder, dim, train, test, view_maker, seconds=0, seed=0, device=torch.device("cpu"))


def test_the_reference_of_a_config_resolves_its_backbone_and_evaluation_size(tiny_config):
    config = tiny_config("train.budget=3s")
    result = runs.supervised_reference(config)
    assert result["backbone"] == "convnet-small" and result["data"] == "digits" and result["budget"] == "3s"
    assert result["eval_size"] == 16  # 16 px digits, read whole
    assert 0.1 < result["top1"] <= 1
    with pytest.raises(ConfigError, match="train.budget"):
        runs.supervised_reference(tiny_config())
    with pytest.raises(ConfigError, match="image data"):
        runs.supervised_reference(config_module.apply_overrides(Config(), ["method.name=mlm", "train.budget=3s"]))
