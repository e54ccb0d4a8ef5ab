"""scikit-learn digits as an ImageSet with a fixed stratified split."""

import numpy as np
import pytest
import torch

from selfsup.data import load_digits


@pytest.fixture(scope="module")
def splits():
    return load_digits("train"), load_digits("test")


def test_shapes_and_values(splits):
    train, test = splits
    assert (len(train), len(test)) == (1437, 360)
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 8, 8)
        assert split.labels.dtype == torch.int64
        assert split.class_names == [str(d) for d in range(10)]
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255
    assert train.name == "digits:train" and test.name == "digits:test"


def test_pixels_scaled_from_0_to_16(splits):
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    train, test = splits
    all_images = torch.cat([train.images, test.images])[:, 0].numpy().astype(np.int64)
    # Every scaled value is round(v * 255 / 16) of an original value v in 0..16.
    allowed = set(np.rint(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(np.unique(all_images).tolist()) <= allowed
    # Row sums match the originals (a permutation of rows, scaled back).
    scaled_sums = np.sort(np.rint(all_images * 16 / 255).sum(axis=(1, 2)))
    np.testing.assert_array_equal(scaled_sums, np.sort(digits.images.sum(axis=(1, 2))))


def test_split_is_disjoint_stratified_and_deterministic(splits):
    train, test = splits
    train_rows = {tuple(image.flatten().tolist()) for image in train.images}
    test_rows = {tuple(image.flatten().tolist()) for image in test.images}
    # All 1,797 digits images are distinct, so rows identify images.
    assert len(train_rows) + len(test_rows) == 1797
    assert not train_rows & test_rows
    assert test.labels.bincount().tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    again = load_digits("test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_unknown_split():
    with pytest.raises(ValueError, match="'val'"):
        load_digits("val")
