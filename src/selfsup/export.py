"""``selfsup export``: a finished run's encoder as a file that runs without selfsup.

Three formats, each carrying the preprocessing in the file's own metadata, so that the
file alone says how to turn an image (or a text) into its input:

* ``onnx``: the feature extractor as an ONNX graph with a dynamic batch axis (and, for
  text, a dynamic sequence axis), exported through ``torch.export`` (the TorchScript-based
  exporter is deprecated in torch 2.13) and checked with ``onnx.checker``. The metadata is
  JSON under the ``selfsup`` key of ``metadata_props``, plus plain keys for quick reading.
* ``pt2``: the same extractor as a ``torch.export`` program (``torch.export.load`` runs it,
  no selfsup needed), metadata in its ``selfsup.json`` extra file. ``torchscript`` names
  this format too: ``torch.jit.trace`` and ``script`` are deprecated in torch 2.13 and
  announced for removal, and ``torch.export`` is their replacement.
* ``safetensors``: the weights alone (``backbone.*``, with ``projector=True`` also
  ``projector.*``), metadata as safetensors' string -> string header; for rebuilding the
  model in PyTorch.

An image model takes the normalised float tensor ``[B, C, H, W]`` that ``Method.embed``
reads (what ``ViewMaker.eval_view`` makes of a uint8 image) and returns the backbone
features, or with ``projector=True`` the projection head's output. A text model takes
``input_ids`` and ``attention_mask`` ``[B, T]`` (int64, as the run's ``tokenizer.json``
encodes ``[CLS] text [SEP]``, padded with 0) and returns the sentence embedding of
``Method.embed``; the tokenizer is copied beside the file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import selfsup
from selfsup.backbones.text import StaticEmbedding, TransformerEncoder
from selfsup.backbones.transformer import attention_mask_for
from selfsup.config import Config, ConfigError
from selfsup.data.tokenizer import FIRST_REGULAR_ID, PAD_ID, TOKENIZER_FILE
from selfsup.files import write_atomic
from selfsup.methods import Method
from selfsup.methods.language import MaskedLanguageModel, mean_pool
from selfsup.methods.static import StaticWordModel
from selfsup.modalities.base import LoadedRun

# Format -> file suffix.
FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
# The name for the PyTorch program format, written with torch.export (see the module docstring).
FORMAT_ALIASES = {"torchscript": "pt2"}
METADATA_KEY = "selfsup"  # ONNX metadata_props key / safetensors header key of the JSON metadata
PT2_METADATA_FILE = "selfsup.json"
# Version of the metadata's layout, for readers of files written by later versions.
METADATA_VERSION = 1
EXPORT_DIR = "export"
_EXAMPLE_BATCH = 2  # torch.export treats sizes 0 and 1 as special: trace at 2, dynamic from 1


# ---------------------------------------------------------------------------- the exported modules
class ImageEncoder(nn.Module):
    """Normalised images [B, C, H, W] -> features [B, D]: the backbone (what ``Method.embed``
    gives evaluation), then the projection head when one is given (its raw output, before
    any normalisation a method's loss applies)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return features if self.projector is None else self.projector(features)


class TransformerSentenceEncoder(nn.Module):
    """(input_ids, attention_mask [B, T]) -> sentence embeddings [B, D]: the mean of the
    encoder's contextual states over the real tokens, as ``MaskedLanguageModel.embed``.

    Positions the mask marks as padding count as [PAD]. The encoder runs on the padded
    grid: ``TransformerEncoder.forward`` drops padding rows by a data-dependent branch and
    ``nonzero``, which ``torch.export`` cannot follow; padding keys are masked out of
    attention, so the real tokens' states are the same, and the mean ignores the others.
    """

    def __init__(self, backbone: TransformerEncoder):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, PAD_ID))
        encoder = self.backbone
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = encoder.embedding_norm(encoder.token_embedding(ids) + encoder.position_embedding(positions))
        mask = attention_mask_for(ids != PAD_ID, encoder.causal)
        for block in encoder.blocks:
            x = block(x, mask, encoder.causal)
        return mean_pool(encoder.norm(x), ids)


class StaticSentenceEncoder(nn.Module):
    """(input_ids, attention_mask [B, T]) -> the mean word vector of the regular tokens
    ([CLS], [SEP] and padding left out), as ``StaticWordModel.embed``."""

    def __init__(self, backbone: StaticEmbedding):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        real = (attention_mask.bool() & (input_ids >= FIRST_REGULAR_ID)).unsqueeze(-1).float()
        return (self.backbone(input_ids) * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)


# ---------------------------------------------------------------------------- what to export
def projector_of(method: Method) -> nn.Module | None:
    """The method's projection head on the backbone (DINO's is the MLP of its head), or None."""
    projector = getattr(method, "projector", None)
    if projector is None and isinstance(getattr(method, "head", None), nn.Module):
        projector = getattr(method.head, "mlp", None)
    return projector if isinstance(projector, nn.Module) else None


def check_format(format: str) -> str:
    """The canonical name of an export format (``torchscript`` -> ``pt2``); ConfigError for others."""
    canonical = FORMAT_ALIASES.get(format, format)
    if canonical not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: onnx, pt2 (or torchscript), safetensors")
    return canonical


def default_export_path(run: LoadedRun, format: str, projector: bool = False) -> Path:
    """``RUN_DIR/export/<backbone>[-projector].<suffix>``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.config.backbone.name or "backbone")  # a user's module:callable
    return run.run_dir / EXPORT_DIR / f"{name}{'-projector' if projector else ''}{FORMATS[check_format(format)]}"


def _feature_extractor(run: LoadedRun, projector: bool) -> nn.Module:
    """A float32 CPU copy of the part of the run's model that makes its features (the run's
    own method is left on its device as it is)."""
    method = run.method
    if method.modality == "image":
        head = projector_of(method) if projector else None
        return copy.deepcopy(ImageEncoder(method.backbone, head)).float().cpu().eval()
    if isinstance(method, MaskedLanguageModel) and isinstance(method.backbone, TransformerEncoder):
        module: nn.Module = TransformerSentenceEncoder(method.backbone)
    elif isinstance(method, StaticWordModel) and isinstance(method.backbone, StaticEmbedding):
        module = StaticSentenceEncoder(method.backbone)
    else:
        raise ConfigError(f"method.name={method.name}: exporting its sentence embedding is not supported")
    return copy.deepcopy(module).float().cpu().eval()


def _check_request(run: LoadedRun, projector: bool) -> None:
    method = run.method
    if method.modality == "video":
        raise ConfigError(f"{run.run_dir} is a video run ({method.name}); export supports image and text runs only")
    if method.modality not in ("image", "text"):
        raise ConfigError(f"{run.run_dir}: export supports image and text runs, not {method.modality!r}")
    if projector and (method.modality != "image" or projector_of(method) is None):
        raise ConfigError(f"method.name={method.name} has no projector to export; export the backbone alone (projector=False)")


# ---------------------------------------------------------------------------- metadata
def input_size(config: Config) -> int:
    """The side of the images the exported model reads: what evaluation read (runs from
    before ``augment.eval_size`` existed read their global crop size)."""
    return config.augment.eval_size or config.augment.global_size


def image_metadata(config: Config) -> dict[str, Any]:
    """How an image becomes the model's input, as the run's loader and ``eval_view`` do it."""
    size, stored = input_size(config), config.data.size
    channels = config.data.channels
    resize = f"resize the shorter side to {stored} px (bilinear, antialiased) and centre-crop {stored}x{stored}"
    if stored != size:
        resize += f", then resize to {size}x{size} (bilinear, antialiased when shrinking)"
    return {
        "channels": channels,
        "mode": "RGB" if channels == 3 else "L",  # Pillow's mode: RGB, or 8-bit grey
        "size": size,
        "resize": resize,
        "value_range": [0, 1],  # 8-bit pixels divided by 255, then normalised
        "mean": list(config.augment.mean),
        "std": list(config.augment.std),
        "normalise": "(pixel / 255 - mean) / std per channel",
        "layout": "NCHW",
    }


def text_metadata(config: Config) -> dict[str, Any]:
    """How a text becomes ``input_ids`` and ``attention_mask``, as the run encoded its documents."""
    return {
        "tokenizer": TOKENIZER_FILE,
        "template": "[CLS] text [SEP]",
        "max_length": config.text.max_length,
        "truncate": "to max_length, keeping [SEP]",
        "pad_id": PAD_ID,
        "attention_mask": "1 at real tokens, 0 at padding",
    }


def build_metadata(run: LoadedRun, format: str, projector: bool, output_dim: int) -> dict[str, Any]:
    """Everything a user of the file needs to know: what made it, its input, its preprocessing, its output."""
    config, method = run.config, run.method
    if method.modality == "image":
        size, channels = input_size(config), config.data.channels
        inputs = {"images": ["batch", channels, size, size]}
        preprocessing = image_metadata(config)
        output = "projection head output (before the loss's normalisation)" if projector else "backbone features (what evaluation reads)"
    else:
        inputs = {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]}
        preprocessing = text_metadata(config)
        output = "sentence embedding (Method.embed)"
    return {
        "version": METADATA_VERSION,
        "selfsup_version": selfsup.__version__,
        "format": format,
        "modality": method.modality,
        "method": method.name,
        "backbone": config.backbone.name,
        "step": run.state.get("step"),
        "projector": projector,
        "inputs": inputs,
        "input_dtype": "float32" if method.modality == "image" else "int64",
        "preprocessing": preprocessing,
        "output": {"name": "features", "dim": output_dim, "what": output},
    }


def plain_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """The metadata as flat string -> string pairs (ONNX metadata_props, safetensors header):
    the whole JSON under :data:`METADATA_KEY` and the most used values beside it."""
    flat = {METADATA_KEY: json.dumps(metadata)}
    keys = ("modality", "method", "backbone", "projector")
    flat.update({key: str(metadata[key]) for key in keys})
    flat["output_dim"] = str(metadata["output"]["dim"])
    flat.update({key: json.dumps(value) if isinstance(value, list) else str(value) for key, value in metadata["preprocessing"].items()})
    return flat


# ---------------------------------------------------------------------------- export
def _example_inputs(run: LoadedRun) -> tuple[tuple[torch.Tensor, ...], dict[str, dict[int, Any]]]:
    """Example inputs to trace with and the dynamic axes of each (batch; for text, tokens too)."""
    config = run.config
    batch = torch.export.Dim("batch", min=1)
    if run.method.modality == "image":
        size = input_size(config)
        images = torch.randn(_EXAMPLE_BATCH, config.data.channels, size, size, generator=torch.Generator().manual_seed(0))
        return (images,), {"images": {0: batch}}
    length = config.text.max_length
    tokens = torch.export.Dim("tokens", min=1, max=length)  # the position table holds max_length rows
    ids = torch.full((_EXAMPLE_BATCH, length), FIRST_REGULAR_ID, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0  # one padded row, so that the mask is not folded away
    return (ids, mask), {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}


def export_program(model: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: dict, backbone: str) -> torch.export.ExportedProgram:
    """``model`` as a ``torch.export`` program whose batch (and token) axes stay dynamic.

    Non-strict export first (it traces Python as it runs); strict export (TorchDynamo)
    when that fails: it follows ``len(images)`` symbolically, where non-strict export
    fixes the batch at the example's size (the ViTs' class token). torch.onnx's own
    fallbacks would quietly export a fixed batch instead, so the program is made here.
    """
    failures = []
    for strict in (False, True):
        try:
            with torch.no_grad(), _quiet_exporter():
                return torch.export.export(model, inputs, dynamic_shapes=dynamic, strict=strict)
        except Exception as error:  # torch.export raises many types; each means "not exportable this way"
            failures.append(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    raise ConfigError(f"backbone.name={backbone} cannot be exported with dynamic {' and '.join(_axis_names(dynamic))} axes: {failures[-1]}")


def _axis_names(dynamic: dict) -> list[str]:
    return sorted({dim.__name__ for axes in dynamic.values() for dim in axes.values()})


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what torch's exporters say about their own internals (a deprecated pytree
    class, torchvision operators they skip, axis names they merge): nothing a user can act on."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)


def _onnx_bytes(program: torch.export.ExportedProgram, dynamic: dict, metadata: dict[str, Any]) -> bytes:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as error:
        raise ConfigError(f"export format onnx needs the onnx and onnxscript packages ({error}): pip install onnx onnxscript") from error
    with torch.no_grad(), _quiet_exporter():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=list(dynamic), output_names=["features"],
                                         dynamic_shapes=dynamic, verbose=False, external_data=False)
    proto = onnx_program.model_proto
    for key, value in plain_metadata(metadata).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _pt2_bytes(program: torch.export.ExportedProgram, metadata: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _safetensors_bytes(model: nn.Module, metadata: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    # Own copies: safetensors refuses tensors that share memory (tied or sliced weights).
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    return save(tensors, metadata=plain_metadata(metadata))


def export_run(run: LoadedRun, format: str, out: Path | None = None, projector: bool = False) -> dict[str, Any]:
    """Write the run's feature extractor to ``out`` (default
    :func:`default_export_path`) in ``format`` (onnx, pt2 or its alias torchscript,
    safetensors), with its preprocessing in the file's metadata; a text run's
    ``tokenizer.json`` is copied beside it. Returns what ``selfsup export`` prints: the
    file, the format, the input shapes, the output dimension and the metadata.

    Raises ConfigError for an unknown format, ``projector=True`` on a method without a
    projector, and video runs (not supported).
    """
    format = check_format(format)
    _check_request(run, projector)
    out = Path(out) if out is not None else default_export_path(run, format, projector)
    model = _feature_extractor(run, projector)
    inputs, dynamic = _example_inputs(run)
    with torch.no_grad():
        output_dim = int(model(*inputs).shape[1])
    metadata = build_metadata(run, format, projector, output_dim)
    if format in ("onnx", "pt2"):
        program = export_program(model, inputs, dynamic, run.config.backbone.name)
        data = _onnx_bytes(program, dynamic, metadata) if format == "onnx" else _pt2_bytes(program, metadata)
    else:
        # backbone.* (and, with the projector, projector.*): the modules' own names in the run.
        data = _safetensors_bytes(model, metadata)
    write_atomic(out, data)
    result = {
        "file": str(out),
        "format": format,
        "inputs": metadata["inputs"],
        "output_dim": output_dim,
        "metadata": metadata,
    }
    if run.method.modality == "text":
        tokenizer = out.parent / TOKENIZER_FILE
        write_atomic(tokenizer, (run.run_dir / TOKENIZER_FILE).read_bytes())
        result["tokenizer"] = str(tokenizer)
    return result


def read_metadata(path: Path) -> dict[str, Any]:
    """The selfsup metadata of an exported file (any of the three formats)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    if path.suffix == ".pt2":
        extra = {PT2_METADATA_FILE: ""}
        torch.export.load(path, extra_files=extra)
        return json.loads(extra[PT2_METADATA_FILE])
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()[METADATA_KEY])
    raise ConfigError(f"{path}: not an exported file (.onnx, .pt2 or .safetensors)")
