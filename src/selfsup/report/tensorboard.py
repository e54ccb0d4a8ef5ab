"""A run's evaluation in TensorBoard, beside its training curves: the summary's numbers as
scalars and the held-out embeddings in the embedding projector, so that
``tensorboard --logdir runs`` shows both what the run scored and the space it learned.

Everything goes to ``RUN_DIR/tensorboard``, the folder the training scalars are written to
(:mod:`selfsup.train.logging`), through the same ``SummaryWriter``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.files import write_atomic

TENSORBOARD_DIR = "tensorboard"
EVALUATION_PREFIX = "evaluation"
"""Tag prefix of the final evaluation. Not ``eval``: training logs the online kNN, taken on
subsets of the held-out splits, as ``eval/knn_top1``, and the two must not share a curve."""
PROJECTOR_MAX_POINTS = 2000
"""The projector's points at most: its t-SNE and UMAP run in the browser, and the sprite
must stay within its size limit."""
SPRITE_MAX_SIDE = 8192
"""TensorBoard's projector refuses sprite images larger than this (pixels per side)."""
SPRITE_IMAGE_MAX_SIDE = 64
"""The side of one image in the sprite at most: the projector draws them as small
thumbnails, and 2,000 full-size images would take gigabytes to arrange."""

# The summary's accuracy and energy numbers, written for the run and for each baseline.
_ACCURACY_KEYS = ("knn_top1", "knn200_top1", "linear_top1", "energy_auc")
_FEWSHOT_SHOTS = ("1", "10", "100")
_COLLAPSE_KEYS = ("std_sqrt_d", "effective_rank")


def evaluation_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's evaluation numbers by TensorBoard tag, e.g. ``evaluation/knn_top1``,
    ``evaluation/fewshot_10``, ``evaluation/collapse/effective_rank``,
    ``evaluation/baselines/raw_pixels/knn_top1``; missing or non-finite values are left out."""
    scalars = _scalars_of(summary, EVALUATION_PREFIX)
    for name, metrics in (summary.get("baselines") or {}).items():
        if isinstance(metrics, dict):
            scalars.update(_scalars_of(metrics, f"{EVALUATION_PREFIX}/baselines/{name}"))
    return scalars


def _scalars_of(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    found = {f"{prefix}/{key}": metrics.get(key) for key in _ACCURACY_KEYS}
    fewshot = metrics.get("fewshot") or {}
    found.update({f"{prefix}/fewshot_{shots}": fewshot.get(shots) for shots in _FEWSHOT_SHOTS})
    collapse = metrics.get("collapse") or {}
    found.update({f"{prefix}/collapse/{key}": collapse.get(key) for key in _COLLAPSE_KEYS})
    return {tag: float(value) for tag, value in found.items() if _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_evaluation(run_dir: Path, summary: dict[str, Any], step: int) -> dict[str, float]:
    """Write the summary's evaluation numbers (:func:`evaluation_scalars`) as scalars at
    ``step`` (the run's last training step, so they line up with its curves) to
    ``run_dir/tensorboard``; returns what was written."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import: only when writing

    scalars = evaluation_scalars(summary)
    writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR))
    try:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    return scalars


def write_projector(run_dir: Path, features: torch.Tensor, labels: list[str] | None, images: torch.Tensor | None, step: int,
                    tag: str = "held-out") -> Path:
    """Write ``features`` [N, D] to TensorBoard's embedding projector in ``run_dir/tensorboard``,
    each point named by ``labels`` (N class names; None: unnamed) and drawn with ``images``
    ([N, C, H, W], uint8 or float in [0, 1]; None: no sprite).

    At most :data:`PROJECTOR_MAX_POINTS` (2,000) points are written, evenly spaced through
    the N given, so that a set stored sorted by class keeps every class. Images are padded
    to squares (TensorBoard's sprite assumes them) and shrunk to thumbnails of at most
    :data:`SPRITE_IMAGE_MAX_SIDE` (64) pixels a side, and further when the sprite would
    exceed :data:`SPRITE_MAX_SIDE` pixels. Writing again with the same ``step`` and ``tag`` replaces
    that embedding; other embeddings in ``projector_config.pbtxt`` are kept. Returns the
    folder of this embedding (``tensors.tsv``, ``metadata.tsv``, ``sprite.png``)."""
    from torch.utils.tensorboard import SummaryWriter

    features = features.detach().float().cpu()
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    count = len(features)
    if labels is not None and len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} feature rows")
    if images is not None and len(images) != count:
        raise ValueError(f"{len(images)} images for {count} feature rows")
    keep = projector_points(count)
    features = features[keep]
    metadata = [_tsv_cell(labels[i]) for i in keep.tolist()] if labels is not None else None
    sprite = _sprite_images(images[keep], len(keep)) if images is not None else None

    log_dir = Path(run_dir) / TENSORBOARD_DIR
    config_path = log_dir / "projector_config.pbtxt"
    earlier = _read_projector_config(config_path)
    writer = SummaryWriter(str(log_dir))
    try:
        subdir = _embedding_folder(step, tag)
        shutil.rmtree(log_dir / subdir, ignore_errors=True)  # a stale metadata.tsv or sprite.png must not outlive this call
        writer.add_embedding(features, metadata=metadata, label_img=sprite, global_step=step, tag=tag)
    finally:
        writer.close()
    _keep_earlier_embeddings(config_path, earlier)
    return log_dir / subdir


def _embedding_folder(step: int, tag: str) -> str:
    """The folder ``SummaryWriter.add_embedding`` writes an embedding to, below the log folder."""
    encoded = tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")
    return f"{str(step).zfill(5)}/{encoded}"


def projector_points(count: int, limit: int = PROJECTOR_MAX_POINTS) -> torch.Tensor:
    """The indices of the points :func:`write_projector` keeps of ``count``: all of them, or
    ``limit`` evenly spaced. A caller encodes only these (``write_projector`` then keeps them all)."""
    if count <= limit:
        return torch.arange(count)
    return torch.linspace(0, count - 1, limit).round().long()


def _tsv_cell(label: Any) -> str:
    """One metadata row: no tabs or line breaks (they would split it), never empty."""
    text = " ".join(str(label).split())
    return text or "?"


def _sprite_images(images: torch.Tensor, count: int) -> torch.Tensor:
    """``images`` as float [N, 1 or 3, S, S] in [0, 1]: square (padded), at most
    :data:`SPRITE_IMAGE_MAX_SIDE` pixels a side and small enough for one sprite; converted a
    chunk at a time, so that 2,000 large images never exist as floats at full size."""
    if images.dim() == 3:  # [N, H, W]: one channel
        images = images[:, None]
    channels, height, width = images.shape[1:]
    if channels not in (1, 3):  # the sprite takes grey or RGB: drop alpha, keep the first of two
        images = images[:, :3] if channels > 3 else images[:, :1]
    side = max(height, width)
    target = min(side, SPRITE_IMAGE_MAX_SIDE, SPRITE_MAX_SIDE // math.ceil(math.sqrt(count)))
    chunks = []
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256].detach().cpu()
        chunk = chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float().clamp(0, 1)
        if height != width:
            top, left = (side - height) // 2, (side - width) // 2
            chunk = F.pad(chunk, (left, side - width - left, top, side - height - top))
        if target < side:
            chunk = F.interpolate(chunk, size=(target, target), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        chunks.append(chunk)
    return torch.cat(chunks)


def _read_projector_config(path: Path):
    """The projector config already in the folder (None when there is none or it is unreadable)."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    if not path.is_file():
        return None
    try:
        return text_format.Parse(path.read_text(), ProjectorConfig())
    except (text_format.ParseError, UnicodeDecodeError):
        return None


def _keep_earlier_embeddings(path: Path, earlier) -> None:
    """``add_embedding`` rewrites ``projector_config.pbtxt`` with this writer's embeddings only:
    put back the ones written before (an earlier evaluation, another tag) that it did not replace."""
    from google.protobuf import text_format

    if earlier is None:
        return
    current = _read_projector_config(path)
    if current is None:
        return
    names = {embedding.tensor_name for embedding in current.embeddings}
    kept = [embedding for embedding in earlier.embeddings if embedding.tensor_name not in names]
    if not kept:
        return
    merged = type(current)()
    merged.embeddings.extend(kept)
    merged.embeddings.extend(current.embeddings)
    write_atomic(path, text_format.MessageToString(merged))
