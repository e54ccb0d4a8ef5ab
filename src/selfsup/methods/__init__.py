"""SSL methods, one file each, selectable by name."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from selfsup.config import ConfigError
from selfsup.methods.barlow_twins import BarlowTwins
from selfsup.methods.base import Batch, Method, StepOutput
from selfsup.methods.byol import BYOL
from selfsup.methods.deepcluster import DeepClusterV2
from selfsup.methods.dino import DINO
from selfsup.methods.jepa import JEPA
from selfsup.methods.language import (
    CausalLanguageModel,
    MaskedLanguageModel,
    SpanMaskedLanguageModel,
    WholeWordMaskedLanguageModel,
)
from selfsup.methods.latent import LatentVariablePredictor
from selfsup.methods.moco import MoCoV2, MoCoV3
from selfsup.methods.paws import PAWS
from selfsup.methods.siamese_naive import SiameseNaive
from selfsup.methods.simclr import SimCLR
from selfsup.methods.simsiam import SimSiam
from selfsup.methods.static import GloVe, Word2Vec
from selfsup.methods.swav import SwAV
from selfsup.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        SimCLR, MoCoV2, MoCoV3, BYOL, SimSiam, BarlowTwins, VICReg, DeepClusterV2, SwAV, DINO, PAWS, SiameseNaive,
        MaskedLanguageModel, WholeWordMaskedLanguageModel, SpanMaskedLanguageModel, CausalLanguageModel, Word2Vec, GloVe,
        LatentVariablePredictor, JEPA,
    )
}

# Arguments a method receives from the run rather than from its configuration (video
# methods also get the clip shape they are built for).
_BUILT_ARGUMENTS = ("self", "backbone", "backbone_dim", "clip")


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {name!r}; available: {', '.join(METHODS)}") from None


def method_defaults(name: str) -> dict[str, Any]:
    """The method's hyper-parameters and their paper defaults (its constructor arguments)."""
    signature = inspect.signature(method_class(name).__init__)
    return {key: p.default for key, p in signature.parameters.items() if key not in _BUILT_ARGUMENTS}


def resolve_method_options(options: dict[str, Any]) -> dict[str, Any]:
    """Fill in defaults and check every key and value type; returns {name, **hyper-parameters}."""
    name = options.get("name")
    defaults = method_defaults(name)
    unknown = sorted(set(options) - set(defaults) - {"name"})
    if unknown:
        allowed = ", ".join(defaults) or "(none)"
        raise ConfigError(f"unknown config key 'method.{unknown[0]}' for method {name!r}; allowed: {allowed}")
    resolved: dict[str, Any] = {"name": name}
    for key, default in defaults.items():
        value = options.get(key, default)
        if isinstance(default, bool) or isinstance(value, bool):
            valid = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            valid = isinstance(value, (int, float))
            value = float(value) if valid else value
        else:
            valid = isinstance(value, type(default))
        if not valid:
            raise ConfigError(f"method.{key} must be of type {type(default).__name__} (default {default!r}), got {value!r}")
        resolved[key] = value
    return resolved


def build_method(options: dict[str, Any], backbone: nn.Module, backbone_dim: int, **built: Any) -> Method:
    """The method named in ``options`` on ``backbone``; ``built`` holds what the run gives
    beside the configuration (a video method's ``clip`` shape)."""
    resolved = resolve_method_options(options)
    name = resolved.pop("name")
    return method_class(name)(backbone, backbone_dim, **built, **resolved)


__all__ = [
    "BYOL", "DINO", "JEPA", "METHODS", "PAWS", "Batch", "BarlowTwins", "CausalLanguageModel", "DeepClusterV2", "GloVe", "LatentVariablePredictor", "MaskedLanguageModel",
    "Method", "MoCoV2", "MoCoV3", "SiameseNaive", "SimCLR", "SimSiam", "SpanMaskedLanguageModel", "StepOutput", "SwAV",
    "VICReg", "WholeWordMaskedLanguageModel", "Word2Vec", "build_method", "method_defaults", "resolve_method_options",
]
