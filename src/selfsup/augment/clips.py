"""Views of frame sequences: a clip becomes the pair (past, future), what a video model
reads and what it predicts. No augmentation: the prediction task itself is the pretext."""

from __future__ import annotations

import torch
from torch import Tensor


class ClipViews:
    """uint8 clips [B, T, C, H, W] -> [past [B, frames_in, C, H, W], future [B, T - frames_in,
    C, H, W]], as floats in [0, 1] (the pixel scale of the decoders' sigmoid outputs)."""

    def __init__(self, frames_in: int):
        if frames_in < 1:
            raise ValueError(f"frames_in must be at least 1, got {frames_in}")
        self.frames_in = frames_in

    def _frames(self, samples: Tensor) -> Tensor:
        if samples.dim() != 5 or samples.shape[1] <= self.frames_in:
            raise ValueError(
                f"clips must be [B, T, C, H, W] with T > frames_in = {self.frames_in}, got shape {tuple(samples.shape)}"
            )
        return samples.float() / 255

    def __call__(self, samples: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        frames = self._frames(samples)
        return [frames[:, : self.frames_in], frames[:, self.frames_in :]]

    def eval_view(self, samples: Tensor) -> Tensor:
        """The past frames, what the encoder's features (probes, kNN) are computed from."""
        return self._frames(samples)[:, : self.frames_in]
