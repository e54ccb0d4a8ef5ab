
import pytest
import torch

from selfsup.train import checkpoint
from selfsup.train.optim import LARS, build_optimizer


def _model_and_optimizer(name):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = build_optimizer(name, model, lr=0.1, weight_decay=1e-4, momentum=0.9)
    model(torch.randn(16, 4)).square().mean().backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_round_trip_restores_weights_and_optimizer_state(tmp_path, name):
    model, optimizer = _model_and_optimizer(name)
    checkpoint.save_checkpoint(tmp_path, 5, model, optimizer, {"note": "x"})
    other, other_optimizer = _model_and_optimizer(name)
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(tmp_path), other, other_optimizer)
    assert state["step"] == 5 and state["note"] == "x"
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][index][key]))


def test_keeps_the_newest_and_ignores_incomplete_ones(tmp_path):
    model, optimizer = _model_and_optimizer("sgd")
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, {}, keep=2)
    # A staging directory left by a kill during a write is not a checkpoint.
    (tmp_path / ".tmp-step-00000009-1").mkdir()
    (tmp_path / "step-00000010").mkdir()  # no state.json: incomplete
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-00000003"


def test_mismatched_model_is_a_clear_error(tmp_path):
    model, optimizer = _model_and_optimizer("sgd")
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    with pytest.raises(checkpoint.CheckpointError, match="does not fit the model"):
        checkpoint.load_checkpoint(path, torch.nn.Linear(4, 2))


def test_lars_matches_its_update_rule():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    optimizer = LARS([{"params": [weight], "weight_decay": 0.0}], lr=1.0, momentum=0.0, trust_coefficient=0.01)
    weight.grad = torch.tensor([[0.0, 2.0]])  # ||g|| = 2
    optimizer.step()
    # w <- w - lr * trust * ||w|| / ||g|| * g = w - 0.01 * 5 / 2 * g
    assert torch.allclose(weight.detach(), torch.tensor([[3.0, 4.0 - 0.05]]))
