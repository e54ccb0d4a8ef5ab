"""Folder scanning, decoding of every Pillow mode, skipping of bad files, splits."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import DataError, FolderFiles, iter_folder_batches
from selfsup.data.folder import (
    collate_decoded,
    decode_image,
    load_folder,
    scan_folder,
    split_indices,
)

GOOD = [
    "cat/a_palette.png",
    "cat/b_rgba.png",
    "cat/c_gray16.png",
    "cat/d_gray16_half.png",
    "cat/e_cmyk.jpg",
    "dog/f_gray.png",
    "dog/g_bilevel.png",
    "dog/h_upper.PNG",
    "loose.bmp",
]
BROKEN = {
    "cat/empty.png": "empty file (0 bytes)",
    "dog/text.jpg": "not an image format Pillow can identify",
    "dog/truncated.jpg": "OSError: image file is truncated",
}


def write_images(root):
    """The folder used by most tests: good images of many modes, three broken files."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))  # left half green, right half transparent red
    palette.save(root / "cat/a_palette.png", transparency=0)
    Image.new("RGBA", (40, 40), (200, 100, 50, 128)).save(root / "cat/b_rgba.png")
    Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(root / "cat/c_gray16.png")
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(root / "cat/d_gray16_half.png")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(root / "cat/e_cmyk.jpg", quality=95)
    Image.new("L", (40, 40), 77).save(root / "dog/f_gray.png")
    Image.new("1", (40, 40), 1).save(root / "dog/g_bilevel.png")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(root / "dog/h_upper.PNG")
    Image.new("RGB", (60, 30), (10, 20, 30)).save(root / "loose.bmp")
    (root / "cat/empty.png").write_bytes(b"")
    (root / "dog/text.jpg").write_text("not a picture\n")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    (root / "dog/truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "dog/notes.txt").write_text("ignored: not an image extension\n")
    (root / "dog/.hidden.png").write_bytes(b"ignored: hidden")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_images(root)
    return root


def relative(paths, root):
    return [str(path)[len(str(root)) + 1 :] for path, *_ in paths]


def test_scan_folder_lists_images_with_labels(folder):
    files, labels = scan_folder(folder)
    assert [path.relative_to(folder).as_posix() for path in files] == sorted(GOOD + list(BROKEN))
    assert labels == ["cat"] * 6 + ["dog"] * 5 + [None]


def test_load_folder_rgb_keeps_good_files_and_reports_broken(folder):
    images = load_folder(folder, channels=3, size=8, workers=0)
    assert images.images.shape == (len(GOOD), 3, 8, 8) and images.images.dtype == torch.uint8
    assert [p[len(str(folder)) + 1 :] for p in images.paths] == GOOD
    assert images.class_names == ["cat", "dog"]
    assert images.labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, -1]
    assert images.name == f"folder:{folder}"
    assert sorted(relative(images.skipped, folder)) == sorted(BROKEN)
    for path, reason in images.skipped:
        assert reason.startswith(BROKEN[path[len(str(folder)) + 1 :]])
    pixel = {name: images.images[i, :, 4, :].T.tolist() for i, name in enumerate(GOOD)}
    assert pixel["cat/a_palette.png"][0] == [0, 255, 0]  # opaque palette entry
    assert pixel["cat/a_palette.png"][7] == [255, 255, 255]  # transparent -> the white background
    assert pixel["cat/b_rgba.png"][0] == [227, 177, 152]  # half alpha over white
    assert pixel["cat/c_gray16.png"][0] == [255, 255, 255]
    red, green, blue = pixel["cat/e_cmyk.jpg"][0]
    assert red > 240 and green < 15 and blue < 15
    assert pixel["dog/f_gray.png"][0] == [77, 77, 77]
    assert pixel["dog/g_bilevel.png"][0] == [255, 255, 255]
    assert pixel["dog/h_upper.PNG"][0] == [0, 0, 255]
    assert pixel["loose.bmp"][0] == [10, 20, 30]


def test_load_folder_grey(folder):
    images = load_folder(folder, channels=1, size=6, workers=0)
    assert images.images.shape == (len(GOOD), 1, 6, 6)
    values = {name: images.images[i].unique().tolist() for i, name in enumerate(GOOD)}
    assert values["cat/c_gray16.png"] == [255]  # 65535 rescaled, not clipped
    assert values["cat/d_gray16_half.png"] == [128]  # 32768 * 255 / 65535 = 127.5
    assert values["dog/f_gray.png"] == [77]
    assert values["cat/b_rgba.png"] == [round(0.299 * 227 + 0.587 * 177 + 0.114 * 152)]  # over white


def test_worker_processes_give_the_same_batches(folder):
    def collect(workers):
        batches = list(iter_folder_batches(folder, 3, 8, batch_size=4, workers=workers))
        return (
            torch.cat([b.images for b in batches]),
            torch.cat([b.labels for b in batches]),
            torch.cat([b.indices for b in batches]),
            [entry for b in batches for entry in b.skipped],
        )

    in_process, in_workers = collect(0), collect(2)
    for expected, actual in zip(in_process, in_workers):
        assert torch.equal(expected, actual) if torch.is_tensor(expected) else expected == actual
    assert in_process[2].tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 11]  # file order, broken left out


def test_folder_files_never_raise_on_bad_files(folder):
    dataset = FolderFiles(folder, channels=3, size=8)
    bad = [dataset[i] for i, path in enumerate(dataset.paths) if path.endswith(tuple(BROKEN))]
    assert len(bad) == 3
    for image, label, index, error, warnings in bad:
        assert image.numel() == 0 and image.dtype == torch.uint8 and error and warnings == ()
        assert label == dataset.labels[index]
    image, label, index, error, warnings = dataset[0]
    assert image.shape == (3, 8, 8) and (label, index, error, warnings) == (0, 0, "", ())
    batch = collate_decoded(bad)  # nothing readable: an empty batch of the right shape
    assert batch.images.shape == (0, 3, 8, 8) and batch.labels.shape == (0,)
    assert [entry[0] for entry in batch.skipped] == [dataset.paths[item[2]] for item in bad]
    assert batch.warned == []


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    for i in range(3):
        Image.new("L", (10, 10), 40 * i).save(tmp_path / f"{i}.png")
    images = load_folder(tmp_path, channels=1, size=4, workers=0)
    assert images.class_names == [] and not images.has_labels
    assert images.labels.tolist() == [-1, -1, -1]
    assert [int(image.max()) for image in images.images] == [0, 40, 80]


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"no image files found under {tmp_path}.*\\.png"):
        load_folder(tmp_path, workers=0)
    with pytest.raises(DataError, match="missing does not exist"):
        load_folder(tmp_path / "missing", workers=0)


def test_folder_of_only_broken_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("text")
    with pytest.raises(DataError) as caught:
        load_folder(tmp_path, workers=0)
    message = str(caught.value)
    assert f"none of the 2 image files under {tmp_path} could be decoded" in message
    assert "a.png: empty file" in message and "b.jpg: not an image format" in message


def test_decode_wide_integer_and_float_modes(tmp_path):
    cases = {
        "big_endian16.tif": (
            Image.frombytes("I;16B", (8, 8), np.full((8, 8), 65535, ">u2").tobytes()),
            "I;16B",
            255,
        ),
        "int32_16bit.tif": (Image.fromarray(np.full((8, 8), 32768, np.int32)), "I", 128),
        "int32_full.tif": (Image.fromarray(np.full((8, 8), 2**30, np.int32)), "I", 128),
        "unit_float.tif": (Image.fromarray(np.full((8, 8), 0.5, np.float32)), "F", 128),
    }
    for name, (image, mode, expected) in cases.items():
        image = image.convert(mode) if mode == "I;16B" else image
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as written:
            assert written.mode == mode
        assert decode_image(tmp_path / name, 1, 4).unique().tolist() == [expected], name


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path):
    # 40 wide, 10 high: red, green, blue bands; the centred 10x10 square is all green,
    # far enough from the bands' edges that the bilinear filter sees no other colour.
    stripes = np.zeros((10, 40, 3), np.uint8)
    stripes[:, :10] = (255, 0, 0)
    stripes[:, 10:30] = (0, 255, 0)
    stripes[:, 30:] = (0, 0, 255)
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    decoded = decode_image(tmp_path / "wide.png", 3, 5)
    assert decoded.shape == (3, 5, 5)
    assert decoded[1].min() == 255 and decoded[0].max() == 0 and decoded[2].max() == 0
    tall = decode_image(tmp_path / "wide.png", 3, 20)  # enlarging works the same way
    assert tall.shape == (3, 20, 20) and tall[1].min() == 255


def test_decode_applies_exif_orientation(tmp_path):
    upright = np.zeros((20, 10, 3), np.uint8)  # 10 wide, 20 high: red above blue
    upright[:10] = (255, 0, 0)
    upright[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(upright).save(tmp_path / "rotated.png", exif=exif)
    decoded = decode_image(tmp_path / "rotated.png", 3, 8)
    assert decoded[:, 4, 0].tolist() == [0, 0, 255] and decoded[:, 4, 7].tolist() == [255, 0, 0]


def test_decode_rejects_unsupported_channel_counts(folder):
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*got 2"):
        decode_image(folder / "dog/f_gray.png", 2, 8)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*got 4"):
        FolderFiles(folder, channels=4, size=8)


def test_split_indices_is_deterministic_and_stable():
    root = "/data/photos"
    paths = [f"{root}/class{i % 7}/img{i:05d}.jpg" for i in range(2000)]
    train, test = split_indices(paths, root)
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(2000))
    assert 0.17 < len(test) / 2000 < 0.23
    again_train, again_test = split_indices(list(paths), root)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    # Adding files (anywhere in the order) keeps every existing file on its side.
    grown = [f"{root}/class0/new{i}.jpg" for i in range(50)] + paths
    grown_train, grown_test = split_indices(grown, root)
    test_files = {paths[i] for i in test.tolist()}
    assert test_files == {grown[i] for i in grown_test.tolist()} - set(grown[:50])
    # The split depends on the path relative to the root, not on where the root is.
    moved = [path.replace(root, "/mnt/elsewhere") for path in paths]
    assert torch.equal(split_indices(moved, "/mnt/elsewhere")[1], test)
    with pytest.raises(ValueError, match="test_fraction"):
        split_indices(paths, root, test_fraction=1.0)


def test_scan_follows_symlinks_without_looping(tmp_path):
    (tmp_path / "real").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "real" / "x.png")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "loop").symlink_to(tmp_path)  # a cycle back to the root
    files, labels = scan_folder(tmp_path)
    # Each real folder is walked once, whichever name reaches it first.
    assert [path.relative_to(tmp_path).as_posix() for path in files] == ["linked/x.png"]
    assert labels == ["linked"]
