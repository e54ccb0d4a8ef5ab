import dataclasses
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

from selfsup import runs
from selfsup.data import load_splits
from selfsup.modalities import modality_of
from selfsup.train import checkpoint
from selfsup.train.budget import CALIBRATION_STEPS
from selfsup.train.checkpoint import TrainingDiverged
from selfsup.train.logging import read_metrics
from selfsup.train.trainer import Trainer

# Whole runs (`selfsup pretrain` and the commands after it).
pytestmark = pytest.mark.e2e


def test_training_lowers_the_loss_and_logs_collapse_metrics_and_online_knn(tiny_config):
    config = tiny_config("train.epochs=6", "train.knn_every=3", "eval.enabled=false")
    runs.pretrain(config)
    records = read_metrics(Path(config.out) / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    losses = [r["loss"] for r in train]
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1
    assert all({"std_sqrt_d", "effective_rank", "lr", "images_per_second"} <= r.keys() for r in train)
    online = [r for r in records if r["kind"] == "eval"]
    assert len(online) == 2 and all(0.5 < r["knn_top1"] <= 1 for r in online)


def _killed_and_resumed(tmp_path, overrides, kill_after_step):
    """Run ``overrides`` straight through, and again killed with SIGKILL once a checkpoint at
    ``kill_after_step`` or later exists, then resumed; the two final weights must be equal."""
    reference = tmp_path / "reference"
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "selfsup.cli", "pretrain", *overrides]

    subprocess.run(command + [f"out={reference}"], check=True, capture_output=True)

    process = subprocess.Popen(command + [f"out={interrupted}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill once a few checkpoints exist, at whatever point the run is then (mid-step or mid-write).
    while time.time() < deadline and process.poll() is None:
        found = checkpoint.list_checkpoints(interrupted / "checkpoints")
        if found and json.loads((found[-1] / "state.json").read_text())["step"] >= kill_after_step:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; lengthen it"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.latest_checkpoint(interrupted / "checkpoints")
    final_state = json.loads((checkpoint.latest_checkpoint(reference / "checkpoints") / "state.json").read_text())
    killed_state = json.loads((killed_at / "state.json").read_text())
    assert killed_state["step"] < final_state["step"]
    assert killed_state["step"] % final_state["steps_per_epoch"] != 0  # in the middle of an epoch

    subprocess.run([sys.executable, "-m", "selfsup.cli", "pretrain", "--resume", str(interrupted)], check=True, capture_output=True)

    expected = load_file(checkpoint.latest_checkpoint(reference / "checkpoints") / checkpoint.MODEL_FILE)
    resumed = load_file(checkpoint.latest_checkpoint(interrupted / "checkpoints") / checkpoint.MODEL_FILE)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    # The metrics of the resumed run read as one run: every logged step exactly once.
    steps = [r["step"] for r in read_metrics(interrupted / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))


def test_a_streamed_folder_resumed_mid_epoch_after_sigkill_gives_identical_weights(tmp_path, tiny_overrides, digits_folder):
    # 600 files in batches of 64: 9 steps per epoch; checkpoints every 4 steps fall mid-epoch.
    overrides = [o for o in tiny_overrides if not o.startswith("data.source")]
    _killed_and_resumed(tmp_path, overrides + [f"data.source={digits_folder}", "data.stream=always", "data.channels=1",
                                               "train.epochs=3", "train.checkpoint_every=4", "eval.enabled=false"], 12)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config):
    config = tiny_config("train.epochs=50", "train.lr=1e12", "train.checkpoint_every=1", "train.optimizer=sgd", "eval.enabled=false")
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*last good checkpoint") as raised:
        runs.pretrain(config)
    last = checkpoint.latest_checkpoint(Path(config.out) / "checkpoints")
    assert last is not None
    weights = load_file(last / checkpoint.MODEL_FILE)
    assert all(torch.isfinite(w.float()).all() for w in weights.values())
    assert str(last) in str(raised.value)


class TickingClock:
    """A clock that moves on by ``tick`` seconds each time it is read."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_budget_fits_the_schedule_to_the_clock_and_stops_in_time(tiny_config, tmp_path):
    outcomes = []
    for attempt in range(2):
        config = dataclasses.replace(tiny_config("train.budget=40s", "eval.enabled=false"), out=str(tmp_path / str(attempt)))
        pretrain_set, _, _ = load_splits("digits", 1, 16)
        config = runs.resolve(config, pretrain_set)
        trainer = Trainer(runs.build_model(config), modality_of(config).build_view_maker(config), pretrain_set, config,
                          tmp_path / str(attempt), clock=TickingClock(0.5))
        result = trainer.fit()
        outcomes.append((result.steps, result.stopped_by, trainer.budget.planned_steps))
        assert result.seconds < 40 + 2  # the budget, and at most the last step's reads of the clock
    assert outcomes[0] == outcomes[1]  # the same clock, the same run
    steps, stopped_by, planned = outcomes[0]
    assert CALIBRATION_STEPS.stop < planned < trainer.budget.provisional_steps  # fitted to the measured step time
    assert steps == planned if stopped_by == "schedule" else (stopped_by == "budget" and steps < planned)
