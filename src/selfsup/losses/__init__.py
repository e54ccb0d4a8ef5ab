"""Losses as pure functions of tensors, one file per family; equations in docstrings."""

from selfsup.losses.asymmetric import byol_mse, negative_cosine
from selfsup.losses.contrastive import info_nce, moco_info_nce, moco_v3_contrastive
from selfsup.losses.redundancy import barlow_twins, vicreg

__all__ = ["barlow_twins", "byol_mse", "info_nce", "moco_info_nce", "moco_v3_contrastive", "negative_cosine", "vicreg"]
