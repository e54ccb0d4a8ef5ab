"""What a training run costs, before running it: parameters, optimiser state, activation
memory, memory per GPU under DDP and FSDP, FLOPs per image and the time for the data.

Everything is read off the run's own model, built on the meta device (shapes, no memory, no
arithmetic: RegNetY-256GF's 1.3B parameters cost nothing here), and one training step of it
on a small batch, also on the meta device:

- **Parameters** are counted exactly: ``numel`` of every tensor, total and trainable (an EMA
  teacher has no gradient and no optimiser state).
- **FLOPs** are counted at the dispatcher from each operation's shapes, 2 x multiply-adds
  (Kaplan et al. 2020, sec. 2.1, "Scaling laws for neural language models"; the convention of
  ``torch.utils.flop_counter``): convolutions, matrix products and fused attention, forward and
  backward as autograd runs them, so a frozen teacher's forward has no backward and the first
  convolution no input gradient. Element-wise work (BatchNorm, activations, the loss) is not
  counted; it is memory-bound and a few percent of the arithmetic. The backward of attention is
  counted as its four matrix products (dV, dP, dQ, dK), not the recomputation of QK^T that
  flash kernels add: model FLOPs, not hardware FLOPs (Chowdhery et al. 2022, PaLM, app. B).
- **Activation memory** is what autograd saves for the backward pass, caught with
  ``torch.autograd.graph.saved_tensors_hooks``, each storage counted once (a view or an in-place
  result shares its input's storage; parameters and buffers are not activations). Fused
  attention is taken as the flash kernels keep it (output and log-sum-exp, not the T x T
  matrix), as on GPUs. Under bf16 every floating activation counts 2 bytes (autocast runs
  convolutions and matrix products in bf16; the few tensors autocast keeps in fp32, such as
  BatchNorm's statistics, are per channel). With activation checkpointing (Chen et al. 2016,
  "Training deep nets with sublinear memory cost") only each block's input and what lies
  outside the blocks stay saved, plus one block's activations while it is recomputed.
- **Per image**: the step is measured at two batch sizes; the difference is the cost of one
  image (summed over its crops), the rest a per-step constant (e.g. DINO's interpolated position
  embeddings).

Memory per GPU follows Rajbhandari et al. 2020 (ZeRO, sec. 3.1): fp32 master weights,
gradients and optimiser state, plus activations x the per-GPU batch; FSDP (Zhao et al. 2023,
"PyTorch FSDP", sec. 3) divides the first three by the GPUs and adds the blocks gathered at a
time. The assumptions each figure rests on are listed in :attr:`Plan.assumptions`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx.experimental._config as fx_config
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from selfsup.augment.views import RECIPES, crop_size
from selfsup.backbones import blocks, build_backbone, new_run_pool
from selfsup.config import Config, ConfigError, TrainConfig
from selfsup.methods import Batch, Method, StepInfo, build_method, method_class

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_UTILISATION",
    "GPU",
    "GPUS",
    "CropCost",
    "MemoryEstimate",
    "Plan",
    "count_parameters",
    "estimate",
    "format_plan",
    "implied_utilisation",
    "measure_training_step",
    "planned_model",
]

GiB = 2**30


@dataclass(frozen=True)
class GPU:
    """One accelerator model: its memory and dense peak FLOP/s per precision."""

    name: str
    memory_bytes: int
    peak_bf16: float  # dense tensor-core FLOP/s at 16 bits (V100: fp16, it has no bf16)
    peak_fp32: float  # plain fp32 FLOP/s (torch leaves TF32 off for matrix products by default)
    source: str

    def peak(self, precision: str) -> float:
        return self.peak_bf16 if precision == "bf16" else self.peak_fp32


# Vendor datasheets; "dense" = without 2:4 structured sparsity, which the datasheets' headline
# tensor figures for A100, H100 and H200 include (they are twice these). Memory is the
# datasheet's GB read as GiB where the HBM stacks are 2^30-byte multiples (nvidia-smi shows
# 32,510 MiB, 81,920 MiB and 81,559 MiB for the 32 and 80 GB parts), and 140 GiB of the H200's
# 141 GB.
GPUS: dict[str, GPU] = {
    # NVIDIA Tesla V100 datasheet (SXM2 32 GB), images.nvidia.com/content/technologies/volta/pdf/
    # volta-v100-datasheet-update-us-1165301-r5.pdf: tensor 125 TFLOPS (fp16), fp32 15.7 TFLOPS.
    "v100": GPU("V100 SXM2 32 GB", 32 * GiB, 125e12, 15.7e12, "NVIDIA V100 datasheet"),
    # NVIDIA A100 datasheet (SXM 80 GB), nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
    # nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf: BF16 tensor 312 TFLOPS (624 sparse), fp32 19.5.
    "a100": GPU("A100 SXM 80 GB", 80 * GiB, 312e12, 19.5e12, "NVIDIA A100 datasheet"),
    # NVIDIA H100 datasheet (SXM5), resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet:
    # BF16 tensor 1,979 TFLOPS with sparsity (989 dense), fp32 67 TFLOPS, 80 GB HBM3.
    "h100": GPU("H100 SXM 80 GB", 80 * GiB, 989e12, 67e12, "NVIDIA H100 datasheet"),
    # NVIDIA H200 datasheet (SXM), nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446:
    # BF16 tensor 1,979 TFLOPS with sparsity (989 dense), fp32 67 TFLOPS, 141 GB HBM3e.
    "h200": GPU("H200 SXM 141 GB", 140 * GiB, 989e12, 67e12, "NVIDIA H200 datasheet"),
}

#: ImageNet-1k's training images, the data a plan assumes when none is stated.
DEFAULT_IMAGES = 1_281_167

#: The share of the dense peak a run is assumed to sustain. Calibrated on the one published
#: measurement of this workload: SEER (Goyal et al. 2021, sec. 3.2) took 6,125 ms per
#: iteration of 8,704 images, 114,890 iterations, on 512 V100s with fp16 and activation
#: checkpointing: 12.4% of the V100's tensor peak by this module's count of the `seer` recipe
#: (``benchmarks/seer_cost.py``; 9.3% without the recomputation). Grouped convolutions,
#: multi-crop's small 96 px crops, SyncBatchNorm and data loading keep RegNets far below the
#: 40-50% that large transformers reach; 12% is an honest default for convolutional SSL,
#: pessimistic for ViTs on H100s.
DEFAULT_UTILISATION = 0.12

# A GPU counts as fitting a run when the estimate leaves this share of its memory free: the
# CUDA context, NCCL buffers, the allocator's fragmentation and the transient buffers of the
# largest operation are not in the estimate.
HEADROOM = 0.10

# FSDP2 keeps the block being computed and the one prefetched unsharded (Zhao et al. 2023, sec. 3.3).
BLOCKS_IN_FLIGHT = 2

# What a run resolves where its config is silent; this room sits below ``runs`` and
# ``modalities`` (tests/test_layers.py), so it restates them, and tests/test_plan.py checks
# that they agree: runs.DEFAULT_BATCH_SIZE, ImageModality.default_backbone, and
# modalities.image.default_local_size (multi-crop's 96 px local crops of 224 px global ones).
DEFAULT_BATCH_SIZE = 256
IMAGE_BACKBONE = "convnet-small"
LOCAL_SIZE_RATIO = 3 / 7

_OPTIMIZER_SLOTS = {"sgd": 1, "lars": 1, "adamw": 2}  # fp32 tensors of state per parameter
_MEASURED_BATCHES = (2, 4)  # BatchNorm needs more than one sample per channel in training


# ---------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class CropCost:
    """One crop size of the recipe: how many crops of it an image gets, and the backbone's
    forward FLOPs and saved activations for one such crop (fp32 bytes scaled to the run's
    precision)."""

    size: int
    count: int
    forward_flops: float
    activation_bytes: float


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU under one strategy, with or without activation checkpointing."""

    strategy: str  # ddp or fsdp
    checkpointing: bool
    parameters: float  # fp32 master weights (sharded under FSDP)
    gradients: float  # fp32 (sharded under FSDP)
    optimizer_state: float  # fp32 (sharded under FSDP)
    buffers: float  # BatchNorm statistics, queues, centres: replicated
    working: float  # DDP: gradient buckets + autocast's bf16 weights; FSDP: the unsharded blocks
    activations: float  # saved activations of the per-GPU batch
    capacity: int  # the GPU's memory

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer_state + self.buffers + self.working + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= (1 - HEADROOM) * self.capacity


@dataclass(frozen=True)
class Plan:
    """Every figure of a planned run, in parameters, bytes, FLOPs and seconds."""

    method: str
    backbone: str
    recipe: str | None
    crops: list[CropCost]
    batch_size: int  # per GPU
    optimizer: str
    precision: str  # fp32 or bf16 (compute and activations; weights stay fp32)
    activation_checkpointing: bool  # what the config asks; both cases are estimated
    gpus: int
    gpu: GPU
    images: int
    epochs: float
    utilisation: float
    parameters: int
    trainable_parameters: int
    backbone_parameters: int
    largest_block_parameters: int
    unblocked_parameters: int  # trainable parameters outside every block (stem, heads, prototypes)
    buffer_bytes: float
    # per image, summed over its crops
    forward_flops: float
    backward_flops: float
    recompute_flops: float  # the blocks' forward again, under activation checkpointing
    activation_bytes: float
    checkpointed_activation_bytes: float
    # per step, independent of the batch
    step_forward_flops: float
    step_backward_flops: float
    step_recompute_flops: float
    step_activation_bytes: float
    step_checkpointed_activation_bytes: float
    optimizer_slots: int  # fp32 state tensors per trainable parameter
    notes: list[str] = field(default_factory=list)  # values the plan chose (options sized to the data)

    @property
    def flops_per_image(self) -> float:
        """Training FLOPs of one image: forward, backward and, when the config checkpoints, the recomputation."""
        return self.forward_flops + self.backward_flops + (self.recompute_flops if self.activation_checkpointing else 0.0)

    @property
    def steps(self) -> int:
        return math.ceil(self.images * self.epochs / (self.gpus * self.batch_size))

    @property
    def total_flops(self) -> float:
        step_fixed = self.step_forward_flops + self.step_backward_flops
        step_fixed += self.step_recompute_flops if self.activation_checkpointing else 0.0
        return self.images * self.epochs * self.flops_per_image + self.steps * self.gpus * step_fixed

    @property
    def peak_flops(self) -> float:
        """FLOP/s of all the GPUs together at their dense peak in the run's precision."""
        return self.gpus * self.gpu.peak(self.precision)

    @property
    def seconds(self) -> float:
        """Wall-clock time for ``images`` x ``epochs`` at ``utilisation`` of the peak."""
        return self.total_flops / (self.peak_flops * self.utilisation)

    def memory_for(self, strategy: str, checkpointing: bool) -> MemoryEstimate:
        """Bytes per GPU under ``strategy`` (ddp or fsdp), with or without activation
        checkpointing (Rajbhandari et al. 2020, ZeRO, sec. 3.1: weights, gradients and
        optimiser state in fp32 under mixed precision, plus the activations)."""
        trainable = self.trainable_parameters
        compute_bytes = 2 if self.precision == "bf16" else 4
        if strategy == "ddp":
            shards = 1
            # Gradient buckets are a second copy of the gradients unless gradient_as_bucket_view
            # (PyTorch DDP docs); autocast keeps a bf16 copy of each trainable weight it casts
            # until backward has used it.
            working = 4.0 * trainable + (2.0 * trainable if self.precision == "bf16" else 0.0)
        elif strategy == "fsdp":
            shards = self.gpus
            # FSDP2 keeps the unblocked parameters gathered (the root) and BLOCKS_IN_FLIGHT blocks,
            # each with gathered weights and unsharded gradients in the compute dtype and, under
            # bf16, the fp32 copy of the gradients it reduce-scatters (MixedPrecisionPolicy(reduce_dtype=fp32)).
            unsharded = self.unblocked_parameters + BLOCKS_IN_FLIGHT * self.largest_block_parameters
            working = unsharded * (2.0 * compute_bytes + (4 if self.precision == "bf16" else 0))
        else:
            raise ConfigError(f"train.strategy: {strategy!r} is not one of ddp, fsdp")
        if checkpointing:
            activations = self.step_checkpointed_activation_bytes + self.batch_size * self.checkpointed_activation_bytes
        else:
            activations = self.step_activation_bytes + self.batch_size * self.activation_bytes
        return MemoryEstimate(
            strategy, checkpointing, 4.0 * self.parameters / shards, 4.0 * trainable / shards,
            4.0 * self.optimizer_slots * trainable / shards, self.buffer_bytes, working, activations,
            self.gpu.memory_bytes,
        )

    @property
    def memory(self) -> list[MemoryEstimate]:
        """DDP, DDP with checkpointing, FSDP, FSDP with checkpointing."""
        return [self.memory_for(strategy, checkpointing) for strategy in ("ddp", "fsdp") for checkpointing in (False, True)]

    def on(self, gpus: int | None = None, gpu: str | None = None, images: int | None = None,
           epochs: float | None = None, utilisation: float | None = None) -> Plan:
        """The same run on other machines or data: the measured figures stay, memory and time follow."""
        gpu_name = gpu or next(name for name, model in GPUS.items() if model == self.gpu)
        values = {"gpus": gpus or self.gpus, "images": images or self.images, "epochs": epochs or self.epochs,
                  "utilisation": utilisation or self.utilisation}
        _check_values(values["gpus"], gpu_name, values["images"], values["epochs"], values["utilisation"])
        return dataclasses.replace(self, gpu=GPUS[gpu_name], **values)

    @property
    def assumptions(self) -> list[str]:
        """What the figures rest on, one line each."""
        bf16 = self.precision == "bf16"
        return [
            f"precision {self.precision}: " + ("bf16 compute and activations, fp32 master weights, gradients and "
                                               "optimiser state, gradients reduced in fp32" if bf16 else "fp32 throughout")
            + (" (the V100 has no bf16: its fp16 tensor peak, as SEER used)" if bf16 and self.gpu == GPUS["v100"] else ""),
            f"optimiser {self.optimizer}: {self.optimizer_slots} fp32 state tensor(s) per trainable parameter",
            ("FLOPs: convolutions, matrix products and attention (2 x multiply-adds), forward and backward as autograd "
            "runs them (no backward through a frozen teacher); element-wise work not counted"),
            ("activations: what autograd saves, each storage once; checkpointing keeps each block's input and "
            "recomputes one block at a time"),
            "DDP: gradient buckets as a second gradient copy" + (", autocast's bf16 weight copies" if bf16 else ""),
            (f"FSDP: parameters, gradients and optimiser state sharded over {self.gpus} GPU(s); the unblocked "
            f"parameters and {BLOCKS_IN_FLIGHT} blocks unsharded at a time"),
            f"fits: the estimate leaves {HEADROOM:.0%} of the GPU's memory free (CUDA context, NCCL, fragmentation)",
            f"time: {self.utilisation:.0%} of the dense {self.precision} peak sustained"
            + (" (the default, calibrated on SEER: plan.DEFAULT_UTILISATION)" if self.utilisation == DEFAULT_UTILISATION else ""),
            *self.notes,
        ]


def implied_utilisation(plan: Plan, seconds: float) -> float:
    """The share of the peak a run sustained if it took ``seconds`` for the plan's data."""
    return plan.total_flops / (plan.peak_flops * seconds)


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class _Resolved:
    config: Config
    crops: list[tuple[int, int]]  # (size, count), global crops first
    channels: int
    image_size: int


def _resolve(config: Config, images: int) -> _Resolved:
    """The run's values as ``runs.resolve`` fills them, without data: the method's options
    (those sized to the data sized to ``images``), its backbone, the training recipe, the
    crops (the recipe's, scaled to 224 px images when neither ``augment.global_size`` nor ``data.size`` says)."""
    cls = method_class(config.method["name"])
    if cls.modality != "image":
        raise ConfigError(f"method.name: plan estimates image methods; {cls.name!r} learns from {cls.modality}")
    backbone_name = config.backbone.name or cls.default_backbone or IMAGE_BACKBONE
    recipe_name = config.augment.recipe or cls.default_recipe
    if recipe_name not in RECIPES:
        raise ConfigError(f"augment.recipe: unknown recipe {recipe_name!r}; available: {', '.join(RECIPES)}")
    recipe = RECIPES[recipe_name]
    global_size = config.augment.global_size or crop_size(recipe.global_size, config.data.size or 224)
    local_size = config.augment.local_size or max(4, round(global_size * LOCAL_SIZE_RATIO))
    local_crops = recipe.local_crops if config.augment.local_crops is None else config.augment.local_crops
    crops = [(global_size, recipe.global_crops)] + ([(local_size, local_crops)] if local_crops else [])
    resolved = dataclasses.replace(
        config,
        method=cls.fit_options(cls.resolve_options(config.method), images),
        backbone=dataclasses.replace(config.backbone, name=backbone_name,
                                     pool=new_run_pool(backbone_name, config.backbone.pool, cls.default_pool)),
        train=_resolve_train(config.train, cls.train_recipe),
    )
    return _Resolved(resolved, crops, config.data.channels or 3, config.data.size or config.augment.global_size or 224)


def _resolve_train(train: TrainConfig, recipe: dict[str, Any]) -> TrainConfig:
    """The training values a plan reads, filled from the method's recipe as ``runs.resolve_train`` does."""
    return dataclasses.replace(
        train,
        batch_size=train.batch_size or recipe.get("batch_size", DEFAULT_BATCH_SIZE),
        optimizer=train.optimizer or recipe["optimizer"],
        epochs=train.epochs if (train.epochs or train.budget) else recipe["epochs"],
    )


def planned_model(config: Config, images: int = DEFAULT_IMAGES, device: str | torch.device = "meta") -> tuple[Method, list[tuple[int, int]]]:
    """The run's method on its backbone, built on ``device`` (meta: no memory), in training
    mode, and its crops as (size, count), global crops first."""
    resolved = _resolve(config, images)
    backbone_config = resolved.config.backbone
    with torch.device(device):
        backbone, dim = build_backbone(backbone_config.name, resolved.channels, backbone_config.width, resolved.image_size,
                                       backbone_config.pool)
        method = build_method(resolved.config.method, backbone, dim)
    method.train()
    return method, resolved.crops


# ---------------------------------------------------------------------------- counting
def count_parameters(method: Method) -> dict[str, int]:
    """Exact parameter counts of a (meta-built) method: ``parameters`` (every tensor once,
    an EMA teacher's included), ``trainable_parameters`` (those with a gradient and optimiser
    state), ``backbone_parameters``, ``largest_block_parameters`` (over the student's and a
    teacher's blocks: FSDP's largest unit) and ``unblocked_parameters`` (trainable ones outside
    the student's blocks: stem, heads, prototypes, which FSDP keeps gathered at the root)."""
    in_blocks = {id(p) for block in blocks(method.backbone) for p in block.parameters()}
    parameters = list(method.parameters())
    return {
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "backbone_parameters": sum(p.numel() for p in method.backbone.parameters()),
        "largest_block_parameters": max((sum(p.numel() for p in b.parameters()) for b in blocks(method)), default=0),
        "unblocked_parameters": sum(p.numel() for p in parameters if p.requires_grad and id(p) not in in_blocks),
    }


def _matmul_flops(a: torch.Size, b: torch.Size) -> int:
    """2 m k n for [.., m, k] @ [.., k, n], batch dimensions multiplied in."""
    return 2 * math.prod(a) * b[-1]


def _attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """softmax(Q K^T) V over [B, H, T, d]: two matrix products, 2 B H Tq Tk (d + d_v)."""
    batch_heads, queries, keys = math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2]
    return 2 * batch_heads * queries * keys * (q.shape[-1] + v.shape[-1])


_FUSED_ATTENTION = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"}


def _operation_flops(name: str, args: tuple, out: Any) -> float:
    """FLOPs of one aten operation from its shapes (0 for the element-wise rest)."""
    if name == "convolution":
        # each output element (input element, when transposed): Cin/groups x kernel multiply-adds
        weight, transposed = args[1], args[6]
        return 2.0 * (args[0] if transposed else out).numel() * math.prod(weight.shape[1:])
    if name == "convolution_backward":
        # the input gradient and the weight gradient each cost the forward, when autograd asks for them
        grad_output, inputs, weight, transposed, output_mask = args[0], args[1], args[2], args[7], args[10]
        one = 2.0 * (inputs if transposed else grad_output).numel() * math.prod(weight.shape[1:])
        return one * (int(output_mask[0]) + int(output_mask[1]))
    if name in ("mm", "bmm"):
        return float(_matmul_flops(args[0].shape, args[1].shape))
    if name in ("addmm", "baddbmm"):
        return float(_matmul_flops(args[1].shape, args[2].shape))
    if name in _FUSED_ATTENTION:
        return float(_attention_flops(args[0], args[1], args[2]))
    if name.removesuffix("_backward") in _FUSED_ATTENTION:
        # dV, dP, dQ, dK: twice the forward's two products (grad_out, q, k, v lead the arguments)
        return 2.0 * _attention_flops(args[1], args[2], args[3])
    return 0.0


class _FlopCounter(TorchDispatchMode):
    """Sums :func:`_operation_flops` into forward and backward (``in_backward``); ``recompute``
    collects the forward FLOPs run inside a checkpointable block (``in_block``)."""

    def __init__(self) -> None:
        super().__init__()
        self.forward = self.backward = self.recompute = 0.0
        self.in_block = self.in_backward = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flops = _operation_flops(func.overloadpacket.__name__, args, out)
        if self.in_backward:
            self.backward += flops
        else:
            self.forward += flops
            if self.in_block:
                self.recompute += flops
        return out


class _FusedAttentionOnMeta(TorchFunctionMode):
    """On the meta device ``scaled_dot_product_attention`` takes the math path, which saves the
    T x T attention matrix; GPUs (and CPUs) run a flash kernel that saves only the output and
    the log-sum-exp. Route meta calls to the flash kernel's meta implementation, so that what
    is saved, and counted, is what a GPU keeps."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args[0].is_meta:
            query, key, value = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            causal = kwargs.get("is_causal", args[5] if len(args) > 5 else False)
            scale = kwargs.get("scale")
            if mask is not None and mask.dtype == torch.bool:  # the kernel takes an additive mask
                mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, 0.0, bool(causal), attn_mask=mask, scale=scale)[0]
        return func(*args, **kwargs)


def _storage_key(tensor: torch.Tensor) -> int:
    """The identity of a tensor's storage (its StorageImpl): shared by views and in-place
    results on every device, the meta device included, where there is no data pointer."""
    return tensor.untyped_storage()._cdata


@dataclass
class _Saved:
    """Saved activations of one measured step: bytes per storage, where they were saved."""

    nbytes: dict[int, float] = field(default_factory=dict)
    outside: set[int] = field(default_factory=set)  # saved outside every checkpointable block
    block_inputs: set[int] = field(default_factory=set)
    block_calls: list[set[int]] = field(default_factory=list)  # what each block call saved

    def total(self) -> float:
        return sum(self.nbytes.values())

    def checkpointed(self) -> float:
        """Kept: what lies outside the blocks and each block's input; then one block's
        activations at a time while it is recomputed (the largest)."""
        kept = self.outside | self.block_inputs
        largest_call = max((sum(self.nbytes[key] for key in call) for call in self.block_calls), default=0.0)
        return sum(self.nbytes[key] for key in kept) + largest_call


@dataclass
class _Measurement:
    forward: float
    backward: float
    recompute: float
    activations: float
    checkpointed_activations: float


def _measure_step(method: Method, student_blocks: list[nn.Module], run: Callable[[], torch.Tensor | None],
                  bytes_per_float: float | None) -> _Measurement:
    """Run ``run`` (a forward that returns the loss, or None for no backward) and its backward,
    counting FLOPs and saved activations. ``bytes_per_float``: the size of a floating-point
    activation in the run's precision, None to keep each tensor's own."""
    excluded = {_storage_key(t) for t in [*method.parameters(), *method.buffers()]}
    saved = _Saved()
    keep_alive: list[torch.Tensor] = []  # a freed storage's address could be reused: hold them all
    current: list[set[int]] = []  # the block call being run, if any

    def size_of(tensor: torch.Tensor) -> float:
        nbytes = tensor.untyped_storage().nbytes()
        if bytes_per_float is not None and tensor.is_floating_point():
            return nbytes / tensor.element_size() * bytes_per_float
        return float(nbytes)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            keep_alive.append(tensor)
            saved.nbytes.setdefault(key, size_of(tensor))
            (current[-1] if current else saved.outside).add(key)
        return tensor

    counter = _FlopCounter()

    def enter_block(module: nn.Module, inputs: tuple) -> None:
        if torch.is_grad_enabled():  # a no-grad pass (an EMA teacher) is neither saved nor recomputed
            tensor = inputs[0]
            key = _storage_key(tensor)
            keep_alive.append(tensor)
            saved.nbytes.setdefault(key, size_of(tensor))
            saved.block_inputs.add(key)
            current.append(set())
            counter.in_block = True

    def leave_block(module: nn.Module, inputs: tuple, output: Any) -> None:
        if current and torch.is_grad_enabled():
            saved.block_calls.append(current.pop())
            counter.in_block = bool(current)

    handles = [h for block in student_blocks for h in (block.register_forward_pre_hook(enter_block),
                                                block.register_forward_hook(leave_block))]
    try:
        # Boolean indexing in the losses has no meta shape; assuming every element selected
        # over-counts only loss-sized [crops x crops x B] tensors.
        with fx_config.patch(meta_nonzero_assume_all_nonzero=True), _FusedAttentionOnMeta(), counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss = run()
            if loss is not None:
                counter.in_backward = True
                loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        for parameter in method.parameters():
            parameter.grad = None
    return _Measurement(counter.forward, counter.backward, counter.recompute, saved.total(), saved.checkpointed())


def _per_image(measure: Callable[[int], _Measurement]) -> tuple[_Measurement, _Measurement]:
    """(per image, per step) from two batch sizes: every figure is a + b x batch."""
    small, large = (measure(batch) for batch in _MEASURED_BATCHES)
    span = _MEASURED_BATCHES[1] - _MEASURED_BATCHES[0]
    names = [f.name for f in dataclasses.fields(_Measurement)]
    slope = {name: (getattr(large, name) - getattr(small, name)) / span for name in names}
    fixed = {name: max(0.0, getattr(small, name) - slope[name] * _MEASURED_BATCHES[0]) for name in names}
    return _Measurement(**slope), _Measurement(**fixed)


def measure_training_step(method: Method, crops: list[tuple[int, int]], batch: int, channels: int = 3,
                          bytes_per_float: float | None = None) -> _Measurement:
    """FLOPs and saved activations of one training step of ``method`` on ``batch`` images with
    the given crops, on the device of its parameters (the meta device for plans)."""
    device = next(method.parameters()).device
    views = [torch.zeros(batch, channels, size, size, device=device) for size, count in crops for _ in range(count)]
    step = Batch(indices=torch.arange(batch, device=device))  # memory banks index by them
    method.on_step_start(StepInfo(step=0, total_steps=1_000, steps_per_epoch=100))
    try:
        return _measure_step(method, blocks(method.backbone), lambda: method(views, step).loss, bytes_per_float)
    except (ValueError, RuntimeError, NotImplementedError) as error:
        if device.type != "meta":
            raise
        # e.g. PAWS reads its labelled support batch's values, which the meta device has not got
        raise ConfigError(f"method.name: plan cannot run a {method.name!r} step on the meta device: {error}") from error


def _crop_costs(method: Method, crops: list[tuple[int, int]], channels: int, bytes_per_float: float) -> list[CropCost]:
    """The backbone's forward FLOPs and saved activations for one crop of each size: half of
    a forward of two (BatchNorm needs two values per channel where the maps reach 1 x 1)."""
    student_blocks = blocks(method.backbone)
    costs = []
    for size, count in crops:
        images = torch.zeros(2, channels, size, size, device="meta")
        two = _measure_step(method, student_blocks, lambda images=images: _no_backward(method.backbone(images)), bytes_per_float)
        costs.append(CropCost(size, count, two.forward / 2, two.activations / 2))
    return costs


def _no_backward(_: torch.Tensor) -> None:
    return None


# ---------------------------------------------------------------------------- the plan
def _check_values(gpus: int, gpu: str, images: int | None, epochs: float | None, utilisation: float) -> None:
    if gpu not in GPUS:
        raise ConfigError(f"gpu: unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    if not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"gpus must be a positive integer, got {gpus!r}")
    if images is not None and images < 1:
        raise ConfigError(f"images must be a positive integer, got {images!r}")
    if epochs is not None and not epochs > 0:
        raise ConfigError(f"epochs must be positive, got {epochs!r}")
    if not 0 < utilisation <= 1:
        raise ConfigError(f"utilisation must be in (0, 1], got {utilisation!r}")


def _check(config: Config, gpus: int, gpu: str, images: int | None, epochs: float | None, utilisation: float) -> None:
    _check_values(gpus, gpu, images, epochs, utilisation)
    if config.train.batch_size is not None and config.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be a positive integer, got {config.train.batch_size}")


def estimate(config: Config, gpus: int, gpu: str = "a100", images: int | None = None, epochs: float | None = None,
             utilisation: float = DEFAULT_UTILISATION) -> Plan:
    """The cost of training ``config`` on ``gpus`` GPUs of model ``gpu``: parameters, memory
    per GPU (DDP and FSDP, with and without activation checkpointing), FLOPs per image and
    the time for ``images`` (default: ImageNet-1k's) x ``epochs`` (default: the config's, else
    the method's recipe) at ``utilisation`` of the dense peak. Bad values: :class:`ConfigError`."""
    _check(config, gpus, gpu, images, epochs, utilisation)
    images = images or DEFAULT_IMAGES
    resolved = _resolve(config, images)
    train = resolved.config.train
    epochs = epochs or float(train.epochs or 0)
    if not epochs:
        raise ConfigError("train.epochs: a run set by train.budget alone has no length to plan; give epochs")
    precision = "fp32" if train.precision == "fp32" else "bf16"  # auto = bf16 on CUDA
    bytes_per_float = 2.0 if precision == "bf16" else 4.0
    optimizer_slots = _OPTIMIZER_SLOTS[train.optimizer]
    if train.optimizer == "sgd" and train.momentum == 0:
        optimizer_slots = 0

    method, crops = planned_model(config, images)
    values = count_parameters(method)

    per_image, per_step = _per_image(
        lambda batch: measure_training_step(method, crops, batch, resolved.channels, bytes_per_float))
    crop_costs = _crop_costs(method, crops, resolved.channels, bytes_per_float)
    notes = [f"method.{key}={resolved.config.method[key]}: sized to {images:,} images, as a run on them would"
             for key in method_class(resolved.config.method["name"]).data_sized_options if not config.method.get(key)]
    return Plan(
        method=resolved.config.method["name"], backbone=resolved.config.backbone.name, recipe=config.recipe,
        crops=crop_costs, batch_size=train.batch_size, optimizer=train.optimizer, precision=precision,
        activation_checkpointing=train.activation_checkpointing, gpus=gpus, gpu=GPUS[gpu], images=images,
        epochs=float(epochs), utilisation=utilisation,
        **values,
        buffer_bytes=float(sum(b.numel() * b.element_size() for b in method.buffers())),
        forward_flops=per_image.forward, backward_flops=per_image.backward, recompute_flops=per_image.recompute,
        activation_bytes=per_image.activations, checkpointed_activation_bytes=per_image.checkpointed_activations,
        step_forward_flops=per_step.forward, step_backward_flops=per_step.backward,
        step_recompute_flops=per_step.recompute, step_activation_bytes=per_step.activations,
        step_checkpointed_activation_bytes=per_step.checkpointed_activations,
        optimizer_slots=optimizer_slots, notes=notes,
    )


# ---------------------------------------------------------------------------- the table
def _bytes(value: float) -> str:
    return f"{value / GiB:,.2f} GiB"


def _flops(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:,.2f} {unit}FLOP"
    return f"{value:,.0f} FLOP"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:,.1f} hours"
    return f"{seconds / 60:,.1f} minutes"


def format_plan(plan: Plan) -> str:
    """The plan as a readable table, at most 100 columns wide."""
    crops = " + ".join(f"{c.count}x{c.size}" for c in plan.crops)
    lines = [
        f"{plan.method} on {plan.backbone}" + (f" (recipe {plan.recipe})" if plan.recipe else "")
        + f", crops {crops}, batch {plan.batch_size} per GPU, {plan.optimizer}, {plan.precision}",
        (f"{plan.gpus} x {plan.gpu.name} ({plan.gpu.peak(plan.precision) / 1e12:,.0f} TFLOP/s dense {plan.precision}, "
        f"{plan.gpu.memory_bytes / GiB:,.0f} GiB)"),
        "",
        f"{'parameters':<44}{plan.parameters:>20,}",
        f"{'  trainable':<44}{plan.trainable_parameters:>20,}",
        f"{'  backbone':<44}{plan.backbone_parameters:>20,}",
        f"{'  largest block':<44}{plan.largest_block_parameters:>20,}",
        f"{'optimiser state (' + plan.optimizer + ', fp32)':<44}{_bytes(plan.memory[0].optimizer_state):>20}",
        "",
        f"{'per image (all crops)':<44}{'':>20}",
        f"{'  forward':<44}{_flops(plan.forward_flops):>20}",
        f"{'  backward':<44}{_flops(plan.backward_flops):>20}",
        f"{'  recompute (activation checkpointing)':<44}{_flops(plan.recompute_flops):>20}",
        f"{'  activations, ' + plan.precision:<44}{plan.activation_bytes / 2**20:>16,.1f} MiB",
        f"{'  activations, checkpointed':<44}{plan.checkpointed_activation_bytes / 2**20:>16,.1f} MiB",
    ]
    for crop in plan.crops:
        lines.append(f"{f'  one {crop.size} px crop: backbone forward':<44}{_flops(crop.forward_flops):>20}"
                     f"{crop.activation_bytes / 2**20:>12,.1f} MiB")
    lines += ["", f"{'memory per GPU':<26}{'DDP':>18}{'DDP + ckpt':>18}{'FSDP':>18}{'FSDP + ckpt':>18}"]
    order = [plan.memory_for(s, c) for s in ("ddp", "fsdp") for c in (False, True)]
    for label, attribute in (("weights (fp32)", "parameters"), ("gradients (fp32)", "gradients"),
                             ("optimiser state", "optimizer_state"), ("buffers", "buffers"),
                             ("working copies", "working"), (f"activations x {plan.batch_size}", "activations"),
                             ("total", "total")):
        lines.append(f"{label:<26}" + "".join(f"{_bytes(getattr(m, attribute)):>18}" for m in order))
    lines.append(f"{'fits (' + format(1 - HEADROOM, '.0%') + ' of memory)':<26}"
                 + "".join(f"{'yes' if m.fits else 'no':>18}" for m in order))
    checkpointing = " with activation checkpointing" if plan.activation_checkpointing else ""
    lines += [
        "",
        (f"{plan.images:,} images x {plan.epochs:g} epoch{'' if plan.epochs == 1 else 's'} = {plan.steps:,} steps of {plan.gpus * plan.batch_size:,} images"
        f"{checkpointing}"),
        f"{'training FLOPs':<44}{_flops(plan.total_flops):>20}",
        f"{f'time at {plan.utilisation:.0%} of peak':<44}{_duration(plan.seconds):>20}",
        "",
        "assumptions:",
        *(f"- {line}" for line in plan.assumptions),
    ]
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 100) -> str:
    if len(line) <= width:
        return line
    words, out, current = line.split(" "), [], ""
    indent = "  " if line.startswith("- ") else ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = indent + word
        else:
            current = f"{current} {word}" if current else word
    return "\n".join([*out, current])
