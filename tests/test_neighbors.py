"""Nearest images with a run's encoder (``modalities/retrieval.py``): the chunked running
top-k equals a full-matrix top-k, a query finds itself, the grid is drawn, bad input is
one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import config as config_module
from selfsup import runs
from selfsup.backbones import uses_convolutions
from selfsup.config import Config, ConfigError
from selfsup.data import DataError
from selfsup.data.folder import decode_image
from selfsup.evaluate.pipeline import encode
from selfsup.modalities import retrieval
from selfsup.modalities.image import ImageModality
from selfsup.modalities.retrieval import RunningTopK, grid_size, neighbors, normalised

# conftest's TINY run, which a module-wide fixture cannot take from a per-test fixture.
TINY_RUN = ["data.source=digits", "data.size=16", "augment.global_scale=[0.5, 1.0]", "backbone.width=8",
            "method.hidden_dim=64", "method.projection_dim=32", "train.batch_size=64", "train.epochs=1", "eval.enabled=false"]
FOLDER_IMAGES = 36
ENCODE_BATCH = 5
CHUNK = 7  # several search chunks over the folder, the last one short, each fed by two batches


@pytest.mark.parametrize("max_block", [retrieval.MAX_BLOCK_ELEMENTS, 5 * 3])
def test_running_top_k_over_chunks_equals_top_k_of_the_full_matrix(monkeypatch, max_block):
    monkeypatch.setattr(retrieval, "MAX_BLOCK_ELEMENTS", max_block)  # 15 elements: 3-row chunks for 5 queries
    generator = torch.Generator().manual_seed(0)
    queries = normalised(torch.randn(5, 16, generator=generator))
    collection = normalised(torch.randn(50, 16, generator=generator))
    search = RunningTopK(queries, k=6, chunk_rows=CHUNK)
    assert search.chunk_rows == min(CHUNK, max_block // 5)
    for start in range(0, len(collection), ENCODE_BATCH):  # batches that straddle the chunks
        search.add(collection[start : start + ENCODE_BATCH], torch.arange(start, min(start + ENCODE_BATCH, len(collection))))
    similarities, indices = search.result()
    expected = (queries @ collection.T).topk(6, dim=1)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(similarities, expected.values)


def test_running_top_k_of_a_collection_smaller_than_k_keeps_every_row():
    search = RunningTopK(normalised(torch.randn(2, 4)), k=10)
    search.add(normalised(torch.randn(3, 4)), torch.tensor([5, 6, 7]))
    similarities, indices = search.result()
    assert indices.shape == (2, 3) and set(indices[0].tolist()) == {5, 6, 7}
    assert (similarities[:, :-1] >= similarities[:, 1:]).all()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-epoch image run on the digits, without evaluation (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("neighbors") / "run"
    runs.pretrain(config_module.apply_overrides(Config(), [*TINY_RUN, f"out={run_dir}"]))
    return runs.load_run(run_dir)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A few dozen distinct noise images in two labelled subfolders and the root."""
    folder = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(0)
    for index in range(FOLDER_IMAGES):
        place = folder / ("cats", "dogs", ".")[index % 3]
        place.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(place / f"image{index:02d}.png")
    return folder


@pytest.mark.e2e
def test_a_query_from_the_folder_is_its_own_nearest_neighbour_and_the_order_is_exact(tiny_run, image_folder, tmp_path):
    query = image_folder / "dogs" / "image07.png"
    out = tmp_path / "grid.png"
    result = neighbors(tiny_run, query, str(image_folder), k=5, out=out, batch_size=ENCODE_BATCH, chunk_rows=CHUNK)

    assert result["rows"] == FOLDER_IMAGES and result["skipped"] == 0 and result["k"] == 5
    (found,) = result["queries"]
    assert found["query"] == str(query)
    nearest = found["neighbors"][0]
    assert nearest["path"] == str(query) and nearest["label"] == "dogs" and nearest["rank"] == 1
    assert nearest["similarity"] == pytest.approx(1.0, abs=1e-4)
    similarities = [n["similarity"] for n in found["neighbors"]]
    assert similarities == sorted(similarities, reverse=True)

    # Brute force: every image of the folder encoded in the same batches (same features to the bit), the full similarity matrix, torch.topk.
    config = tiny_run.config
    paths = sorted(image_folder.rglob("*.png"), key=lambda path: path.relative_to(image_folder).as_posix())
    images = torch.stack([decode_image(path, config.data.channels, config.data.size) for path in paths])
    view_maker = ImageModality().build_view_maker(config)

    def features(batch):
        return normalised(encode(tiny_run.method.embed, batch, view_maker, tiny_run.device, uses_convolutions(tiny_run.method), ENCODE_BATCH))

    expected = (features(images[paths.index(query)].unsqueeze(0)) @ features(images).T).topk(5, dim=1)
    assert [n["index"] for n in found["neighbors"]] == expected.indices[0].tolist()
    assert [n["path"] for n in found["neighbors"]] == [str(paths[i]) for i in expected.indices[0].tolist()]
    assert similarities == pytest.approx(expected.values[0].tolist(), abs=1e-5)

    with Image.open(out) as grid:
        assert grid.size == grid_size(rows=1, columns=1 + 5, image_size=config.data.size)
        assert grid.width >= 6 * 64  # small images are magnified


@pytest.mark.e2e
def test_a_query_folder_against_a_builtin_set_gives_one_row_each_with_labels(tiny_run, image_folder, tmp_path):
    queries = image_folder / "cats"
    result = neighbors(tiny_run, queries, "digits", k=3, out=tmp_path / "grid.png")
    assert [Path(q["query"]).parent.name for q in result["queries"]] == ["cats"] * (FOLDER_IMAGES // 3)
    first = result["queries"][0]["neighbors"][0]
    assert first["split"] in ("train", "test") and first["name"] == f"{first['split']}[{first['split_index']}]"
    assert first["path"] is None and first["label"] in [str(d) for d in range(10)]
    assert result["rows"] == 1797
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == grid_size(rows=FOLDER_IMAGES // 3, columns=4, image_size=tiny_run.config.data.size)


@pytest.mark.e2e
def test_the_grid_defaults_to_the_run_directory(tiny_run, image_folder):
    neighbors(tiny_run, image_folder / "image02.png", str(image_folder / "cats"), k=2)
    assert (tiny_run.run_dir / "neighbors.png").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"k": 0}, ConfigError, "k must be at least 1, got 0"),
        ({"chunk_rows": 0}, ConfigError, "chunk_rows must be at least 1, got 0"),
        ({"query": "missing.png"}, DataError, "missing.png does not exist"),
        ({"data": "no-such-folder"}, DataError, "'no-such-folder' is neither"),
        ({"data": "empty"}, DataError, "no image files found under"),
        ({"query": "broken.png"}, DataError, "cannot decode image"),
        ({"data": "unreadable"}, DataError, "none of the 1 image files under"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(tiny_run, image_folder, tmp_path, change, error, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "broken.png").write_bytes(b"not a png")
    arguments = {"query": image_folder / "image02.png", "data": str(image_folder), "k": 3, **change}
    for key in ("query", "data"):
        if arguments[key] in ("missing.png", "empty", "broken.png", "unreadable"):
            arguments[key] = str(tmp_path / arguments[key])
    with pytest.raises(error, match=message) as raised:
        neighbors(tiny_run, out=tmp_path / "grid.png", **arguments)
    assert "\n" not in str(raised.value)


def test_a_text_run_is_refused_before_anything_is_loaded(tmp_path):
    text_run = SimpleNamespace(run_dir=tmp_path / "mlm-run", method=SimpleNamespace(modality="text"))
    with pytest.raises(ConfigError, match=r"mlm-run is a text run; neighbors needs an image run"):
        neighbors(text_run, tmp_path / "query.png", "digits")
