"""`selfsup pretrain` under torchrun with 2 gloo processes on the CPU."""

import json
import subprocess
import sys

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
