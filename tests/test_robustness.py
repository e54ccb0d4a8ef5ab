"""Nothing lost, nothing cryptic: the bad-input table (each case exits 2 with one line that
names the problem and no traceback), and what a long run needs: a status file, a lock,
graceful stops, resuming past a corrupted checkpoint, and a finished run left alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from selfsup import config as config_module
from selfsup import rundir, runs
from selfsup.cli import main
from selfsup.config import ConfigError, parse_budget
from selfsup.files import write_atomic
from selfsup.report import format_summary
from selfsup.train import checkpoint


def _folder(path, count: int):
    path.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path / f"{index}.png")
    return path


# (arguments after `selfsup`, what the one line must say); the paths are made by the test.
BAD_INPUT = [
    (["pretrain", "--data", "digits", "--budget", "0"], "'0' is not a positive duration"),
    (["pretrain", "--data", "digits", "--budget", "-5m"], "'-5m' is not a positive duration"),
    (["pretrain", "--data", "digits", "--budget", "soon"], "'soon' is not a duration"),
    (["pretrain", "--data", "digits", "--epochs", "-1"], "epochs must be at least 1"),
    (["pretrain", "--data", "digits", "train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["pretrain", "--data", "digits", "method.temperature=hot"], "method.temperature must be a number, got 'hot'"),
    (["pretrain", "--data", "{missing}"], "is not an existing folder"),
    (["pretrain", "--data", "{one_image}"], "has 1 sample(s); self-supervised training needs at least 2"),
    (["pretrain", "--data", "{empty}"], "empty"),
    (["pretrain", "--method", "lvp", "--data", "moving-sprites:digits", "video.clips=64", "video.test_clips=8",
      "method.regularizer=l2"], "method.regularizer must be one of"),
    (["pretrain", "--config", "{yaml_list}"], "must hold a mapping of sections, got list"),
    (["pretrain", "--config", "{yaml_bomb}"], "expands to more than 100,000 values"),
    (["pretrain", "--config", "{missing}"], "does not exist"),
    (["pretrain", "--resume", "{missing}"], "cannot resume"),
    (["evaluate", "{missing}"], "is not a run directory"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line_that_names_it(arguments, message, tmp_path, capsys):
    paths = {"missing": tmp_path / "missing", "one_image": _folder(tmp_path / "one", 1), "empty": _folder(tmp_path / "empty", 0),
             "yaml_list": tmp_path / "list.yaml", "yaml_bomb": tmp_path / "bomb.yaml"}
    paths["yaml_list"].write_text("- train\n- eval\n")
    # "Billion laughs": nine levels of nine aliases, 9^9 strings if anything expanded them.
    levels = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    paths["yaml_bomb"].write_text("method:\n  name: simclr\n  bomb:\n" + "".join(f"    {line}\n" for line in levels))
    arguments = [a.format(**{k: str(v) for k, v in paths.items()}) for a in arguments]
    if arguments[0] == "pretrain" and "--resume" not in arguments:
        arguments += ["--out", str(tmp_path / "run")]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    last = error.strip().splitlines()[-1]  # progress lines may come first
    assert last.startswith(f"selfsup {arguments[0]}: error: ") and message in last and "Traceback" not in error, error


def test_budgets_name_what_is_wrong():
    assert parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    for text, message in (("0", "not a positive duration"), ("-2m", "not a positive duration"), ("2 weeks", "not a duration")):
        with pytest.raises(ConfigError, match=message):
            parse_budget(text)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_atomic(tmp_path / "summary.json", "{}")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        model = torch.nn.Linear(2, 2)
        saved = checkpoint.save_checkpoint(tmp_path / "checkpoints", 1, model, torch.optim.SGD(model.parameters(), lr=0.1), {})
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [path, plain, *saved.iterdir()]}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_the_summary_table_says_which_limit_stopped_the_run():
    summary = {"method": "simclr", "steps": 10, "seconds": 60, "images_per_second": 5}
    # The first paragraph is the run's header line (continued on a second line when it is long).
    assert format_summary({**summary, "stopped_by": "budget"}).split("\n\n")[0].endswith("stopped by the time budget")
    assert format_summary({**summary, "stopped_by": "schedule"}).split("\n\n")[0].endswith("all planned steps done")


# Real summaries' shapes (an image run with baselines and clustering prototypes, a text run, a
# video run), with the longest values they hold in practice: a data folder, collapse reasons.
_IMAGE_SUMMARY = {
    "method": "swav", "modality": "image", "data": "/home/someone/datasets/imagenette2-320/train-with-a-long-name",
    "backbone": "resnet50", "steps": 12500, "seconds": 86400.5, "images_per_second": 1234.5, "stopped_by": "signal",
    "knn_top1": 0.9056, "knn200_top1": 0.7583, "linear_top1": 0.9167, "fewshot": {"1": 0.47, "10": 0.78, "100": 0.89},
    "energy_auc": 0.5777,
    "collapse": {
        "std_sqrt_d": 0.0536, "effective_rank": 7.14, "alignment": 0.0046, "uniformity": -0.0118, "collapsed": True,
        "reasons": ["std_sqrt_d = 0.05361 is below 0.2: the normalised embeddings barely vary (about 1 when spread over the "
                    "sphere, 0 when all equal)", "largest cluster holds 95.0% of the images (at least 90%: one prototype takes them)"],
        "prototypes": {"used": 3000, "largest_share": 0.95, "entropy": 0.1234, "assignment_entropy": 0.5678},
    },
    "baselines": {name: {"knn_top1": 0.97, "knn200_top1": 0.94, "linear_top1": 0.96, "fewshot": {"1": 0.6, "10": 0.9, "100": 0.94}}
                  for name in ("raw_pixels", "random_init")},
}
_TEXT_SUMMARY = {
    "method": "mlm", "modality": "text", "data": "/tmp/tbcorpus", "backbone": "transformer", "steps": 6, "seconds": 3.13,
    "images_per_second": 15.3, "stopped_by": "schedule", "masked_accuracy": 0.333, "perplexity": 85.8, "energy_auc": 0.516,
    "homonyms": {"words": {str(i): {} for i in range(10)}, "mean_cosine": 0.949},
    "knn_top1": 1.0, "knn200_top1": 1.0, "linear_top1": 1.0, "fewshot": {"1": 0.625, "10": 1.0, "100": 1.0},
    "baselines": {name: {"knn_top1": 1.0, "knn200_top1": 1.0, "linear_top1": 1.0, "fewshot": {"1": 0.75, "10": 1.0, "100": 1.0}}
                  for name in ("bag_of_words", "random_init", "mean_word2vec")},
}
_VIDEO_SUMMARY = {
    "method": "lvp", "modality": "video", "data": "moving-sprites", "backbone": "frames", "steps": 400, "seconds": 120,
    "images_per_second": 80.0, "stopped_by": "budget", "energy_auc": 0.81,
    "energy_auc_by_negative": {"other_clip": 0.81, "reversed": 0.64, "shifted": 0.72},
    "best_of_k": {"1": 0.0123, "4": 0.0101, "16": 0.0089}, "sample_diversity": 0.0042,
    "predictions": "/home/someone/experiments/runs/lvp-moving-sprites-20261124-101500/predictions.png",
    "collapse": {"std_sqrt_d": 0.9, "effective_rank": 40.2, "alignment": 0.3, "uniformity": -2.1, "collapsed": False, "reasons": []},
}


@pytest.mark.parametrize("summary", [_IMAGE_SUMMARY, _TEXT_SUMMARY, _VIDEO_SUMMARY], ids=["image", "text", "video"])
def test_the_summary_table_fits_100_columns_and_keeps_every_word(summary):
    table = format_summary(summary)
    assert max(map(len, table.splitlines())) <= 100, table
    # Continued lines lose nothing: every character of the long values is there, in order.
    characters = "".join(table.split())
    for text in [summary["data"], summary.get("predictions", ""), *summary.get("collapse", {}).get("reasons", [])]:
        assert "".join(text.split()) in characters, text


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path, capsys):
    with rundir.RunLock(tmp_path / "run"):
        assert main(["pretrain", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert f"is in use by another selfsup process (pid {os.getpid()})" in error
    with rundir.RunLock(tmp_path / "run"):  # released: the next process gets it
        pass


# ---------------------------------------------------------------------------- whole runs
@pytest.mark.e2e
def test_two_images_with_batch_size_1_train_evaluate_and_say_finished(tmp_path, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith(("data.", "train.batch_size"))]
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(_folder(tmp_path / "two", 2)), "--epochs", "2", "--batch-size", "1",
                 "--out", str(run), "data.size=12", *overrides]) == 0
    status = json.loads((run / rundir.STATUS_FILE).read_text())
    assert status["state"] == "finished" and status["step"] == 4 and status["stopped_by"] == "schedule"
    listed = {row["run"]: row for row in rundir.list_runs(tmp_path)}
    assert listed["run"]["state"] == "finished" and listed["run"]["step"] == 4


@pytest.mark.e2e
def test_a_failed_run_says_so_in_its_status(tiny_config):
    config = tiny_config("train.epochs=50", "train.lr=1e12", "train.checkpoint_every=1", "train.optimizer=sgd", "eval.enabled=false")
    with pytest.raises(checkpoint.TrainingDiverged):
        runs.pretrain(config)
    status = rundir.read_status(Path(config.out))
    assert status["state"] == "failed" and status["reason"].startswith("TrainingDiverged: ")
    assert "last good checkpoint" in status["reason"]
    assert status["step"] == json.loads((checkpoint.latest_checkpoint(Path(config.out) / "checkpoints") / "state.json").read_text())["step"]


@pytest.mark.e2e
def test_sigterm_checkpoints_and_resume_ends_with_identical_weights(tmp_path, tiny_overrides):
    overrides = tiny_overrides + ["train.epochs=4", "train.checkpoint_every=1000", "eval.enabled=false"]
    command = [sys.executable, "-m", "selfsup.cli", "pretrain", *overrides]
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    subprocess.run(command + [f"out={reference}"], check=True, capture_output=True)

    process = subprocess.Popen(command + [f"out={stopped}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # The metrics file has a line every 5 steps: stop once training is well under way.
    while time.time() < deadline and process.poll() is None:
        metrics = stopped / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped; lengthen it"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    status = json.loads((stopped / rundir.STATUS_FILE).read_text())
    final = json.loads((checkpoint.latest_checkpoint(reference / "checkpoints") / "state.json").read_text())["step"]
    assert status["state"] == "stopped" and status["reason"] == "SIGTERM" and 15 <= status["step"] < final
    # Stopped at a step boundary: the checkpoint is of the step the status names, not an earlier one.
    assert json.loads((checkpoint.latest_checkpoint(stopped / "checkpoints") / "state.json").read_text())["step"] == status["step"]

    subprocess.run([sys.executable, "-m", "selfsup.cli", "pretrain", "--resume", str(stopped)], check=True, capture_output=True)
    _assert_same_final_weights(reference, stopped)
    assert json.loads((stopped / rundir.STATUS_FILE).read_text())["state"] == "finished"


@pytest.mark.e2e
def test_resume_skips_a_corrupted_newest_checkpoint_and_a_finished_run_is_left_alone(tmp_path, tiny_overrides, capsys):
    run = tmp_path / "run"
    arguments = ["pretrain", *tiny_overrides, "train.epochs=2", "train.checkpoint_every=10", f"out={run}"]
    assert main(arguments + ["eval.enabled=false"]) == 0
    reference = {k: v.clone() for k, v in load_file(checkpoint.latest_checkpoint(run / "checkpoints") / checkpoint.MODEL_FILE).items()}

    # Finished: resuming says so and changes nothing.
    before = {path: path.read_bytes() for path in (run / rundir.SUMMARY_FILE, run / "metrics.jsonl")}
    events = sorted((run / "tensorboard").iterdir())
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert "finished at step 44; nothing to resume" in capsys.readouterr().err
    assert all(path.read_bytes() == content for path, content in before.items())
    assert sorted((run / "tensorboard").iterdir()) == events

    # The newest checkpoint truncated, the summary gone (as if killed while writing them).
    newest = checkpoint.latest_checkpoint(run / "checkpoints")
    weights = newest / checkpoint.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    (run / rundir.SUMMARY_FILE).unlink()
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert f"skipped checkpoint {newest.name}, which cannot be read" in capsys.readouterr().err
    resumed = load_file(checkpoint.latest_checkpoint(run / "checkpoints") / checkpoint.MODEL_FILE)
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)


@pytest.mark.e2e
def test_a_non_finite_loss_at_step_k_stops_with_a_resumable_checkpoint(tmp_path, tiny_overrides):
    from selfsup.config import Config
    from selfsup.methods import METHODS
    from selfsup.methods.simclr import SimCLR

    class PoisonedOnce(SimCLR):
        """SimCLR whose loss is NaN at step 9 while ``armed``: the seam this test needs."""

        name = "simclr-poisoned-once"
        armed = True

        def on_step_start(self, info):
            self.step = info.step

        def pair_loss(self, z_a, z_b):
            loss = super().pair_loss(z_a, z_b)
            return loss * float("nan") if self.armed and self.step == 9 else loss

    def config(out):
        return config_module.apply_overrides(Config(), [*tiny_overrides, f"method.name={PoisonedOnce.name}", "train.epochs=1",
                                                        "train.checkpoint_every=4", "eval.enabled=false", f"out={out}"])

    try:
        with pytest.raises(checkpoint.TrainingDiverged, match=r"loss is not finite at step 9.*last good checkpoint .*step 8"):
            runs.pretrain(config(tmp_path / "poisoned"))
        assert rundir.read_status(tmp_path / "poisoned")["state"] == "failed"
        PoisonedOnce.armed = False
        runs.pretrain(Config(), resume_dir=tmp_path / "poisoned")
        runs.pretrain(config(tmp_path / "clean"))
    finally:
        METHODS.pop(PoisonedOnce.name)
    _assert_same_final_weights(tmp_path / "clean", tmp_path / "poisoned")


def _assert_same_final_weights(reference, other):
    expected = load_file(checkpoint.latest_checkpoint(reference / "checkpoints") / checkpoint.MODEL_FILE)
    found = load_file(checkpoint.latest_checkpoint(other / "checkpoints") / checkpoint.MODEL_FILE)
    assert expected.keys() == found.keys()
    for key in expected:
        assert torch.equal(expected[key], found[key]), key


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs (room for two checkpoints of the tiny run, about 244 KiB each, not three); skipped where
    this user may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.e2e
def test_a_full_disk_keeps_the_last_checkpoint_and_resume_ends_identical(tmp_path, tiny_overrides, small_disk):
    overrides = tiny_overrides + ["train.epochs=1", "train.checkpoint_every=3", "eval.enabled=false"]
    command = [sys.executable, "-m", "selfsup.cli", "pretrain", *overrides]
    subprocess.run(command + [f"out={tmp_path / 'reference'}"], check=True, capture_output=True)
    run = small_disk / "run"
    result = subprocess.run(command + [f"out={run}"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "No space left on device" in result.stderr and "the last good checkpoint is" in result.stderr
    # The previous checkpoint is intact and loadable; no partial one is left to be picked up.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [checkpoint.checkpoint_name(3), checkpoint.checkpoint_name(6)]
    state = json.loads((run / "checkpoints" / checkpoint.checkpoint_name(6) / checkpoint.STATE_FILE).read_text())
    assert state["step"] == 6 and len(load_file(run / "checkpoints" / checkpoint.checkpoint_name(6) / checkpoint.MODEL_FILE))

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # space freed
    subprocess.run([sys.executable, "-m", "selfsup.cli", "pretrain", "--resume", str(run)], check=True, capture_output=True)
    _assert_same_final_weights(tmp_path / "reference", run)


# ---------------------------------------------------------------------------- fuzz corpora
def _image_corpus(root):
    """Images a user's folder may hold, made here: (good file names, bad file names)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    root.mkdir()
    good = {
        "rgb.png": lambda p: rgb.save(p),
        "photo.jpg": lambda p: rgb.save(p, quality=90),
        "photo.webp": lambda p: rgb.save(p),
        "scan.tiff": lambda p: rgb.save(p),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
        "palette_alpha.png": lambda p: rgb.convert("P").save(p, transparency=0),
        "grey16.png": lambda p: Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(p),
        "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p),
        "thin.png": lambda p: Image.new("L", (1, 5000), 128).save(p),
        "animated.gif": lambda p: rgb.save(p, save_all=True, append_images=[rgb.rotate(90)], duration=50),
        "png_named.jpg": lambda p: rgb.save(p, format="PNG"),  # a wrong extension, a good image
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    good["rotated.jpg"] = lambda p: rgb.save(p, exif=exif)
    for name, make in good.items():
        make(root / name)
    bad = {}
    for name in ("rgb.png", "photo.jpg", "animated.gif", "photo.webp", "scan.tiff"):
        bad[f"truncated_{name}"] = (root / name).read_bytes()[:40]
    bad["zero_bytes.png"] = b""
    bad["notes.jpg"] = b"not an image at all"
    for name, data in bad.items():
        (root / name).write_bytes(data)
    return set(good), set(bad)


def test_every_good_image_is_used_and_every_bad_one_listed_with_its_reason(tmp_path):
    from selfsup.data import load_folder

    good, bad = _image_corpus(tmp_path / "images")
    images = load_folder(tmp_path / "images", channels=3, size=16, workers=0)
    assert {os.path.basename(path) for path in images.paths} == good
    reasons = {os.path.basename(path): reason for path, reason in images.skipped}
    assert set(reasons) == bad and all(reasons.values())
    assert images.images.shape == (len(good), 3, 16, 16)


def test_text_folders_keep_the_readable_files_and_cut_a_huge_line(tmp_path):
    from selfsup.data.text import MAX_DOCUMENT_CHARACTERS, text_files

    root = tmp_path / "texts"
    root.mkdir()
    (root / "good.txt").write_text("The cat sat on the mat.\n\nFish swim.\n")
    (root / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (root / "blank.md").write_text("\n   \n\t\n\n")
    (root / "huge.txt").write_text("word " * 10_000_000)  # one 50 MB line
    corpus = text_files(root)
    assert "The cat sat on the mat." in corpus.documents and "Fish swim." in corpus.documents
    assert max(len(document) for document in corpus.documents) == MAX_DOCUMENT_CHARACTERS
    reasons = {os.path.basename(path): reason for path, reason in corpus.skipped}
    assert set(reasons) == {"binary.txt", "latin1.txt", "blank.md"}
    assert "NUL byte" in reasons["binary.txt"] and "not UTF-8" in reasons["latin1.txt"] and "no text" in reasons["blank.md"]


@pytest.mark.e2e
def test_a_finished_run_trains_longer_when_resumed_with_more_epochs(tmp_path, tiny_overrides, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *tiny_overrides, "train.epochs=1", "eval.enabled=false", f"out={run}"]) == 0
    assert main(["pretrain", "--resume", str(run), "--epochs", "1"]) == 0
    assert "finished at step 22; nothing to resume" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(run), "--epochs", "2"]) == 0
    assert json.loads((run / rundir.SUMMARY_FILE).read_text())["steps"] == 44
    assert json.loads((run / rundir.STATUS_FILE).read_text())["step"] == 44
    assert config_module.load(run / rundir.CONFIG_FILE).train.epochs == 2
    assert main(["pretrain", "--resume", str(run), "--seed", "3"]) == 2
    assert "only --epochs or --budget may lengthen it" in capsys.readouterr().err


def test_nothing_is_unpickled_and_yaml_is_read_safely():
    import selfsup

    source = "\n".join(path.read_text() for path in Path(selfsup.__file__).parent.rglob("*.py"))
    assert "pickle.load" not in source and "yaml.load(" not in source and "unsafe_load" not in source
    assert "torch.load(" not in source or "weights_only=True" in source


def test_pruning_checkpoints_never_follows_a_link_out_of_the_run(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / checkpoint.STATE_FILE).write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / checkpoint.checkpoint_name(0)).symlink_to(outside, target_is_directory=True)
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path / "checkpoints", step, model, None, {}, keep=1)
    assert (outside / checkpoint.STATE_FILE).is_file()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")] == [checkpoint.checkpoint_name(3)]
