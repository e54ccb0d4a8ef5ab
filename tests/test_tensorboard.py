"""The evaluation in TensorBoard: the summary's numbers read back as scalars, and the
embedding projector's files (config, tensors, labels, sprite) as TensorBoard reads them."""

import math

import numpy
import pytest
import torch
from google.protobuf import text_format
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from selfsup.report.tensorboard import PROJECTOR_MAX_POINTS, evaluation_scalars, projector_points, write_evaluation, write_projector

# The evaluation part of a real image run's summary.json (digits, one epoch, with baselines).
SUMMARY = {
    "method": "simclr", "modality": "image", "data": "digits", "steps": 5,
    "knn_top1": 0.9056, "knn200_top1": 0.7583, "linear_top1": 0.9167,
    "fewshot": {"1": 0.4728, "10": 0.7844, "100": 0.8928}, "fewshot_std": {"1": 0.03, "10": 0.02, "100": 0.01},
    "energy_auc": 0.5777,
    "collapse": {"std_sqrt_d": 0.0536, "effective_rank": 7.139, "alignment": 0.0046, "uniformity": -0.0118,
                 "collapsed": True, "reasons": ["std_sqrt_d = 0.05361 is below 0.2"]},
    "baselines": {
        "raw_pixels": {"knn_top1": 0.975, "knn200_top1": 0.9444, "linear_top1": 0.9694, "fewshot": {"1": 0.6394, "10": 0.9067, "100": 0.9444}},
        "random_init": {"knn_top1": 0.9139, "knn200_top1": 0.8389, "linear_top1": 0.9389, "fewshot": {"1": 0.4578, "10": 0.8067, "100": 0.9289}},
    },
}


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_evaluation_is_read_back_as_scalars_at_the_step(tmp_path):
    written = write_evaluation(tmp_path, SUMMARY, step=5)
    scalars = _scalars(tmp_path / "tensorboard")
    assert set(scalars) == set(written)
    expected = {
        "evaluation/knn_top1": 0.9056, "evaluation/knn200_top1": 0.7583, "evaluation/linear_top1": 0.9167,
        "evaluation/fewshot_1": 0.4728, "evaluation/fewshot_10": 0.7844, "evaluation/fewshot_100": 0.8928,
        "evaluation/energy_auc": 0.5777, "evaluation/collapse/std_sqrt_d": 0.0536, "evaluation/collapse/effective_rank": 7.139,
        "evaluation/baselines/raw_pixels/knn_top1": 0.975, "evaluation/baselines/raw_pixels/fewshot_10": 0.9067,
        "evaluation/baselines/random_init/linear_top1": 0.9389, "evaluation/baselines/random_init/fewshot_100": 0.9289,
    }
    for tag, value in expected.items():
        (step, read), = scalars[tag]
        assert step == 5 and read == pytest.approx(value, rel=1e-6), tag
    assert len(scalars) == 9 + 2 * 6  # the run's nine numbers, six accuracies per baseline


def test_missing_and_non_finite_values_are_left_out():
    summary = {"knn_top1": 0.5, "linear_top1": None, "energy_auc": math.nan, "fewshot": {"10": 0.4},
               "collapse": {"collapsed": False}, "baselines": {"bag_of_words": {"knn_top1": 0.3}}}
    assert evaluation_scalars(summary) == {
        "evaluation/knn_top1": 0.5, "evaluation/fewshot_10": 0.4, "evaluation/baselines/bag_of_words/knn_top1": 0.3,
    }
    assert evaluation_scalars({"method": "simclr", "steps": 5}) == {}  # not evaluated: nothing to write


def _projector_config(log_dir) -> ProjectorConfig:
    return text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())


def test_the_projector_holds_embeddings_labels_and_a_sprite_of_grey_images(tmp_path):
    count, dim = 50, 6
    features = torch.randn(count, dim)
    labels = [f"digit {i % 10}" for i in range(count)]
    images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8)  # one channel, uint8, as digits are held
    folder = write_projector(tmp_path, features, labels, images, step=5)

    log_dir = tmp_path / "tensorboard"
    (embedding,) = _projector_config(log_dir).embeddings
    assert embedding.tensor_name == "held-out:00005"
    for relative in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path):
        assert (log_dir / relative).is_file() and (log_dir / relative).parent == folder
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == count and all(len(row.split("\t")) == dim for row in rows)
    assert float(rows[3].split("\t")[0]) == pytest.approx(float(features[3, 0]))
    assert (folder / "metadata.tsv").read_text().splitlines() == labels
    assert list(embedding.sprite.single_image_dim) == [8, 8]
    sprite = Image.open(folder / "sprite.png")
    assert sprite.size == (8 * 8, 8 * 8)  # ceil(sqrt(50)) = 8 images a row
    first = torch.from_numpy(numpy.asarray(sprite.convert("L"))[:8, :8].astype("float32"))
    assert torch.allclose(first, images[0, 0].float(), atol=1)  # uint8 kept as is, not scaled twice


def test_the_projector_caps_the_points_and_keeps_earlier_embeddings(tmp_path):
    count = PROJECTOR_MAX_POINTS + 37
    labels = [f"class\t{i % 3}\n" for i in range(count)]  # tabs and line breaks would split the rows
    write_projector(tmp_path, torch.randn(count, 3), labels, torch.rand(count, 3, 5, 4), step=1)  # RGB floats, not square
    folder = write_projector(tmp_path, torch.randn(10, 3), None, None, step=7, tag="train/set")

    log_dir = tmp_path / "tensorboard"
    assert sorted(e.tensor_name for e in _projector_config(log_dir).embeddings) == ["held-out:00001", "train/set:00007"]
    first = log_dir / "00001" / "held-out"
    assert len((first / "tensors.tsv").read_text().splitlines()) == PROJECTOR_MAX_POINTS
    kept = projector_points(count)  # what a caller encodes: spread over the whole set, first and last included
    assert len(kept) == PROJECTOR_MAX_POINTS and kept[0] == 0 and kept[-1] == count - 1 and len(set(kept.tolist())) == len(kept)
    assert projector_points(10).tolist() == list(range(10))
    metadata = (first / "metadata.tsv").read_text().splitlines()
    assert len(metadata) == PROJECTOR_MAX_POINTS and set(metadata) == {"class 0", "class 1", "class 2"}
    per_row = math.ceil(math.sqrt(PROJECTOR_MAX_POINTS))
    assert Image.open(first / "sprite.png").size == (5 * per_row, 5 * per_row)  # padded to 5 x 5
    assert sorted(p.name for p in folder.iterdir()) == ["tensors.tsv"]  # no labels, no images: no files for them

    write_projector(tmp_path, torch.randn(4, 3), ["a", "b", "c", "d"], None, step=1)  # the same step and tag again: replaced
    embeddings = {e.tensor_name: e for e in _projector_config(log_dir).embeddings}
    assert sorted(embeddings) == ["held-out:00001", "train/set:00007"]
    assert not embeddings["held-out:00001"].sprite.image_path and not (first / "sprite.png").exists()
    assert (first / "metadata.tsv").read_text().split() == ["a", "b", "c", "d"]


def test_large_images_become_thumbnails_within_the_sprite_limit(tmp_path, monkeypatch):
    from selfsup.report import tensorboard

    folder = write_projector(tmp_path, torch.randn(5, 2), None, torch.zeros(5, 3, 100, 80, dtype=torch.uint8), step=0)
    assert Image.open(folder / "sprite.png").size == (3 * 64, 3 * 64)  # thumbnails of 64 x 64, 3 a row
    monkeypatch.setattr(tensorboard, "SPRITE_MAX_SIDE", 40)  # 3 a row of 64 would exceed it
    folder = write_projector(tmp_path, torch.randn(5, 2), None, torch.ones(5, 1, 20, 20), step=1)
    (embedding,) = [e for e in _projector_config(tmp_path / "tensorboard").embeddings if e.tensor_name == "held-out:00001"]
    assert list(embedding.sprite.single_image_dim) == [13, 13] and Image.open(folder / "sprite.png").size == (39, 39)


def test_mismatched_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="3 labels for 4 feature rows"):
        write_projector(tmp_path, torch.randn(4, 2), ["a", "b", "c"], None, step=0)
