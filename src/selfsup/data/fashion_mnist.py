"""Fashion-MNIST from the original IDX files (Xiao, Rasul and Vollgraf, 2017).

70,000 greyscale 28x28 images of clothing in 10 classes (60,000 train, 10,000 test).
Debian's ``dataset-fashion-mnist`` package installs the original gzipped IDX files under
:data:`FASHION_MNIST_DIR`, so the set is available without a network.

IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``00 00 TT NN``
(``TT`` the element type, ``0x08`` = unsigned byte; ``NN`` the number of dimensions),
then ``NN`` big-endian uint32 sizes, then the elements in C order.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from selfsup.data.base import DataError, ImageSet

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "fashion_mnist_available",
    "load_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: split -> file-name prefix used by the original distribution.
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist`, or pass a root folder "
    "holding the four Fashion-MNIST IDX files"
)
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UINT8 = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or raw, into a uint8 array.

    Compression is detected from the gzip magic bytes (``1f 8b``), not the file name.

    Raises:
        DataError: naming the file, when it cannot be read, is a truncated gzip stream,
            has a wrong magic number, holds another element type than uint8, or its
            payload size differs from the product of the sizes in its header.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(
                f"IDX file {path} is a damaged or truncated gzip stream ({error}); "
                "download or reinstall it"
            ) from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: its magic number is {data[:4].hex(' ') or 'empty'}, "
            "expected 00 00 <type> <ndim>"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code != _IDX_UINT8:
        raise DataError(
            f"IDX file {path} holds element type 0x{dtype_code:02x}; only unsigned bytes "
            f"(0x{_IDX_UINT8:02x}) are supported"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"IDX file {path} is truncated: its header declares {ndim} dimensions but the "
            f"file has only {len(data)} bytes"
        )
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected, actual = math.prod(shape), len(data) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {problem}: shape {shape} needs {expected} bytes of data, "
            f"found {actual}"
        )
    # frombuffer on the bytes is a zero-copy view; copying once makes it writable.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _idx_file(root: Path, prefix: str, kind: str) -> Path | None:
    """The IDX file ``<prefix>-<kind>``, gzipped (preferred) or raw, or None if absent."""
    for name in (f"{prefix}-{kind}.gz", f"{prefix}-{kind}"):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_available(root: Path | None = None) -> bool:
    """True when all four Fashion-MNIST IDX files are present under ``root``."""
    root = FASHION_MNIST_DIR if root is None else Path(root)
    return all(
        _idx_file(root, prefix, kind) is not None
        for prefix in _SPLIT_PREFIX.values()
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )


def load_fashion_mnist(split: str, root: Path | None = None) -> ImageSet:
    """Load the Fashion-MNIST ``"train"`` (60,000) or ``"test"`` (10,000) split.

    Returns images ``[N, 1, 28, 28]`` uint8 and labels 0-9 named by
    :data:`FASHION_MNIST_CLASSES`. ``root`` defaults to :data:`FASHION_MNIST_DIR`.

    Raises:
        ValueError: for an unknown split.
        DataError: when a file is missing (with the ``apt-get`` command that installs
            it) or damaged, or when image and label files disagree.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    root = FASHION_MNIST_DIR if root is None else Path(root)
    prefix = _SPLIT_PREFIX[split]
    arrays = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        path = _idx_file(root, prefix, kind)
        if path is None:
            raise DataError(
                f"Fashion-MNIST file {root / f'{prefix}-{kind}.gz'} not found; {_INSTALL_HINT}"
            )
        arrays[kind] = (path, read_idx(path))
    images_path, images = arrays["images-idx3-ubyte"]
    labels_path, labels = arrays["labels-idx1-ubyte"]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path} holds an array of shape {images.shape}; Fashion-MNIST images "
            "are [N, 28, 28]"
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds an array of shape {labels.shape}; labels are [N]")
    if len(images) != len(labels):
        raise DataError(
            f"Fashion-MNIST {split} split: {images_path} has {len(images)} images but "
            f"{labels_path} has {len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"{labels_path} holds label {int(labels.max())}; Fashion-MNIST labels are 0-9"
        )
    return ImageSet(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels).to(torch.int64),
        name=f"fashion-mnist:{split}",
        class_names=list(FASHION_MNIST_CLASSES),
    )
