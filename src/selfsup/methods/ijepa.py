"""I-JEPA: a joint-embedding predictive architecture over the patches of one image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment.blocks import BlockMasks, sample_block_masks
from selfsup.backbones.transformer import Block
from selfsup.backbones.vit import VisionTransformer, sincos_position_embedding
from selfsup.methods.base import Batch, Method, StepInfo, StepOutput
from selfsup.methods.momentum import MomentumEncoder
from selfsup.schedules import linear_increase

LOSSES = ("smooth_l1", "l2")
# The seed of the one mask every energy evaluation uses, so that F(x, y) is a fixed function.
ENERGY_MASK_SEED = 0


def select_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The rows ``index`` [..., B, n] of every image's tokens [B, N, D]: [..., B, n, D]
    (the reference's ``apply_masks``, all masks at once)."""
    samples = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    return tokens[samples, index]


def block_distance(prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Distance per image [B] between predicted and target block embeddings [M, B, Nt, D],
    averaged over the M x Nt x D elements of an image: smooth L1 (Huber with beta 1,
    ``F.smooth_l1_loss`` as ``src/train.py`` computes the loss) or squared error (the
    paper's eq. 1, divided by the constant Nt x D)."""
    if loss == "smooth_l1":
        elements = F.smooth_l1_loss(prediction, target, reduction="none", beta=1.0)
    else:
        elements = (prediction - target).pow(2)
    return elements.mean(dim=(0, 2, 3))


class BlockPredictor(nn.Module):
    """I-JEPA's predictor g_phi (sec. 3, "Prediction"; ``VisionTransformerPredictor`` in
    ``src/models/vision_transformer.py``): a narrow pre-LN transformer.

    The context encoder's outputs [B, Nc, D] are mapped to ``width`` and given the fixed
    sine-cosine embeddings of their positions; for each target block, one learned mask token
    per target patch, plus the embedding of that patch's position, is appended. Each target
    block is predicted in its own sequence (the context repeated once per block, as the
    reference's ``x.repeat(len(masks), 1, 1)``), so blocks do not see one another. After
    the blocks and a final LayerNorm, the outputs at the mask tokens are mapped back to D.
    """

    def __init__(self, dim: int, width: int, depth: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(dim, width)
        # [1, 1, width] as in the reference, whose optimiser decays it (only biases and 1-d
        # tensors are exempt in its init_opt).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.project = nn.Linear(width, dim)
        # The reference's initialisation: truncated normal (std 0.02) for linear weights and
        # the mask token, zero biases, and each block's output projections divided by
        # sqrt(2 x layer) (fix_init_weight).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attention.out.weight.div_(math.sqrt(2.0 * layer))
                block.mlp[2].weight.div_(math.sqrt(2.0 * layer))

    def forward(self, context: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """``context`` [B, Nc, D] at the patches ``context_index`` [B, Nc]; predictions
        [M, B, Nt, D] for the patches ``target_index`` [M, B, Nt]."""
        blocks, batch, target_patches = target_index.shape
        positions = sincos_position_embedding(self.width, grid, context.device).to(context.dtype)
        context_tokens = self.embed(context) + positions[context_index]  # [B, Nc, W]
        mask_tokens = self.mask_token + positions[target_index]  # [M, B, Nt, W]
        tokens = torch.cat([
            context_tokens.expand(blocks, -1, -1, -1).reshape(blocks * batch, -1, self.width),
            mask_tokens.reshape(blocks * batch, target_patches, self.width),
        ], dim=1)
        for block in self.blocks:
            tokens = block(tokens, None, False)
        predictions = self.project(self.norm(tokens[:, -target_patches:]))
        return predictions.view(blocks, batch, target_patches, -1)


class IJEPA(Method):
    """I-JEPA (Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, "Self-Supervised
    Learning from Images with a Joint-Embedding Predictive Architecture", CVPR 2023; reference
    code facebookresearch/ijepa).

    From one view of an image (crop 0.3-1, no flip, no colour: the ``ijepa`` recipe), the
    multi-block masks of :mod:`selfsup.augment.blocks` take M = 4 target blocks B_i (scale
    0.15-0.2, aspect ratio 0.75-1.5) and one context block (scale 0.85-1, minus the targets)
    of the patch grid (sec. 3, Fig. 4). With f the backbone ViT and f' its EMA (sec. 3):

        targets   s_y(i)  = LN(f'(y))_{B_i}      f' over all patches, then the blocks' tokens
        context   s_x     = f(x_context)         f over the context patches only
        predicted s^_y(i) = g(s_x, {m_j + p_j : j in B_i})           (the predictor)
        loss      L = 1/M sum_i sum_{j in B_i} d(s^_yj, sg(s_yj))              (eq. 1)

    LN is a layer norm over the features without parameters (``F.layer_norm`` of the target
    encoder's output in ``src/train.py``), m the learned mask token, p_j the fixed 2-d
    sine-cosine embedding of patch j. The paper writes d as the squared L2 distance; the
    reference trains with ``F.smooth_l1_loss`` averaged over all elements, the default here
    (``loss="smooth_l1"``; ``"l2"`` gives the mean squared error, eq. 1 up to the constant
    1 / (Nt D)). The encoder has no [CLS] token (the reference's ViT has none): both
    encoders run :meth:`VisionTransformer.encode` with ``cls=False``. After every step
    theta' <- m theta' + (1 - m) theta, m rising linearly from ``base_momentum`` 0.996 to 1
    over training (``momentum_scheduler``, ``ema: [0.996, 1.0]``).

    Predictor: the paper's ViT-H/14 uses 12 blocks of width 384 (``pred_depth``,
    ``pred_emb_dim`` in ``configs/in1k_vith14_ep300.yaml``); for the tiny ViTs trained on a
    CPU here, 3 blocks of width 96 (half of ViT-Tiny's 192, the paper's 384 : 1280 being
    narrower still) and 3 heads. ``min_context``: an image's context must keep more than
    int(min_context x h x w) patches, the reference's ``min_keep`` = 10 on ViT-H/14's
    16 x 16 grid as a share of the grid (10 / 256), so small grids are not held to ten.

    Masks are drawn per step from the batch's generator, a function of (seed, step, rank);
    on an accelerator they are drawn on the CPU, as the reference's data-loader collator
    does, from a generator with that generator's seed, so no step waits for the device.

    ``embed``: the target encoder's output average-pooled over all patches, the image
    representation the paper evaluates (sec. 5). Energy: F(x, y) = the loss of one image with a fixed mask (drawn once from
    seed ``ENERGY_MASK_SEED``, the same for every image and call): how far the embeddings
    of y's target blocks, by the target encoder, lie from those predicted from x's context;
    low when y is x or another view of it.

    Recipe: AdamW, lr 1e-3 at batch 2048 (128 per GPU x 16, ``vith14.224-bs.2048``), i.e.
    1.25e-4 per 256 under the trainer's linear scaling; weight decay 0.04 (the reference
    raises it to 0.4 on a cosine; the trainer has no weight-decay schedule, so it stays at
    the starting value); 300 epochs. The reference warms up over 40 epochs from 2e-4 and
    ends at 1e-6; the trainer's warm-up is ``train.warmup_epochs`` from 0 and its cosine
    ends at 0.
    """

    name = "ijepa"
    summary = "joint-embedding predictive: predict EMA-target embeddings of hidden image blocks from a context block (Assran et al. 2023)"
    modality = "image"
    default_recipe = "ijepa"
    default_backbone = "vit-tiny-small"
    backbone_family = "vit-"
    energy_within_view, default_pool = True, "mean"  # its energy scores the hidden blocks; it has no [CLS]
    train_recipe = {"optimizer": "adamw", "lr": 1.25e-4, "weight_decay": 0.04, "epochs": 300}

    def __init__(self, backbone: nn.Module, backbone_dim: int, predictor_width: int = 96, predictor_depth: int = 3,
                 predictor_heads: int = 3, predictor_mlp_ratio: int = 4, targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), min_context: float = 10 / 256,
                 base_momentum: float = 0.996, loss: str = "smooth_l1"):
        super().__init__(backbone)
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"method.name=ijepa needs a vision transformer backbone (backbone.name=vit-*), "
                             f"got {type(backbone).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"method.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"method.base_momentum must lie in [0, 1], got {base_momentum}")
        for option, value in (("predictor_width", predictor_width), ("predictor_depth", predictor_depth),
                              ("predictor_heads", predictor_heads), ("predictor_mlp_ratio", predictor_mlp_ratio),
                              ("targets", targets)):
            if value < 1:
                raise ValueError(f"method.{option} must be >= 1, got {value}")
        if predictor_width % predictor_heads:
            raise ValueError(
                f"method.predictor_width ({predictor_width}) must be divisible by method.predictor_heads ({predictor_heads})"
            )
        if predictor_width % 4:
            raise ValueError(f"method.predictor_width must be divisible by 4 (2-d sine-cosine positions), got {predictor_width}")
        for option, (low, high), upper in (("target_scale", target_scale, 1.0), ("target_aspect", target_aspect, math.inf),
                                           ("context_scale", context_scale, 1.0)):
            if not 0 < low <= high <= upper:
                raise ValueError(f"method.{option} must be [low, high] with 0 < low <= high"
                                 f"{' <= 1' if upper == 1.0 else ''}, got {[low, high]}")
        if not 0.0 <= min_context < 1.0:
            raise ValueError(f"method.min_context must lie in [0, 1), got {min_context}")
        self.predictor = BlockPredictor(backbone_dim, predictor_width, predictor_depth, predictor_heads, predictor_mlp_ratio)
        # The target encoder: an EMA copy of the backbone, no gradient; the parameter-free
        # layer norm is applied to its tokens in forward, so nothing stands in for a projector.
        self.target = MomentumEncoder(backbone, nn.Identity())
        self.targets, self.target_scale, self.target_aspect = targets, target_scale, target_aspect
        self.context_scale, self.min_context = context_scale, min_context
        self.loss = loss
        self.base_momentum = base_momentum
        self.momentum = base_momentum

    # ------------------------------------------------------------------ masks
    def sample_masks(self, batch_size: int, grid: tuple[int, int], generator: torch.Generator | None,
                     device: torch.device | str | None = None) -> BlockMasks:
        """The multi-block masks of this method's options for ``batch_size`` images on ``grid``."""
        return sample_block_masks(
            batch_size, grid, generator, targets=self.targets, target_scale=self.target_scale,
            target_aspect=self.target_aspect, context_scale=self.context_scale,
            min_keep=int(self.min_context * grid[0] * grid[1]), device=device,
        )

    @staticmethod
    def mask_generator(generator: torch.Generator | None) -> torch.Generator | None:
        """``generator`` when it draws on the CPU, else a CPU generator with its seed (the
        masks' sizes decide tensor shapes, which a device generator would make the host wait for)."""
        if generator is None or generator.device.type == "cpu":
            return generator
        return torch.Generator().manual_seed(generator.initial_seed())

    # ------------------------------------------------------------------ the networks
    def predict(self, tokens: torch.Tensor, masks: BlockMasks, grid: tuple[int, int]) -> torch.Tensor:
        """Predicted target-block embeddings [M, B, Nt, D] from the patch tokens [B, N, D]
        (``embed_patches``): the context encoder on the context patches only, then the predictor."""
        context = self.backbone.encode(select_tokens(tokens, masks.context), cls=False)
        return self.predictor(context, masks.context, masks.targets, grid)

    @torch.no_grad()
    def target_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The target encoder's output over all patches [B, N, D] (before the layer norm of the targets)."""
        encoder = self.target.backbone
        return encoder.encode(encoder.embed_patches(images)[0], cls=False)

    @staticmethod
    def normalise(tokens: torch.Tensor) -> torch.Tensor:
        """LN without parameters over the features (``F.layer_norm(h, (h.size(-1),))`` in train.py)."""
        return F.layer_norm(tokens, (tokens.shape[-1],))

    # ------------------------------------------------------------------ training step
    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        images = views[0]
        tokens, grid = self.backbone.embed_patches(images)
        masks = self.sample_masks(len(images), grid, self.mask_generator(batch.generator if batch else None), images.device)
        prediction = self.predict(tokens, masks, grid)
        encoded = self.target_tokens(images)
        target = select_tokens(self.normalise(encoded), masks.targets)
        loss = block_distance(prediction, target, self.loss).mean()
        metrics = {
            "momentum": self.momentum, "context_patches": masks.context.shape[1], "target_patches": masks.targets.shape[2],
            # Target blocks given back to the context on crowded grids (a tensor: read at log steps only).
            "restored_targets": masks.restored.float().mean(),
        }
        return StepOutput(loss, metrics, embeddings=encoded.mean(dim=1).detach())

    # ------------------------------------------------------------------ what evaluation reads
    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The target encoder's patch outputs, average-pooled [B, D] (what the paper evaluates)."""
        return self.target_tokens(images).mean(dim=1)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """What the collapse diagnostics read: :meth:`embed` (I-JEPA has no projector)."""
        return self.embed(images)

    def fixed_masks(self, batch_size: int, grid: tuple[int, int], device: torch.device | str) -> BlockMasks:
        """One mask drawn from seed ``ENERGY_MASK_SEED``, the same for every image."""
        one = self.sample_masks(1, grid, torch.Generator().manual_seed(ENERGY_MASK_SEED), device)
        return BlockMasks(one.context.expand(batch_size, -1), one.targets.expand(-1, batch_size, -1),
                          one.context_block.expand(batch_size, -1), one.restored.expand(batch_size), one.target_size,
                          one.context_size)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y) [B]: the distance between the target blocks' embeddings predicted from x's
        context and y's target embeddings at those blocks, under one fixed mask."""
        tokens, grid = self.backbone.embed_patches(x)
        masks = self.fixed_masks(len(x), grid, x.device)
        target = select_tokens(self.normalise(self.target_tokens(y)), masks.targets)
        return block_distance(self.predict(tokens, masks, grid), target, self.loss)

    # ------------------------------------------------------------------ hooks
    def on_step_end(self, info: StepInfo) -> None:
        # A function of the step, not a running state: resuming needs nothing saved.
        self.momentum = linear_increase(info.step, info.total_steps, self.base_momentum)
        self.target.update(self.backbone, self.target.projector, self.momentum)
