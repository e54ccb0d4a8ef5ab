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
from selfsup.losses.latent import (
    free_energy,
    gaussian_kl,
    l1_sparsity,
    norm_bound,
    prediction_cost,
    shrink,
)
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
    "free_energy",
    "gaussian_kl",
    "glove",
    "info_nce",
    "l1_sparsity",
    "masked_accuracy",
    "masked_lm",
    "moco_info_nce",
    "moco_v3_contrastive",
    "negative_cosine",
    "norm_bound",
    "paws",
    "prediction_cost",
    "sgns",
    "sharpen",
    "shrink",
    "sinkhorn",
    "snn",
    "swav",
    "swav_multicrop",
    "vicreg",
]
