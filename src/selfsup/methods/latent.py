"""Latent-variable predictive architecture: predict a clip's continuation through a
regularised latent z that carries what the past does not determine about the future."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from selfsup.backbones.video import ClipShape, FrameDecoder, FrameEncoder, StackEncoder
from selfsup.losses.latent import (
    gaussian_kl,
    l1_sparsity,
    norm_bound,
    prediction_cost,
    shrink,
)
from selfsup.methods.base import Batch, Method, StepInfo, StepOutput
from selfsup.methods.memory import RingBuffer

CONTEXT_FRAMES = 2  # past frames the decoder sees directly: appearance and the last motion


class Condition(NamedTuple):
    """What the decoder knows of the past x: h = Pred(Enc(x)) [B, hidden] and the decoder's
    features of the last past frames (its skip connections, finest first), both computed
    from x already scaled by the conditioning c. They do not depend on z, so inference and
    sampling decode many latents against one Condition without recomputing them."""

    h: torch.Tensor
    skips: tuple[torch.Tensor, ...]

    def detach(self) -> Condition:
        return Condition(self.h.detach(), tuple(s.detach() for s in self.skips))

    def repeat_interleave(self, repeats: int) -> Condition:
        return Condition(self.h.repeat_interleave(repeats, dim=0), tuple(s.repeat_interleave(repeats, dim=0) for s in self.skips))


class LatentRegularizer:
    """R(z), what keeps the latent from carrying the whole future, and how inference and
    training treat it (one subclass per ``regularizer`` option)."""

    # Whether R joins the gradient of inference steps; a non-smooth R is applied by
    # :meth:`proximal` after each step instead.
    smooth = True
    # Whether futures are sampled from the bank of inferred latents (the aggregate
    # posterior); otherwise from the prior N(0, I).
    samples_from_bank = True

    def cost(self, z: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
        """R(z) [B] (unweighted)."""
        raise NotImplementedError

    def outputs(self, z_dim: int) -> int:
        """Outputs of the amortised encoder for a ``z_dim`` latent."""
        return z_dim

    def split_guess(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(starting latent, log-variance or None) from the amortised encoder's output."""
        return out, None

    def proximal(self, z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """The proximal step of a non-smooth R after a gradient step of size ``threshold / lambda``."""
        return z

    def training_latent(self, z: torch.Tensor, log_variance: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """The latent the decoder reads in training."""
        return z


class L1Sparsity(LatentRegularizer):
    """||z||_1, sparse coding; inference takes ISTA steps z <- shrink(z - eta grad_z C, eta
    lambda) (Daubechies et al. 2004)."""

    smooth = False

    def cost(self, z: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
        return l1_sparsity(z)

    def proximal(self, z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return shrink(z, threshold)


class NormBound(LatentRegularizer):
    """max(0, ||z|| - radius)^2, a soft bound on the norm; plain gradient steps."""


    def __init__(self, radius: float):
        self.radius = radius

    def cost(self, z: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
        return norm_bound(z, self.radius)


class GaussianKL(LatentRegularizer):
    """KL(N(mu, sigma^2) || N(0, I)) with sigma from the amortised encoder, and noise z = mu +
    sigma eps in training (the VAE's regulariser, Kingma & Welling 2014), which limits what z
    carries; futures are sampled from the prior."""

    samples_from_bank = False

    def cost(self, z: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
        return gaussian_kl(z, log_variance)

    def outputs(self, z_dim: int) -> int:
        return 2 * z_dim  # mean and log-variance

    def split_guess(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mean, log_variance = out.chunk(2, dim=1)
        return mean, log_variance.clamp(-10, 4)

    def training_latent(self, z: torch.Tensor, log_variance: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(z.shape, generator=generator, device=generator.device if generator else z.device).to(z)
        return z + (0.5 * log_variance).exp() * noise


REGULARIZERS = ("l1", "norm", "kl")
INFERENCE_STARTS = ("amortized", "zero")


def latent_regularizer(name: str, norm_radius: float) -> LatentRegularizer:
    if name not in REGULARIZERS:
        raise ValueError(f"method.regularizer must be one of {', '.join(REGULARIZERS)}, got {name!r}")
    return L1Sparsity() if name == "l1" else NormBound(norm_radius) if name == "norm" else GaussianKL()


class Discriminator(nn.Sequential):
    """D(y): the logit that a future is real, for the GAN limit of the predictor
    (``conditioning`` < 1): a convolutional encoder of the frames to one logit."""

    def __init__(self, clip: ClipShape, width: int, hidden_dim: int):
        super().__init__(
            StackEncoder(clip.frames_out, clip.channels, clip.size, width, hidden_dim),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, 1),
        )

    def adversarial_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-saturating GAN losses (Goodfellow et al. 2014, sec. 3): the generator's
        -log D(G(z)), through a copy of D's weights that takes no gradient, and the
        discriminator's -log D(y) - log(1 - D(G(z))) on detached fakes; one optimiser step
        then updates both (simultaneous gradient descent)."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        generator_loss = F.softplus(-functional_call(self, frozen, (fake,))).mean()
        real_logit = self(real)
        fake_logit = self(fake.detach())
        discriminator_loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        return generator_loss, discriminator_loss


class LatentVariablePredictor(Method):
    """A latent-variable energy-based model of continuations (LeCun et al., "A Tutorial on
    Energy-Based Learning", 2006; LeCun, "A Path Towards Autonomous Machine Intelligence",
    2022, sec. 4.8; the NYU Deep Learning course, 2020-21, "latent-variable EBMs").

    Enc reads the past x frame by frame (the backbone), Pred maps the frame embeddings to a
    representation h, and Dec maps (h, z) to the predicted future, copying appearance from
    the last two past frames through U-Net skip connections; the energy is

        E(x, y, z) = C(y, Dec(c * Pred(Enc(x)), c * x_last, z)) + lambda R(z),   F(x, y) = min_z E(x, y, z)

    with C the squared error summed over the pixels and R one of (``regularizer``):

    - ``l1``: ||z||_1, sparse coding; z is inferred with ISTA steps
      z <- shrink(z - eta grad_z C, eta lambda) (Daubechies et al. 2004);
    - ``norm``: max(0, ||z|| - ``norm_radius``)^2, a soft bound on the norm; gradient steps;
    - ``kl``: KL(N(mu, sigma^2) || N(0, I)) with sigma from the amortised encoder and noise
      z = mu + sigma eps in training (the VAE's regulariser, Kingma & Welling 2014); the mean
      is refined by gradient steps (a semi-amortised VAE, Kim et al., ICML 2018).

    (:class:`L1Sparsity`, :class:`NormBound`, :class:`GaussianKL`; the GAN side is the
    :class:`Discriminator`.)

    Inference: ``inference_steps`` steps on z from the amortised guess Enc_z(x, y) (a
    convolutional encoder of the whole clip) or from zero (``inference_start``), each step
    accepted per clip only when it lowers E, else retried with half the step size
    (backtracking), so E never rises. Training minimises E(x, y, z*) with z* held fixed
    (detached), which teaches the encoder, predictor and decoder; E(x, y, Enc_z(x, y)), which
    teaches the amortised encoder to guess a latent of low energy (an auto-encoder under R,
    a VAE for ``kl``) and so gives z its meaning from the first steps; and ||Enc_z(x, y) -
    z*||^2, which pulls the guess to the optimum (predictive sparse decomposition,
    Kavukcuoglu, Ranzato and LeCun 2008). The inferred z* of recent clips are kept
    in a bank; at test time futures are decoded from z drawn from that bank (the aggregate
    posterior) or, for ``kl``, from the prior N(0, I).

    The two limits (METHODS.md):

    - ``z_dim=0``: no latent, the plain predictor Dec(Pred(Enc(x))) trained on C; it can only
      predict the mean of the possible futures (blurry), and every sample is the same;
    - ``conditioning`` (c, the knob between them, 1 by default) scales how much of x reaches
      the decoder, and mixes in adversarial training with weight 1 - c: at c = 0 x has no
      influence, and the decoder is a generator G(z), z ~ N(0, I), trained against a
      discriminator D(y) of real and generated futures with the non-saturating GAN loss
      (Goodfellow et al., NeurIPS 2014). The GAN is a contrastive energy method: D's logit
      is pushed up on data and down on generated samples.

    Energy: F(x, y) = min_z E(x, y, z), by the same inference from the amortised guess.

    The latent's dimension is the regulariser that matters most here (a small dimension is
    one of the tutorial's ways of limiting z, beside L1, a norm bound and the KL): the
    default ``z_dim=2`` is what the sprites' uncertainty needs (a new velocity), and leaves z
    no room to redraw another clip's frames. After 15 minutes on moving sprites, z_dim 2
    against the plain predictor: best-of-20 error 0.0246 against 0.0382, energy AUC against
    another clip's continuation 0.901 against 0.839; with z_dim 16 (an earlier 15-minute
    run) 0.0305 and 0.680 (BENCHMARKS.md "lvp with a two-dimensional latent").
    """

    name = "lvp"
    summary = "latent-variable predictor: future = Dec(Pred(Enc(past)), z), z inferred by minimising a regularised energy"
    modality = "video"
    default_backbone = "frames"
    samples_futures = True
    # Adam at 2e-3 per 256 clips (5e-4 at the default batch of 64): the usual rate for small
    # convolutional auto-encoders; no weight decay, the latent is what is regularised.
    train_recipe = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.0, "epochs": 40, "batch_size": 64}

    def __init__(self, backbone: FrameEncoder, backbone_dim: int, clip: ClipShape, z_dim: int = 2,
                 regularizer: str = "l1", regularizer_weight: float = 1e-3, norm_radius: float = 1.0,
                 inference_steps: int = 5, inference_lr: float = 1.0, inference_start: str = "amortized",
                 conditioning: float = 1.0, hidden_dim: int = 256, decoder_width: int = 32, bank_size: int = 4096):
        super().__init__(backbone)
        self.regularizer = latent_regularizer(regularizer, norm_radius)
        if inference_start not in INFERENCE_STARTS:
            raise ValueError(f"method.inference_start must be one of {', '.join(INFERENCE_STARTS)}, got {inference_start!r}")
        if not 0.0 <= conditioning <= 1.0:
            raise ValueError(f"method.conditioning must lie in [0, 1], got {conditioning}")
        for option, value in (("z_dim", z_dim), ("inference_steps", inference_steps), ("bank_size", bank_size)):
            if value < 0:
                raise ValueError(f"method.{option} must be >= 0, got {value}")
        if conditioning < 1 and z_dim == 0:
            raise ValueError("method.conditioning < 1 trains a generator of z; it needs method.z_dim > 0")
        self.clip = clip
        self.z_dim, self.regularizer_weight = z_dim, regularizer_weight
        self.inference_steps, self.inference_lr, self.inference_start = inference_steps, inference_lr, inference_start
        self.conditioning = conditioning
        self.predictor = nn.Sequential(
            nn.Linear(clip.frames_in * backbone_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim)
        )
        self.context_frames = min(CONTEXT_FRAMES, clip.frames_in)
        self.decoder = FrameDecoder(
            hidden_dim + z_dim, clip.frames_out, clip.channels, clip.size, decoder_width, self.context_frames * clip.channels
        )
        if z_dim:
            self.amortized = nn.Sequential(
                StackEncoder(clip.frames_in + clip.frames_out, clip.channels, clip.size, decoder_width, hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, self.regularizer.outputs(z_dim)),
            )
        if conditioning < 1:
            self.discriminator = Discriminator(clip, decoder_width, hidden_dim)
        # The newest inferred latents (the aggregate posterior futures are sampled from).
        self.bank = RingBuffer(bank_size if z_dim else 0, z_dim)
        self._step_latents: torch.Tensor | None = None  # banked by on_step_end

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "bank_filled" in state:  # before the bank was a RingBuffer
            bank, filled, next_slot = state.pop("bank"), state.pop("bank_filled"), state.pop("bank_next")
            state.update(RingBuffer.state("bank.", bank, int(next_slot), int(filled)))
        return state

    # ------------------------------------------------------------------ the energy
    def represent(self, past: torch.Tensor) -> Condition:
        """What the decoder reads of the past frames [B, Tin, C, H, W]: c * Pred(Enc(x)) and
        its skip connections' features of c times the last past frames."""
        h = self.predictor(self.backbone(past).flatten(1))
        context = self.conditioning * past[:, -self.context_frames :].flatten(1, 2)
        return Condition(self.conditioning * h, self.decoder.context_features(context))

    def decode(self, condition: Condition, z: torch.Tensor) -> torch.Tensor:
        """Dec(condition, z): predicted future frames [B, Tout, C, H, W] in [0, 1]."""
        return self.decoder(torch.cat([condition.h, z], dim=1), skips=condition.skips)

    def regularization(self, z: torch.Tensor, log_variance: torch.Tensor | None = None) -> torch.Tensor:
        """R(z) [B] (unweighted)."""
        return self.regularizer.cost(z, log_variance)

    def latent_energy(self, condition: Condition, y: torch.Tensor, z: torch.Tensor, log_variance: torch.Tensor | None = None) -> torch.Tensor:
        """E(x, y, z) [B] for ``condition = represent(x)``."""
        energy = prediction_cost(y, self.decode(condition, z))
        if self.z_dim:
            energy = energy + self.regularizer_weight * self.regularization(z, log_variance)
        return energy

    def amortized_guess(self, past: torch.Tensor, future: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Enc_z(x, y): the starting latent [B, z_dim] and, for ``kl``, its log-variance. It
        reads c * x like the decoder, so that at c = 0 nothing depends on x."""
        return self.regularizer.split_guess(self.amortized(torch.cat([self.conditioning * past, future], dim=1)))

    def infer_latent(
        self, condition: Condition, y: torch.Tensor, start: torch.Tensor, log_variance: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z* ~ argmin_z E(x, y, z) by ``steps`` (default ``inference_steps``) descent steps
        from ``start`` with per-clip backtracking. Returns (z* [B, z_dim] detached, E at the
        start [B], E at z* [B]); E at z* is never above E at the start. ``condition`` and
        ``log_variance`` are held fixed."""
        steps = self.inference_steps if steps is None else steps
        condition = condition.detach()
        log_variance = None if log_variance is None else log_variance.detach()
        # Gradient steps on the smooth part of E; a non-smooth R (L1: ISTA) is applied by its
        # proximal step.
        smooth_weight = self.regularizer_weight if self.regularizer.smooth else 0.0

        def evaluate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                cost = prediction_cost(y, self.decode(condition, z))
                smooth = cost + smooth_weight * self.regularization(z, log_variance) if smooth_weight else cost
                (gradient,) = torch.autograd.grad(smooth.sum(), z)
            return cost.detach() + self.regularizer_weight * self.regularization(z.detach(), log_variance), gradient

        z = start.detach()
        energy, gradient = evaluate(z)
        first = energy
        step_size = torch.full((len(z), 1), self.inference_lr, device=z.device)
        for _ in range(steps):
            candidate = self.regularizer.proximal(z - step_size * gradient, step_size * self.regularizer_weight)
            candidate_energy, candidate_gradient = evaluate(candidate)
            better = (candidate_energy <= energy).unsqueeze(1)
            z = torch.where(better, candidate, z)
            gradient = torch.where(better, candidate_gradient, gradient)
            energy = torch.where(better.squeeze(1), candidate_energy, energy)
            step_size = torch.where(better, step_size, step_size / 2)
        return z, first, energy

    def _starting_latent(self, past: torch.Tensor, future: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(amortised guess, where inference starts, log-variance or None)."""
        guess, log_variance = self.amortized_guess(past, future)
        start = guess.detach() if self.inference_start == "amortized" else torch.zeros_like(guess)
        return guess, start, log_variance

    # ------------------------------------------------------------------ training
    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        past, future = views[0], views[1]
        condition = self.represent(past)
        if not self.z_dim:  # the plain predictor
            cost = prediction_cost(future, self.decode(condition, past.new_zeros(len(past), 0))).mean()
            return StepOutput(cost, {"cost": float(cost.detach())})
        guess, start, log_variance = self._starting_latent(past, future)
        z, first_energy, energy = self.infer_latent(condition, future, start, log_variance)
        self._step_latents = z
        generator = batch.generator if batch else None
        cost, regularization = self._training_energy(condition, future, z, log_variance, generator)
        guess_cost, guess_regularization = self._training_energy(condition, future, guess, log_variance, generator)
        energy_loss = (cost + guess_cost + self.regularizer_weight * (regularization + guess_regularization)).mean()
        amortization = (guess - z).pow(2).sum(dim=1).mean()
        loss = self.conditioning * energy_loss + amortization
        metrics = {
            "cost": float(cost.detach().mean()),
            "regularization": float(regularization.detach().mean()),
            "energy_before_inference": float(first_energy.mean()),
            "energy_after_inference": float(energy.mean()),
            "amortization_error": float(amortization.detach()),
        }
        if self.conditioning < 1:
            generator_loss, discriminator_loss = self._adversarial_losses(condition, future, batch)
            loss = loss + (1 - self.conditioning) * generator_loss + discriminator_loss
            metrics.update(generator_loss=float(generator_loss.detach()), discriminator_loss=float(discriminator_loss.detach()))
        return StepOutput(loss, metrics)

    def _training_energy(
        self, condition: Condition, future: torch.Tensor, z: torch.Tensor, log_variance: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, R) [B] at latent ``z``; for ``kl`` the decoder reads z + sigma eps, the
        noise that limits what z carries (sigma learns through the KL and C)."""
        decoded = self.decode(condition, self.regularizer.training_latent(z, log_variance, generator))
        return prediction_cost(future, decoded), self.regularization(z, log_variance)

    def _adversarial_losses(self, condition: Condition, future: torch.Tensor, batch: Batch | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(generator loss, discriminator loss) of futures decoded from prior latents."""
        z = self.prior_latents(len(future), batch.generator if batch else None, future.device)
        return self.discriminator.adversarial_losses(future, self.decode(condition, z))

    def on_step_end(self, info: StepInfo) -> None:
        if self._step_latents is not None:
            self.bank.push(self._step_latents)
            self._step_latents = None

    # ------------------------------------------------------------------ sampling and evaluation
    def prior_latents(self, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """z ~ N(0, I) [count, z_dim]."""
        return torch.randn(count, self.z_dim, generator=generator, device=generator.device if generator else device).to(device)

    def sample_latents(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents for sampling futures [count, z_dim]: rows of the bank of inferred z (the
        aggregate posterior) for ``l1`` and ``norm``; N(0, I) for ``kl``, for the GAN side
        (conditioning < 1) and while the bank is empty."""
        device = self.bank.rows.device
        filled = int(self.bank.count)
        if not self.regularizer.samples_from_bank or self.conditioning < 1 or filled == 0:
            return self.prior_latents(count, generator, device)
        rows = torch.randint(filled, (count,), generator=generator, device=generator.device if generator else device)
        return self.bank.rows[rows.to(device)]

    @torch.no_grad()
    def sample_futures(self, past: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``samples`` predicted futures per clip [B, samples, Tout, C, H, W], one latent each;
        the same generator state gives the same futures. With ``z_dim=0`` all are equal."""
        condition = self.represent(past).repeat_interleave(samples)
        z = self.sample_latents(len(past) * samples, generator)
        futures = self.decode(condition, z)
        return futures.view(len(past), samples, *futures.shape[1:])

    @torch.no_grad()
    def embed(self, past: torch.Tensor) -> torch.Tensor:
        """Encoder features [B, D]: the mean of the past frames' embeddings."""
        return self.backbone.clip_embedding(past)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y) = min_z E(x, y, z) [B] for past frames x and a continuation y."""
        condition = self.represent(x)
        if not self.z_dim:
            return prediction_cost(y, self.decode(condition, x.new_zeros(len(x), 0)))
        _, start, log_variance = self._starting_latent(x, y)
        return self.infer_latent(condition, y, start, log_variance)[2]
