"""MAE: patches and their inverse, per-sample random masks of exact ratio, an encoder that
sees only the visible patches, the loss on masked patches only (against a loop written from
the paper), the fixed-mask energy, the reconstruction picture, and a short run through the
pipeline that lowers the loss."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import VisionTransformer, ViTSize, sincos_position_embedding
from selfsup.config import ConfigError
from selfsup.energy import energy_auc
from selfsup.losses.reconstruction import masked_patch_mse, patchify, unpatchify
from selfsup.methods import METHODS, build_method
from selfsup.methods.base import Batch
from selfsup.methods.mae import MAE, random_masking
from selfsup.report.reconstructions import reconstruction_grid
from selfsup.train.logging import read_metrics

SIZE, PATCH = 16, 4  # a 4 x 4 grid: 16 patches, 4 visible at the default ratio
PATCHES = (SIZE // PATCH) ** 2


def tiny_mae(seed: int = 0, channels: int = 1, **options) -> MAE:
    """A 2-block, 32-wide ViT and a 1-block decoder: the method's logic at test speed."""
    torch.manual_seed(seed)
    backbone = VisionTransformer(ViTSize(32, 2, 2), channels, SIZE, PATCH)
    decoder = {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}
    return MAE(backbone, 32, **{**decoder, **options})


def images(count: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    return torch.randn(count, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- patches
def test_patchify_matches_the_reference_layout_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 8, 12)
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 48)
    # Patch (i, j) in row-major order, its pixels in (row, column, channel) order ('nhwpqc').
    for i in range(2):
        for j in range(3):
            expected = x[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].permute(0, 2, 3, 1).reshape(2, -1)
            assert torch.equal(patches[:, i * 3 + j], expected)
    assert torch.equal(unpatchify(patches, 4, (2, 3)), x)
    square = torch.randn(3, 1, SIZE, SIZE)
    assert torch.equal(unpatchify(patchify(square, PATCH), PATCH), square)
    with pytest.raises(ValueError, match="do not split into 5 px patches"):
        patchify(x, 5)


def test_decoder_positions_are_the_references_2d_sin_cos():
    """util/pos_embed.py's table: columns in the first half of the channels, rows in the second."""
    width, (h, w) = 8, (2, 3)
    table = sincos_position_embedding(width, (h, w))
    omega = 1 / 10000 ** (np.arange(width // 4) / (width / 4))
    for row in range(h):
        for column in range(w):
            expected = np.concatenate([np.sin(column * omega), np.cos(column * omega), np.sin(row * omega), np.cos(row * omega)])
            np.testing.assert_allclose(table[row * w + column].numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------- masks
def test_masks_have_the_exact_ratio_differ_per_sample_and_cover_positions_uniformly():
    batch = 4000
    ids_keep, mask, ids_restore = random_masking(batch, PATCHES, 0.75, generator(0))
    keep = int(PATCHES * 0.25)
    assert ids_keep.shape == (batch, keep) and mask.shape == ids_restore.shape == (batch, PATCHES)
    assert torch.equal(mask.sum(dim=1), torch.full((batch,), float(PATCHES - keep)))
    # The kept ids are exactly the unmasked positions, and ids_restore inverts the shuffle.
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros(batch, keep))
    shuffle = ids_restore.argsort(dim=1)
    assert torch.equal(shuffle[:, :keep], ids_keep)
    # Different per sample: C(16, 4) = 1820 subsets, 4000 draws.
    assert len({tuple(sorted(row)) for row in ids_keep.tolist()}) > 1000
    # Every position masked 75% of the time (sd sqrt(.75 * .25 / 4000) = 0.007).
    frequency = mask.mean(dim=0)
    assert torch.allclose(frequency, torch.full((PATCHES,), 0.75), atol=0.03), frequency
    # A function of the generator: the same seed gives the same masks.
    assert torch.equal(random_masking(batch, PATCHES, 0.75, generator(0))[1], mask)
    assert not torch.equal(random_masking(batch, PATCHES, 0.75, generator(1))[1], mask)
    # The floor of N (1 - r) visible, as the reference: a 7 x 7 grid (28 px) keeps 12 of 49.
    assert random_masking(3, 49, 0.75, generator(0))[0].shape == (3, 12)
    with pytest.raises(ValueError, match="keeps 0 of 16 patches visible"):
        random_masking(2, 16, 0.95, generator(0))


def test_the_encoder_sees_only_the_visible_patches():
    model = tiny_mae()
    x = images(4)
    lengths = []
    hook = model.backbone.blocks[0].register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    try:
        model([x], Batch(generator=generator(3)))
    finally:
        hook.remove()
    assert lengths == [1 + PATCHES // 4]  # [CLS] and the 4 visible patches

    _, mask, latent, grid = model._predict(x, generator(3))
    patches = patchify(x, PATCH)
    masked_position = int(mask[0].nonzero()[0])
    visible_position = int((mask[0] == 0).nonzero()[0])
    for position, changes in ((masked_position, False), (visible_position, True)):
        edited = patches.clone()
        edited[0, position] += 5.0
        _, _, latent_edited, _ = model._predict(unpatchify(edited, PATCH, grid), generator(3))
        assert torch.equal(latent_edited, latent) != changes


def test_each_training_step_draws_its_masks_from_the_batch_generator():
    model = tiny_mae()
    x = images(4)
    first = model([x], Batch(generator=generator(5))).loss
    assert model([x], Batch(generator=generator(5))).loss == first
    assert model([x], Batch(generator=generator(6))).loss != first


# ---------------------------------------------------------------------------- the loss
def naive_masked_mse(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, norm_pix: bool) -> float:
    """The paper's loss, sample by sample and patch by patch: mean squared error over a
    masked patch's pixels (its target normalised by its own mean and unbiased variance),
    averaged over all masked patches of the batch."""
    total, count = 0.0, 0
    for b in range(prediction.shape[0]):
        for n in range(prediction.shape[1]):
            if not mask[b, n]:
                continue
            t = target[b, n].astype(np.float64)
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
            total += float(np.mean((prediction[b, n] - t) ** 2))
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_counts_only_masked_patches_and_matches_a_naive_loop(norm_pix):
    rng = np.random.default_rng(0)
    prediction = torch.from_numpy(rng.normal(size=(3, PATCHES, 48)).astype(np.float32))
    target = torch.from_numpy(rng.normal(1.0, 2.0, size=(3, PATCHES, 48)).astype(np.float32))
    _, mask, _ = random_masking(3, PATCHES, 0.75, generator(0))
    loss = masked_patch_mse(prediction, target, mask, norm_pix)
    assert loss.item() == pytest.approx(naive_masked_mse(prediction.numpy(), target.numpy(), mask.numpy() > 0, norm_pix), rel=1e-5)
    assert masked_patch_mse(prediction, target, mask.bool(), norm_pix) == loss
    changed = target.clone()
    changed[mask == 0] = 100.0  # visible patches' targets do not count
    assert masked_patch_mse(prediction, changed, mask, norm_pix).item() == pytest.approx(loss.item(), rel=1e-6)


def test_the_training_loss_is_the_papers_written_out_image_by_image():
    """The step's loss against one built by hand from the submodules: per image, the encoder
    on its visible patches (in grid order: attention does not care), the decoder's input laid
    out position by position, then the naive masked MSE."""
    model = tiny_mae(norm_pix_loss=True)
    x = images(3)
    loss = model([x], Batch(generator=generator(2))).loss
    _, mask, _ = random_masking(3, PATCHES, 0.75, generator(2))
    tokens, grid = model.backbone.embed_patches(x)
    decoder = model.decoder
    positions = sincos_position_embedding(decoder.width, grid)
    predictions = []
    for b in range(3):
        visible = [n for n in range(PATCHES) if mask[b, n] == 0]
        latent = model.backbone.encode(tokens[b, visible][None])[0]
        embedded = decoder.embed(latent)
        rows = [embedded[0]]
        for n in range(PATCHES):
            rows.append((embedded[1 + visible.index(n)] if n in visible else decoder.mask_token[0, 0]) + positions[n])
        hidden = torch.stack(rows)[None]
        for block in decoder.blocks:
            hidden = block(hidden, None, False)
        predictions.append(decoder.head(decoder.norm(hidden))[0, 1:])
    expected = naive_masked_mse(torch.stack(predictions).detach().numpy(), patchify(x, PATCH).numpy(), mask.numpy() > 0, True)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- energy, embed, pictures
def test_energy_uses_one_fixed_mask_and_scores_each_image_on_its_own():
    model = tiny_mae().eval()
    x, y = images(6, seed=1), images(6, seed=2)
    energy = model.energy(x, y)
    assert energy.shape == (6,) and torch.isfinite(energy).all()
    assert torch.equal(model.energy(x, y), energy)
    assert torch.allclose(model.energy(x[2:4], y[2:4]), energy[2:4], atol=1e-6)
    assert model.embed(x).shape == (6, 32)
    assert torch.allclose(model.embed(x), model.backbone(x))
    assert torch.allclose(model.project(x), model.embed(x))


def test_after_a_few_steps_the_energy_tells_an_images_hidden_patches_from_anothers():
    """Images of one random brightness each (plus noise), pixel targets: the visible patches
    tell the brightness of the hidden ones. After 40 AdamW steps F(x, x) is below F(x, y) for
    y another image: AUC about 0.5 at init, 0.89-0.95 at the end over seeds 0-2."""
    def draw(count: int, seed: int) -> torch.Tensor:
        g = generator(seed)
        return torch.randn(count, 1, 1, 1, generator=g) + 0.1 * torch.randn(count, 1, SIZE, SIZE, generator=g)

    model = tiny_mae(seed=0, norm_pix_loss=False)
    test = draw(200, seed=-1)

    def auc() -> float:
        return energy_auc(model.energy(test, test), model.energy(test, test.roll(1, 0)))

    assert auc() == pytest.approx(0.5, abs=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(40):
        loss = model([draw(32, seed=step)], Batch(generator=generator(step))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert auc() > 0.8


@pytest.mark.parametrize("norm_pix", [True, False])
def test_reconstruct_greys_the_masked_patches_and_pastes_back_the_visible_ones(norm_pix):
    model = tiny_mae(channels=3, norm_pix_loss=norm_pix).eval()
    x = images(2, channels=3)
    masked, reconstruction = model.reconstruct(x, generator(4))
    assert masked.shape == reconstruction.shape == x.shape
    _, mask, _ = random_masking(2, PATCHES, 0.75, generator(4))
    hidden = mask.bool()
    original = patchify(x, PATCH)
    assert torch.equal(patchify(masked, PATCH)[~hidden], original[~hidden])
    assert torch.equal(patchify(masked, PATCH)[hidden], torch.zeros_like(original[hidden]))
    assert torch.equal(patchify(reconstruction, PATCH)[~hidden], original[~hidden])
    prediction = model._predict(x, generator(4))[0]
    if norm_pix:  # the normalised prediction at the true patch's mean and scale
        mean, var = original.mean(-1, keepdim=True), original.var(-1, keepdim=True)
        prediction = prediction * (var + 1e-6).sqrt() + mean
    assert torch.allclose(patchify(reconstruction, PATCH)[hidden], prediction[hidden], atol=1e-5)
    # Without a generator: the energy's fixed mask, the same on every call.
    assert all(torch.equal(a, b) for a, b in zip(model.reconstruct(x), model.reconstruct(x)))

    grid = reconstruction_grid(x, masked, reconstruction, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert isinstance(grid, Image.Image) and grid.size == (2 * 66 + 2, 3 * 66 + 6)
    pixels = np.asarray(grid)
    first_masked = int(hidden[0].nonzero()[0])
    row, column = divmod(first_masked, SIZE // PATCH)
    cell = 64 // (SIZE // PATCH)  # a 4 px patch drawn 16 px wide
    top, left = 2 + 66 + 4 + row * cell, 2 + column * cell
    assert (pixels[top : top + cell, left : left + cell] == 128).all()  # 0 denormalised: the mean, 0.5


def test_bad_backbones_and_options_are_clear_errors():
    convnet, dim = build_backbone("convnet-small", 1, 8)
    with pytest.raises(ConfigError, match="method.name=mae needs a vision transformer backbone"):
        build_method({"name": "mae"}, convnet, dim)
    with pytest.raises(ValueError, match="method.mask_ratio must lie strictly between 0 and 1"):
        tiny_mae(mask_ratio=1.0)
    with pytest.raises(ValueError, match="divisible by method.decoder_heads"):
        tiny_mae(decoder_width=12, decoder_heads=8)
    with pytest.raises(ValueError, match="method.decoder_width must be divisible by 4"):
        tiny_mae(decoder_width=6, decoder_heads=2)


def test_registered_with_its_recipe():
    assert METHODS["mae"] is MAE
    assert MAE.summary.startswith("masked image modelling")
    assert MAE.default_backbone.startswith(MAE.backbone_family) and MAE.default_recipe == "mae" and MAE.reconstructs_pixels
    assert MAE.option_defaults() == {"mask_ratio": 0.75, "decoder_width": 128, "decoder_depth": 2, "decoder_heads": 4,
                                     "decoder_mlp_ratio": 4, "norm_pix_loss": True}
    assert MAE.train_recipe["optimizer"] == "adamw" and MAE.train_recipe["lr"] == 1.5e-4


# ---------------------------------------------------------------------------- through the pipeline
@pytest.mark.e2e
def test_pretrain_lowers_the_reconstruction_loss_without_collapse(tiny_overrides, tmp_path):
    """Two epochs (44 steps) on digits at 16 px through `selfsup pretrain`: the loss falls
    from about 1.2 to about 0.77, below the 15/16 of predicting every normalised patch flat,
    and the features do not collapse (std x sqrt(D) 0.31-0.50 on the way, effective rank > 2).

    Pooled by the patches' mean: MAE trains its [CLS] output only through the decoder's
    attention to it, and on these short runs it stays in a narrow cone (std x sqrt(D)
    0.05-0.15, under the alarm's 0.2, even while kNN accuracy climbs). The reference reads
    the patches' mean for fine-tuning (main_finetune.py, global_pool) and probes [CLS] only
    behind a BatchNorm (main_linprobe.py). The rate is raised from the recipe's 1.5e-4 per
    256 so that 44 steps learn something."""
    from selfsup import config as config_module
    from selfsup.config import Config

    overrides = [o for o in tiny_overrides if not o.startswith(("method.", "backbone."))]
    config = config_module.apply_overrides(Config(), overrides + [
        "method.name=mae", "backbone.name=vit-tiny-small", "data.size=16", "train.epochs=2",
        "train.lr=1e-3", "train.checkpoint_every=1000", "eval.enabled=false", f"out={tmp_path / 'run'}",
    ])
    summary = runs.pretrain(config)
    recorded = config_module.load(tmp_path / "run" / runs.CONFIG_FILE)
    assert recorded.augment.recipe == "mae" and recorded.train.optimizer == "adamw" and recorded.train.weight_decay == 0.05
    assert recorded.backbone.pool == "mean"  # the method's default_pool
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.85 < losses[0], losses
    assert summary["collapse_alarm_step"] is None
    assert min(r["std_sqrt_d"] for r in records) > 0.25 and min(r["effective_rank"] for r in records) > 2, records

    with pytest.raises(ConfigError, match="method 'mae' needs a vit-\\* backbone"):
        runs.pretrain(config_module.apply_overrides(config, ["backbone.name=convnet-small", "backbone.pool=null",
                                                             f"out={tmp_path / 'other'}"]))


    # The commands on the run: its reconstructions drawn, its encoder fine-tuned on 2 labels per class.
    from selfsup.cli import main

    assert main(["reconstruct", str(tmp_path / "run"), "--out", str(tmp_path / "mae.png"), "--count", "4"]) == 0
    assert Image.open(tmp_path / "mae.png").size[0] > 4 * 16
    assert main(["finetune", str(tmp_path / "run"), "--labels-per-class", "2", "--epochs", "2"]) == 0
    finetuned = json.loads((tmp_path / "run" / runs.SUMMARY_FILE).read_text())["finetune"]["2"]
    assert 0 <= finetuned["top1"] <= 1 and finetuned["epochs"] == 2
    assert main(["reconstruct", str(tmp_path / "other-run-that-is-not-there")]) == 2
