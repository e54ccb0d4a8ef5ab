"""`selfsup.plan` against what the model really does: parameter counts exact, FLOPs within 5%
of torch's FlopCounterMode on a real CPU step, activation memory within 10% of the saved
tensors of a real CPU step (storage-deduplicated), with and without activation checkpointing."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils import flop_counter
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from selfsup import plan as plan_module
from selfsup import runs
from selfsup.backbones import blocks, build_backbone
from selfsup.backbones.transformer import SelfAttention
from selfsup.config import ConfigError, from_dict
from selfsup.methods import StepInfo
from selfsup.plan import (
    GPUS,
    count_parameters,
    estimate,
    format_plan,
    implied_utilisation,
    planned_model,
)

aten = torch.ops.aten
BATCH = 3  # not one of the plan's own measured batches: its per-image line is extrapolated


def small_config(method: dict, backbone: str) -> dict:
    # two local crops instead of the recipes' 6 and 8 keep the real CPU steps short
    return {
        "method": method,
        "backbone": {"name": backbone},
        "data": {"size": 32},
        "augment": {"global_size": 32, "local_crops": 2},
        "train": {"batch_size": BATCH, "precision": "fp32", "epochs": 1},
    }


# SwAV multi-crop (2 x 32 + 2 x 14 px) on a RegNet (grouped convolutions, squeeze-excitation),
# DINO (2 x 32 + 2 x 14 px) on a ViT (attention) with an EMA teacher (no backward).
SWAV = small_config({"name": "swav", "prototypes": 100}, "regnety-200mf-small")
DINO = small_config({"name": "dino", "output_dim": 256}, "vit-tiny-small")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The real steps run on tiny tensors, where a second thread only adds synchronisation
    (on a busy 2-core machine, tenfold); the figures do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def real_steps():
    """One plain and one checkpointed real step of each config, run once for the module."""
    steps = {}
    for name, values in (("swav", SWAV), ("dino", DINO)):
        for checkpointing in (False, True):
            step = RealStep(values, checkpointing)
            step.flops = step.run()
            steps[name, checkpointing] = step
    return steps


@pytest.fixture(scope="module")
def plans():
    return {name: estimate(from_dict(values), gpus=1, gpu="a100") for name, values in (("swav", SWAV), ("dino", DINO))}


class RealStep:
    """One training step of the planned model with real tensors on the CPU, measured by
    FlopCounterMode and by saved-tensor hooks deduplicated by storage data pointer."""

    def __init__(self, values: dict, checkpointing: bool = False):
        torch.manual_seed(0)
        self.method, crops = planned_model(from_dict(values), device="cpu")
        self.views = [torch.randn(BATCH, 3, size, size) for size, count in crops for _ in range(count)]
        self.method.on_step_start(StepInfo(step=0, total_steps=1000, steps_per_epoch=100))
        self.weights = {t.untyped_storage().data_ptr() for t in [*self.method.parameters(), *self.method.buffers()]}
        self.saved: dict[int, torch.Tensor] = {}
        self.block_inputs: dict[int, torch.Tensor] = {}
        self.block_calls: list[dict[int, torch.Tensor]] = []
        self.checkpointing = checkpointing
        if checkpointing:
            for block in blocks(self.method.backbone):
                block.forward = self._checkpointed(block.forward)

    def _pack_into(self, store: dict[int, torch.Tensor]):
        def pack(tensor: torch.Tensor) -> torch.Tensor:
            pointer = tensor.untyped_storage().data_ptr()
            if pointer not in self.weights:
                store[pointer] = tensor  # kept alive, so that no later tensor reuses the address
            return tensor

        return pack

    def _checkpointed(self, forward):
        """What train.activation_checkpointing does to a block, plus a record of the block's
        input and of what the block saves when it runs (as it does again in backward)."""

        def run(x, *rest):
            if not torch.is_grad_enabled():
                return forward(x, *rest)
            self.block_inputs[x.untyped_storage().data_ptr()] = x
            call: dict[int, torch.Tensor] = {}
            with torch.autograd.graph.saved_tensors_hooks(self._pack_into(call), lambda t: t):
                forward(x.detach().requires_grad_(), *rest)
            self.block_calls.append(call)
            return checkpoint(forward, x, *rest, use_reentrant=False)

        return run

    def run(self) -> float:
        """The step's FLOPs (by FlopCounterMode, on the plain step); fills ``saved``."""
        attention = [0.0]

        def add_attention(module, inputs, output):
            # FlopCounterMode skips the CPU's fused attention: add its two products,
            # 2 B T^2 W each, and their four in backward
            batch, tokens, width = inputs[0].shape
            attention[0] += 4 * batch * tokens**2 * width * (3 if torch.is_grad_enabled() else 1)

        hooks = [m.register_forward_hook(add_attention) for m in self.method.modules() if isinstance(m, SelfAttention)]
        counter = FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_with_groups})
        with counter if not self.checkpointing else contextlib.nullcontext():
            with torch.autograd.graph.saved_tensors_hooks(self._pack_into(self.saved), lambda t: t):
                loss = self.method(self.views).loss
            loss.backward()
        for hook in hooks:
            hook.remove()
        if self.checkpointing:
            return float("nan")
        counted_attention = any("attention" in str(op) for op in counter.get_flop_counts()["Global"])
        return counter.get_total_flops() + (0.0 if counted_attention else attention[0])

    def activation_bytes(self) -> float:
        return float(sum(t.untyped_storage().nbytes() for t in self.saved.values()))

    def checkpointed_bytes(self) -> float:
        kept = {**self.saved, **self.block_inputs}
        largest = max(sum(t.untyped_storage().nbytes() for t in call.values()) for call in self.block_calls)
        return sum(t.untyped_storage().nbytes() for t in kept.values()) + largest


def conv_backward_with_groups(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                              output_padding, groups, output_mask, out_shape=None, **kwargs):
    """torch's own formula, with the weight gradient of a grouped convolution divided by the
    groups: torch 2.13's ``conv_backward_flop`` multiplies all C_in input channels into every
    output channel's weight gradient, over-counting RegNet's grouped 3x3 convolutions
    ``groups``-fold (each output channel sees C_in / groups inputs, as its forward formula has it)."""
    def part(mask):
        return flop_counter.conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                                               transposed, output_padding, groups, mask, out_val=out_shape)

    return part([output_mask[0], False]) + part([False, output_mask[1]]) // groups


def relative_error(estimated: float, measured: float) -> float:
    return abs(estimated - measured) / measured


# ---------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, trunk", [("regnety-400mf", 3_903_144), ("regnety-8gf", 37_364_472)])
def test_backbone_parameters_are_exact(name, trunk):
    method, _ = planned_model(from_dict({"method": {"name": "simclr"}, "backbone": {"name": name}}))
    assert count_parameters(method)["backbone_parameters"] == trunk


def test_seer_trunk_is_counted_on_the_meta_device():
    method, _ = planned_model(from_dict({"method": {"name": "swav", "prototypes": 16000}, "backbone": {"name": "regnety-256gf"}}))
    with torch.device("meta"):
        trunk, _ = build_backbone("regnety-256gf", 3)
    counts = count_parameters(method)
    assert counts["backbone_parameters"] == sum(p.numel() for p in trunk.parameters())
    assert 1.26e9 < counts["backbone_parameters"] < 1.28e9
    assert all(p.is_meta for p in method.parameters())


def test_teacher_has_no_gradient_and_no_optimiser_state(plans):
    dino = plans["dino"]
    student = dino.parameters - dino.trainable_parameters
    assert student > 0 and dino.backbone_parameters < student  # the teacher: backbone + head copy
    assert dino.memory_for("ddp", False).optimizer_state == 4 * dino.trainable_parameters  # SGD: one momentum buffer


# ---------------------------------------------------------------------------- FLOPs and memory
@pytest.mark.parametrize("name, values", [("swav", SWAV), ("dino", DINO)])
def test_flops_within_5_percent_of_flop_counter(plans, real_steps, name, values):
    plan = plans[name]
    measured = real_steps[name, False].flops
    estimated = plan.step_forward_flops + plan.step_backward_flops + BATCH * (plan.forward_flops + plan.backward_flops)
    assert relative_error(estimated, measured) < 0.05, (estimated, measured)


@pytest.mark.parametrize("name, values", [("swav", SWAV), ("dino", DINO)])
def test_activation_memory_within_10_percent_of_saved_tensors(plans, real_steps, name, values):
    plan = plans[name]
    step = real_steps[name, False]
    estimated = plan.step_activation_bytes + BATCH * plan.activation_bytes
    assert relative_error(estimated, step.activation_bytes()) < 0.10, (estimated, step.activation_bytes())


@pytest.mark.parametrize("name, values", [("swav", SWAV), ("dino", DINO)])
def test_checkpointed_activation_memory_within_10_percent(plans, real_steps, name, values):
    plan = plans[name]
    step = real_steps[name, True]
    estimated = plan.step_checkpointed_activation_bytes + BATCH * plan.checkpointed_activation_bytes
    assert relative_error(estimated, step.checkpointed_bytes()) < 0.10, (estimated, step.checkpointed_bytes())
    assert plan.checkpointed_activation_bytes < plan.activation_bytes


def test_recompute_is_the_blocks_forward(plans):
    swav = plans["swav"]
    assert 0 < swav.recompute_flops < swav.forward_flops
    assert swav.backward_flops == pytest.approx(2 * swav.forward_flops, rel=0.05)  # backward ~ 2 x forward


# ---------------------------------------------------------------------------- memory and time
def test_fsdp_memory_shrinks_with_gpus(plans):
    one, eight = plans["swav"], plans["swav"].on(gpus=8)
    for checkpointing in (False, True):
        assert eight.memory_for("fsdp", checkpointing).total < one.memory_for("fsdp", checkpointing).total
        assert eight.memory_for("ddp", checkpointing).total == one.memory_for("ddp", checkpointing).total
    assert eight.memory_for("fsdp", False).parameters == pytest.approx(one.memory_for("fsdp", False).parameters / 8)
    assert eight.seconds == pytest.approx(one.seconds / 8, rel=0.01)


def test_time_and_implied_utilisation_agree(plans):
    plan = plans["swav"]
    assert implied_utilisation(plan, plan.seconds) == pytest.approx(plan.utilisation)
    assert plan.images == 1_281_167 and plan.epochs == 1


def test_format_fits_100_columns(plans):
    for plan in plans.values():
        text = format_plan(plan)
        assert max(len(line) for line in text.splitlines()) <= 100
        assert "FSDP" in text and "activations" in text


def test_plan_on_other_machines_keeps_the_measurements(plans):
    h100 = plans["dino"].on(gpus=64, gpu="h100", images=10**9, epochs=2)
    assert h100.flops_per_image == plans["dino"].flops_per_image
    assert h100.gpu == GPUS["h100"] and h100.total_flops > plans["dino"].total_flops
    with pytest.raises(ConfigError, match="unknown GPU"):
        plans["dino"].on(gpu="tpu")


@pytest.mark.parametrize("arguments, message", [
    ({"gpus": 1, "gpu": "k80"}, "unknown GPU"),
    ({"gpus": 0}, "gpus"),
    ({"gpus": 2, "utilisation": 0}, "utilisation"),
    ({"gpus": 2, "images": 0}, "images"),
])
def test_bad_values_are_config_errors(arguments, message):
    with pytest.raises(ConfigError, match=message):
        estimate(from_dict(SWAV), **arguments)


def test_defaults_agree_with_what_a_run_resolves():
    from selfsup.modalities.image import ImageModality, default_local_size

    assert plan_module.DEFAULT_BATCH_SIZE == runs.DEFAULT_BATCH_SIZE
    assert plan_module.IMAGE_BACKBONE == ImageModality.default_backbone
    for size in (28, 32, 96, 224):
        assert max(4, round(size * plan_module.LOCAL_SIZE_RATIO)) == default_local_size(size)


def test_gpu_table():
    assert {name: (gpu.memory_bytes // 2**30, gpu.peak_bf16 / 1e12) for name, gpu in GPUS.items()} == {
        "v100": (32, 125), "a100": (80, 312), "h100": (80, 989), "h200": (140, 989),
    }
