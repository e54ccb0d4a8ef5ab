"""The command line, run as a user runs it: real processes, real files."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from selfsup.data import labelled_subset, load_splits
from selfsup.train import checkpoint

# Whole runs (`selfsup pretrain` and the commands after it).
pytestmark = pytest.mark.e2e

SUMMARY_KEYS = {
    "method", "data", "steps", "seconds", "images_per_second", "knn_top1", "knn200_top1", "linear_top1",
    "fewshot", "energy_auc", "collapse", "baselines",
}
ACCURACY_KEYS = {"knn_top1", "knn200_top1", "linear_top1", "fewshot"}


def selfsup(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"selfsup {' '.join(args)} failed:\n{result.stderr}")
    return result


def test_methods_lists_every_method_with_a_line():
    out = selfsup("methods").stdout
    assert "simclr" in out and "siamese-naive" in out and "NT-Xent" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train.lrr=0.1"], "unknown config key 'train.lrr'"),
        (["--method", "simclrr"], "unknown method 'simclrr'; available: moco-v2, moco-v3, simclr"),
        (["--backbone", "resnet7"], "unknown backbone 'resnet7'; available: convnet-small"),
        (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
        (["train.optimizer=adam"], "sgd, lars, adamw"),
        (["--budget", "soon"], "train.budget"),
    ],
)
def test_bad_configuration_fails_with_a_clear_message(args, message, tmp_path, capsys):
    # In this process (the exit path is main's; a process per case only repeats torch's import).
    from selfsup.cli import main

    assert main(["pretrain", "--data", "digits", "--out", str(tmp_path / "run"), *args]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_pretrain_writes_a_complete_run_directory_then_evaluate_and_embed(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    result = selfsup("pretrain", "--epochs", "2", "--out", str(run), *tiny_overrides, "eval.projector=60", "eval.report=true")
    assert "kNN k=20" in result.stdout and "raw pixels" in result.stdout and "random init" in result.stdout
    assert f"selfsup export {run} --format onnx" in result.stdout and f"report: {run / 'report.html'}" in result.stdout
    assert "<img" in (run / "report.html").read_text()  # the browser test is tests/test_report_html.py
    # The evaluation in TensorBoard: its scalars, and 60 held-out digits in the projector.
    projector = list((run / "tensorboard").rglob("metadata.tsv"))
    assert len(projector) == 1 and len(projector[0].read_text().splitlines()) == 60

    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    latest = checkpoint.latest_checkpoint(run / "checkpoints")
    assert (latest / "model.safetensors").is_file() and (latest / "state.json").is_file()

    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert set(summary["fewshot"]) == {"1", "10", "100"}
    assert {"std_sqrt_d", "effective_rank", "alignment", "uniformity", "collapsed"} <= summary["collapse"].keys()
    for baseline in ("raw_pixels", "random_init"):
        assert ACCURACY_KEYS <= summary["baselines"][baseline].keys()
    for value in [summary["knn_top1"], summary["linear_top1"], *summary["fewshot"].values()]:
        assert 0 <= value <= 1

    evaluated = selfsup("evaluate", str(run))
    assert "kNN k=20" in evaluated.stdout
    assert json.loads((run / "summary.json").read_text())["knn_top1"] == pytest.approx(summary["knn_top1"])

    features = tmp_path / "features.npy"
    selfsup("embed", str(run), "--data", "digits", "--out", str(features))
    array = np.load(features)
    assert array.shape[0] == 1797 and np.isfinite(array).all()

    exported = selfsup("export", str(run), "--format", "onnx", "--out", str(tmp_path / "encoder.onnx"))
    assert "encoder.onnx" in exported.stdout and (tmp_path / "encoder.onnx").stat().st_size > 0
    query = tmp_path / "query.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(query)
    found = selfsup("neighbors", str(run), "--query", str(query), "--data", "digits", "-k", "3", "--out", str(tmp_path / "grid.png"))
    assert found.stdout.count("query.png") == 3 and (tmp_path / "grid.png").is_file()
    listed = selfsup("runs", str(tmp_path), "--sort", "knn", "--where", "method=simclr")
    assert "10-shot" in listed.stdout and "run " in listed.stdout.splitlines()[0]
    assert selfsup("runs", str(tmp_path), "--where", "method=dino", check=False).returncode == 2


def test_a_folder_with_broken_files_trains_on_the_good_ones(tmp_path, tiny_overrides):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("circles", "squares"):
        (folder / label).mkdir(parents=True)
        for index in range(40):
            canvas = np.zeros((20, 20), np.uint8)
            y, x = rng.integers(2, 10, size=2)
            if label == "squares":
                canvas[y : y + 8, x : x + 8] = 255
            else:
                yy, xx = np.mgrid[:20, :20]
                canvas[(yy - y - 4) ** 2 + (xx - x - 4) ** 2 < 16] = 255
            Image.fromarray(canvas).save(folder / label / f"{index}.png")
    for index in range(5):  # unlabelled: directly in the folder
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"loose{index}.png")
    (folder / "squares" / "empty.png").write_bytes(b"")
    (folder / "circles" / "notes.jpg").write_text("not an image")
    good = folder / "circles" / "0.png"
    (folder / "circles" / "truncated.png").write_bytes(good.read_bytes()[:40])

    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith(("data.", "train.batch_size"))]
    selfsup("pretrain", "--data", str(folder), "--epochs", "2", "--batch-size", "16", "--out", str(run), "data.channels=1", "data.size=16",
            "train.knn_every=1", *overrides)
    skipped = (run / "skipped_files.txt").read_text()
    for name in ("empty.png", "notes.jpg", "truncated.png"):
        assert name in skipped
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_files"] == 3
    # Evaluated on the labelled files only: the accuracy is a whole number of those test files.
    test_files = len(labelled_subset(load_splits(str(folder), 1, 16)[2]))
    assert 0 < test_files < 85 and float(summary["knn_top1"] * test_files).is_integer()
    assert summary["steps"] > 0

    features = tmp_path / "folder.npy"
    result = selfsup("embed", str(run), "--data", str(folder), "--out", str(features))
    assert np.load(features).shape[0] == 85
    assert len((tmp_path / "folder.npy.files.txt").read_text().splitlines()) == 85
    row = next(line for line in result.stdout.splitlines() if "folder.npy" in line)
    assert row.split()[:3] == ["85", str(np.load(features).shape[1]), "3"]  # rows, dim, skipped


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = selfsup("pretrain", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), check=False)
    assert result.returncode != 0 and "empty" in result.stderr and "Traceback" not in result.stderr


def test_an_unlabelled_folder_reports_energy_and_collapse_without_accuracies(tmp_path, tiny_overrides):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(40):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith(("data.", "train.batch_size"))]
    result = selfsup("pretrain", "--data", str(folder), "--epochs", "1", "--batch-size", "8", "--out", str(run), "data.size=12", *overrides)
    summary = json.loads((run / "summary.json").read_text())
    assert "knn_top1" not in summary and "energy_auc" in summary and "collapse" in summary
    assert "energy AUC" in result.stdout
