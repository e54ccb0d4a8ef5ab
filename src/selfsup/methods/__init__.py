"""SSL methods, one file each, selectable by name.

A method registers itself by subclassing :class:`Method` with a ``name``; every module of
this package is imported here, so a new method is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from selfsup.config import ConfigError
from selfsup.methods.base import METHODS, Batch, Method, StepInfo, StepOutput, TrainingViews, TwoViewMethod

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# Listed by family (the start of each summary), image methods first, then text and video.
FAMILIES = (
    "contrastive", "asymmetric", "regularised", "clustering", "self-distillation", "semi-supervised",
    "joint-embedding predictive", "masked image modelling", "naive",
    "masked language model", "causal language model", "static word vectors",
    "latent-variable predictor",
)


def _family_rank(cls: type[Method]) -> int:
    return next((rank for rank, family in enumerate(FAMILIES) if cls.summary.startswith(family)), len(FAMILIES))


_ordered = sorted(METHODS.values(), key=_family_rank)
METHODS.clear()
METHODS.update((cls.name, cls) for cls in _ordered)


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {name!r}; available: {', '.join(METHODS)}") from None


def build_method(options: dict[str, Any], backbone: nn.Module, backbone_dim: int, **built: Any) -> Method:
    """The method named in ``options`` on ``backbone``; ``built`` holds what the run gives
    beside the configuration (a video method's ``clip`` shape). A value its constructor
    refuses is a :class:`ConfigError`."""
    cls = method_class(options.get("name"))
    resolved = cls.resolve_options(options)
    resolved.pop("name")
    try:
        return cls(backbone, backbone_dim, **built, **resolved)
    except ValueError as error:
        raise ConfigError(str(error)) from error


__all__ = ["METHODS", "Batch", "Method", "StepInfo", "StepOutput", "TrainingViews", "TwoViewMethod", "build_method", "method_class"]
