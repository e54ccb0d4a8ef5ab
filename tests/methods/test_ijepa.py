"""I-JEPA: the loss is the reference's, written out patch by patch; the target encoder is a
stop-gradient EMA on its schedule; the context encoder sees the context patches only; the
energy is a fixed function; and a short run through the pipeline lowers the loss without
collapse."""

import math

import numpy as np
import pytest
import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import VisionTransformer, ViTSize, sincos_position_embedding
from selfsup.config import Config, ConfigError
from selfsup.methods import Batch, StepInfo, build_method, method_class
from selfsup.methods.ijepa import ENERGY_MASK_SEED, IJEPA
from selfsup.train.logging import read_metrics
from selfsup.train.optim import build_optimizer

SIZE, PATCH, DIM = 16, 4, 32  # a 4 x 4 grid of patches
GRID = (SIZE // PATCH, SIZE // PATCH)


def tiny_ijepa(seed: int = 0, **options) -> IJEPA:
    torch.manual_seed(seed)
    backbone = VisionTransformer(ViTSize(DIM, 2, 2), in_channels=1, image_size=SIZE, patch_size=PATCH)
    predictor = {"predictor_width": 16, "predictor_depth": 2, "predictor_heads": 2}
    return IJEPA(backbone, DIM, **{**predictor, **options})


def images(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> Batch:
    return Batch(generator=torch.Generator().manual_seed(seed))


def perturbed(model: IJEPA) -> IJEPA:
    """Online and target encoders made to differ, as they do after the first step."""
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


# ---------------------------------------------------------------------------- a naive I-JEPA
def naive_sincos(width: int, grid: tuple[int, int]) -> np.ndarray:
    """The reference's 2-d sine-cosine table (MAE's get_2d_sincos_pos_embed), in numpy:
    the first half of the channels from the column, the second from the row."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    table = np.zeros((grid[0] * grid[1], width))
    for row in range(grid[0]):
        for col in range(grid[1]):
            j = row * grid[1] + col
            table[j] = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
    return table


def naive_patch_tokens(encoder: VisionTransformer, image: torch.Tensor) -> list[torch.Tensor]:
    """Each patch's token in raster order: the patch embedding as a dot product, plus its position."""
    weight, bias = encoder.patch_embedding.weight, encoder.patch_embedding.bias
    tokens = []
    for row in range(GRID[0]):
        for col in range(GRID[1]):
            pixels = image[:, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH]
            token = (weight * pixels).sum(dim=(1, 2, 3)) + bias
            tokens.append(token + encoder.position_embedding[0, 1 + row * GRID[1] + col])
    return tokens


def naive_encode(encoder: VisionTransformer, tokens: list[torch.Tensor]) -> torch.Tensor:
    hidden = torch.stack(tokens)[None]
    for block in encoder.blocks:
        hidden = block(hidden, None, False)
    return encoder.norm(hidden)[0]


def naive_layer_norm(h: torch.Tensor) -> torch.Tensor:
    mean = h.mean(dim=-1, keepdim=True)
    variance = ((h - mean) ** 2).mean(dim=-1, keepdim=True)
    return (h - mean) / torch.sqrt(variance + 1e-5)


def naive_per_image_losses(model: IJEPA, x: torch.Tensor, y: torch.Tensor, context_index: torch.Tensor,
                           target_index: torch.Tensor, loss: str) -> torch.Tensor:
    """The objective image by image and block by block: the context encoder on the context
    patches of x, the predictor's sequence built token by token (one per target block), the
    target encoder on all of y's patches, layer-normed by hand, and the elementwise distance."""
    predictor = model.predictor
    positions = torch.tensor(naive_sincos(predictor.width, GRID), dtype=torch.float32)
    losses = []
    for b in range(len(x)):
        patches = naive_patch_tokens(model.backbone, x[b])
        context = naive_encode(model.backbone, [patches[j] for j in context_index[b].tolist()])
        with torch.no_grad():
            targets = naive_layer_norm(naive_encode(model.target.backbone, naive_patch_tokens(model.target.backbone, y[b])))
        total, count = 0.0, 0
        for block in target_index[:, b]:
            sequence = [predictor.embed(context[i]) + positions[j] for i, j in enumerate(context_index[b].tolist())]
            sequence += [predictor.mask_token[0, 0] + positions[j] for j in block.tolist()]
            hidden = torch.stack(sequence)[None]
            for layer in predictor.blocks:
                hidden = layer(hidden, None, False)
            outputs = hidden[0, len(context_index[b]) :]
            for t, j in enumerate(block.tolist()):
                prediction = predictor.project(predictor.norm(outputs[t]))
                for d in range(DIM):
                    difference = prediction[d] - targets[j, d]
                    if loss == "l2":
                        total = total + difference**2
                    else:  # Huber with beta 1: 0.5 d^2 inside |d| < 1, |d| - 0.5 outside
                        total = total + (0.5 * difference**2 if difference.abs() < 1 else difference.abs() - 0.5)
                    count += 1
        losses.append(total / count)
    return torch.stack(losses)


# ---------------------------------------------------------------------------- the tests
def test_sincos_positions_match_the_reference_table():
    for width, grid in ((16, (4, 4)), (96, (7, 5))):
        expected = torch.tensor(naive_sincos(width, grid), dtype=torch.float32)
        assert torch.allclose(sincos_position_embedding(width, grid), expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(18, (4, 4))


@pytest.mark.parametrize("loss", ["smooth_l1", "l2"])
def test_loss_and_energy_match_a_naive_computation(loss):
    model = perturbed(tiny_ijepa(loss=loss))
    x = images(3, seed=0)
    output = model([x], seeded(11))
    masks = model.sample_masks(3, GRID, torch.Generator().manual_seed(11))  # the step's masks, drawn again
    expected = naive_per_image_losses(model, x, x, masks.context, masks.targets, loss)
    assert output.loss.item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert output.metrics["context_patches"] == masks.context.shape[1] and output.metrics["target_patches"] == masks.targets.shape[2]
    assert output.metrics["restored_targets"].item() == pytest.approx(masks.restored.float().mean().item())
    # The energy: the same objective, one image at a time, under the one fixed mask.
    y = images(3, seed=1)
    fixed = model.sample_masks(1, GRID, torch.Generator().manual_seed(ENERGY_MASK_SEED))
    expected_energy = naive_per_image_losses(model, x, y, fixed.context.expand(3, -1), fixed.targets.expand(-1, 3, -1), loss)
    assert torch.allclose(model.energy(x, y), expected_energy.detach(), rtol=1e-5, atol=1e-7)


def test_embed_is_the_target_encoders_average_pooled_output():
    model = perturbed(tiny_ijepa())
    x = images(4, seed=0)
    expected = torch.stack([naive_encode(model.target.backbone, naive_patch_tokens(model.target.backbone, image)).mean(dim=0)
                            for image in x])
    embedded = model.embed(x)
    assert embedded.shape == (4, DIM) and not embedded.requires_grad
    assert torch.allclose(embedded, expected.detach(), atol=1e-5)
    output = model([x], seeded(0))
    assert torch.allclose(output.embeddings, embedded, atol=1e-6) and not output.embeddings.requires_grad


def test_context_encoder_sees_only_the_context_patches():
    model = tiny_ijepa()
    x = images(5, seed=0)
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.backbone.blocks[0].register_forward_pre_hook(lambda module, args: seen.__setitem__("context", args[0])),
             model.target.backbone.blocks[0].register_forward_pre_hook(lambda module, args: seen.__setitem__("target", args[0]))]
    try:
        model([x], seeded(4))
    finally:
        for hook in hooks:
            hook.remove()
    masks = model.sample_masks(5, GRID, torch.Generator().manual_seed(4))
    patches = GRID[0] * GRID[1]
    assert seen["context"].shape == (5, masks.context.shape[1], DIM) and masks.context.shape[1] < patches
    tokens = model.backbone.embed_patches(x)[0]
    assert torch.equal(seen["context"], torch.stack([tokens[b, masks.context[b]] for b in range(5)]))
    assert seen["target"].shape == (5, patches, DIM)  # the target encoder reads every patch


def test_masks_come_from_the_batch_generator():
    model = tiny_ijepa()
    x = images(8, seed=0)
    first, again, other = (model([x], seeded(seed)).loss.item() for seed in (1, 1, 2))
    assert first == again and first != other


def test_target_gets_no_gradient_and_moves_by_its_ema_schedule():
    model = tiny_ijepa()
    x = images(8, seed=0)
    model([x], seeded(0)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    # Every backbone weight but the [CLS] token, which an encoder without [CLS] never reads.
    assert all(p.grad is not None for name, p in model.backbone.named_parameters() if name != "cls_token")
    optimizer = build_optimizer("adamw", model, lr=1e-2, weight_decay=0.04, momentum=0.9)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.target.parameters()}  # the target is not optimised

    optimizer.step()
    online = [p.detach().clone() for p in model.backbone.parameters()]
    before = [p.detach().clone() for p in model.target.backbone.parameters()]
    assert any(not torch.equal(o, b) for o, b in zip(online, before))
    model.on_step_end(StepInfo(25, 100, 1))  # linear from 0.996 to 1: 0.996 + 0.004 x 25 / 100
    assert model.momentum == pytest.approx(0.997)
    for target, old, new in zip(model.target.backbone.parameters(), before, online):
        assert torch.allclose(target, 0.997 * old + 0.003 * new, atol=1e-7)
    # At the end of training the momentum is 1: the target stays where it is.
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            parameter.add_(1.0)
    frozen = [p.detach().clone() for p in model.target.parameters()]
    model.on_step_end(StepInfo(100, 100, 1))
    assert model.momentum == pytest.approx(1.0)
    assert all(torch.equal(p, q) for p, q in zip(model.target.parameters(), frozen))


def test_energy_is_a_fixed_function_of_each_pair():
    model = perturbed(tiny_ijepa())
    x, others = images(6, seed=0), images(6, seed=1)
    energies = model.energy(x, x)
    assert energies.shape == (6,) and torch.isfinite(energies).all()
    assert torch.equal(model.energy(x, x), energies)  # the same mask every call
    # Each pair's energy depends on that pair alone, not on the rest of the batch.
    mixed = model.energy(torch.cat([x[:2], others[2:]]), torch.cat([x[:2], others[2:]]))
    assert torch.allclose(mixed[:2], energies[:2], rtol=1e-5, atol=1e-7)
    assert torch.allclose(model.energy(x[3:4], x[3:4]), energies[3:4], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(model.energy(x, others), energies)


def test_class_attributes_and_recipe():
    cls = method_class("ijepa")
    assert cls is IJEPA and cls.summary.startswith("joint-embedding predictive")
    assert (cls.modality, cls.default_recipe, cls.default_backbone, cls.backbone_family) == ("image", "ijepa", "vit-tiny-small", "vit-")
    # I-JEPA's lr 1e-3 at batch 2048, per 256 samples; its starting weight decay.
    assert cls.train_recipe["optimizer"] == "adamw"
    assert cls.train_recipe["lr"] == pytest.approx(1e-3 * 256 / 2048)
    assert cls.train_recipe["weight_decay"] == 0.04 and cls.train_recipe["epochs"] == 300
    defaults = cls.option_defaults()
    assert defaults["targets"] == 4 and defaults["target_scale"] == (0.15, 0.2) and defaults["target_aspect"] == (0.75, 1.5)
    assert defaults["context_scale"] == (0.85, 1.0) and defaults["base_momentum"] == 0.996 and defaults["loss"] == "smooth_l1"
    assert int(defaults["min_context"] * 16 * 16) == 10  # the reference's min_keep on ViT-H/14's grid
    resolved = cls.resolve_options({"name": "ijepa", "target_scale": [0.1, 0.3]})
    assert resolved["target_scale"] == (0.1, 0.3)


def test_bad_options_and_backbones_are_clear_errors():
    with pytest.raises(ValueError, match="method.loss must be one of smooth_l1, l2"):
        tiny_ijepa(loss="huber")
    with pytest.raises(ValueError, match="divisible by method.predictor_heads"):
        tiny_ijepa(predictor_width=20, predictor_heads=3)
    with pytest.raises(ValueError, match="predictor_width must be divisible by 4"):
        tiny_ijepa(predictor_width=18, predictor_heads=2)
    with pytest.raises(ValueError, match="method.target_scale must be"):
        tiny_ijepa(target_scale=(0.3, 0.2))
    convnet, dim = build_backbone("convnet-small", 1, width=4)
    with pytest.raises(ConfigError, match="needs a vision transformer backbone"):
        build_method({"name": "ijepa"}, convnet, dim)
    config = config_module.apply_overrides(Config(), ["method.name=ijepa", "backbone.name=resnet18-small", "data.source=digits"])
    with pytest.raises(ConfigError, match="needs a vit-\\* backbone"):
        runs.resolve(config, [])


@pytest.mark.e2e
def test_pretraining_lowers_the_loss_without_collapse(tmp_path, tiny_overrides, digits_folder):
    """18 steps of 32 images (600 digits at 16 px: a 4 x 4 grid of 4 px patches) on the
    smallest registered ViT. The recipe's rate (1.25e-4 per 256) moves a run this short too
    little to see; 2e-3 per 256, the video JEPA's CPU rate, does (about 0.425 to 0.398)."""
    overrides = [o for o in tiny_overrides if not o.startswith(("method.", "backbone.", "data.source", "train."))]
    config = config_module.apply_overrides(Config(), [
        *overrides, "method.name=ijepa", "backbone.name=vit-tiny-small", f"data.source={digits_folder}", "data.size=16",
        "train.batch_size=32", "train.epochs=1", "train.lr=2e-3", "train.log_every=2", "eval.enabled=false",
        f"out={tmp_path / 'run'}",
    ])
    summary = runs.pretrain(config)
    recorded = config_module.load(tmp_path / "run" / runs.CONFIG_FILE)
    assert recorded.backbone.name == "vit-tiny-small" and recorded.augment.recipe in (None, "ijepa")
    assert recorded.train.optimizer == "adamw" and recorded.train.weight_decay == 0.04
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(loss) for loss in losses) and all(0 <= r["restored_targets"] <= 4 for r in records)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert summary["collapse_alarm_step"] is None
    assert records[-1]["std_sqrt_d"] > 0.2 and records[-1]["effective_rank"] > 2, records[-1]
