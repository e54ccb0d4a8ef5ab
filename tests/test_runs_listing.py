"""The listing of runs (`selfsup runs`): one row per run directory with what ran, how far it
got and how good it is; sorted and filtered by any column; missing and damaged files shown,
not fatal. The run directories are written here as real runs write them."""

import json
import subprocess

import pytest

from selfsup import config as config_module
from selfsup import rundir
from selfsup.config import Config, ConfigError


def _run(root, name, overrides=(), status=None, summary=None):
    """A run directory: the resolved ``config.yaml``, ``status.json`` and ``summary.json``."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = config_module.apply_overrides(Config(), [*overrides, f"out={run_dir}"])
    (run_dir / rundir.CONFIG_FILE).write_text(config.to_yaml())
    if status is not None:
        (run_dir / rundir.STATUS_FILE).write_text(json.dumps({"pid": 1, "updated": "2026-12-01T10:00:00+0000", **status}, indent=2))
    if summary is not None:
        (run_dir / rundir.SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return run_dir


def _summary(knn, ten_shot, auc, collapsed):
    """The parts of a finished image run's summary.json the listing reads, among the others."""
    return {
        "method": "simclr", "modality": "image", "steps": 5, "stopped_by": "schedule", "knn_top1": knn, "knn200_top1": knn,
        "linear_top1": knn, "fewshot": {"1": ten_shot / 2, "10": ten_shot, "100": ten_shot}, "energy_auc": auc,
        "collapse": {"std_sqrt_d": 0.5, "effective_rank": 20.0, "collapsed": collapsed, "reasons": ["low"] if collapsed else []},
        "baselines": {"raw_pixels": {"knn_top1": 0.99}},
    }


@pytest.fixture
def runs_root(tmp_path):
    """Five runs: three finished (two simclr, one byol), one still running, one failed; and a
    folder that is no run."""
    root = tmp_path / "runs"
    _run(root, "simclr-a", ["train.epochs=100"], {"state": "finished", "step": 500, "stopped_by": "schedule"},
         _summary(0.81, 0.60, 0.71, False))
    _run(root, "simclr-b", ["train.budget=15m"], {"state": "finished", "step": 120, "stopped_by": "budget"},
         _summary(0.93, 0.75, 0.66, True))
    _run(root, "byol-c", ["method.name=byol", "data.source=cifar10", "train.epochs=20", "train.budget=2h"],
         {"state": "finished", "step": 900, "stopped_by": "schedule"}, _summary(0.87, 0.70, 0.90, False))
    running = _run(root, "dino-d", ["method.name=dino", "train.epochs=1"])
    rundir.write_status(running, "running", step=40)  # this process: alive
    _run(root, "swav-e", ["method.name=swav", "train.epochs=1"],
         {"state": "failed", "step": None, "reason": "TrainingDiverged: loss is nan at step 3\nsecond line of the message"})
    (root / "notes").mkdir()
    return root


def test_one_row_per_run_with_every_column(runs_root):
    rows = {row["run"]: row for row in rundir.list_runs(runs_root)}
    assert sorted(rows) == ["byol-c", "dino-d", "simclr-a", "simclr-b", "swav-e"]  # "notes" has no config.yaml
    assert all(list(row) == [key for key, _ in rundir.RUN_COLUMNS] for row in rows.values())
    assert rows["byol-c"] == {
        "run": "byol-c", "method": "byol", "data": "cifar10", "budget": "20 epochs, 2h", "state": "finished", "step": 900,
        "knn_top1": 0.87, "fewshot_10": 0.70, "energy_auc": 0.90, "collapsed": "no", "reason": "schedule",
    }
    assert rows["simclr-a"]["budget"] == "100 epochs" and rows["simclr-b"]["budget"] == "15m"
    assert rows["simclr-b"]["collapsed"] == "yes" and rows["simclr-b"]["reason"] == "budget"
    # Not evaluated yet, or never will be: no figures, not a crash.
    running, failed = rows["dino-d"], rows["swav-e"]
    assert running["state"] == "running" and running["step"] == 40 and running["budget"] == "1 epoch"
    assert running["knn_top1"] is running["fewshot_10"] is running["energy_auc"] is running["collapsed"] is running["reason"] is None
    assert failed["state"] == "failed" and failed["step"] is None
    assert failed["reason"] == "TrainingDiverged: loss is nan at step 3"  # one line per run


def test_sorting_puts_numbers_largest_first_text_a_to_z_and_missing_values_last(runs_root):
    def order(column):
        return [row["run"] for row in rundir.list_runs(runs_root, sort=column)]

    assert order("knn") == ["simclr-b", "byol-c", "simclr-a", "dino-d", "swav-e"]
    assert order("10-shot") == order("fewshot_10") == ["simclr-b", "byol-c", "simclr-a", "dino-d", "swav-e"]
    assert order("energy AUC") == order("auc") == ["byol-c", "simclr-a", "simclr-b", "dino-d", "swav-e"]
    assert order("step") == ["byol-c", "simclr-a", "simclr-b", "dino-d", "swav-e"]
    assert order("method") == ["byol-c", "dino-d", "simclr-a", "simclr-b", "swav-e"]  # ties keep the run names' order
    assert order("collapsed") == ["byol-c", "simclr-a", "simclr-b", "dino-d", "swav-e"]
    assert order("why") == ["simclr-b", "byol-c", "simclr-a", "swav-e", "dino-d"]  # budget, schedule x2, TrainingDiverged; none


def test_filters_keep_exact_matches_of_every_condition(runs_root):
    def names(**where):
        return [row["run"] for row in rundir.list_runs(runs_root, where=where)]

    assert names(method="simclr") == ["simclr-a", "simclr-b"]
    assert names(state="finished") == ["byol-c", "simclr-a", "simclr-b"]
    assert names(method="simclr", collapsed="no") == ["simclr-a"]
    assert names(collapsed="-") == ["dino-d", "swav-e"]  # a missing value reads "-"
    assert names(step="900") == ["byol-c"]
    assert names(method="simcl") == []  # exact, not a prefix
    sorted_rows = rundir.list_runs(runs_root, sort="knn", where={"state": "finished"})
    assert [row["run"] for row in sorted_rows] == ["simclr-b", "byol-c", "simclr-a"]


def test_an_unknown_column_names_the_columns(runs_root):
    with pytest.raises(ConfigError, match="no column 'accuracy'.*knn.*10shot.*energyauc"):
        rundir.list_runs(runs_root, sort="accuracy")
    with pytest.raises(ConfigError, match="no column 'colour'"):
        rundir.list_runs(runs_root, where={"colour": "red"})


def test_damaged_files_are_shown_in_their_row_and_do_not_hide_the_others(tmp_path):
    root = tmp_path / "runs"
    bad_summary = _run(root, "a-bad-summary", ["train.epochs=1"], {"state": "finished", "step": 5, "stopped_by": "schedule"})
    (bad_summary / rundir.SUMMARY_FILE).write_text("{ not json")
    bad_config = _run(root, "b-bad-config", status={"state": "finished", "step": 5})
    (bad_config / rundir.CONFIG_FILE).write_text("train:\n  epochz: 3\n")
    _run(root, "c-no-status", ["train.epochs=1"], summary=_summary(0.5, 0.4, 0.6, False))
    vanished = _run(root, "d-vanished", ["train.epochs=1"])
    (vanished / rundir.STATUS_FILE).write_text(json.dumps({"state": "running", "step": 7, "pid": _dead_pid()}))

    rows = {row["run"]: row for row in rundir.list_runs(root)}
    assert rows["a-bad-summary"]["reason"].startswith("schedule; summary.json is unreadable")
    assert rows["a-bad-summary"]["knn_top1"] is None and rows["a-bad-summary"]["method"] == "simclr"
    assert rows["b-bad-config"]["method"] is None and "epochz" in rows["b-bad-config"]["reason"]
    assert rows["c-no-status"]["state"] == "finished" and rows["c-no-status"]["knn_top1"] == 0.5  # has a summary: finished
    assert rows["d-vanished"]["state"] == "interrupted" and rows["d-vanished"]["step"] == 7
    assert rundir.list_runs(tmp_path / "nowhere") == []


def _dead_pid() -> int:
    """The id of a process that has ended (a child, reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_column_names_a_user_may_type():
    assert [rundir.column_key(name) for name in ("kNN", "knn_top1", "10-shot", "energy-auc", "AUC", "Why", "status")] == [
        "knn_top1", "knn_top1", "fewshot_10", "energy_auc", "energy_auc", "reason", "state"]


def test_the_printed_listing_has_one_line_per_run(runs_root):
    table = rundir.format_runs(rundir.list_runs(runs_root, sort="knn"))
    header, rule, *lines = table.splitlines()
    assert header.split() == ["run", "method", "data", "budget", "state", "step", "kNN", "10-shot", "energy", "AUC", "collapsed", "why"]
    assert len(lines) == 5 and lines[0].split()[:2] == ["simclr-b", "simclr"]
    assert "93.0%" in lines[0] and "75.0%" in lines[0] and "0.660" in lines[0] and " yes " in lines[0]
    assert lines[-1].startswith("swav-e") and lines[-1].endswith("TrainingDiverged: loss is nan at step 3")
    long_reason = {**rundir.list_runs(runs_root)[0], "reason": "x" * 100}
    assert rundir.format_runs([long_reason]).splitlines()[-1].endswith("x" * 37 + "...")


def test_filters_are_read_from_column_value_text():
    assert rundir.parse_where(["method=simclr", "state=finished", "reason="]) == {"method": "simclr", "state": "finished", "reason": ""}
    with pytest.raises(ConfigError, match="'simclr' is not column=value"):
        rundir.parse_where(["simclr"])
