"""Nearest images with a run's encoder (``selfsup neighbors``): which images of a collection
the run sees as closest to a query, printed with their cosine similarities and drawn.

The query (one image file or a folder of images) and the collection (a built-in set or a
folder) are loaded at the run's stored size and channels and encoded with the evaluation
view, as ``selfsup embed --data`` does. The search is exact: the collection is encoded
and compared chunk by chunk, keeping a running top-k per query, so memory holds one chunk
of similarities and never the full query x collection matrix.

Why no index (faiss): 1,000 Fashion-MNIST test images as queries against the 70,000 of
Fashion-MNIST at the default convnet's 256 dimensions took 1.9 s of exact search beside 96 s
of encoding (two busy CPU cores); an approximate index would speed up the part that costs
least, and add a dependency. :func:`neighbors` reports both times (``seconds``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from tqdm import tqdm

from selfsup.backbones import uses_convolutions
from selfsup.config import ConfigError
from selfsup.data import BUILTIN_SOURCES, DataError, ImageSet, iter_folder_batches, load_folder, load_splits
from selfsup.data.folder import decode_image, scan_folder
from selfsup.evaluate.pipeline import encode
from selfsup.modalities.base import LoadedRun, say
from selfsup.modalities.image import ImageModality
from selfsup.report.frames import save_png

GRID_FILE = "neighbors.png"
#: Queries drawn in the grid (the rest are returned and printed, not drawn).
MAX_GRID_ROWS = 16
_MIN_TILE = 64  # images are magnified (whole multiples) to at least this many pixels a side
_GAP = 4  # pixels between cells
_QUERY_GAP = 12  # extra space between the query column and its neighbours
_CAPTION_LINES = 2
_LINE_HEIGHT = 12
_SKIPS_QUOTED = 3
#: Most similarities computed at once (64 MB of float32).
MAX_BLOCK_ELEMENTS = 2**24


class RunningTopK:
    """The exact ``k`` most similar collection rows of each query, fed batch by batch.

    ``queries`` [Q, D] and the collection's features [B, D] are L2-normalised, so the dot
    product is the cosine similarity. Added rows wait until ``chunk_rows`` of them are
    pending; each chunk's [Q, chunk] similarities are then merged with the best ``k`` so
    far. Memory is O(Q x (k + chunk)) whatever the size of the collection; chunks of a few
    thousand rows, not one per encoded batch, keep the per-merge overhead small (five times
    faster than 512-row chunks at 1,000 queries). The chunk shrinks so that a block of
    similarities stays under :data:`MAX_BLOCK_ELEMENTS` for many queries. :meth:`result`
    merges what is pending; fewer than ``k`` rows seen gives that many.
    """

    def __init__(self, queries: Tensor, k: int, chunk_rows: int = 4096) -> None:
        self.queries = queries
        self.k = k
        self.chunk_rows = max(1, min(chunk_rows, MAX_BLOCK_ELEMENTS // max(1, len(queries))))
        self.similarities = queries.new_empty((len(queries), 0))
        self.indices = torch.empty((len(queries), 0), dtype=torch.int64, device=queries.device)
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_rows = 0

    def add(self, features: Tensor, indices: Tensor) -> None:
        """Add rows: ``features`` [B, D] (normalised), ``indices`` [B] their rows in the collection."""
        self._pending.append((features, indices))
        self._pending_rows += len(features)
        if self._pending_rows >= self.chunk_rows:
            self._merge_pending(keep_remainder=True)

    def result(self) -> tuple[Tensor, Tensor]:
        """(similarities [Q, k], collection rows [Q, k]), each row nearest first."""
        self._merge_pending(keep_remainder=False)
        return self.similarities, self.indices

    def _merge_pending(self, keep_remainder: bool) -> None:
        if not self._pending:
            return
        features = torch.cat([f for f, _ in self._pending])
        indices = torch.cat([i for _, i in self._pending])
        whole = len(features) - len(features) % self.chunk_rows if keep_remainder else len(features)
        for start in range(0, whole, self.chunk_rows):
            self._merge(features[start : min(whole, start + self.chunk_rows)], indices[start : min(whole, start + self.chunk_rows)])
        self._pending = [(features[whole:], indices[whole:])] if whole < len(features) else []
        self._pending_rows = len(features) - whole

    def _merge(self, features: Tensor, indices: Tensor) -> None:
        chunk_similarities = self.queries @ features.T
        candidates = torch.cat([self.similarities, chunk_similarities], dim=1)
        candidate_indices = torch.cat([self.indices, indices.to(self.indices.device).expand(len(self.queries), -1)], dim=1)
        best = candidates.topk(min(self.k, candidates.shape[1]), dim=1)  # sorted, descending
        self.similarities = best.values
        self.indices = candidate_indices.gather(1, best.indices)


def normalised(features: Tensor) -> Tensor:
    """Rows scaled to unit length (float32), so that dot products are cosines."""
    return F.normalize(features.float(), dim=1)


def neighbors(run: LoadedRun, query: str | Path, data: str, k: int = 8, out: Path | None = None,
              batch_size: int = 512, chunk_rows: int = 4096) -> dict[str, Any]:
    """The ``k`` nearest images of ``data`` to each image of ``query`` by the run's encoder.

    ``query`` is an image file or a folder of images (searched as a data folder is);
    ``data`` is a built-in set (its train split then its test split, the row order of
    ``selfsup embed --data``) or a folder. Both are encoded with the run's backbone on the
    evaluation view, features L2-normalised and compared by cosine; the collection is
    encoded ``batch_size`` images at a time and searched ``chunk_rows`` at a time (see
    :class:`RunningTopK`).
    The first :data:`MAX_GRID_ROWS` queries and their neighbours are drawn into ``out``
    (default ``RUN_DIR/neighbors.png``).

    Returns ``queries``: per query its ``query`` path and ``neighbors``, each with
    ``rank`` (1 = nearest), ``index`` (the row in the collection), ``name`` (the file,
    or ``train[i]``/``test[i]`` for a built-in set), ``path``, ``split``, ``split_index``
    (``None`` where they do not apply), ``label`` (class name, ``None`` if unknown) and
    ``similarity``; beside them ``rows`` and ``dim`` of the collection, the number of
    ``skipped`` unreadable files (collection and query), ``out`` and the ``seconds``
    spent encoding and searching.

    Raises:
        ConfigError: ``k``, ``batch_size`` or ``chunk_rows`` below 1, or a run that is
            not an image run.
        DataError: a missing or unreadable query, a data source that is neither a
            built-in set nor a folder, or a folder without readable images.
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    for name, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    modality = run.method.modality
    if modality != "image":
        raise ConfigError(f"{run.run_dir} is a{'n' if modality[0] in 'aeiou' else ''} {modality} run; neighbors needs an image run")
    query = Path(query)
    if not query.exists():
        raise DataError(f"query {query} does not exist; give an image file or a folder of images")
    if data not in BUILTIN_SOURCES and not Path(data).is_dir():
        raise DataError(f"data source {data!r} is neither {', '.join(BUILTIN_SOURCES)} nor a folder")

    config, method, device = run.config, run.method, run.device
    channels, size = config.data.channels, config.data.size
    view_maker = ImageModality().build_view_maker(config)
    channels_last = uses_convolutions(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)

    def features_of(images: Tensor) -> Tensor:
        return normalised(encode(method.embed, images, view_maker, device, channels_last, batch_size))

    decoding = {"background": config.data.background, "max_pixels": config.data.max_pixels}
    query_set = _load_query(query, channels, size, config.data.workers, decoding)
    search = RunningTopK(features_of(query_set.images), k, chunk_rows)
    started, search_seconds = time.perf_counter(), 0.0
    collection = _Collection(data, channels, size, decoding)
    with tqdm(total=collection.total, unit="img", desc=f"encoding {data}", dynamic_ncols=True, leave=False, disable=None) as progress:
        for images, indices, files_read in collection.batches(batch_size, config.data.workers):
            if len(images):
                features = features_of(images)
                searched = time.perf_counter()
                search.add(features, indices)
                search_seconds += time.perf_counter() - searched
            progress.update(files_read)
        searched = time.perf_counter()
        best_similarities, best_indices = search.result()
        search_seconds += time.perf_counter() - searched
    seconds = time.perf_counter() - started
    if collection.rows == 0:
        raise DataError(f"none of the {collection.total} image files under {data} could be decoded ({_quote(collection.skipped)})")
    say(f"encoded {collection.rows:,} images of {data} in {seconds:.1f} s ({collection.rows / max(seconds, 1e-9):,.0f} images/s); "
        f"exact search {search_seconds:.2f} s")
    if collection.skipped:
        say(f"skipped {len(collection.skipped)} unreadable files of {data}: {_quote(collection.skipped)}")

    results = [
        {"query": path, "neighbors": [
            {"rank": rank + 1, **collection.describe(int(index)), "similarity": round(float(similarity), 6)}
            for rank, (index, similarity) in enumerate(zip(row_indices.tolist(), row_similarities.tolist()))
        ]}
        for path, row_indices, row_similarities in zip(query_set.paths, best_indices, best_similarities)
    ]
    drawn = min(len(results), MAX_GRID_ROWS)
    grid = neighbors_grid(
        query_set.images[:drawn],
        [[collection.image(n["index"]) for n in result["neighbors"]] for result in results[:drawn]],
        [["query", Path(result["query"]).name] for result in results[:drawn]],
        [[[f"{n['similarity']:.3f}", n["label"] or ""] for n in result["neighbors"]] for result in results[:drawn]],
    )
    out = save_png(grid, out or run.run_dir / GRID_FILE)
    return {
        "queries": results,
        "rows": collection.rows,
        "dim": int(search.queries.shape[1]),
        "k": min(k, collection.rows),
        "skipped": len(collection.skipped) + len(query_set.skipped),
        "out": str(out),
        "seconds": {"encode_and_search": round(seconds, 3), "search": round(search_seconds, 3)},
    }


def _load_query(query: Path, channels: int, size: int, workers: int, decoding: dict[str, Any]) -> ImageSet:
    """One image file or every image of a folder, at the run's channels and size
    (``decoding``: the run's ``data.background`` and ``data.max_pixels``)."""
    if query.is_dir():
        return load_folder(query, channels, size, workers, **decoding)  # DataError when nothing is readable
    image = decode_image(query, channels, size, **decoding)  # ImageDecodeError (a DataError) names the file
    return ImageSet(images=image.unsqueeze(0), labels=torch.tensor([-1]), name=str(query), class_names=[], paths=[str(query)])


class _Collection:
    """The images searched: a built-in set (train then test) or a folder, streamed in
    batches, with what each row is called (its file, or its split and index, and label)."""

    def __init__(self, source: str, channels: int, size: int, decoding: dict[str, Any]) -> None:
        self.source, self.channels, self.size, self.decoding = source, channels, size, decoding
        self.builtin = source in BUILTIN_SOURCES
        self.rows = 0
        self.skipped: list[tuple[str, str]] = []
        if self.builtin:
            _, train, test = load_splits(source, channels, size, **decoding)
            self.splits = [("train", train), ("test", test)]
            self.total = len(train) + len(test)
        else:
            paths, label_names = scan_folder(source)  # DataError when empty or missing
            self.paths = [str(path) for path in paths]
            self.label_names = label_names
            self.total = len(paths)

    def batches(self, batch_size: int, workers: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Yield (uint8 images [b, C, S, S], their row indices [b], files read); unreadable
        files are listed in ``skipped`` and their rows never returned."""
        if self.builtin:
            offset = 0
            for _, split in self.splits:
                for start in range(0, len(split), batch_size):
                    images = split.images[start : start + batch_size]
                    self.rows += len(images)
                    yield images, torch.arange(offset + start, offset + start + len(images)), len(images)
                offset += len(split)
            return
        for batch in iter_folder_batches(self.source, self.channels, self.size, batch_size, workers, **self.decoding):
            self.skipped += batch.skipped
            self.rows += len(batch.images)
            yield batch.images, batch.indices, len(batch.images) + len(batch.skipped)

    def describe(self, index: int) -> dict[str, Any]:
        """What row ``index`` is: its name, path or split and index, and label name."""
        if not self.builtin:
            path = self.paths[index]
            return {"index": index, "name": path, "path": path, "split": None, "split_index": None, "label": self.label_names[index]}
        split_name, split, split_index = self._locate(index)
        label = int(split.labels[split_index])
        return {"index": index, "name": f"{split_name}[{split_index}]", "path": None, "split": split_name,
                "split_index": split_index, "label": split.class_names[label] if 0 <= label < len(split.class_names) else None}

    def image(self, index: int) -> Tensor:
        """Row ``index`` as the run sees it (uint8 [C, S, S]), for the grid."""
        if not self.builtin:
            return decode_image(self.paths[index], self.channels, self.size, **self.decoding)
        _, split, split_index = self._locate(index)
        return split.images[split_index]

    def _locate(self, index: int) -> tuple[str, ImageSet, int]:
        for split_name, split in self.splits:
            if index < len(split):
                return split_name, split, index
            index -= len(split)
        raise IndexError(index)


def _quote(skipped: Sequence[tuple[str, str]]) -> str:
    """The first few (path: reason) of unreadable files, for a one-line message."""
    more = len(skipped) - _SKIPS_QUOTED
    return "; ".join(f"{path}: {' '.join(str(reason).split())}" for path, reason in skipped[:_SKIPS_QUOTED]) + (f"; and {more} more" if more > 0 else "")


def grid_cell(image_size: int) -> tuple[int, int, int]:
    """(magnification, cell width, cell height) of one captioned image in the grid."""
    scale = max(1, math.ceil(_MIN_TILE / image_size))
    tile = image_size * scale
    return scale, tile + _GAP, tile + _CAPTION_LINES * _LINE_HEIGHT + _GAP


def grid_size(rows: int, columns: int, image_size: int) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``rows`` queries with ``columns - 1`` neighbours each."""
    _, cell_width, cell_height = grid_cell(image_size)
    return _GAP + columns * cell_width + _QUERY_GAP, _GAP + rows * cell_height


def neighbors_grid(queries: Tensor, neighbours: Sequence[Sequence[Tensor]], query_captions: Sequence[Sequence[str]],
                   captions: Sequence[Sequence[Sequence[str]]]) -> Image.Image:
    """One row per query: the query, a gap, then its neighbours, nearest first; each image
    magnified by whole multiples (sharp pixels) to at least 64 px with caption lines under it.

    ``queries`` uint8 [R, C, S, S]; ``neighbours[r]`` the uint8 [C, S, S] images of row r;
    ``query_captions[r]`` and ``captions[r][j]`` the text lines under each image (cut to
    the image's width).
    """
    image_size = queries.shape[-1]
    columns = 1 + max((len(row) for row in neighbours), default=0)
    scale, cell_width, cell_height = grid_cell(image_size)
    grid = Image.new("RGB", grid_size(len(queries), columns, image_size), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    tile = image_size * scale

    def paste(image: Tensor, lines: Sequence[str], row: int, column: int) -> None:
        left = _GAP + column * cell_width + (_QUERY_GAP if column else 0)
        top = _GAP + row * cell_height
        pixels = image.permute(1, 2, 0).cpu().numpy()
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
        grid.paste(picture.resize((tile, tile), Image.Resampling.NEAREST), (left, top))
        for line_number, line in enumerate(lines[:_CAPTION_LINES]):
            while line and draw.textlength(line, font=font) > tile:
                line = line[:-1]
            draw.text((left, top + tile + line_number * _LINE_HEIGHT), line, fill="black", font=font)

    for row, query_image in enumerate(queries):
        paste(query_image, query_captions[row], row, 0)
        for column, (image, lines) in enumerate(zip(neighbours[row], captions[row]), start=1):
            paste(image, lines, row, column)
    return grid
