"""`selfsup pretrain` under torchrun with 2 gloo processes on the CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfsup.train import checkpoint

# Process groups of 2 gloo processes on the CPU.
pytestmark = pytest.mark.distributed


def torchrun(run, overrides, *extra, length=("--epochs", "2")):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "selfsup.cli", "pretrain", *length, "--batch-size", "32", "--out", str(run),
        "eval.baselines=false", *[o for o in overrides if not o.startswith("train.batch_size")], *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_pretrain_under_torchrun_with_two_processes(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    result = torchrun(run, tiny_overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("method simclr |") == 1  # one summary table, from rank 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2
    # 1437 images / (32 x 2 processes) = 22 steps per epoch
    assert summary["steps"] == 44
    weights = load_file(checkpoint.latest_checkpoint(run / "checkpoints") / checkpoint.MODEL_FILE)
    assert all(torch.isfinite(w.float()).all() for w in weights.values())


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path, tiny_overrides):
    result = torchrun(tmp_path / "run", tiny_overrides, "train.sync_batchnorm=true")
    assert result.returncode != 0
    assert "train.sync_batchnorm=true needs CUDA" in result.stderr


def test_a_budget_stops_every_process_at_the_same_step(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    result = torchrun(run, tiny_overrides, "eval.enabled=false", length=("--budget", "4s"))
    assert result.returncode == 0, result.stderr[-3000:]
    # Had one process stopped at another step than the other, the other would wait in a
    # collective until the timeout: the run ending at all is the first check.
    summary = json.loads((run / "summary.json").read_text())
    state = json.loads((checkpoint.latest_checkpoint(run / "checkpoints") / "state.json").read_text())
    assert state["step"] == summary["steps"] > 0
    planned = state["planned_steps"]  # null when the budget ran out before the step time was measured
    if summary["stopped_by"] == "schedule":
        assert summary["steps"] == planned
    else:
        assert summary["stopped_by"] == "budget" and (planned is None or summary["steps"] < planned)


# seer-tiny made lighter still (16 px, 2 local crops, 11 steps of 2 x 64 images): the recipe's
# code path (SwAV, RegNetY, LARS, FSDP with activation checkpointing) at a fraction of its cost.
SEER_TINY = ["--recipe", "seer-tiny", "eval.enabled=false", "data.size=16", "augment.local_crops=2", "train.batch_size=64",
             "train.checkpoint_every=4"]


def _torchrun_pretrain(*arguments):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "selfsup.cli", "pretrain",
            *arguments]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found += children
        pending += children
    return found


@pytest.mark.e2e
def test_seer_tiny_under_fsdp_killed_with_sigkill_resumes_bit_identical(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    result = subprocess.run(_torchrun_pretrain(*SEER_TINY, "--out", str(reference)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train.strategy=fsdp over 2 processes" in result.stderr + result.stdout
    config = (reference / "config.yaml").read_text()
    assert "recipe: seer-tiny@1" in config and "strategy: fsdp" in config and "activation_checkpointing: true" in config
    final = checkpoint.latest_checkpoint(reference / "checkpoints")
    assert (final / checkpoint.MODEL_FILE).is_file() and (final / checkpoint.SHARDED_DIR).is_dir()

    process = subprocess.Popen(_torchrun_pretrain(*SEER_TINY, "--out", str(killed)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / checkpoint.checkpoint_name(4)).is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        for pid in [process.pid, *_descendants(process.pid)]:  # torchrun and both workers, mid-epoch
            os.kill(pid, signal.SIGKILL)
        process.wait()
    resumed = subprocess.run(_torchrun_pretrain("--resume", str(killed)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr + resumed.stdout
    expected = load_file(final / checkpoint.MODEL_FILE)
    found = load_file(checkpoint.latest_checkpoint(killed / "checkpoints") / checkpoint.MODEL_FILE)
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[key], found[key]) for key in expected)


@pytest.mark.e2e
def test_streamed_shards_killed_mid_epoch_under_torchrun_resume_bit_identical(tmp_path, tiny_overrides):
    from selfsup.data.packing import pack_shards

    pack_shards("digits", tmp_path / "shards", max_count=150, workers=0, progress=False)
    # 1,437 training images in batches of 2 x 32: one epoch of 22 steps, checkpoints every 5 steps.
    overrides = [o for o in tiny_overrides if not o.startswith(("data.source", "train."))] + [
        f"data.source={tmp_path / 'shards'}", "data.stream=always", "data.channels=1", "train.batch_size=32", "train.epochs=1",
        "train.checkpoint_every=5", "eval.enabled=false"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    result = subprocess.run(_torchrun_pretrain(*overrides, "--out", str(reference)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "streamed from 12 shards" in result.stderr + result.stdout

    process = subprocess.Popen(_torchrun_pretrain(*overrides, "--out", str(killed)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / checkpoint.checkpoint_name(15)).is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        for pid in [process.pid, *_descendants(process.pid)]:  # torchrun, both workers and their loaders
            os.kill(pid, signal.SIGKILL)
        process.wait()
    state = json.loads((checkpoint.latest_checkpoint(killed / "checkpoints") / "state.json").read_text())
    assert 0 < state["step"] < 22  # killed in the middle of the epoch
    resumed = subprocess.run(_torchrun_pretrain("--resume", str(killed)), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_file(checkpoint.latest_checkpoint(reference / "checkpoints") / checkpoint.MODEL_FILE)
    found = load_file(checkpoint.latest_checkpoint(killed / "checkpoints") / checkpoint.MODEL_FILE)
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[key], found[key]) for key in expected)
