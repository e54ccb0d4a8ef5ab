"""Losses as pure functions of tensors, one file per family; equations in docstrings."""

from selfsup.losses.asymmetric import byol_mse, negative_cosine
from selfsup.losses.clustering import (
    cross_view_cross_entropy,
    deepcluster,
    dino,
    dino_center,
    sinkhorn,
    swav,
    swav_multicrop,
)
from selfsup.losses.contrastive import info_nce, moco_info_nce, moco_v3_contrastive
from selfsup.losses.masked import causal_lm, glove, masked_accuracy, masked_lm, sgns
from selfsup.losses.redundancy import barlow_twins, vicreg
from selfsup.losses.semi import paws, sharpen, snn

__all__ = [
    "barlow_twins",
    "byol_mse",
    "causal_lm",
    "cross_view_cross_entropy",
    "deepcluster",
    "dino",
    "dino_center",
    "glove",
    "info_nce",
    "masked_accuracy",
    "masked_lm",
    "moco_info_nce",
    "moco_v3_contrastive",
    "negative_cosine",
    "paws",
    "sgns",
    "sharpen",
    "sinkhorn",
    "snn",
    "swav",
    "swav_multicrop",
    "vicreg",
]
