"""`selfsup pretrain --modality video` end to end on tiny clips, and `selfsup predict`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from selfsup import config as config_module
from selfsup import runs
from selfsup.cli import main
from selfsup.config import Config, ConfigError

TINY = [
    "data.source=moving-sprites:digits", "video.clips=256", "video.test_clips=96", "video.frames_in=3", "video.frames_out=3",
    "video.size=32", "backbone.width=4", "train.batch_size=32", "train.log_every=50", "train.checkpoint_every=1000",
    "eval.fewshot_seeds=1",
]


def pretrain(tmp_path, name: str, *overrides: str) -> dict:
    config = config_module.apply_overrides(Config(), [*TINY, f"out={tmp_path / name}", *overrides])
    return runs.pretrain(config)


@pytest.fixture(scope="module")
def lvp_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("video")
    return tmp_path / "lvp", pretrain(tmp_path, "lvp", "method.name=lvp", "method.z_dim=4", "train.epochs=8")


@pytest.mark.e2e
def test_the_true_continuation_gets_lower_energy_after_a_short_run(lvp_run):
    run_dir, summary = lvp_run
    assert summary["modality"] == "video" and summary["method"] == "lvp"
    aucs = summary["energy_auc_by_negative"]
    assert set(aucs) == {"other_clip", "reversed", "shifted"}
    # Another clip's future shows another sprite somewhere else, a shifted one is off the
    # track: both clearly higher energy.
    assert aucs["other_clip"] > 0.7 and summary["energy_auc"] == aucs["other_clip"]
    assert aucs["shifted"] > 0.8
    config = config_module.load(run_dir / runs.CONFIG_FILE)
    assert config.backbone.name == "frames" and config.train.batch_size == 32 and config.data.size == 32


@pytest.mark.e2e
def test_summary_has_best_of_k_probes_baselines_and_a_picture(lvp_run):
    run_dir, summary = lvp_run
    best = summary["best_of_k"]
    assert list(best) == ["1", "5", "20"]
    assert best["1"] >= best["5"] >= best["20"]
    assert summary["sample_diversity"] >= 0
    assert {"knn_top1", "linear_top1", "fewshot"} <= set(summary)
    assert set(summary["baselines"]) == {"random_init", "raw_pixels"}
    assert "collapse" not in summary  # a pixel-space energy is not diagnosed for collapse
    with Image.open(run_dir / "predictions.png") as image:  # 4 clips x (1 + 5 samples) rows of 6 frames
        assert image.mode == "L" and image.height > image.width
    report = (run_dir / "report.html").read_text()  # the best-of-K curve and the predicted futures
    assert "<h2>Video</h2>" in report and report.count("<img") >= 2


@pytest.mark.e2e
def test_predict_draws_k_futures_per_clip(lvp_run, capsys):
    run_dir, _ = lvp_run
    out = run_dir / "grid.png"
    assert main(["predict", str(run_dir), "--samples", "3", "--clips", "2", "--out", str(out)]) == 0
    with Image.open(out) as image:
        # (2 clips x 4 rows of 32 px + gaps) x (6 frames of 32 px + gaps), magnified twice.
        assert image.size == (2 * (6 * 34 + 2), 2 * (2 * 4 * 34 + 8))
    assert "grid.png" in capsys.readouterr().out
    assert main(["predict", str(run_dir), "--samples", "0"]) == 2


@pytest.mark.e2e
def test_evaluate_and_load_run_read_a_video_run(lvp_run):
    run_dir, summary = lvp_run
    again = runs.evaluate_run(run_dir)
    # The same checkpoint and the same held-out clips: the same energies.
    assert again["energy_auc_by_negative"] == summary["energy_auc_by_negative"]
    run = runs.load_run(run_dir)
    assert int(run.method.bank.count) > 0 and run.state["step"] == summary["steps"]


@pytest.mark.e2e
def test_plain_predictor_samples_one_future(tmp_path):
    summary = pretrain(tmp_path, "plain", "method.name=lvp", "method.z_dim=0", "train.epochs=1", "eval.baselines=false")
    best = summary["best_of_k"]
    assert best["1"] == best["5"] == best["20"] and summary["sample_diversity"] < 1e-10


@pytest.mark.e2e
def test_jepa_runs_with_collapse_diagnostics_and_no_pictures(tmp_path, capsys):
    summary = pretrain(tmp_path, "jepa", "method.name=jepa", "train.epochs=1", "eval.baselines=false")
    assert "collapse" in summary and "best_of_k" not in summary and "predictions" not in summary
    assert main(["predict", str(tmp_path / "jepa")]) == 2
    assert "predicts embeddings, not frames" in capsys.readouterr().err


@pytest.mark.e2e
def test_cli_modality_video_defaults_to_lvp_and_checks_the_method(tmp_path, capsys):
    assert main(["pretrain", "--modality", "video", "--method", "simclr", "--epochs", "1"]) == 2
    assert "learns from image" in capsys.readouterr().err
    args = ["pretrain", "--modality", "video", "--epochs", "1", "--out", str(tmp_path / "run"), *TINY, "eval.enabled=false"]
    assert main(args) == 0
    assert config_module.load(tmp_path / "run" / runs.CONFIG_FILE).method["name"] == "lvp"


@pytest.mark.parametrize(("override", "message"), [
    ("video.size=36", "video.size must be a multiple of 8"),
    ("video.frames_out=0", "video.frames_out must be at least 1"),
    ("video.change_p=2", "video.change_p is a probability"),
])
def test_bad_video_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        config_module.apply_overrides(Config(), ["method.name=lvp", override])


def test_held_out_clips_show_held_out_sprites():
    config = config_module.apply_overrides(Config(), ["method.name=lvp", *TINY])
    from selfsup.modalities.video import load_clips

    train, test = load_clips(config, "train"), load_clips(config, "test")
    assert train.name.endswith("digits:train") and test.name.endswith("digits:test")
    assert not torch.equal(train.frames[:96], test.frames)
    assert json.dumps(train.class_names) == json.dumps(test.class_names)


def test_a_second_video_run_reads_the_baselines_the_first_measured(tmp_path, capsys):
    first = pretrain(tmp_path, "first", "method.name=lvp", "method.z_dim=4", "train.epochs=1")
    assert "read from" not in capsys.readouterr().err
    second = pretrain(tmp_path, "second", "method.name=lvp", "method.z_dim=4", "train.epochs=2")
    assert "baselines: measured" in capsys.readouterr().err and second["baselines"] == first["baselines"]
    pretrain(tmp_path, "third", "method.name=lvp", "method.z_dim=4", "train.epochs=1", "train.seed=1")
    assert "read from" not in capsys.readouterr().err  # another seed: other clips and another random init
