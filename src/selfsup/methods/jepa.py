"""JEPA: a joint-embedding predictive architecture over frames (I-JEPA, V-JEPA)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.transformer import Block
from selfsup.backbones.video import ClipShape, FrameEncoder
from selfsup.losses.latent import embedding_distance
from selfsup.methods.base import Batch, Method, StepInfo, StepOutput
from selfsup.methods.momentum import MomentumEncoder
from selfsup.schedules import linear_increase

LOSSES = ("l1", "l2")


class FramePredictor(nn.Module):
    """I-JEPA's predictor, over frames: a narrow pre-LN transformer that reads the context
    embeddings ``[B, Tin, D]`` and returns predicted embeddings ``[B, Tout, D]`` of the next
    Tout frames.

    The context embeddings are mapped to ``width`` and given learned position embeddings
    of frames 0..Tin-1; each frame to predict is a token made of one shared learned mask
    token plus the position embedding of its frame, Tin..Tin+Tout-1 (I-JEPA's mask tokens:
    the position is all that tells them apart). All Tin + Tout tokens attend to one another;
    the outputs at the Tout mask tokens, layer-normed and mapped back to D, are the
    predictions.
    """

    def __init__(self, dim: int, frames_in: int, frames_out: int, width: int, depth: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.frames_in = frames_in
        self.embed = nn.Linear(dim, width)
        # 1-d, so the optimiser keeps weight decay off it, as I-JEPA does for its mask token.
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.position_embedding = nn.Parameter(torch.zeros(frames_in + frames_out, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, dim)
        # I-JEPA's initialisation of the mask token (std 0.02); ViTs start position
        # embeddings at the same scale.
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.position_embedding, std=0.02)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        if context.shape[1] != self.frames_in:
            raise ValueError(f"the predictor is built for {self.frames_in} context frames, got {context.shape[1]}")
        context_tokens = self.embed(context) + self.position_embedding[: self.frames_in]
        mask_tokens = (self.mask_token + self.position_embedding[self.frames_in :]).expand(len(context), -1, -1)
        tokens = torch.cat([context_tokens, mask_tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens, None, False)
        return self.project(self.norm(tokens[:, self.frames_in :]))


class JEPA(Method):
    """JEPA on clips: predict the embeddings of the future frames from those of the past
    (I-JEPA, Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, CVPR 2023;
    V-JEPA, Bardes, Garrido, Ponce, Chen, Rabbat, LeCun, Assran, Ballas, 2024).

    The past frames x are the context and the future frames y the hidden target (the
    masked blocks of I-JEPA, here whole frames: the prediction task is the continuation).

        context   s_x     = f(x)                        [B, Tin, D], f = the backbone
        targets   s_y     = LN(f'(y))                   [B, Tout, D], f' = EMA of f, no gradient
        predicted s_hat_y = g(s_x, mask tokens at Tin..Tin+Tout-1)     [B, Tout, D]
        loss      L       = mean over the batch of d(s_hat_y, sg(s_y))

    with LN a layer norm without affine parameters over the feature dimension (as both
    papers' reference code normalises the target features), g the :class:`FramePredictor`
    and d the mean absolute error (``loss="l1"``, V-JEPA) or the mean squared error
    (``"l2"``, I-JEPA). After every step theta' <- m theta' + (1 - m) theta, with m rising
    linearly from ``base_momentum`` 0.996 to 1 over training (I-JEPA). The backbone encodes each frame on its own,
    so f'(y) is what V-JEPA's target encoder, which sees the whole clip, gives at the
    future frames. There are no negatives and no pixel decoder: collapse is avoided by the
    asymmetry of predictor and stop-gradient EMA target, as in BYOL.

    Predictor: the papers use 12 blocks of width 384 beside encoders of width 1024-1280;
    for the small frame encoders here, 3 blocks of width 64 (half the default 128-d
    embedding), 4 heads, MLP ratio 4.

    Energy: F(x, y) = d(g(f(x)), LN(f'(y))), the loss per clip: low when y is the true
    continuation of x. ``embed`` gives the mean over the past frames of f's embeddings.
    """

    name = "jepa"
    summary = "joint-embedding predictive: predict EMA-target embeddings of future frames from past ones (Assran et al. 2023)"
    modality = "video"
    default_backbone = "frames"
    # I-JEPA: AdamW, lr 1e-3 at batch 2048 (1.25e-4 per 256), weight decay 0.04 -> 0.4, 300
    # epochs. Small frame encoders trained for tens of epochs on a CPU need a larger rate:
    # 2e-3 per 256 clips (5e-4 at the default batch of 64), that of the latent-variable
    # predictor on the same clips; the paper's starting weight decay, held constant.
    train_recipe = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.04, "epochs": 40, "batch_size": 64}

    def __init__(self, backbone: FrameEncoder, backbone_dim: int, clip: ClipShape, predictor_width: int = 64,
                 predictor_depth: int = 3, predictor_heads: int = 4, predictor_mlp_ratio: int = 4,
                 base_momentum: float = 0.996, loss: str = "l1"):
        super().__init__(backbone)
        if loss not in LOSSES:
            raise ValueError(f"method.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"method.base_momentum must lie in [0, 1], got {base_momentum}")
        for option, value in (("predictor_width", predictor_width), ("predictor_depth", predictor_depth),
                              ("predictor_heads", predictor_heads), ("predictor_mlp_ratio", predictor_mlp_ratio)):
            if value < 1:
                raise ValueError(f"method.{option} must be >= 1, got {value}")
        if predictor_width % predictor_heads:
            raise ValueError(
                f"method.predictor_width ({predictor_width}) must be divisible by method.predictor_heads ({predictor_heads})"
            )
        self.clip = clip
        self.loss = loss
        self.predictor = FramePredictor(
            backbone_dim, clip.frames_in, clip.frames_out, predictor_width, predictor_depth, predictor_heads, predictor_mlp_ratio
        )
        # The target network is the EMA backbone followed by the parameter-free layer norm;
        # the norm takes the projector's place in the momentum encoder.
        self.target = MomentumEncoder(backbone, nn.LayerNorm(backbone_dim, elementwise_affine=False))
        self.base_momentum = base_momentum
        self.momentum = base_momentum

    def predict(self, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(context embeddings f(x) [B, Tin, D], predicted target embeddings [B, Tout, D])."""
        context = self.backbone(past)
        return context, self.predictor(context)

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        past, future = views[0], views[1]
        context, prediction = self.predict(past)
        target = self.target(future)
        loss = embedding_distance(prediction, target, self.loss).mean()
        metrics = {
            "momentum": self.momentum,
            # Spread of the targets over the batch: the layer norm fixes each target's
            # scale, so a fall here means the targets grow alike, i.e. the EMA target collapses.
            "target_std": float(target.std(dim=0).mean()),
        }
        return StepOutput(loss, metrics, embeddings=context.mean(dim=1).detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y) [B]: the distance between the embeddings of y predicted from x and y's
        target embeddings."""
        return embedding_distance(self.predict(x)[1], self.target(y), self.loss)

    @torch.no_grad()
    def embed(self, past: torch.Tensor) -> torch.Tensor:
        """Context-encoder features [B, D]: the mean of the past frames' embeddings."""
        return self.backbone.clip_embedding(past)

    def on_step_end(self, info: StepInfo) -> None:
        # A function of the step, not a running state: resuming needs nothing saved.
        self.momentum = linear_increase(info.step, info.total_steps, self.base_momentum)
        # The layer norm has no parameters: the EMA averages the backbone only.
        self.target.update(self.backbone, self.target.projector, self.momentum)
