"""Streaming image sources: every sample once per epoch over ranks and workers, the order a
function of (seed, epoch), mid-epoch resume, bounded read-ahead, unreadable files."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.images import inspect_source, open_stream
from selfsup.data.stream import StreamLayout, buffer_shuffle_order, epoch_batches


def _numbered_folder(root: Path, count: int) -> Path:
    """``count`` 4x4 grey PNGs whose pixels hold their number (mod 256) in 2 class folders."""
    for number in range(count):
        folder = root / ("even" if number % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), number % 256, np.uint8)).save(folder / f"{number:04d}.png")
    return root


def _numbers(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].tolist()


def test_a_shuffle_buffer_emits_a_permutation_holding_at_most_its_size():
    for count, buffer in ((1000, 50), (30, 100), (7, 1)):
        order = buffer_shuffle_order(count, buffer, np.random.default_rng(0))
        assert sorted(order.tolist()) == list(range(count))
        # The sample emitted k-th arrived at most `buffer` arrivals later (what a reader holds).
        assert (order <= np.arange(count) + buffer).all()
    assert not np.array_equal(buffer_shuffle_order(1000, 50, np.random.default_rng(0)), np.arange(1000))


@pytest.mark.parametrize("sequential_counts", [[37, 50, 13, 60, 40], [1] * 200])
def test_every_sample_once_per_epoch_over_two_ranks_and_two_workers(sequential_counts):
    counts = np.array(sequential_counts)
    layout = StreamLayout(batch=10, world=2, workers=2, buffer=16)
    epoch0 = [epoch_batches(counts, 7, 0, layout, rank) for rank in range(2)]
    assert all(batches.shape == (10, 10) for batches in epoch0)  # 200 / (10 x 2) steps
    assert sorted(np.concatenate([b.ravel() for b in epoch0]).tolist()) == list(range(200))
    # A function of (seed, epoch): the same again, another order next epoch and for another seed.
    assert all(np.array_equal(a, epoch_batches(counts, 7, 0, layout, rank)) for rank, a in enumerate(epoch0))
    assert not np.array_equal(epoch0[0], epoch_batches(counts, 7, 1, layout, 0))
    assert not np.array_equal(epoch0[0], epoch_batches(counts, 8, 0, layout, 0))


def test_the_remainder_of_an_epoch_is_left_out_once():
    counts = np.array([23, 30])  # 53 samples, global batch 2 x 4 = 8: 6 steps, 5 left out
    layout = StreamLayout(batch=4, world=2, workers=2, buffer=4)
    seen = np.concatenate([epoch_batches(counts, 0, 0, layout, rank).ravel() for rank in range(2)])
    assert len(seen) == len(set(seen.tolist())) == 48


def test_the_loader_gives_the_planned_batches_over_two_ranks_and_two_workers(tmp_path):
    info = inspect_source(str(_numbered_folder(tmp_path / "images", 80)))
    stream = open_stream(info, channels=1, size=4, workers=2)
    seen = []
    for rank in range(2):
        planned = epoch_batches(stream.parts.counts, 3, 1, stream.layout(8, 2), rank)
        batches = list(stream.epoch(3, 1, batch=8, world=2, rank=rank))
        assert [b.step for b in batches] == list(range(5))
        for found, ids in zip(batches, planned, strict=True):
            assert found.ids.tolist() == ids.tolist()
            # Files are sorted by path: even numbers first, then odd ones.
            names = [Path(info.paths[i]).stem for i in ids.tolist()]
            assert _numbers(found.images) == [int(name) for name in names]
            assert found.labels.tolist() == [int(name) % 2 for name in names]
            seen += ids.tolist()
    assert sorted(seen) == list(range(80))


def test_a_stream_resumed_mid_epoch_continues_with_the_batches_it_had_not_given(tmp_path):
    stream = open_stream(inspect_source(str(_numbered_folder(tmp_path / "images", 60))), channels=1, size=4, workers=2)
    whole = [b.ids.tolist() for b in stream.epoch(5, 2, batch=6, world=1, rank=0)]
    assert len(whole) == 10
    for first in (3, 4):
        resumed = list(stream.epoch(5, 2, batch=6, world=1, rank=0, first=first))
        assert [b.step for b in resumed] == list(range(first, 10))
        assert [b.ids.tolist() for b in resumed] == whole[first:]


def test_an_unreadable_file_is_replaced_in_its_batch_and_listed(tmp_path):
    folder = _numbered_folder(tmp_path / "images", 16)
    (folder / "odd" / "0099.png").write_bytes(b"not a png")
    stream = open_stream(inspect_source(str(folder)), channels=1, size=4, workers=0)
    batches = list(stream.epoch(0, 0, batch=17, world=1, rank=0))
    assert len(batches) == 1 and batches[0].images.shape == (17, 1, 4, 4)
    assert [reason for _, reason in batches[0].skipped] == ["not an image format Pillow can identify"]
    assert batches[0].readable.sum() == 16
    subset = stream.subset(torch.arange(17), "all")
    assert len(subset) == 16 and sorted(_numbers(subset.images)) == list(range(16))


def test_shards_stream_every_training_image_once_and_resume_mid_epoch(tmp_path):
    from selfsup.data.packing import pack_shards

    pack_shards("digits", tmp_path / "shards", max_count=200, workers=0, progress=False)
    info = inspect_source(str(tmp_path / "shards"))
    stream = open_stream(info, channels=1, size=8, workers=2, buffer=50)
    assert len(stream) == 1437 and stream.parts.sequential  # the train split; the test split is held out
    assert stream.describe_rows() == "images (1, 8, 8), streamed from 9 shards"
    ranks = [list(stream.epoch(1, 0, batch=16, world=2, rank=rank)) for rank in range(2)]
    seen = [i for batches in ranks for batch in batches for i in batch.ids.tolist()]
    assert len(seen) == len(set(seen)) == 44 * 2 * 16  # 1437 // 32 steps; the 13 left over wait
    for rank, batches in enumerate(ranks):
        planned = epoch_batches(stream.parts.counts, 1, 0, stream.layout(16, 2), rank)
        assert [b.ids.tolist() for b in batches] == planned.tolist()
    resumed = list(stream.epoch(1, 0, batch=16, world=2, rank=1, first=21))
    assert [b.ids.tolist() for b in resumed] == [b.ids.tolist() for b in ranks[1][21:]]
    assert all(torch.equal(a.images, b.images) for a, b in zip(resumed, ranks[1][21:], strict=True))
    # The images are the digits' own (packed losslessly), labels included.
    from selfsup.data import load_digits

    digits = load_digits("train")
    index = {bytes(image.flatten().tolist()): int(label) for image, label in zip(digits.images, digits.labels, strict=True)}
    batch = ranks[0][0]
    assert [index[bytes(image.flatten().tolist())] for image in batch.images] == batch.labels.tolist()


def test_an_index_can_point_at_shards_behind_a_url(tmp_path):
    """`shards_at` in index.json: the shards are opened by webdataset's gopen (here its pipe: scheme)."""
    import json

    from selfsup.data.packing import pack_shards

    pack_shards("digits", tmp_path / "shards", max_count=600, workers=0, progress=False)
    remote = tmp_path / "elsewhere"
    remote.mkdir()
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    index["shards_at"] = f"pipe:cat {tmp_path / 'shards'}/{{name}}"
    (remote / "index.json").write_text(json.dumps(index))
    local = open_stream(inspect_source(str(tmp_path / "shards")), channels=1, size=8, workers=0)
    piped = open_stream(inspect_source(str(remote)), channels=1, size=8, workers=0)
    assert piped.describe_rows() == local.describe_rows()
    first, again = next(local.epoch(0, 0, batch=64, world=1, rank=0)), next(piped.epoch(0, 0, batch=64, world=1, rank=0))
    assert first.ids.tolist() == again.ids.tolist() and torch.equal(first.images, again.images)
    assert again.names[0].startswith("pipe:cat ")


@pytest.mark.e2e
def test_deepclusters_pass_over_the_data_reads_a_streamed_folder(tmp_path, tiny_overrides, digits_folder):
    from selfsup import config as config_module
    from selfsup import runs
    from selfsup.config import Config

    overrides = [o for o in tiny_overrides if not o.startswith(("data.source", "method."))]
    config = config_module.apply_overrides(Config(), overrides + [
        "method.name=deepcluster-v2", f"data.source={digits_folder}", "data.stream=always", "data.channels=1", "train.epochs=2",
        "eval.enabled=false", f"out={tmp_path / 'run'}"])
    summary = runs.pretrain(config)
    assert summary["steps"] == 2 * (600 // 64) and summary["stopped_by"] == "schedule"
