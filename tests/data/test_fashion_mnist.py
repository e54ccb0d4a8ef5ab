"""IDX reading and Fashion-MNIST loading."""

import gzip
import struct

import numpy as np
import pytest
import torch

from selfsup.data import DataError
from selfsup.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    fashion_mnist_available,
    load_fashion_mnist,
    read_idx,
)


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_split(root, prefix, images, labels, compress=True):
    for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}" + (".gz" if compress else "")
        (root / name).write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, pixels, compress):
    data = idx_bytes(pixels)
    # A misleading name: compression is detected from the content, not the extension.
    path = tmp_path / ("images.raw" if compress else "images.gz")
    path.write_bytes(gzip.compress(data) if compress else data)
    array = read_idx(path)
    assert array.dtype == np.uint8 and array.shape == (5, 28, 28)
    np.testing.assert_array_equal(array, pixels)
    array[0, 0, 0] = 1  # the result is an ordinary writable array


def test_read_idx_wrong_magic_names_file(tmp_path):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad-images-idx3-ubyte.*magic number is 12 34 08 01"):
        read_idx(path)


def test_read_idx_rejects_other_element_types(tmp_path, pixels):
    path = tmp_path / "floats.idx"
    path.write_bytes(idx_bytes(pixels, dtype_code=0x0D))
    with pytest.raises(DataError, match=r"floats.idx holds element type 0x0d"):
        read_idx(path)


def test_read_idx_truncated_payload(tmp_path, pixels):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(pixels)[:-100]))
    with pytest.raises(DataError, match=r"short.gz is truncated: shape \(5, 28, 28\) needs 3920"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path, pixels):
    path = tmp_path / "cut.gz"
    compressed = gzip.compress(idx_bytes(pixels))
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="cut.gz is a damaged or truncated gzip stream"):
        read_idx(path)


def test_loads_a_written_split_gz_and_raw(tmp_path, pixels):
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    write_split(tmp_path, "train", pixels, labels, compress=True)
    write_split(tmp_path, "t10k", pixels[:2], labels[:2], compress=False)
    assert fashion_mnist_available(tmp_path)
    train = load_fashion_mnist("train", root=tmp_path)
    test = load_fashion_mnist("test", root=tmp_path)
    assert train.images.shape == (5, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], torch.from_numpy(pixels))
    assert train.labels.tolist() == [0, 9, 3, 3, 1] and train.labels.dtype == torch.int64
    assert train.class_names == FASHION_MNIST_CLASSES and train.name == "fashion-mnist:train"
    assert len(test) == 2 and test.name == "fashion-mnist:test"


def test_count_mismatch_between_images_and_labels(tmp_path, pixels):
    write_split(tmp_path, "train", pixels, np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="has 5 images but .*train-labels-idx1-ubyte.gz has 4"):
        load_fashion_mnist("train", root=tmp_path)


def test_labels_out_of_range(tmp_path, pixels):
    write_split(tmp_path, "train", pixels, np.full(5, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="holds label 10; Fashion-MNIST labels are 0-9"):
        load_fashion_mnist("train", root=tmp_path)


def test_missing_files_give_install_hint(tmp_path):
    root = tmp_path / "nowhere"
    assert not fashion_mnist_available(root)
    with pytest.raises(DataError) as caught:
        load_fashion_mnist("test", root=root)
    message = str(caught.value)
    assert str(root / "t10k-images-idx3-ubyte.gz") in message
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_unknown_split():
    with pytest.raises(ValueError, match="'validation'.*'train' or 'test'"):
        load_fashion_mnist("validation")


def test_installed_fashion_mnist():
    if not fashion_mnist_available():
        pytest.skip("dataset-fashion-mnist is not installed")
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.is_contiguous()
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # the published first labels
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
