"""Baselines measured once per data source and reused: the cache file and two runs sharing it."""

from __future__ import annotations

import json

from selfsup import runs
from selfsup.cache import BaselineCache, cache_root, code_digest


def test_a_cache_file_reads_back_only_for_its_own_key(tmp_path):
    cache = BaselineCache({"data": "digits", "seed": 0}, root=tmp_path)
    assert cache.key["code"] == code_digest() and len(code_digest()) == 64  # another code version: another file
    assert cache.read() is None
    cache.write({"raw_pixels": {"knn_top1": 0.9}})
    assert cache.read()["baselines"] == {"raw_pixels": {"knn_top1": 0.9}}
    assert BaselineCache({"data": "digits", "seed": 0}, root=tmp_path).path == cache.path
    assert BaselineCache({"data": "digits", "seed": 1}, root=tmp_path).read() is None
    cache.path.write_text("{not json")
    assert cache.read() is None  # unreadable: measured again
    cache.path.write_text(json.dumps({"key": {"other": 1}, "baselines": {}}))
    assert cache.read() is None  # a file holding another key (a hash collision) is not trusted


def test_the_cache_lives_where_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    monkeypatch.delenv("SELFSUP_CACHE")
    assert cache_root().parts[-2:] == (".cache", "selfsup")


def test_a_second_run_on_the_same_data_reads_the_baselines_the_first_measured(tiny_config, tmp_path, capsys):
    first = runs.pretrain(tiny_config("train.epochs=1", f"out={tmp_path / 'first'}"))
    assert "read from" not in capsys.readouterr().err
    second = runs.pretrain(tiny_config("train.epochs=2", "method.temperature=0.2", f"out={tmp_path / 'second'}"))
    assert "baselines: measured" in capsys.readouterr().err
    assert second["baselines"] == first["baselines"] and second["knn_top1"] != first["knn_top1"]
    # Another backbone is another random init: measured again, and its figures differ.
    third = runs.pretrain(tiny_config("train.epochs=1", "backbone.width=4", f"out={tmp_path / 'third'}"))
    assert "read from" not in capsys.readouterr().err
    assert third["baselines"]["random_init"] != first["baselines"]["random_init"]
    assert third["baselines"]["raw_pixels"] == first["baselines"]["raw_pixels"]


def test_the_reports_baseline_curves_are_drawn_once(tiny_config, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    runs.pretrain(tiny_config("train.epochs=1", f"out={run_dir}"))
    run = runs.load_run(run_dir)
    modality = runs.modality_of(run.config)
    _, train, test = modality.load_data(run.config, run_dir)
    view_maker = modality.build_view_maker(run.config)
    first = runs.report_data(run.method, view_maker, run.config, train, test, run.device)
    monkeypatch.setattr(runs, "build_model", lambda config: (_ for _ in ()).throw(AssertionError("random init rebuilt")))
    again = runs.report_data(run.method, view_maker, run.config, train, test, run.device)
    assert set(again["fewshot"]) == {"run", "raw_pixels", "random_init"}
    assert again["fewshot"] == json.loads(json.dumps(first["fewshot"]))
