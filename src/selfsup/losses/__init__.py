"""Losses as pure functions of tensors, one file per family; equations in docstrings."""

from selfsup.losses.asymmetric import negative_cosine
from selfsup.losses.contrastive import info_nce

__all__ = ["info_nce", "negative_cosine"]
