"""Shared fixtures: tiny, fast configurations for end-to-end runs on the bundled digits."""

import pytest

from selfsup import config as config_module
from selfsup.config import Config

# Digits upsampled to 16 px with mild crops (8 px leaves too little to crop), a width-8
# backbone and a 64-wide projector: a few seconds per run on 2 cores.
TINY = [
    "eval.projector=0",
    "eval.report=false",
    "data.source=digits",
    "data.size=16",
    "augment.global_scale=[0.5, 1.0]",
    "backbone.width=8",
    "method.hidden_dim=64",
    "method.projection_dim=32",
    "train.batch_size=64",
    "train.log_every=5",
    "train.checkpoint_every=7",
    "eval.fewshot_seeds=2",
    "eval.energy_pairs=300",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture
def tiny_config(tmp_path):
    def make(*overrides: str) -> Config:
        return config_module.apply_overrides(Config(), TINY + [f"out={tmp_path / 'run'}", *overrides])

    return make
