import pytest
import torch

from selfsup.backbones import BACKBONES, build_backbone, new_run_pool
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


@pytest.mark.parametrize("side", [2, 3, 4, 7])
def test_convnet_grid_pool_is_the_mean_of_each_quarter_of_the_last_map(side):
    # Adaptive pooling's cells: rows [floor(i * H / 2), ceil((i + 1) * H / 2)), overlapping
    # by one row when H is odd; the four cells' means concatenated channel-major.
    torch.manual_seed(0)
    grid, dim = build_backbone("convnet-small", 1, width=8, pool="grid")
    mean, _ = build_backbone("convnet-small", 1, width=8, pool="mean")
    mean.load_state_dict(grid.state_dict())
    assert dim == 4 * 32 and mean.output_dim == 32
    images = torch.randn(2, 1, 8 * side, 8 * side)
    feature_map = grid.eval().features(images)
    height = feature_map.shape[-1]
    assert height == side
    cells = [(i * height // 2, -(-(i + 1) * height // 2)) for i in range(2)]
    expected = torch.stack(
        [torch.stack([feature_map[:, :, r0:r1, c0:c1].mean((2, 3)) for c0, c1 in cells], dim=-1) for r0, r1 in cells], dim=-2
    ).flatten(1)
    assert torch.allclose(grid(images), expected, atol=1e-6)
    assert torch.allclose(mean.eval()(images), feature_map.mean((2, 3)), atol=1e-6)


def test_new_runs_pool_the_convnet_to_a_grid_and_older_runs_keep_the_mean():
    assert new_run_pool("convnet-small", None) == "grid"
    assert new_run_pool("convnet-small", "mean") == "mean"
    assert new_run_pool("vit-tiny", None) == "cls" and new_run_pool("vit-tiny", None, preferred="mean") == "mean"
    assert new_run_pool("resnet18", None, preferred="mean") is None
    legacy, dim = build_backbone("convnet-small", 1)  # a config.yaml from before backbone.pool applied to it
    assert dim == 256 and legacy.output_dim == 256
