"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically; and
the trainer's policy of when to write them.

A checkpoint is a directory ``checkpoints/step-00001234/`` holding ``model.safetensors``
(the method's parameters and buffers), ``optimizer.safetensors`` (the optimiser's tensor
state) and ``state.json`` (step, schedule, optimiser hyper-parameters, anything else the
trainer needs); under FSDP, ``sharded/`` instead holds each process's shards (and the last
checkpoint of a run also the whole model); under torchrun, ``buffers/`` each process's own
buffers. It is written under a temporary name, flushed to disk and renamed into
place, so a kill at any moment leaves either the previous checkpoints or the new one,
never a half-written one. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from selfsup import distributed
from selfsup.files import default_file_mode
from selfsup.methods import Method
from selfsup.train.parallel import is_sharded

PREFIX = "step-"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
SHARDED_DIR = "sharded"  # FSDP: each process's parameter and optimiser shards
BUFFERS_DIR = "buffers"  # under torchrun: each process's own buffers
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
    full_model: bool = True,
) -> Path:
    """Write a checkpoint for ``step`` atomically and keep only the newest ``keep``. Every
    process of a run calls it (rank 0 alone writes the shared files).

    A sharded (FSDP) model writes its parameters' and optimiser's shards into ``sharded/``
    through ``torch.distributed.checkpoint`` (safetensors files, one per process, whose
    headers say where each shard lies: nothing to unpickle), and, with ``full_model``, the
    whole model gathered into ``model.safetensors`` for evaluation and export. Under torchrun
    each process also writes its own buffers (BatchNorm statistics, SwAV's queue), which
    differ between processes, into ``buffers/``.
    """
    main = distributed.is_main_process()
    final = directory / checkpoint_name(step)
    staging = directory / f".tmp-{checkpoint_name(step)}"  # the same name on every process
    if main:
        directory.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    distributed.barrier()
    try:
        full_state = dict(state, step=step)
        if is_sharded(model):
            full_state["optimizer"] = _save_shards(staging / SHARDED_DIR, model, optimizer)
            if full_model:
                whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
                if main:
                    save_file(_contiguous(whole), staging / MODEL_FILE)
        elif main:
            save_file(_contiguous(model.state_dict()), staging / MODEL_FILE)
            if optimizer is not None:
                tensors, full_state["optimizer"] = _split_optimizer_state(optimizer.state_dict())
                save_file(tensors, staging / OPTIMIZER_FILE)
        if distributed.world_size() > 1:
            (staging / BUFFERS_DIR).mkdir(exist_ok=True)
            save_file(_contiguous(_buffers(model)), staging / BUFFERS_DIR / _buffers_file(distributed.rank()))
        distributed.barrier()
        if main:
            (staging / STATE_FILE).write_text(json.dumps(full_state, indent=1))
            for path in sorted(staging.rglob("*"), reverse=True):  # files before their folders
                if path.is_file():
                    path.chmod(default_file_mode())  # safetensors writes its files private
                _fsync(path)
            _fsync(staging)
    except BaseException:  # a full disk, a kill: leave only the complete checkpoints
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        raise

    if main:
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
    distributed.barrier()
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load weights (strictly: every key must match) and, if given, the optimiser state.

    A sharded model loads its own shards; a whole model loads ``model.safetensors``, or, from
    a checkpoint that has only shards, assembles them (one process is enough). Under torchrun
    each process then takes back its own buffers. Returns the JSON state of the checkpoint.
    """
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_FILE} is missing")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"cannot read checkpoint {path}: {STATE_FILE} is not a mapping with the step")
    if optimizer is not None and "optimizer" not in state:
        raise CheckpointError(f"checkpoint {path} has no optimiser state to resume from")
    if is_sharded(model):
        _load_shards(path, model, optimizer, state)
    else:
        _load_whole(path, model, optimizer, state)
    own_buffers = path / BUFFERS_DIR / _buffers_file(distributed.rank())
    if own_buffers.is_file():
        try:
            model.load_state_dict(load_file(own_buffers), strict=False)
        except Exception as error:  # a truncated file, another model's buffers
            raise CheckpointError(f"cannot read the buffers of checkpoint {path} ({own_buffers.name}): {error}") from error
    return state


def _load_whole(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> None:
    try:
        if (path / MODEL_FILE).is_file() or not (path / SHARDED_DIR).is_dir():
            weights = load_file(path / MODEL_FILE)
        else:
            weights = _assemble_shards(path, model)
    except CheckpointError:
        raise
    except Exception as error:  # OSError and safetensors' own error types
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if isinstance(model, Method):
        weights = model.upgrade_state_dict(weights)
    missing, unexpected = _compare_keys(model.state_dict(), weights)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written by another method or backbone?)"
        )
    if optimizer is not None:
        if not (path / OPTIMIZER_FILE).is_file() and (path / SHARDED_DIR).is_dir():
            raise CheckpointError(f"checkpoint {path} was written with train.strategy=fsdp: resume it with fsdp")
        try:
            tensors = load_file(path / OPTIMIZER_FILE)
            restored = _join_optimizer_state(tensors, state["optimizer"])
        except Exception as error:  # a truncated file, an edited state
            raise CheckpointError(f"cannot read the optimiser state of checkpoint {path}: {error}") from error
    model.load_state_dict(weights)
    if optimizer is not None:
        _restore_tuples(restored["param_groups"], optimizer.param_groups)
        optimizer.load_state_dict(restored)


def _restore_tuples(saved_groups: list[dict], current_groups: list[dict]) -> None:
    """JSON has no tuples: give back the types the optimiser uses (e.g. AdamW's betas)."""
    for saved_group, current_group in zip(saved_groups, current_groups):
        for key, value in current_group.items():
            if isinstance(value, tuple) and isinstance(saved_group.get(key), list):
                saved_group[key] = tuple(saved_group[key])


# ---------------------------------------------------------------------------- shards (FSDP)
def _buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {name for name, _ in model.named_buffers()}
    return {key: value for key, value in model.state_dict().items() if key in names}


def _buffers_file(rank: int) -> str:
    return f"rank-{rank:05d}.safetensors"


def _sharded_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """The parameters' and optimiser's tensors by flat key (``model/<name>``,
    ``optimizer/<name>/<slot>``), DTensor shards in place, and the state dicts they belong to.
    Buffers are left out: they are each process's own (see ``buffers/``)."""
    buffers = set(_buffers(model))
    if optimizer is None:
        model_state, optimizer_state = get_model_state_dict(model), None
    else:
        model_state, optimizer_state = get_state_dict(model, optimizer)
    tensors = {f"model/{key}": value for key, value in model_state.items() if key not in buffers}
    for name, slots in (optimizer_state or {}).get("state", {}).items():
        tensors.update({f"optimizer/{name}/{slot}": value for slot, value in slots.items() if isinstance(value, torch.Tensor)})
    return tensors, model_state, optimizer_state


def _save_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict | None:
    """Write this process's shards into ``folder``; returns the optimiser's plain values
    (hyper-parameters, non-tensor slots) for ``state.json``."""
    tensors, _, optimizer_state = _sharded_tensors(model, optimizer)
    dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(folder), save_distributed=True))
    if optimizer_state is None:
        return None
    scalars = {name: {slot: value for slot, value in slots.items() if not isinstance(value, torch.Tensor)}
               for name, slots in optimizer_state["state"].items()}
    return {"scalars": {name: values for name, values in scalars.items() if values}, "param_groups": optimizer_state["param_groups"]}


def _load_shards(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> None:
    if not (path / SHARDED_DIR).is_dir():
        raise CheckpointError(f"checkpoint {path} holds no shards: it was written with train.strategy=ddp or by one "
                              "process; resume it with the same strategy")
    tensors, model_state, optimizer_state = _sharded_tensors(model, optimizer)
    try:  # reads in place into the DTensors of the state dicts
        dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(path / SHARDED_DIR)))
    except Exception as error:  # a missing shard, another model's keys
        raise CheckpointError(f"cannot read the shards of checkpoint {path}: {error}") from error
    model_state = {key: value for key, value in model_state.items() if f"model/{key}" in tensors}
    if optimizer is None:
        set_model_state_dict(model, model_state, options=StateDictOptions(strict=False))
        return
    saved = state["optimizer"]
    for name, values in saved["scalars"].items():
        optimizer_state["state"].setdefault(name, {}).update(values)
    _restore_tuples(saved["param_groups"], optimizer.param_groups)
    optimizer_state["param_groups"] = saved["param_groups"]
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(strict=False))


def _assemble_shards(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model from a checkpoint that has only shards: parameters assembled from
    ``sharded/`` (no process group needed), buffers from rank 0's file."""
    buffers = set(_buffers(model))
    whole = {key: torch.empty_like(value, device="cpu") for key, value in model.state_dict().items() if key not in buffers}
    tensors = {f"model/{key}": value for key, value in whole.items()}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process.*", category=UserWarning)
            dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(path / SHARDED_DIR)), no_dist=True)
    except Exception as error:
        raise CheckpointError(f"cannot assemble the shards of checkpoint {path}: {error}") from error
    rank_zero = path / BUFFERS_DIR / _buffers_file(0)
    return {**whole, **(load_file(rank_zero) if rank_zero.is_file() else {})}


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
    (every process writes its part), never weights that are not finite; resuming
    takes the newest complete checkpoint."""

    def __init__(self, directory: Path, every: int, steps_per_epoch: int):
        self.directory, self.every, self.steps_per_epoch = directory, every, steps_per_epoch
        self.saved_step: int | None = None
        self.saved_final = False  # whether that checkpoint was written as the run's last one

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step % self.steps_per_epoch == 0

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
             final: bool = False) -> None:
        """Every process calls it; ``final``: the run's last checkpoint, which under FSDP also
        holds the whole model for evaluation and export."""
        # A checkpoint is only ever a good one: weights that overflowed are never written.
        local = (t.to_local() if isinstance(t, DTensor) else t for t in model.state_dict().values())
        finite = all(bool(torch.isfinite(t).all()) for t in local if t.is_floating_point())
        if distributed.any_rank(not finite):
            raise TrainingDiverged(f"weights became non-finite at step {step}; training stopped, {self.last_good()}")
        try:
            save_checkpoint(self.directory, step, model, optimizer, state, full_model=final)
        except (OSError, SafetensorError) as error:  # a full disk: stop with the previous checkpoint intact
            raise CheckpointError(
                f"cannot write the checkpoint of step {step} ({getattr(error, 'strerror', None) or error}); "
                f"training stopped, {self.last_good()}"
            ) from error
        self.saved_step, self.saved_final = step, final

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
