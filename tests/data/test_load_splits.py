"""load_splits over built-in sets and folders, the default source, skipped-file reports."""

import pytest
import torch
from PIL import Image

from selfsup.data import (
    SOURCES_HELP,
    DataError,
    default_source,
    describe_skipped,
    load_splits,
)
from selfsup.data.fashion_mnist import fashion_mnist_available


def test_digits_splits():
    pretrain, train, test = load_splits("digits")
    assert pretrain is train and (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (1, 8, 8)


def test_builtin_conversion():
    pretrain, train, test = load_splits("digits", channels=3, size=16)
    assert train.images.shape[1:] == (3, 16, 16) and test.images.shape[1:] == (3, 16, 16)
    assert train.class_names == [str(d) for d in range(10)] and train.name == "digits:train"


def test_default_source():
    assert default_source() == ("fashion-mnist" if fashion_mnist_available() else "digits")


def test_folder_splits(tmp_path):
    for label in ("ant", "bee"):
        (tmp_path / label).mkdir()
        for i in range(20):
            Image.new("RGB", (12, 12), (i * 10, 0, 0)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "bee" / "broken.png").write_bytes(b"")
    pretrain, train, test = load_splits(str(tmp_path), workers=0)
    assert pretrain.images.shape == (40, 3, 32, 32)  # folder defaults: RGB, 32 px
    assert len(train) + len(test) == 40 and len(test) > 0 and len(train) > 0
    assert set(train.paths).isdisjoint(test.paths)
    assert set(train.paths) | set(test.paths) == set(pretrain.paths)
    assert train.name == f"{pretrain.name}:train" and test.name == f"{pretrain.name}:test"
    assert train.class_names == ["ant", "bee"] and len(test.skipped) == 1
    _, _, grey_test = load_splits(str(tmp_path), channels=1, size=8, workers=0)
    assert grey_test.images.shape[1:] == (1, 8, 8) and grey_test.paths == test.paths


def test_unknown_spec_lists_known_names(tmp_path):
    with pytest.raises(DataError, match="'cifar10'.*fashion-mnist, digits.*not an existing folder"):
        load_splits("cifar10")
    a_file = tmp_path / "list.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_splits(str(a_file))


def test_sources_help_names_every_source():
    for name in ("fashion-mnist", "digits", "apt-get install -y dataset-fashion-mnist", "PATH"):
        assert name in SOURCES_HELP


def test_describe_skipped():
    text = describe_skipped([("/a/b.png", "empty file (0 bytes)"), ("/a/c.jpg", "bad\nthing")])
    assert text == "/a/b.png\tempty file (0 bytes)\n/a/c.jpg\tbad thing\n"
    assert describe_skipped([]) == ""


def test_fashion_mnist_splits():
    if not fashion_mnist_available():
        pytest.skip("dataset-fashion-mnist is not installed")
    pretrain, train, test = load_splits("fashion-mnist")
    assert pretrain is train and (len(train), len(test)) == (60000, 10000)
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))
