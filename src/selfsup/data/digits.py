"""scikit-learn's bundled 8x8 handwritten digits (UCI optical recognition of digits).

1,797 greyscale 8x8 images of the digits 0-9 with pixel values 0..16, always present with
scikit-learn. Tiny and quick to saturate: good for smoke runs and tests, not for claims.
The set has no official split; :func:`load_digits` makes a fixed stratified one.
"""

from __future__ import annotations

import numpy as np
import torch

from selfsup.data.base import ImageSet

__all__ = ["DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "load_digits"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
_MAX_VALUE = 16


def load_digits(split: str) -> ImageSet:
    """Load the ``"train"`` (1,437 images) or ``"test"`` (360 images) split of the digits.

    Images are ``[N, 1, 8, 8]`` uint8, scaled from 0..16 to 0..255 by
    ``round(v * 255 / 16)``; labels are 0-9 with class names ``"0"``..``"9"``. The split
    is stratified by class, with :data:`DIGITS_TEST_FRACTION` of the images in the test
    split, drawn with the fixed seed :data:`DIGITS_SPLIT_SEED`; rows keep the original
    order of the data set.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown digits split {split!r}; choose 'train' or 'test'")
    # Imported here: scikit-learn takes about a second to import and is needed only here.
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_load_digits()
    targets = digits.target.astype(np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(targets)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=targets,
        random_state=DIGITS_SPLIT_SEED,
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    pixels = np.rint(digits.images[rows] * (255 / _MAX_VALUE)).astype(np.uint8)
    return ImageSet(
        images=torch.from_numpy(pixels).unsqueeze(1).contiguous(),
        labels=torch.from_numpy(targets[rows]),
        name=f"digits:{split}",
        class_names=[str(digit) for digit in range(10)],
    )
