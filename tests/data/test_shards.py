"""Packing image sources into WebDataset tar shards and reading them back: every good image
once with its label and split, broken files listed, boundaries, re-encoding, a resumed pack
byte-identical to an uninterrupted one, and a strict index reader."""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset
from PIL import Image

from selfsup.config import ConfigError
from selfsup.data import DataError, load_digits
from selfsup.data import packing as packing_module
from selfsup.data.folder import decode_image, split_indices
from selfsup.data.packing import format_byte_size, pack_shards, parse_byte_size
from selfsup.data.shards import (
    INDEX_FILE,
    ShardIndex,
    decode_shard_sample,
    is_shard_dir,
    iter_shard,
    load_index,
)

BROKEN = {
    "cat/empty.png": "empty file (0 bytes)",
    "dog/text.png": "not an image format Pillow can identify",
    "dog/truncated.png": "truncated",
}


def write_folder(root: Path) -> dict[str, bytes]:
    """Two classes of small images (PNG and JPEG, several sizes), one unlabelled file and
    three broken files; returns the good files' bytes by relative path."""
    rng = np.random.default_rng(0)
    good = {}
    for label, count in (("cat", 9), ("dog", 8)):
        (root / label).mkdir(parents=True)
        for number in range(count):
            width, height = 10 + number, 14 - number % 3
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            suffix = ".JPEG" if number % 4 == 0 else ".png"
            path = root / label / f"{label}_{number}{suffix}"
            Image.fromarray(pixels).save(path, format="JPEG" if suffix == ".JPEG" else "PNG")
            good[path.relative_to(root).as_posix()] = path.read_bytes()
    Image.new("L", (12, 20), 77).save(root / "loose.png")
    good["loose.png"] = (root / "loose.png").read_bytes()
    (root / "cat/empty.png").write_bytes(b"")
    (root / "dog/text.png").write_text("not a picture\n")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
    (root / "dog/truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return good


def read_all(index: ShardIndex) -> list:
    """(shard entry, sample) for every sample of every shard, in order."""
    return [(entry, sample) for entry in index.shards for sample in iter_shard(index.url(entry))]


def digests(root: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.glob("shard-*"))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_folder(root)


@pytest.fixture(scope="module")
def packed_folder(folder, tmp_path_factory):
    root, _ = folder
    out = tmp_path_factory.mktemp("shards") / "out"
    summary = pack_shards(str(root), out, max_count=5, workers=0, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def packed_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "out"
    summary = pack_shards("digits", out, max_count=500, workers=0, progress=False)
    return out, summary


def test_folder_round_trip_keeps_every_good_image_once_with_its_label(folder, packed_folder):
    root, good = folder
    out, summary = packed_folder
    index = load_index(out)
    assert is_shard_dir(out) and index.complete and index.pretrain == "all" and index.size is None
    assert index.class_names == ["cat", "dog"] and index.source == str(root)
    assert summary["samples"] == index.count == len(good) and summary["skipped"] == len(BROKEN)
    assert {path: reason for path, reason in index.skipped}.keys() == BROKEN.keys()
    for path, reason in index.skipped:
        assert BROKEN[path] in reason
    samples = read_all(index)
    by_path = {sample.meta["path"]: sample for _, sample in samples}
    assert len(samples) == len(by_path) == len(good)  # each good file exactly once
    ordered = sorted(good)
    _, test_rows = split_indices([root / path for path in ordered], root)  # the folder loader's split
    test_paths = {ordered[row] for row in test_rows.tolist()}
    assert 0 < len(test_paths) < len(good)
    for path, data in good.items():
        sample = by_path[path]
        assert sample.data == data  # the original file's bytes
        assert sample.extension == ("jpg" if path.endswith(".JPEG") else "png")
        label_name = path.split("/")[0] if "/" in path else None
        assert sample.meta["label"] == label_name
        assert sample.label == (index.class_names.index(label_name) if label_name else -1)
        assert sample.meta["split"] == ("test" if path in test_paths else "train")
    # The index's labels and test positions describe the tars.
    for entry in index.shards:
        in_tar = [sample for owner, sample in samples if owner is entry]
        assert entry.labels == [sample.label for sample in in_tar]
        assert entry.test == [sample.position for sample in in_tar if sample.meta["split"] == "test"]
        assert entry.bytes == (out / entry.name).stat().st_size
        assert entry.sha256 == hashlib.sha256((out / entry.name).read_bytes()).hexdigest()
    # Plain tar lists the members, sample by sample; the unlabelled file has no .cls.
    for entry in index.shards:
        with tarfile.open(out / entry.name) as tar:
            names = tar.getnames()
        expected = [f"{sample.key}.{member}" for owner, sample in samples if owner is entry
                    for member in sorted((["cls"] if sample.label >= 0 else []) + ["json", sample.extension])]
        assert names == expected
    assert not list(out.glob("*.partial"))


def test_webdataset_reads_the_shards(packed_folder):
    out, _ = packed_folder
    index = load_index(out)
    samples = list(webdataset.WebDataset(index.urls(), shardshuffle=False, empty_check=False))
    assert len(samples) == index.count
    assert all("json" in sample and ("png" in sample or "jpg" in sample) for sample in samples)
    keys = [sample["__key__"] for sample in samples]
    assert len(set(keys)) == len(keys) and all(len(key) == 9 and key.isdigit() for key in keys)


def test_decode_shard_sample_matches_decoding_the_file(folder, packed_folder):
    root, _ = folder
    out, _ = packed_folder
    index = load_index(out)
    url = index.url(index.shards[0])
    sample = next(iter_shard(url))
    decoded = decode_shard_sample(sample, 3, 16, url=url)
    assert decoded.warnings == ()
    assert np.array_equal(decoded.image.numpy(), decode_image(root / sample.meta["path"], 3, 16).numpy())


def test_max_count_and_max_size_close_shards(folder, packed_folder, tmp_path):
    root, good = folder
    out, _ = packed_folder
    counts = [entry.count for entry in load_index(out).shards]
    assert counts == [5] * (len(good) // 5) + ([len(good) % 5] if len(good) % 5 else [])
    limit = 20_480  # two tar records: a few samples per shard
    pack_shards(str(root), tmp_path / "by_size", max_size=limit, workers=0, progress=False)
    index = load_index(tmp_path / "by_size")
    assert index.count == len(good) and len(index.shards) > 1 and index.max_count is None
    for entry in index.shards:
        assert entry.bytes == (tmp_path / "by_size" / entry.name).stat().st_size
        assert entry.bytes <= limit or entry.count == 1


def test_size_reencodes_with_the_shorter_side(folder, tmp_path):
    root, good = folder
    pack_shards(str(root), tmp_path / "small", size=6, max_count=100, workers=0, progress=False)
    index = load_index(tmp_path / "small")
    assert index.size == 6 and index.count == len(good)
    for _, sample in read_all(index):
        with Image.open(io.BytesIO(sample.data)) as image:
            assert min(image.size) == 6
            assert image.format == ("JPEG" if sample.meta["path"].endswith(".JPEG") else "PNG")
            with Image.open(io.BytesIO(good[sample.meta["path"]])) as original:
                ratio = original.size[0] / original.size[1]
            assert abs(image.size[0] / image.size[1] - ratio) < 0.2


def test_digits_keep_their_splits(packed_digits):
    out, summary = packed_digits
    index = load_index(out)
    assert index.pretrain == "train" and index.complete and summary["skipped"] == 0
    assert [entry.count for entry in index.shards] == [500, 500, 500, 297]
    samples = read_all(index)
    splits = [sample.meta["split"] for _, sample in samples]
    assert splits.count("train") == 1437 and splits.count("test") == 360
    assert sum(len(entry.test) for entry in index.shards) == 360
    for entry in index.shards:
        in_tar = [sample for owner, sample in samples if owner is entry]
        assert all(in_tar[position].meta["split"] == "test" for position in entry.test)
    # Not one class per shard: the packing order is a permutation of the whole set.
    assert all(len(set(entry.labels)) == 10 for entry in index.shards)
    test = load_digits("test")
    _, sample = next((owner, sample) for owner, sample in samples if sample.meta["path"].startswith("digits:test/"))
    row = int(sample.meta["path"].rsplit("/", 1)[1])
    assert sample.label == int(test.labels[row]) and sample.meta["label"] == str(sample.label)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sample.data))), test.images[row, 0].numpy())  # lossless


def test_packing_a_complete_directory_does_nothing(packed_digits):
    out, _ = packed_digits
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    summary = pack_shards("digits", out, max_count=500, workers=0, progress=False)
    assert summary["already_complete"] and summary["samples"] == 1797
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_other_settings_on_an_existing_directory_fail(packed_digits):
    out, _ = packed_digits
    with pytest.raises(DataError, match=r"index\.json was packed with other settings: size None \(now 16\).*another output folder"):
        pack_shards("digits", out, max_count=500, size=16, workers=0, progress=False)


def test_an_interrupted_pack_continues_to_identical_shards(folder, tmp_path, monkeypatch):
    root, _ = folder
    pack_shards(str(root), tmp_path / "whole", max_count=4, workers=0, progress=False)
    expected = digests(tmp_path / "whole")

    # Killed after the third shard was renamed but before the index listed it.
    complete_shard = packing_module._complete_shard
    calls = []

    def killed_on_third(out, index, shard, skipped, packed):
        calls.append(shard.name)
        if len(calls) == 3:
            shard.close()
            raise KeyboardInterrupt
        return complete_shard(out, index, shard, skipped, packed)

    out = tmp_path / "resumed"
    monkeypatch.setattr(packing_module, "_complete_shard", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        pack_shards(str(root), out, max_count=4, workers=0, progress=False)
    monkeypatch.undo()
    assert len(load_index(out).shards) == 2 and (out / "shard-000002.tar").exists()
    (out / "shard-000003.tar.partial").write_bytes(b"half a tar")  # as SIGKILL leaves it
    (out / ".index.json.abc.tmp").write_bytes(b"{")
    summary = pack_shards(str(root), out, max_count=4, workers=2, progress=False)  # other workers, same bytes
    assert summary["resumed_from"] == 2 and not summary["already_complete"]
    assert digests(out) == expected
    assert load_index(out).to_json() == load_index(tmp_path / "whole").to_json().replace(str(tmp_path / "whole"), str(out))
    assert sorted(path.name for path in out.iterdir()) == sorted([*expected, INDEX_FILE])


def test_a_pack_killed_in_its_first_shard_starts_again(folder, tmp_path):
    root, _ = folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-000000.tar.partial").write_bytes(b"\0" * 512)
    pack_shards(str(root), out, max_count=4, workers=0, progress=False)
    pack_shards(str(root), tmp_path / "whole", max_count=4, workers=0, progress=False)
    assert digests(out) == digests(tmp_path / "whole")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: text.replace('"version": 1', '"version": 2'), "key 'version' is 2"),
        (lambda text: text.replace('"format": "selfsup-shards"', '"format": "other"'), "key 'format'"),
        (lambda text: text.replace('"total": 1797,\n', ""), "missing key 'total'"),
        (lambda text: text.replace('"count": 500, ', '"count": 499, ', 1), r"shards\[0\] \(shard-000000\.tar\) has count 499 but 500 labels"),
        (lambda text: text.replace('"test": [', '"test": [9999, ', 1), r"shards\[0\]\.test .* position 9999, out of range"),
        (lambda text: text.replace('"name": "shard-000000.tar"', '"name": "../shard-000000.tar"'), "not a shard file name"),
        (lambda text: text.replace('"packed": 1797', '"packed": 1000'), "key 'packed' is 1000"),
    ],
)
def test_load_index_names_the_file_and_the_problem(packed_digits, tmp_path, change, message):
    out, _ = packed_digits
    (tmp_path / INDEX_FILE).write_text(change((out / INDEX_FILE).read_text()))
    with pytest.raises(DataError, match=message) as caught:
        load_index(tmp_path)
    assert str(tmp_path / INDEX_FILE) in str(caught.value) and "\n" not in str(caught.value)


def test_load_index_of_a_folder_without_one(tmp_path):
    assert not is_shard_dir(tmp_path) and not is_shard_dir("https://example.com/shards")
    with pytest.raises(DataError, match="not a shard directory"):
        load_index(tmp_path)


def test_iter_shard_reads_pipes_and_names_a_truncated_shard(packed_digits, tmp_path):
    out, _ = packed_digits
    path = out / "shard-000003.tar"
    assert len(list(iter_shard(f"pipe:cat {path}"))) == 297
    index = load_index(out)
    index.root = f"pipe:cat {out}/{{name}}"
    assert index.url(index.shards[0]) == f"pipe:cat {out}/shard-000000.tar"
    with pytest.raises(DataError, match="holds 297 samples, the index says 296"):
        list(iter_shard(str(path), count=296))
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        boundary = tar.getmembers()[30].offset  # a cut between members: tar readers stop quietly there
    for cut in (len(data) // 2 + 100, boundary):
        truncated = tmp_path / f"truncated-{cut}.tar"
        truncated.write_bytes(data[:cut])
        with pytest.raises(DataError, match=f"cannot read shard {truncated}"):
            list(iter_shard(str(truncated)))
    with pytest.raises(DataError, match="cannot open shard"):
        list(iter_shard(str(tmp_path / "missing.tar")))
    with pytest.raises(DataError, match="cannot read shard pipe:false: .*exited with status 1"):
        list(iter_shard("pipe:false"))


def test_bad_input_fails_with_one_line(folder, tmp_path):
    root, _ = folder
    with pytest.raises(DataError, match="unknown data source 'no-such-set'"):
        pack_shards("no-such-set", tmp_path / "a", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        pack_shards(str(root), tmp_path / "file", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty"):
        pack_shards(str(root), tmp_path / "busy", workers=0, progress=False)
    assert (tmp_path / "busy" / "notes.txt").exists()
    for settings, name in (({"max_count": 0}, "max_count"), ({"size": 0}, "size"), ({"max_size": -1}, "max_size"), ({"workers": -1}, "workers")):
        with pytest.raises(ConfigError, match=name):
            pack_shards(str(root), tmp_path / "b", progress=False, **settings)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 images"):
        pack_shards(str(broken), tmp_path / "c", workers=0, progress=False)
    assert not (tmp_path / "c" / INDEX_FILE).exists()


def test_byte_sizes():
    assert [parse_byte_size(text) for text in ("1GB", "500MB", "64KB", "123", "1.5 kb", "1GiB")] == [
        10**9, 5 * 10**8, 64_000, 123, 1500, 2**30]
    for text in ("12XB", "", "-5MB", "0", "GB"):
        with pytest.raises(ConfigError):
            parse_byte_size(text)
    assert format_byte_size(5_560_320) == "5.56 MB" and format_byte_size(812) == "812 B"


def test_shard_paths_stay_local(packed_digits):
    out, _ = packed_digits
    index = load_index(str(out))
    assert index.url(index.shards[1]) == os.path.join(str(out), "shard-000001.tar")
    copy = ShardIndex(**{**index.__dict__, "root": "https://host/data/"})
    assert copy.url(copy.shards[0]) == "https://host/data/shard-000000.tar"
