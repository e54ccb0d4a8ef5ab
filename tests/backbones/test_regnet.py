"""RegNetY from its design-space numbers, checked against the published parameter counts,
and users' own modules as backbones."""

from __future__ import annotations

import pytest
import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.backbones.regnet import REGNETY, RegNetParams, RegNetY
from selfsup.config import Config, ConfigError

# torchvision's RegNetY parameter counts less their 1000-class classifiers (D x 1000 + 1000).
PUBLISHED_TRUNKS = {"400mf": 4_344_144 - 441_000, "8gf": 39_381_472 - 2_017_000, "1.6gf": 11_202_430 - 889_000}


def _parameters(params: RegNetParams) -> int:
    with torch.device("meta"):  # counted without allocating them (SEER's 1.3B included)
        return sum(p.numel() for p in RegNetY(params).parameters())


@pytest.mark.parametrize("name", list(PUBLISHED_TRUNKS))
def test_trunks_have_the_published_parameter_counts(name):
    assert _parameters(REGNETY[name]) == PUBLISHED_TRUNKS[name]


def test_seer_regnety_256gf_has_1_27_billion_parameters():
    assert _parameters(REGNETY["256gf"]) == 1_272_156_138
    widths = [width for width, _, _ in REGNETY["256gf"].stages()]
    assert widths == [746, 1492, 4103, 10444] and all(width % 373 == 0 for width in widths)


def test_the_design_space_gives_the_paper_stages():
    # RegNetY-400MF (Radosavovic et al. 2020, the model zoo): widths 48-104-208-440, depths 1-3-6-6.
    assert REGNETY["400mf"].stages() == [(48, 1, 8), (104, 3, 8), (208, 6, 8), (440, 6, 8)]


def test_small_image_stem_keeps_resolution_and_blocks_start_as_identity():
    backbone, dim = build_backbone("regnety-200mf-small", 1)
    assert dim == 368 and backbone(torch.randn(2, 1, 16, 16)).shape == (2, 368)
    imagenet, _ = build_backbone("regnety-200mf", 3)
    stem_stride = {name: module.stride for name, module in (("small", backbone.trunk[0]), ("imagenet", imagenet.trunk[0]))}
    assert stem_stride == {"small": (1, 1), "imagenet": (2, 2)}
    block = backbone.trunk[3]
    assert not block.f[-1].weight.any()  # the last BN of each residual branch starts at zero
    with pytest.raises(ConfigError, match="backbone.width does not apply to regnety-200mf"):
        build_backbone("regnety-200mf", 3, width=16)


def test_a_users_module_is_a_backbone(tmp_path, monkeypatch):
    (tmp_path / "my_networks.py").write_text(
        "import torch\n\n"
        "def tiny():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n\n"
        "def sequence():\n"
        "    return torch.nn.Conv2d(1, 6, 3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module, dim = build_backbone("my_networks:tiny", 1, image_size=12)
    assert dim == 6 and module(torch.randn(3, 1, 12, 12)).shape == (3, 6)
    assert next(module.parameters()).device.type == "cpu"  # the probe left the module as it was
    with pytest.raises(ConfigError, match=r"must map images to \[B, D\] features"):
        build_backbone("my_networks:sequence", 1)
    with pytest.raises(ConfigError, match="cannot import 'my_networks:missing'"):
        build_backbone("my_networks:missing", 1)


@pytest.mark.e2e
def test_simclr_pretrains_on_a_small_regnety(tmp_path, tiny_overrides):
    config = config_module.apply_overrides(Config(), [*[o for o in tiny_overrides if not o.startswith("backbone.")],
                                                      "backbone.name=regnety-200mf-small", "train.epochs=1",
                                                      "eval.baselines=false", f"out={tmp_path / 'run'}"])
    summary = runs.pretrain(config)
    assert summary["backbone"] == "regnety-200mf-small" and summary["steps"] == 22 and summary["knn_top1"] > 0.5
