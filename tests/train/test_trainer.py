import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from selfsup import runs
from selfsup.train import checkpoint
from selfsup.train.logging import read_metrics
from selfsup.train.trainer import TrainingDiverged


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


def test_resume_after_sigkill_gives_identical_weights(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["train.epochs=4", "train.checkpoint_every=3", "eval.enabled=false"]
    reference = tmp_path / "reference"
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "selfsup.cli", "pretrain", *overrides]

    subprocess.run(command + [f"out={reference}"], check=True, capture_output=True)

    process = subprocess.Popen(command + [f"out={interrupted}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill once a few checkpoints exist, at whatever point the run is then (mid-step or mid-write).
    while time.time() < deadline and process.poll() is None:
        found = checkpoint.list_checkpoints(interrupted / "checkpoints")
        if found and json.loads((found[-1] / "state.json").read_text())["step"] >= 9:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; lengthen it"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.latest_checkpoint(interrupted / "checkpoints")
    final_step = json.loads((checkpoint.latest_checkpoint(reference / "checkpoints") / "state.json").read_text())["step"]
    assert json.loads((killed_at / "state.json").read_text())["step"] < final_step

    subprocess.run([sys.executable, "-m", "selfsup.cli", "pretrain", "--resume", str(interrupted)], check=True, capture_output=True)

    expected = load_file(checkpoint.latest_checkpoint(reference / "checkpoints") / checkpoint.MODEL_FILE)
    resumed = load_file(checkpoint.latest_checkpoint(interrupted / "checkpoints") / checkpoint.MODEL_FILE)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    # The metrics of the resumed run read as one run: every logged step exactly once.
    steps = [r["step"] for r in read_metrics(interrupted / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config):
    config = tiny_config("train.epochs=50", "train.lr=1e12", "train.checkpoint_every=1", "train.optimizer=sgd", "eval.enabled=false")
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*last good checkpoint") as raised:
        runs.pretrain(config)
    last = checkpoint.latest_checkpoint(Path(config.out) / "checkpoints")
    assert last is not None
    weights = load_file(last / checkpoint.MODEL_FILE)
    assert all(torch.isfinite(w.float()).all() for w in weights.values())
    assert str(last) in str(raised.value)


def test_budget_stops_on_wall_clock(tiny_config):
    config = tiny_config("train.budget=4s", "eval.enabled=false")
    started = time.perf_counter()
    summary = runs.pretrain(config)
    assert time.perf_counter() - started < 60
    assert summary["seconds"] < 8
    assert summary["steps"] > 0
