"""What a run does differently per modality: where its data comes from, which values it
fills in, how samples become views, which backbone it builds and how it is evaluated; and
the commands that only make sense for one modality (each module's functions of a
:class:`~selfsup.modalities.base.LoadedRun`).

:mod:`selfsup.runs` drives every run the same way through a :class:`Modality`; a method's
``modality`` attribute ("image", "text", "video") picks which.
"""

from __future__ import annotations

from selfsup.config import Config
from selfsup.methods import method_class
from selfsup.modalities.base import Modality
from selfsup.modalities.image import ImageModality
from selfsup.modalities.text import TextModality
from selfsup.modalities.video import VideoModality

MODALITIES: dict[str, Modality] = {m.name: m for m in (ImageModality(), TextModality(), VideoModality())}


def modality_of(config: Config) -> Modality:
    """The modality of the run's method."""
    return MODALITIES[method_class(config.method["name"]).modality]


__all__ = ["MODALITIES", "ImageModality", "Modality", "TextModality", "VideoModality", "modality_of"]
