"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically; and
the trainer's policy of when to write them.

A checkpoint is a directory ``checkpoints/step-00001234/`` holding ``model.safetensors``
(the method's parameters and buffers), ``optimizer.safetensors`` (the optimiser's tensor
state) and ``state.json`` (step, schedule, optimiser hyper-parameters, anything else the
trainer needs). It is written under a temporary name, flushed to disk and renamed into
place, so a kill at any moment leaves either the previous checkpoints or the new one,
never a half-written one. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from selfsup import distributed
from selfsup.files import default_file_mode
from selfsup.methods import Method

PREFIX = "step-"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
# What the trainer's state must hold to resume from a checkpoint.
RESUME_FIELDS = ("planned_steps", "elapsed_seconds", "global_batch", "collapse_alarm_step")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or does not fit the model."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (those with a state file), oldest first."""
    if not directory.is_dir():
        return []
    # A link is never a checkpoint: pruning must not delete what it points to.
    found = [p for p in directory.iterdir()
             if p.is_dir() and not p.is_symlink() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def latest_state(directory: Path) -> dict[str, Any] | None:
    """The JSON state of the newest checkpoint in ``directory`` (None when there is none or
    it cannot be read)."""
    latest = latest_checkpoint(directory)
    try:
        state = json.loads((latest / STATE_FILE).read_text()) if latest else None
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def load_newest_readable(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                         required: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]]:
    """Load the newest checkpoint of ``directory`` that can be read (and whose state holds the
    ``required`` fields) into ``model`` and ``optimizer``: (its path, its state, and
    (checkpoint, reason) for each newer one skipped)."""
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(f"{directory} holds no complete checkpoint")
    skipped: list[tuple[Path, str]] = []
    for candidate in reversed(found):
        try:
            state = load_checkpoint(candidate, model, optimizer)
            missing = [key for key in required if key not in state]
            if missing:
                raise CheckpointError(f"checkpoint {candidate} has no {', '.join(missing)} in {STATE_FILE}")
        except CheckpointError as error:
            skipped.append((candidate, str(error)))
            continue
        return candidate, state, skipped
    raise CheckpointError(f"no checkpoint in {directory} can be read: " + "; ".join(reason for _, reason in skipped))


def save_checkpoint(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` atomically and keep only the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    staging = directory / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        save_file(_contiguous(model.state_dict()), staging / MODEL_FILE)
        full_state = dict(state, step=step)
        if optimizer is not None:
            tensors, optimizer_json = _split_optimizer_state(optimizer.state_dict())
            save_file(tensors, staging / OPTIMIZER_FILE)
            full_state["optimizer"] = optimizer_json
        (staging / STATE_FILE).write_text(json.dumps(full_state, indent=1))
        for path in staging.iterdir():
            path.chmod(default_file_mode())  # safetensors writes its files private
            _fsync(path)
        _fsync(staging)
    except BaseException:  # a full disk, a kill: leave only the complete checkpoints
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if final.exists():  # the same step written again after a resume: replace it
        retired = directory / f".old-{final.name}-{os.getpid()}"
        final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired)
    else:
        staging.rename(final)
    _fsync(directory)

    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load weights (strictly: every key must match) and, if given, the optimiser state.

    Returns the JSON state of the checkpoint.
    """
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_FILE} is missing")
    try:
        state = json.loads(state_path.read_text())
        weights = load_file(path / MODEL_FILE)
    except Exception as error:  # OSError, JSONDecodeError and safetensors' own error types
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"cannot read checkpoint {path}: {STATE_FILE} is not a mapping with the step")
    if isinstance(model, Method):
        weights = model.upgrade_state_dict(weights)
    missing, unexpected = _compare_keys(model.state_dict(), weights)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written by another method or backbone?)"
        )
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(f"checkpoint {path} has no optimiser state to resume from")
        try:
            tensors = load_file(path / OPTIMIZER_FILE)
            restored = _join_optimizer_state(tensors, state["optimizer"])
        except Exception as error:  # a truncated file, an edited state
            raise CheckpointError(f"cannot read the optimiser state of checkpoint {path}: {error}") from error
    model.load_state_dict(weights)
    if optimizer is not None:
        # JSON has no tuples: give back the types the optimiser uses (e.g. AdamW's betas).
        for saved_group, current_group in zip(restored["param_groups"], optimizer.param_groups):
            for key, value in current_group.items():
                if isinstance(value, tuple) and isinstance(saved_group.get(key), list):
                    saved_group[key] = tuple(saved_group[key])
        optimizer.load_state_dict(restored)
    return state


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; clones make every entry its own.
    return {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate an optimiser state_dict into tensors (for safetensors) and plain JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in plain["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": plain["param_groups"]}


def _compare_keys(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the step and the last good checkpoint."""


class CheckpointPolicy:
    """When and how the trainer checkpoints: every ``every`` steps and at each epoch end
    (rank 0 writes, every process waits), never weights that are not finite; resuming
    takes the newest complete checkpoint."""

    def __init__(self, directory: Path, every: int, steps_per_epoch: int):
        self.directory, self.every, self.steps_per_epoch = directory, every, steps_per_epoch
        self.saved_step: int | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step % self.steps_per_epoch == 0

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        # A checkpoint is only ever a good one: weights that overflowed are never written.
        tensors = model.state_dict().values()
        if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
            raise TrainingDiverged(f"weights became non-finite at step {step}; training stopped, {self.last_good()}")
        if distributed.is_main_process():
            try:
                save_checkpoint(self.directory, step, model, optimizer, state)
            except (OSError, SafetensorError) as error:  # a full disk: stop with the previous checkpoint intact
                raise CheckpointError(
                    f"cannot write the checkpoint of step {step} ({getattr(error, 'strerror', None) or error}); "
                    f"training stopped, {self.last_good()}"
                ) from error
        distributed.barrier()
        self.saved_step = step

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, global_batch: int) -> dict[str, Any]:
        """Load the newest readable checkpoint into ``model`` and ``optimizer``; returns its
        state, with ``skipped``: (checkpoint, reason) for each newer one that could not be read."""
        if not list_checkpoints(self.directory):
            raise CheckpointError(f"nothing to resume: {self.directory} holds no complete checkpoint")
        path, state, skipped = load_newest_readable(self.directory, model, optimizer, RESUME_FIELDS)
        if state["global_batch"] != global_batch:
            raise CheckpointError(
                f"{path} was written with a global batch of {state['global_batch']}, this run has {global_batch}; "
                "resume with the same batch size and number of processes"
            )
        self.saved_step = state["step"]
        return dict(state, skipped=skipped)

    def last_good(self) -> str:
        state = latest_state(self.directory)
        if state is None:
            return "no checkpoint had been written"
        return f"the last good checkpoint is {latest_checkpoint(self.directory)} (step {state['step']})"
