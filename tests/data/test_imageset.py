"""ImageSet invariants, subsets and channel/size conversion."""

import pytest
import torch

from selfsup.data import ImageSet
from selfsup.data.base import convert_images


def make_set(n=6, channels=1, size=4, class_names=("a", "b", "c")):
    images = torch.arange(n * channels * size * size, dtype=torch.int64) % 256
    return ImageSet(
        images=images.to(torch.uint8).view(n, channels, size, size),
        labels=torch.tensor([i % 3 - 1 for i in range(n)], dtype=torch.int64),
        name="toy",
        class_names=list(class_names),
        skipped=[("/x/bad.png", "empty file (0 bytes)")],
        paths=[f"/x/{i}.png" for i in range(n)],
    )


def test_properties():
    images = make_set(channels=3, size=5)
    assert len(images) == 6
    assert (images.channels, images.height, images.width) == (3, 5, 5)
    assert images.num_classes == 3 and images.has_labels


def test_has_labels_false_when_all_unknown():
    images = ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.full((2,), -1), "u", [])
    assert not images.has_labels and images.num_classes == 0 and images.skipped == []


def test_subset_keeps_metadata_and_selects_rows():
    images = make_set()
    part = images.subset(torch.tensor([4, 1]), "toy:part")
    assert part.name == "toy:part" and len(part) == 2
    assert torch.equal(part.images, images.images[[4, 1]])
    assert part.labels.tolist() == [images.labels[4].item(), images.labels[1].item()]
    assert part.paths == ["/x/4.png", "/x/1.png"]
    assert part.class_names == images.class_names and part.skipped == images.skipped
    part.class_names.append("d")  # the subset owns its lists
    assert images.class_names == ["a", "b", "c"]
    assert len(images.subset(torch.tensor([], dtype=torch.int64), "empty")) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=torch.zeros(2, 1, 4, 4)), "images must be a uint8 tensor"),
        (dict(labels=torch.zeros(3, dtype=torch.int64)), r"labels must be an int64 tensor \[2\]"),
        (dict(labels=torch.tensor([0, 3])), r"labels must lie in -1..2"),
        (dict(paths=["only-one"]), "1 paths for 2 images"),
    ],
)
def test_invalid_sets_are_rejected(change, message):
    fields = dict(
        images=torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
        labels=torch.tensor([0, 1]),
        name="bad",
        class_names=["a", "b", "c"],
    )
    fields.update(change)
    with pytest.raises(ValueError, match=f"ImageSet 'bad': {message}"):
        ImageSet(**fields)


def test_convert_images():
    grey = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    assert convert_images(grey, None, None) is grey and convert_images(grey, 1, 28) is grey
    rgb = convert_images(grey, 3, None)
    assert rgb.shape == (5, 3, 28, 28) and rgb.is_contiguous()
    assert all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    assert torch.equal(convert_images(rgb, 1, None), grey)  # equal channels -> same grey
    constant = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    for size in (14, 32):
        resized = convert_images(constant, 3, size)
        assert resized.shape == (2, 3, size, size) and resized.unique().tolist() == [200]
    wide = torch.zeros(1, 1, 4, 8, dtype=torch.uint8)
    wide[..., 2:6] = 255  # the centred 4x4 square is all white
    assert convert_images(wide, 1, 4).unique().tolist() == [255]
    with pytest.raises(ValueError, match="1 -> 4"):
        convert_images(grey, 4, None)
