"""The steps of a run that differ per modality (see :mod:`selfsup.modalities`), and a run
loaded back from its directory, which the modality-specific commands read."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.config import Config
from selfsup.data import SampleSet
from selfsup.methods import Method


def fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' contents (a split's samples and labels): part of a baseline key,
    so that changed data is measured again."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def say(text: str) -> None:
    """A progress message for the person running the command (stderr, unbuffered)."""
    print(text, file=sys.stderr, flush=True)


@dataclass
class LoadedRun:
    """A run rebuilt from its directory: the resolved ``config``, the ``method`` with the
    newest checkpoint's weights (in eval mode) and that checkpoint's JSON ``state``."""

    run_dir: Path
    config: Config
    method: Method
    state: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device


class Modality:
    """The per-modality steps of a run; each subclass fills in every one.

    The pipeline (:mod:`selfsup.runs`) calls them in this order: :meth:`default_source`
    when ``data.source`` is 'auto', :meth:`load_data`, :meth:`resolve` (after the method's
    options and the training recipe are settled), :meth:`build_backbone` and
    :meth:`build_view_maker`, training, then :meth:`evaluate` beside the models of
    :meth:`baseline_runs`.
    """

    name: str = ""
    # The backbone of the modality's methods when neither backbone.name nor the method names one.
    default_backbone: str = ""
    # Files of a run directory that its baseline runs share (a text run's tokenizer, so the
    # baselines read the same vocabulary).
    shared_files: tuple[str, ...] = ()

    def default_source(self) -> str:
        """The data source a run uses when ``data.source`` is 'auto'."""
        raise NotImplementedError

    def load_data(self, config: Config, run_dir: Path) -> tuple[SampleSet, SampleSet, SampleSet]:
        """(pretraining set, labelled train split, test split)."""
        raise NotImplementedError

    def resolve(self, config: Config, pretrain_set: SampleSet) -> Config:
        """``config`` with the modality's values left open filled from the data (image
        statistics and crop sizes, the vocabulary, the clip shape, the backbone's sizes)."""
        raise NotImplementedError

    def build_view_maker(self, config: Config):
        """Maps a batch of samples to the method's views; ``eval_view`` gives what ``embed`` reads."""
        raise NotImplementedError

    def build_backbone(self, config: Config, method: type[Method]) -> tuple[nn.Module, int, dict[str, Any]]:
        """(backbone, its feature size, what else the method's constructor is given)."""
        raise NotImplementedError

    def baseline_runs(self, config: Config) -> dict[str, Config]:
        """Other runs on the same data whose models are evaluated beside this one (trained
        once, kept in ``run_dir/baselines/<name>``); none by default."""
        return {}

    def baseline_key(self, config: Config, method: Method, train: SampleSet, test: SampleSet) -> dict[str, Any] | None:
        """Everything the figures of the baselines (``summary["baselines"]``) depend on, as a
        JSON-able dict, so that later runs with the same key reuse them (:mod:`selfsup.cache`);
        None (the default) measures them in every run."""
        return None

    def encoder_key(self, config: Config, method: Method) -> dict[str, Any]:
        """The part of a :meth:`baseline_key` that fixes the random-init model and its probes:
        the modality, the encoder's configuration, the method whose ``embed`` reads it, the
        seed and the few-shot draws."""
        return {"modality": self.name, "backbone": dataclasses.asdict(config.backbone), "method": method.name,
                "seed": config.train.seed, "fewshot_seeds": config.eval.fewshot_seeds}

    def evaluate(self, method: Method, view_maker, config: Config, train: SampleSet, test: SampleSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        """The evaluation part of ``summary.json``; ``baselines`` holds the models to
        evaluate beside ``method`` (the same backbone at random init, baseline runs)."""
        raise NotImplementedError
