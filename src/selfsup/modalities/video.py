"""Video: clips of moving sprites -> (past, future) pairs -> a model of continuations; the
energy of true against wrong continuations, best-of-K futures, probes on the sprite class;
and ``selfsup predict``.

A video run directory also holds ``predictions.png``: sampled futures of a few held-out
clips (``selfsup predict`` draws more).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from selfsup.augment.clips import ClipViews
from selfsup.backbones.video import ClipShape, FrameEncoder
from selfsup.config import Config, ConfigError
from selfsup.data.sequences import ClipSet, load_sequences
from selfsup.evaluate.video import evaluate_video, futures_quality
from selfsup.methods import Method
from selfsup.modalities.base import LoadedRun, Modality, fingerprint, say
from selfsup.report.frames import futures_grid, save_png

DEFAULT_SOURCE = "moving-sprites"
DEFAULT_WIDTH = 32
PREDICTIONS_FILE = "predictions.png"
_TEST_SEED_OFFSET = 1_000_003  # held-out clips never share a generator seed with training clips


def clip_shape(config: Config) -> ClipShape:
    return ClipShape(config.video.frames_in, config.video.frames_out, 1, config.video.size)


def load_clips(config: Config, split: str) -> ClipSet:
    """The run's training or held-out clips (held-out ones show the sprite set's test split)."""
    video = config.video
    return load_sequences(
        config.data.source, count=video.clips if split == "train" else video.test_clips,
        seed=config.train.seed + (0 if split == "train" else _TEST_SEED_OFFSET),
        frames_in=video.frames_in, frames_out=video.frames_out, size=video.size, sprites=video.sprites,
        change_p=video.change_p, split=split,
    )


@torch.no_grad()
def sample_predictions(method: Method, views: ClipViews, clips: ClipSet, samples: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(past, true future, ``samples`` sampled futures per clip) of ``clips``, as [0, 1] floats
    on the CPU: [N, Tin, C, H, W], [N, Tout, C, H, W], [N, K, Tout, C, H, W]."""
    device = next(method.parameters()).device
    past, future = views(clips.frames.to(device))
    futures = method.sample_futures(past, samples, torch.Generator(device=device).manual_seed(seed))
    return past.cpu(), future.cpu(), futures.float().cpu()


def render_predictions(method: Method, views: ClipViews, clips: ClipSet, path: Path, samples: int = 5, count: int = 4) -> Path | None:
    """Draw ``samples`` futures for the first ``count`` clips into a PNG at ``path`` (None for
    models without a decoder)."""
    if not method.samples_futures:
        return None
    drawn = clips.subset(torch.arange(min(count, len(clips))), clips.name)
    return save_png(futures_grid(*sample_predictions(method, views, drawn, samples)), path)


class VideoModality(Modality):
    name = "video"
    default_backbone = "frames"

    def default_source(self) -> str:
        return DEFAULT_SOURCE

    def load_data(self, config: Config, run_dir: Path) -> tuple[ClipSet, ClipSet, ClipSet]:
        train = load_clips(config, "train")
        return train, train, load_clips(config, "test")

    def resolve(self, config: Config, pretrain_set: ClipSet) -> Config:
        """The frame encoder's width and the clips' frame shape."""
        backbone = dataclasses.replace(config.backbone, width=config.backbone.width or DEFAULT_WIDTH)
        data = dataclasses.replace(config.data, channels=1, size=config.video.size)
        return dataclasses.replace(config, backbone=backbone, data=data)

    def build_view_maker(self, config: Config) -> ClipViews:
        return ClipViews(config.video.frames_in)

    def build_backbone(self, config: Config, method: type[Method]) -> tuple[nn.Module, int, dict[str, Any]]:
        """A :class:`FrameEncoder` of ``backbone.width`` channels in its first stage and
        4 x width features per frame; the method is also given the clip shape."""
        width = config.backbone.width
        encoder = FrameEncoder(1, config.video.size, width, 4 * width)
        return encoder, encoder.output_dim, {"clip": clip_shape(config)}

    def baseline_key(self, config: Config, method: Method, train: ClipSet, test: ClipSet) -> dict[str, Any]:
        """Raw pixels read the clips, hashed; the random-init model also its configuration,
        seed and the method whose ``embed`` it is."""
        return {
            **self.encoder_key(config, method),
            "data": [config.data.source, fingerprint(train.frames, train.labels), fingerprint(test.frames, test.labels)],
            "video": dataclasses.asdict(config.video),
        }

    def evaluate(self, method: Method, view_maker: ClipViews, config: Config, train: ClipSet, test: ClipSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        say("evaluating: continuation energies, best-of-K futures, probes on the sprite class, collapse, baselines")
        result = evaluate_video(
            method, view_maker, train, test, device, fewshot_seeds=config.eval.fewshot_seeds,
            random_init=baselines.get("random_init"), raw_pixels=config.eval.baselines,
        )
        picture = render_predictions(method, view_maker, test, run_dir / PREDICTIONS_FILE)
        if picture is not None:
            result["predictions"] = str(picture)
        return result


@torch.no_grad()
def predict(run: LoadedRun, samples: int = 8, clips: int = 4, seed: int = 0, out: Path | None = None) -> dict[str, Any]:
    """Draw ``samples`` sampled futures for each of the first ``clips`` held-out clips of a
    video run into a PNG grid (the past and the true future on top of each block), and
    measure on those clips the best-of-K error and the diversity of the samples."""
    if not run.method.samples_futures:
        raise ConfigError(f"{run.run_dir} holds a {run.config.method['name']} model, which predicts embeddings, not frames; "
                          "sampled futures need a model with a decoder (method.name=lvp)")
    if samples < 1 or clips < 1:
        raise ConfigError(f"samples and clips must be at least 1, got {samples} and {clips}")
    test = load_clips(run.config, "test")
    test = test.subset(torch.arange(min(clips, len(test))), test.name)
    out = out or run.run_dir / f"futures-K{samples}.png"
    past, future, futures = sample_predictions(run.method, ClipViews(run.config.video.frames_in), test, samples, seed)
    save_png(futures_grid(past, future, futures), out)
    best, diversity = futures_quality(futures, future, (samples,))
    return {"clips": len(test), "samples": samples, "best_of_k": round(float(best[samples].mean()), 4),
            "sample_diversity": round(float(diversity.mean()), 4), "out": str(out)}
