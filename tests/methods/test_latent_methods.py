"""The latent-variable predictor (lvp): z inference, the regularisers, the two limits, sampling."""

from __future__ import annotations

import pytest
import torch

from selfsup.augment.clips import ClipViews
from selfsup.backbones.video import ClipShape, FrameEncoder
from selfsup.data.sequences import moving_sprites
from selfsup.losses.latent import (
    gaussian_kl,
    l1_sparsity,
    norm_bound,
    prediction_cost,
    shrink,
)
from selfsup.methods import StepInfo
from selfsup.methods.latent import LatentVariablePredictor

CLIP = ClipShape(frames_in=3, frames_out=3, channels=1, size=32)


def model(seed: int = 0, **options) -> LatentVariablePredictor:
    torch.manual_seed(seed)
    encoder = FrameEncoder(1, CLIP.size, width=4, dim=16)
    options = {"z_dim": 4, "hidden_dim": 32, "decoder_width": 4, "bank_size": 64, **options}
    return LatentVariablePredictor(encoder, 16, CLIP, **options)


@pytest.fixture(scope="module")
def views():
    clips = moving_sprites(12, CLIP.frames_in, CLIP.frames_out, CLIP.size, source="digits", seed=3)
    return ClipViews(CLIP.frames_in)(clips.frames)


@pytest.mark.parametrize("regularizer", ["l1", "norm", "kl"])
def test_inference_steps_never_raise_the_energy_and_lower_it(views, regularizer):
    past, future = views
    lvp = model(regularizer=regularizer, inference_lr=0.01)
    h = lvp.represent(past)
    guess, log_variance = lvp.amortized_guess(past, future)
    previous = None
    for steps in range(6):
        _, first, energy = lvp.infer_latent(h, future, guess, log_variance, steps=steps)
        assert (energy <= first).all()
        if previous is not None:  # more steps from the same start: never worse
            assert (energy <= previous + 1e-4).all()
        previous = energy
    assert (previous < first).float().mean() > 0.5
    # E reported at z* is E recomputed there.
    z, _, energy = lvp.infer_latent(h, future, guess, log_variance, steps=3)
    torch.testing.assert_close(energy, lvp.latent_energy(h, future, z, log_variance))


def test_one_ista_step_is_shrink_of_a_gradient_step(views):
    past, future = views
    lvp = model(regularizer="l1", regularizer_weight=0.5, inference_lr=0.02)
    h = lvp.represent(past).detach()
    start = torch.randn(len(past), lvp.z_dim, generator=torch.Generator().manual_seed(0))
    z = start.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(prediction_cost(future, lvp.decode(h, z)).sum(), z)
    expected = shrink(start - 0.02 * gradient, 0.02 * 0.5)
    inferred, first, energy = lvp.infer_latent(h, future, start, steps=1)
    accepted = energy < first
    assert accepted.any()
    torch.testing.assert_close(inferred[accepted], expected[accepted])
    torch.testing.assert_close(inferred[~accepted], start[~accepted])


@pytest.mark.parametrize("regularizer", ["l1", "norm", "kl"])
def test_the_regularizer_is_the_closed_form_of_the_loss_module(regularizer):
    lvp = model(regularizer=regularizer, norm_radius=0.5)
    z = torch.tensor([[3.0, -4.0, 0.0, 0.0], [0.1, 0.2, -0.2, 0.0]])
    log_variance = torch.tensor([[0.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    expected = {"l1": l1_sparsity(z), "norm": norm_bound(z, 0.5), "kl": gaussian_kl(z, log_variance)}[regularizer]
    torch.testing.assert_close(lvp.regularization(z, log_variance), expected)
    if regularizer == "l1":
        torch.testing.assert_close(expected, torch.tensor([7.0, 0.5]))


def test_z_dim_zero_is_the_plain_predictor(views):
    past, future = views
    lvp = model(z_dim=0)
    assert not hasattr(lvp, "amortized") and len(lvp.bank) == 0
    plain = lvp.decoder(lvp.predictor(lvp.backbone(past).flatten(1)), past[:, -2:].flatten(1, 2))
    torch.testing.assert_close(lvp.energy(past, future), prediction_cost(future, plain))
    torch.testing.assert_close(lvp(list(views)).loss, prediction_cost(future, plain).mean())
    samples = lvp.sample_futures(past, 4, torch.Generator().manual_seed(0))
    assert samples.shape == (len(past), 4, *future.shape[1:])
    assert (samples == plain.detach().unsqueeze(1)).all()  # one future, whatever the sample


def test_context_features_computed_once_decode_as_the_context_image(views):
    past, _ = views
    lvp = model()
    context = past[:, -2:].flatten(1, 2)
    code = torch.randn(len(past), 32 + lvp.z_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lvp.decoder(code, skips=lvp.decoder.context_features(context)), lvp.decoder(code, context))
    # Training decodes through the features computed once and still teaches the trunk that makes them.
    lvp(list(views)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lvp.decoder.context.parameters())


def test_samples_differ_across_latents_and_repeat_for_the_same_latents(views):
    past, _ = views
    lvp = model(regularizer="kl")  # samples from the prior
    first = lvp.sample_futures(past, 3, torch.Generator().manual_seed(7))
    again = lvp.sample_futures(past, 3, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    differences = (first[:, 0] - first[:, 1]).abs().flatten(1).amax(dim=1)
    assert (differences > 1e-4).all()
    # The same z for two clips with the same past gives the same future.
    z = torch.randn(1, lvp.z_dim).repeat(2, 1)
    h = lvp.represent(past[:1].repeat(2, 1, 1, 1, 1))
    decoded = lvp.decode(h, z)
    torch.testing.assert_close(decoded[0], decoded[1])


def test_training_fills_the_bank_of_inferred_latents_and_samples_from_it(views):
    lvp = model(regularizer="l1", bank_size=8)
    lvp(list(views))
    assert int(lvp.bank.count) == 0  # the forward pass changes no state
    lvp.on_step_end(StepInfo(0, 10, 1))  # 12 clips into a bank of 8: the newest 8, ring order
    assert int(lvp.bank.count) == 8 and int(lvp.bank.next) == 0
    drawn = lvp.sample_latents(50, torch.Generator().manual_seed(0))
    bank_rows = {tuple(row.tolist()) for row in lvp.bank.rows}
    assert all(tuple(row.tolist()) in bank_rows for row in drawn)


def test_conditioning_zero_is_the_gan_limit_where_x_has_no_influence(views):
    past, future = views
    lvp = model(conditioning=0.0)
    other_past = past.roll(1, dims=0)
    torch.testing.assert_close(lvp.energy(past, future), lvp.energy(other_past, future))
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(lvp.sample_futures(past, 2, generator), lvp.sample_futures(other_past, 2, torch.Generator().manual_seed(0)))
    # The generator loss moves the decoder, not the discriminator; the discriminator loss
    # moves the discriminator, not the decoder.
    h = lvp.represent(past)
    generator_loss, discriminator_loss = lvp._adversarial_losses(h, future, None)
    decoder_grads = torch.autograd.grad(generator_loss, list(lvp.decoder.parameters()) + list(lvp.discriminator.parameters()),
                                        allow_unused=True, retain_graph=True)
    assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads[: len(list(lvp.decoder.parameters()))])
    assert all(g is None for g in decoder_grads[len(list(lvp.decoder.parameters())):])
    discriminator_grads = torch.autograd.grad(discriminator_loss, list(lvp.decoder.parameters()), allow_unused=True)
    assert all(g is None for g in discriminator_grads)
    with pytest.raises(ValueError, match="z_dim"):
        model(conditioning=0.5, z_dim=0)


def test_energy_is_per_clip(views):
    past, future = views
    lvp = model()
    whole = lvp.energy(past, future)
    torch.testing.assert_close(lvp.energy(past[:5], future[:5]), whole[:5])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="method.regularizer"):
        model(regularizer="l2")
    with pytest.raises(ValueError, match="method.conditioning"):
        model(conditioning=1.5)
    with pytest.raises(ValueError, match="method.inference_start"):
        model(inference_start="random")
