"""Vision transformers: the published sizes, position embeddings for any crop size, the two
poolings, and DINO's main setting running end to end."""

from __future__ import annotations

import pytest
import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import VIT_SIZES, VisionTransformer
from selfsup.config import Config, ConfigError
from selfsup.data import load_splits

# timm's vit_{tiny,small,base}_patch16_224 parameter counts less their 1000-class heads.
PUBLISHED_TRUNKS = {"tiny": 5_717_416 - 193_000, "small": 22_050_664 - 385_000, "base": 86_567_656 - 769_000}


@pytest.mark.parametrize("name", list(PUBLISHED_TRUNKS))
def test_trunks_have_the_published_parameter_counts(name):
    with torch.device("meta"):
        model = VisionTransformer(VIT_SIZES[name], 3, 224, 16)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_TRUNKS[name]


def test_position_embeddings_follow_the_crop_size():
    torch.manual_seed(0)
    model, dim = build_backbone("vit-tiny-small", 1, image_size=28)
    assert dim == 192 and model._positions(7, 7) is model.position_embedding
    # Multi-crop's local crops (12 px: a 3 x 3 grid) get interpolated embeddings.
    assert model._positions(3, 3).shape == (1, 1 + 9, 192)
    model.eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == model(torch.randn(2, 1, 12, 12)).shape == (2, 192)
    mean, _ = build_backbone("vit-tiny-small", 1, image_size=28, pool="mean")
    mean.load_state_dict(model.state_dict())
    images = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(mean.eval()(images), model(images))


def test_pool_is_checked():
    with pytest.raises(ConfigError, match="backbone.pool: 'max' is not one of cls, mean for vit-tiny"):
        build_backbone("vit-tiny", 3, pool="max")
    with pytest.raises(ConfigError, match="backbone.pool applies to convnet-small and the vision transformers, not to resnet18"):
        build_backbone("resnet18", 3, pool="mean")


@pytest.mark.e2e
def test_dino_pretrains_a_vision_transformer(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith(("backbone.", "method."))]
    config = config_module.apply_overrides(Config(), [*overrides, "method.name=dino", "backbone.name=vit-tiny-small",
                                                      "method.hidden_dim=64", "method.bottleneck_dim=32", "train.epochs=1",
                                                      "augment.local_crops=2",
                                                      "eval.baselines=false", f"out={tmp_path / 'run'}"])
    summary = runs.pretrain(config)
    # 22 steps on 16 px digits: it runs, and its features are well above chance (10 classes).
    assert summary["backbone"] == "vit-tiny-small" and summary["steps"] == 22 and summary["knn_top1"] > 0.2


def test_crops_smaller_than_a_patch_are_one_clear_error_and_local_crops_hold_a_patch(tmp_path, capsys):
    from selfsup.cli import main

    # digits are 8 px: not one 16 px patch.
    assert main(["pretrain", "--method", "dino", "--backbone", "vit-small", "--data", "digits", "--out", str(tmp_path / "a"),
                 "augment.recipe=dino"]) == 2
    assert "vit-small cuts 16 px patches, larger than the 8 px local crops" in capsys.readouterr().err
    config = config_module.apply_overrides(Config(), ["method.name=dino", "backbone.name=vit-tiny", "data.source=digits",
                                                      "data.size=28", "augment.recipe=dino"])
    pretrain_set = load_splits("digits", None, 28, 0)[0]
    # 3/7 of 28 px would be 12 px, less than a patch: the local crops get 16 px.
    assert runs.resolve(config, pretrain_set).augment.local_size == 16
