import pytest
import torch

from selfsup.backbones import BACKBONES, build_backbone
from selfsup.config import ConfigError


@pytest.mark.parametrize(
    "name, channels, size, dim",
    [
        ("convnet-small", 1, 28, 256),
        ("resnet18-small", 1, 28, 512),
        ("resnet34-small", 3, 32, 512),
        ("resnet50-small", 3, 32, 2048),
        ("resnet18", 3, 64, 512),
        ("resnet50", 3, 64, 2048),
    ],
)
def test_backbones_map_images_to_features_of_their_dimension(name, channels, size, dim):
    torch.manual_seed(0)
    module, output_dim = build_backbone(name, channels, width=16 if "resnet" in name else None)
    expected = dim // 4 if "resnet" in name else dim  # width 16 instead of 64
    assert output_dim == expected
    features = module(torch.randn(3, channels, size, size))
    assert features.shape == (3, expected) and torch.isfinite(features).all()


def test_small_stem_keeps_resolution_and_imagenet_stem_reduces_it():
    small, _ = build_backbone("resnet18-small", 3, width=8)
    large, _ = build_backbone("resnet18", 3, width=8)
    x = torch.randn(1, 3, 32, 32)
    assert small.stem(x).shape[-1] == 32
    assert large.stem(x).shape[-1] == 8  # stride-2 conv then stride-2 max-pool


def test_residual_blocks_start_as_identity():
    # The last BN of each residual branch starts at zero (Goyal et al. 2017).
    module, _ = build_backbone("resnet18-small", 3, width=8)
    block = module.stages[0][0]
    x = torch.relu(torch.randn(2, 8, 6, 6))
    block.eval()
    assert torch.allclose(block(x), x)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'; available: " + ", ".join(BACKBONES)):
        build_backbone("vgg", 3)
