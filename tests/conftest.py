"""Shared fixtures: tiny, fast configurations for end-to-end runs on the bundled digits."""

import os
import tempfile

import pytest
import torch

# Measured baselines are cached across runs (selfsup.cache): never in the home folder from tests.
os.environ["SELFSUP_CACHE"] = tempfile.mkdtemp(prefix="selfsup-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the two cores: one thread each, in the processes they start too.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """600 of the digits as 8x8 PNG files in one folder per class: a folder source to stream."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits") / "images"
    digits = load_digits()
    for number, (image, label) in enumerate(zip(digits.images[:600], digits.target[:600], strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(root / str(label) / f"{number:04d}.png")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test its own cache (measured baselines, parsed corpora), so that none reads another's."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SELFSUP_CACHE", str(root))
    return root


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture
def tiny_config(tmp_path):
    def make(*overrides: str) -> Config:
        return config_module.apply_overrides(Config(), TINY + [f"out={tmp_path / 'run'}", *overrides])

    return make
