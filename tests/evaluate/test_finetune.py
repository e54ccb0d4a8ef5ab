"""End-to-end fine-tuning on a few labels per class."""

import dataclasses

import torch

from selfsup.augment.views import RECIPES, ViewMaker
from selfsup.backbones import build_backbone
from selfsup.data import load_splits
from selfsup.evaluate.finetune import finetune_accuracy


def test_finetuning_learns_from_ten_labels_per_class_and_leaves_the_encoder_alone():
    _, train, test = load_splits("digits", 1, 16)
    torch.manual_seed(0)
    encoder, dim = build_backbone("convnet-small", 1, 8)
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    view_maker = ViewMaker(dataclasses.replace(RECIPES["small-images"], global_size=16), (0.3,), (0.3,))
    accuracy = finetune_accuracy(encoder, dim, train, test, view_maker, labels_per_class=10, epochs=20, seed=0,
                                 device=torch.device("cpu"))
    assert 0.3 < accuracy <= 1  # chance is 0.1: the encoder and head learned from 100 images
    assert all(torch.equal(before[key], value) for key, value in encoder.state_dict().items())
    again = finetune_accuracy(encoder, dim, train, test, view_maker, 10, 20, 0, torch.device("cpu"))
    assert again == accuracy  # a function of the seed
