"""The collapse detector must flag the naive Siamese network and not SimCLR (tiny runs)."""

import pytest

from selfsup import runs

# Whole runs (`selfsup pretrain` and the commands after it).
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("method, collapsed", [("siamese-naive", True), ("simclr", False)])
def test_collapse_is_flagged_for_the_naive_siamese_only(tiny_config, method, collapsed):
    config = tiny_config(f"method.name={method}", "train.epochs=8", "eval.baselines=false")
    summary = runs.pretrain(config)
    assert summary["collapse"]["collapsed"] is collapsed, summary["collapse"]
    assert (summary["collapse_alarm_step"] is not None) is collapsed
    if collapsed:
        assert summary["collapse"]["reasons"]
    else:
        assert summary["energy_auc"] > 0.8
