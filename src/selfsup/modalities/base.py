"""The steps of a run that differ per modality (see :mod:`selfsup.modalities`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from selfsup.config import Config
from selfsup.methods import Method


def say(text: str) -> None:
    """A progress message for the person running the command (stderr, unbuffered)."""
    print(text, file=sys.stderr, flush=True)


class Modality:
    """The per-modality steps of a run; subclasses fill in each one."""

    name: str = ""
    # Files of a run directory that its baseline runs share (a text run's tokenizer, so the
    # baselines read the same vocabulary).
    shared_files: tuple[str, ...] = ()

    def resolve_source(self, config: Config) -> str:
        """The data source a run of ``config`` uses when ``data.source`` is 'auto'."""
        raise NotImplementedError

    def load_data(self, config: Config, run_dir: Path) -> tuple[Any, Any, Any]:
        """(pretraining set, labelled train split, test split); each has ``samples``,
        ``labels``, ``name``, ``skipped`` and ``describe_rows()``."""
        raise NotImplementedError

    def resolve(self, config: Config, pretrain_set) -> Config:
        """``config`` with the values left open filled from the data and the method (the
        optimisation recipe is added by :func:`selfsup.runs.resolve`)."""
        raise NotImplementedError

    def build_view_maker(self, config: Config):
        """Maps a batch of samples to the method's views; ``eval_view`` gives what ``embed`` reads."""
        raise NotImplementedError

    def build_model(self, config: Config) -> Method:
        """The method at the initialisation given by ``train.seed``."""
        raise NotImplementedError

    def baseline_runs(self, config: Config) -> dict[str, Config]:
        """Other runs on the same data whose models are evaluated beside this one (trained
        once, kept in ``run_dir/baselines/<name>``); none by default."""
        return {}

    def evaluate(self, method: Method, view_maker, config: Config, train, test, device: torch.device,
                 run_dir: Path, baselines: dict[str, Method]) -> dict:
        """The evaluation part of ``summary.json``."""
        raise NotImplementedError
