"""The typed run configuration: dataclasses, loaded from YAML, overridden by ``key=value``.

Every run writes its fully resolved configuration to ``config.yaml``; values left to be
chosen (``null`` in a section below, e.g. the learning rate) are filled from the method's
recipe by :func:`resolve` before training and written out, so nothing is chosen silently.
Unknown keys and bad values raise :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value that is not allowed; the message says what is."""


@dataclass
class DataConfig:
    source: str = "auto"
    """Images: 'fashion-mnist', 'digits' or a folder; 'auto' = fashion-mnist if installed, else digits.
    Text: 'stdlib-docs', 'python-docs' or a .txt/.md/.rst file or folder; 'auto' = stdlib-docs."""
    channels: int | None = None
    """Image channels (1 or 3); null keeps the source's own (folders and shards: 1 when the
    images sampled for the size are all grey, else 3)."""
    size: int | None = None
    """Side of the stored square images; null keeps a built-in set's own; for folders and shard
    directories, the median shorter side of their images, at most the size the backbone is made
    for (32 px: convnet and -small variants; 224 px: ImageNet stems)."""
    workers: int = 2
    """DataLoader worker processes decoding image folders and shards."""
    stream: str = "auto"
    """Folders and shard directories: 'auto' streams them when decoded at data.size they would
    take more than data.cache_mb, else decodes them once into memory; 'always'; 'never'."""
    cache_mb: int = 2048
    """Memory (MiB) up to which data.stream=auto keeps a folder or shard directory in memory:
    about twice its decoded size (the evaluation splits are copies beside the whole set)."""
    shuffle_buffer: int = 1000
    """Samples in each streaming worker's shuffle buffer (shards are read front to back)."""
    background: str = "white"
    """Colour that transparent pixels are composited onto: 'white', 'black' or '#rrggbb'."""
    max_pixels: int = 89_478_485
    """Largest image (width x height) decoded; larger files are skipped as possible
    decompression bombs (Pillow's own limit by default)."""


@dataclass
class BackboneConfig:
    name: str | None = None
    """A registered backbone (`selfsup.backbones.BACKBONES`); null = convnet-small for images,
    transformer for text."""
    width: int | None = None
    """Channels of the first stage (transformer: hidden width); null keeps the default."""
    depth: int | None = None
    """Transformer blocks (text); null = 4."""
    heads: int | None = None
    """Attention heads (text); null = 4."""
    pool: str | None = None
    """How the backbone's output becomes the features. convnet-small: 'grid' (the last map averaged
    over each cell of a 2 x 2 grid, concatenated; null for a new run) or 'mean' (over the whole
    map). Vision transformers: 'cls' (the [CLS] output; null) or 'mean' (of the patches)."""


@dataclass
class TextConfig:
    tokenizer: str = "wordpiece"
    """Sub-word tokenizer trained on the corpus: 'wordpiece' (BERT) or 'bpe' (byte-level, GPT-2)."""
    vocab_size: int = 8000
    max_length: int = 128
    """Tokens per sequence, [CLS] and [SEP] included; longer documents are truncated."""
    lowercase: bool = True
    test_fraction: float = 0.1
    """Share of the documents held out for evaluation."""


@dataclass
class VideoConfig:
    clips: int = 5000
    """Training clips generated (from the sprite set's train split)."""
    test_clips: int = 1000
    """Held-out clips (sprites from the test split), for the energy, best-of-K and probes."""
    frames_in: int = 10
    """Past frames: what the model reads (x)."""
    frames_out: int = 10
    """Future frames: the continuation it predicts or scores (y)."""
    size: int = 48
    """Canvas side in pixels (a multiple of 8 above the 28 px sprites)."""
    sprites: int = 1
    change_p: float = 0.1
    """Per frame and sprite, the probability of a new random velocity: the future's uncertainty."""


@dataclass
class AugmentConfig:
    recipe: str | None = None
    """A recipe in `selfsup.augment.views.RECIPES`; null = the method's default."""
    global_size: int | None = None
    """Side of the global crops; null = the recipe's, scaled to the stored image size (the
    recipes give it for 28 px images: 16 px for small-images, the whole side for the others)."""
    global_scale: tuple[float, float] | None = None
    """Area fraction range of the global crops; null = the recipe's."""
    local_crops: int | None = None
    """Number of small local crops (multi-crop); null = the recipe's."""
    local_size: int | None = None
    """Side of the local crops; null = 3/7 of the global size (96 for 224, 12 for 28)."""
    eval_size: int | None = None
    """Side of the whole images that evaluation, `embed` and `export` read; null = 1.5 x the
    global crop side, at most the stored size. Crops make objects look larger than the whole
    image does at the same side, so an encoder trained on crops reads whole images best above
    the crop size (Touvron et al. 2019, FixRes)."""
    mean: tuple[float, ...] | None = None
    """Per-channel mean of [0, 1] pixels used to normalise; null = measured on the data."""
    std: tuple[float, ...] | None = None
    """Per-channel std of [0, 1] pixels used to normalise; null = measured on the data."""


OPTIMIZERS = ("sgd", "lars", "adamw")
# The TrainConfig fields a method's recipe fills when left null (besides batch size and
# length): a run that trains another method's recipe resets them.
OPTIMISATION_RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "clip_grad", "lars_trust", "lars_clip")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
TOKENIZERS = ("wordpiece", "bpe")


@dataclass
class TrainConfig:
    epochs: int | None = None
    """Passes over the data; null = the method's default (or as many as the budget allows)."""
    budget: str | None = None
    """Wall-clock limit such as '15m', '90s', '2h'; training stops when it is spent."""
    batch_size: int | None = None
    """Samples per step and process; null = the method's recipe (256 images; 64 documents
    for the language models, whose steps cost far more per sample on a CPU)."""
    optimizer: str | None = None
    """One of sgd, lars, adamw; null = the method's recipe."""
    lr: float | None = None
    """Base learning rate for batch 256 (scaled linearly with the batch); null = the recipe's."""
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    """Linear learning-rate warm-up, capped at a tenth of the run; then a cosine decay to 0."""
    sync_batchnorm: bool = False
    """Under torchrun, compute BatchNorm statistics over the global batch (SyncBatchNorm)."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value; null = the method's recipe (DINO: 3), else none."""
    lars_trust: float | None = None
    """LARS trust coefficient: each weight matrix moves by lr x lars_trust of its norm per
    step (before momentum); null = the method's recipe, else 0.001 (SimCLR's and BYOL's
    reference)."""
    lars_clip: bool | None = None
    """Cap LARS's step of each weight matrix at lars_trust of its norm and at plain SGD's
    step (solo-learn's clip_lr, with lars_trust 0.02 in its small-batch recipes); null = the
    method's recipe, else false."""
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """fp32, or bf16 autocast (CUDA only); auto = bf16 on CUDA, fp32 on CPU."""
    strategy: str = "ddp"
    """Under torchrun: 'ddp' (every process holds the whole model; DistributedDataParallel) or
    'fsdp' (parameters, gradients and optimiser state sharded per block; FSDP2)."""
    activation_checkpointing: bool = False
    """Keep only each block's input during forward and recompute the rest in backward:
    activation memory for about a third more compute."""
    compile: bool = False
    """torch.compile the backbone (worth it on GPUs for long runs; compiling takes minutes)."""
    log_every: int = 20
    """Steps between metric records (loss, lr, collapse of the batch embeddings)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (one is also written at each epoch end and at the end)."""
    knn_every: int = 0
    """Epochs between online kNN evaluations on the held-out split; 0 = never."""


@dataclass
class EvalConfig:
    enabled: bool = True
    fewshot_seeds: int = 5
    energy_pairs: int = 2000
    """Held-out images used for the energy AUC and collapse diagnostics."""
    baselines: bool = True
    """Also evaluate raw pixels and the same backbone at random init."""
    report: bool = True
    """Write report.html into the run directory after evaluation (seconds to a minute on a CPU)."""
    streamed_train: int = 10_000
    """Labelled images a streamed source is evaluated with (a fixed random choice of its train split)."""
    streamed_test: int = 2_000
    """Labelled held-out images a streamed source is evaluated on."""
    projector: int = 1000
    """Held-out images whose embeddings go to TensorBoard's projector (image runs; at most 2,000); 0 = none."""


@dataclass
class Config:
    method: dict[str, Any] = field(default_factory=lambda: {"name": "simclr"})
    """`name` and the method's own hyper-parameters (its constructor arguments)."""
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    text: TextConfig = field(default_factory=TextConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    recipe: str | None = None
    """The named recipe (`selfsup recipes`) these values started from; null = none."""
    out: str | None = None
    """Run directory; null = runs/<method>-<data>-<time>."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


_BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str | None) -> float | None:
    """'15m' -> 900.0 seconds; '90s', '2h', '1.5h', bare seconds '600' also accepted."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise ConfigError(f"train.budget: {text!r} is not a duration; use e.g. '15m', '90s', '2h'")
    if float(match.group(1)) <= 0:
        raise ConfigError(f"train.budget: {text!r} is not a positive duration; use e.g. '15m', '90s', '2h'")
    return float(match.group(1)) * _BUDGET_UNITS[match.group(2) or "s"]


def from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (as read from YAML), checking every key and type."""
    return _build(Config, values, prefix="")


# A config is a few hundred values: anything far larger is a mistake or an attack (YAML
# aliases nested to expand exponentially, the "billion laughs").
_MAX_CONFIG_BYTES, _MAX_CONFIG_VALUES = 1 << 20, 100_000


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {_MAX_CONFIG_BYTES // 1024} KiB; is it a config?")
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(values).__name__}")
    if _expanded_size(values, {}) > _MAX_CONFIG_VALUES:
        raise ConfigError(f"config file {path} expands to more than {_MAX_CONFIG_VALUES:,} values (nested YAML aliases?)")
    return from_dict(values)


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """The number of values ``value`` holds once every alias is expanded, counted without
    expanding them (each shared node once, by identity)."""
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) not in sizes:
        sizes[id(value)] = 0  # a self-referencing node counts once
        children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        sizes[id(value)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(value)]


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    values = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        parts = key.strip().split(".")
        target = values
        for depth, part in enumerate(parts[:-1]):
            if part not in target or not isinstance(target[part], dict):
                raise ConfigError(f"unknown config key {'.'.join(parts[: depth + 1])!r}; sections: {', '.join(_sections())}")
            target = target[part]
        leaf = parts[-1]
        if len(parts) == 1 and leaf in _sections():
            raise ConfigError(f"{leaf!r} is a section; set one of its keys, e.g. {leaf}.<key>=value")
        if len(parts) == 1 and leaf not in values:
            raise ConfigError(f"unknown config key {leaf!r}; top-level keys: {', '.join(values)}")
        target[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return from_dict(values)


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.name not in ("recipe", "out")]


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; allowed in {prefix.rstrip('.') or 'config'}: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = convert_value(hints[name], value, prefix + name)
    config = cls(**kwargs)
    _check_choices(config, prefix)
    return config


def convert_value(hint: Any, value: Any, key: str) -> Any:
    """``value`` (as read from YAML or a ``key=value`` override) as the type ``hint``, or a
    :class:`ConfigError` naming ``key``: the one checker of config sections and of method
    options (whose types are their constructors' annotations)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key} must not be null")
        hint = next(option for option in options if option is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(f"{key} must be a non-empty list, got {value!r}")
            items = (items[0],) * len(value)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{key} must be a list of {len(items)} numbers, got {value!r}")
        return tuple(convert_value(item, element, key) for item, element in zip(items, value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # YAML 1.1 reads 1e-4 (no dot, no sign) as a string
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")


def _check_choices(config: Any, prefix: str) -> None:
    choices = {
        "optimizer": OPTIMIZERS,
        "device": DEVICES,
        "precision": PRECISIONS,
        "strategy": STRATEGIES,
        "tokenizer": TOKENIZERS,
    }
    for name, allowed in choices.items():
        value = getattr(config, name, None)
        if isinstance(config, (TrainConfig, TextConfig)) and value is not None and value not in allowed:
            raise ConfigError(f"{prefix}{name}: {value!r} is not one of {', '.join(allowed)}")
    if isinstance(config, TrainConfig):
        parse_budget(config.budget)
        for name in ("batch_size", "log_every", "checkpoint_every"):
            if getattr(config, name) is not None and getattr(config, name) < 1:
                raise ConfigError(f"{prefix}{name} must be at least 1, got {getattr(config, name)}")
        if config.epochs is not None and config.epochs < 1:
            raise ConfigError(f"{prefix}epochs must be at least 1, got {config.epochs}")
    if isinstance(config, VideoConfig):
        for name in ("clips", "test_clips", "frames_in", "frames_out", "sprites"):
            if getattr(config, name) < 1:
                raise ConfigError(f"{prefix}{name} must be at least 1, got {getattr(config, name)}")
        if config.size % 8 or config.size <= 28:
            raise ConfigError(f"{prefix}size must be a multiple of 8 above the 28 px sprites, got {config.size}")
        if not 0 <= config.change_p <= 1:
            raise ConfigError(f"{prefix}change_p is a probability in [0, 1], got {config.change_p}")
    if isinstance(config, Config) and "name" not in config.method:
        raise ConfigError("method.name is required")


def _plain(value: Any) -> Any:
    """Tuples to lists so that YAML stays plain (safe_load can read it back)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
