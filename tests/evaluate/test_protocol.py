"""The protocol bundle and the raw-pixel baseline features."""

import pytest
import torch

from selfsup import evaluate
from selfsup.evaluate.protocol import accuracy_metrics, raw_pixel_features


def test_raw_pixel_features():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 4, 5)
    images[0, 0, 0, 0] = 255
    features = raw_pixel_features(images)
    assert features.shape == (2, 60) and features.dtype == torch.float32
    assert features.min() >= 0.0 and features.max() == 1.0
    torch.testing.assert_close(features[1], images[1].flatten().float() / 255)
    with pytest.raises(TypeError, match="uint8"):
        raw_pixel_features(images.float())
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        raw_pixel_features(images[0])


def test_accuracy_metrics_on_separable_data_with_small_classes():
    # 40 examples per class: the 100-shot entry is still reported, using all 40.
    generator = torch.Generator().manual_seed(0)
    centres = 8.0 * torch.randn(4, 12, generator=generator)  # every dimension carries signal
    train_y = torch.arange(4).repeat_interleave(40)
    test_y = torch.arange(4).repeat_interleave(10)
    train_x = centres[train_y] + torch.randn(160, 12, generator=generator)
    test_x = centres[test_y] + torch.randn(40, 12, generator=generator)
    metrics = accuracy_metrics(train_x, train_y, test_x, test_y, 4, seeds=2)
    assert metrics == {
        "knn_top1": 1.0,
        "knn200_top1": 1.0,
        "linear_top1": 1.0,
        "fewshot": {"1": 1.0, "10": 1.0, "100": 1.0},
        "fewshot_std": {"1": 0.0, "10": 0.0, "100": 0.0},
    }


def test_package_reexports():
    for name in evaluate.__all__:
        assert callable(getattr(evaluate, name))
