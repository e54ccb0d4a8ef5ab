"""MAE: masked autoencoders (masked image modelling on a ViT)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.transformer import Block
from selfsup.backbones.vit import VisionTransformer, sincos_position_embedding
from selfsup.losses.reconstruction import masked_patch_mse, patch_errors, patch_statistics, patchify, unpatchify
from selfsup.methods.base import Batch, Method, StepOutput

# The seed of the one mask that energy() and reconstruct(generator=None) use on every call.
FIXED_MASK_SEED = 0


def random_masking(batch: int, patches: int, mask_ratio: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking (section 3, "Masking"; ``models_mae.py``
    ``random_masking``): for each of ``batch`` images, a uniformly random subset of
    floor(patches x (1 - mask_ratio)) of its ``patches`` is kept visible, the rest masked.

    The subset is the first ones of an argsort of uniform noise drawn from ``generator`` (on
    its own device; the global generator when None), so the masks of a training step are a
    function of the batch's generator, i.e. of (seed, step, rank). Returns, on ``device``
    (the noise's when None):

    - ``ids_keep`` [B, K]: the visible patches (row-major indices into the grid), in the
      shuffled order the encoder reads them;
    - ``mask`` [B, N] float: 1 where a patch is masked, 0 where visible, in grid order;
    - ``ids_restore`` [B, N]: the inverse permutation, which puts [visible, mask tokens]
      back in grid order.
    """
    keep = int(patches * (1 - mask_ratio))
    if keep < 1 or keep >= patches:
        raise ValueError(f"method.mask_ratio={mask_ratio} keeps {keep} of {patches} patches visible: "
                         "at least one patch must be visible and one masked")
    noise = torch.rand(batch, patches, generator=generator, device=generator.device if generator is not None else device)
    device = noise.device if device is None else device
    noise = noise.to(device)
    ids_shuffle = noise.argsort(dim=1)  # ascending: small noise is kept, large is masked
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, patches, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


class MAEDecoder(nn.Module):
    """MAE's light decoder (section 3, "MAE decoder"; ``models_mae.py`` ``forward_decoder``).

    The encoder's outputs ([CLS] then the K visible patches, width D) are mapped to the
    decoder's ``width``; one shared learned mask token stands for each of the N - K masked
    patches; the inverse permutation puts the tokens back in grid order; fixed 2-D sin-cos
    position embeddings are added (:func:`sincos_position_embedding`; zero for [CLS]);
    pre-LN transformer blocks, a final LayerNorm and a linear head give p*p*C pixel values
    per patch. [CLS]'s output is dropped.
    Initialisation as the reference: Xavier-uniform linear weights, zero biases, the mask
    token N(0, 0.02^2).
    """

    def __init__(self, encoder_width: int, pixels_per_patch: int, width: int, depth: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(encoder_width, width)
        # [1, 1, width] as in the reference, whose optimiser decays it (only 1-d tensors and biases are exempt).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, pixels_per_patch)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``latent`` [B, 1 + K, D] (the encoder's output), ``ids_restore`` [B, N] ->
        predicted pixels [B, N, p*p*C] of every patch in grid order."""
        x = self.embed(latent)
        batch, patches = ids_restore.shape
        mask_tokens = self.mask_token.expand(batch, patches - (x.shape[1] - 1), -1)
        shuffled = torch.cat([x[:, 1:], mask_tokens], dim=1)
        unshuffled = shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, self.width))
        positions = sincos_position_embedding(self.width, grid, x.device).to(x.dtype)
        tokens = torch.cat([x[:, :1], unshuffled + positions], dim=1)
        for block in self.blocks:
            tokens = block(tokens, None, False)
        return self.head(self.norm(tokens))[:, 1:]


class MAE(Method):
    """MAE (He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision
    Learners", CVPR 2022; reference code facebookresearch/mae, ``models_mae.py``).

    Section 3 of the paper, step by step, on one view of each image (the ``mae`` recipe:
    random resized crop 0.2-1 and flip, nothing else):

        patches   tokens = PatchEmbed(x) + pos              [B, N, D]   (the ViT's embed_patches)
        masking   keep a uniformly random floor(N (1 - r)) of them per image, r = mask_ratio = 0.75
        encoder   z = ViT blocks([CLS]; visible tokens)     [B, 1 + K, D]  (no mask tokens)
        decoder   x_hat = g(z, mask tokens, ids_restore)    [B, N, p*p*C]  (:class:`MAEDecoder`)
        loss      L = MSE(x_hat, normalise(patchify(x))) on the masked patches only

    with normalise each target patch minus its mean over its pixels, divided by
    sqrt(var + 1e-6) (``norm_pix_loss``, Table 1d; the reference's ``forward_loss``), see
    :func:`selfsup.losses.reconstruction.masked_patch_mse`. The encoder sees only the visible
    25%: that is the paper's source of speed, and there is no [MASK] token in the encoder,
    so pretraining and use see the same kind of input (section 3, "MAE encoder"). The pixels
    are those of the view as the view maker normalised them (dataset mean and std); the
    reconstruction lives in that space. Images whose side is not a multiple of the patch are
    cut to the patch grid, as the ViT's strided convolution cuts them.

    Differences from the reference: the encoder is this project's ViT with learned position
    embeddings and its own initialisation (the reference fixes 2-D sin-cos encoder
    embeddings); the decoder has fixed 2-D sin-cos embeddings as the reference does. The
    decoder is scaled to the small ViTs this runs on a CPU: the paper pairs ViT-L (24 x
    1024) with 8 blocks of width 512, 16 heads (Table 1a-b: a narrow, shallow decoder
    suffices for linear probing at depth 8); for ViT-Tiny (12 x 192) 2 blocks of width 128,
    4 heads, MLP ratio 4.

    Recipe (PRETRAIN.md and main_pretrain.py): AdamW, base lr 1.5e-4 per 256 images,
    weight decay 0.05, batch 256 per process; the reference's betas (0.9, 0.95) are not
    settable in this project's optimiser builder (``train/optim.py``), which keeps
    AdamW's (0.9, 0.999). The reference's 40 warm-up epochs of 800 are this project's
    ``train.warmup_epochs`` (capped at a tenth of the run). 100 epochs instead of the paper's
    800-1600, the figure of the other image methods on a CPU.

    ``embed`` is the backbone on the whole image (no masking), pooled as the backbone pools
    ([CLS] by default): what the probes read. ``project`` is the same, for the collapse
    diagnostics; the step's embeddings are the pooled output of the masked encoder pass.
    MAE trains [CLS] only through the decoder's attention to it, and its output stays in a
    narrow cone (on digits std x sqrt(D) 0.05-0.17, under the collapse alarm's 0.2, while
    kNN accuracy rises); ``backbone.pool=mean`` reads the patches' mean, as the reference
    does for fine-tuning (``main_finetune.py``, ``global_pool``; its linear probe reads
    [CLS] behind a BatchNorm, ``main_linprobe.py``).

    Energy: F(x, y) is the loss per image with one fixed mask (drawn from a generator seeded
    with :data:`FIXED_MASK_SEED`, the same for every call and every image): the masked
    patches of y predicted from the visible patches of x, MSE on normalised pixels averaged
    over those patches. Once the decoder has learned to use the visible patches, low when y
    is x (or framed as x is), higher for another image; it is not invariant to the crop, so
    a second view with another crop scores as another image would.
    """

    name = "mae"
    summary = "masked image modelling: a ViT encodes 25% of the patches, a light decoder regresses the rest's pixels (He et al. 2022)"
    modality = "image"
    default_recipe = "mae"
    default_backbone = "vit-tiny-small"
    backbone_family = "vit-"
    energy_within_view, default_pool = True, "mean"  # its energy scores the hidden patches; [CLS] is never trained
    reconstructs_pixels = True  # reconstruct(): `selfsup reconstruct` draws it
    # PRETRAIN.md: --blr 1.5e-4 (per 256, scaled linearly), --weight_decay 0.05, AdamW
    # (main_pretrain.py); 100 epochs on a CPU rather than the paper's 800.
    train_recipe = {"optimizer": "adamw", "lr": 1.5e-4, "weight_decay": 0.05, "epochs": 100, "batch_size": 256}

    def __init__(self, backbone: nn.Module, backbone_dim: int, mask_ratio: float = 0.75, decoder_width: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, decoder_mlp_ratio: int = 4, norm_pix_loss: bool = True):
        super().__init__(backbone)
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"method.name=mae needs a vision transformer backbone (backbone.name=vit-*), whose patch tokens "
                             f"it selects; got a {type(backbone).__name__}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"method.mask_ratio must lie strictly between 0 and 1, got {mask_ratio}")
        for option, value in (("decoder_width", decoder_width), ("decoder_depth", decoder_depth),
                              ("decoder_heads", decoder_heads), ("decoder_mlp_ratio", decoder_mlp_ratio)):
            if value < 1:
                raise ValueError(f"method.{option} must be >= 1, got {value}")
        if decoder_width % decoder_heads:
            raise ValueError(f"method.decoder_width ({decoder_width}) must be divisible by method.decoder_heads ({decoder_heads})")
        if decoder_width % 4:
            raise ValueError(f"method.decoder_width must be divisible by 4 (2-d sin-cos position embeddings), got {decoder_width}")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = backbone.patch_size
        channels = backbone.patch_embedding.in_channels
        self.decoder = MAEDecoder(backbone_dim, self.patch_size**2 * channels, decoder_width, decoder_depth, decoder_heads,
                                  decoder_mlp_ratio)

    # ------------------------------------------------------------------ the pieces
    def _target_patches(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """patchify of ``images`` cut to the patch grid, [B, N, p*p*C]."""
        p = self.patch_size
        return patchify(images[..., : grid[0] * p, : grid[1] * p], p)

    def _predict(self, images: torch.Tensor, generator: torch.Generator | None = None, fixed: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(predicted pixels [B, N, p*p*C], mask [B, N], encoder output [B, 1 + K, D], grid).
        The mask is drawn from ``generator`` per image, or is the one fixed mask (``fixed``)."""
        tokens, grid = self.backbone.embed_patches(images)
        batch, patches, width = tokens.shape
        if fixed:
            ids_keep, mask, ids_restore = random_masking(1, patches, self.mask_ratio, torch.Generator().manual_seed(FIXED_MASK_SEED),
                                                         device=tokens.device)
            ids_keep, mask, ids_restore = (t.expand(batch, -1) for t in (ids_keep, mask, ids_restore))
        else:
            ids_keep, mask, ids_restore = random_masking(batch, patches, self.mask_ratio, generator, device=tokens.device)
        visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, width))
        latent = self.backbone.encode(visible, cls=True)
        return self.decoder(latent, ids_restore, grid), mask, latent, grid

    # ------------------------------------------------------------------ training step
    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        images = views[0]
        generator = batch.generator if batch is not None else None
        prediction, mask, latent, grid = self._predict(images, generator)
        loss = masked_patch_mse(prediction, self._target_patches(images, grid), mask, self.norm_pix_loss)
        return StepOutput(loss, embeddings=self.backbone.pool_tokens(latent).detach())

    # ------------------------------------------------------------------ what evaluation reads
    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of the whole image (no projector): what the collapse
        diagnostics read."""
        return self.backbone(images)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y) [B]: the error of y's masked patches predicted from x's visible ones, under
        the one fixed mask: mean over the masked patches of the per-patch MSE (normalised
        pixels when ``norm_pix_loss``). Each image's value depends on that image alone."""
        prediction, mask, _, grid = self._predict(x, fixed=True)
        errors = patch_errors(prediction, self._target_patches(y, grid), self.norm_pix_loss)
        return (errors * mask).sum(dim=1) / mask.sum(dim=1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What a person looks at (the paper's Figures 2-4): ``(masked_input, reconstruction)``,
        both [B, C, h*p, w*p] in the normalised space of ``images`` (cut to the patch grid).

        ``masked_input``: the image with its masked patches set to 0, i.e. the data's mean
        colour once denormalised (grey). ``reconstruction``: the decoder's prediction of the
        masked patches with the visible patches pasted back from the image. With
        ``norm_pix_loss`` the decoder predicts normalised patches; they are mapped back with
        the mean and std of the true patch (which the model does not see), so the picture
        shows the predicted structure at the true brightness and contrast. Without it, the
        prediction is drawn as it is. The masks are drawn from ``generator`` per image, or,
        when it is None, are the fixed mask of :meth:`energy`.
        """
        prediction, mask, _, grid = self._predict(images, generator, fixed=generator is None)
        target = self._target_patches(images, grid)
        if self.norm_pix_loss:
            mean, scale = patch_statistics(target)
            prediction = prediction * scale + mean
        hidden = mask.unsqueeze(-1).bool()
        p = self.patch_size
        masked_input = unpatchify(target.masked_fill(hidden, 0.0), p, grid)
        reconstruction = unpatchify(torch.where(hidden, prediction, target), p, grid)
        return masked_input, reconstruction

