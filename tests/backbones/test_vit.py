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
    with pytest.raises(ConfigError, match="backbone.pool: 'max' is not one of cls, mean"):
        build_backbone("vit-tiny", 3, pool="max")
    with pytest.raises(ConfigError, match="backbone.pool applies to vision transformers, not to convnet-small"):
        build_backbone("convnet-small", 3, pool="mean")


@pytest.mark.e2e
def test_dino_pretrains_a_vision_transformer(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith(("backbone.", "method."))]
    config = config_module.apply_overrides(Config(), [*overrides, "method.name=dino", "backbone.name=vit-tiny-small",
                                                      "method.hidden_dim=64", "method.bottleneck_dim=32", "train.epochs=1",
                                                      "eval.baselines=false", f"out={tmp_path / 'run'}"])
    summary = runs.pretrain(config)
    # 22 steps on 16 px digits: it runs, and its features are well above chance (10 classes).
    assert summary["backbone"] == "vit-tiny-small" and summary["steps"] == 22 and summary["knn_top1"] > 0.2
