"""Each joint-embedding method trains on tiny digits: its loss falls and it does not collapse."""

import pytest
import torch

from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.methods import StepInfo, build_method
from selfsup.methods.byol import BYOL
from selfsup.methods.moco import MoCoV2, MoCoV3
from selfsup.methods.simsiam import SimSiam
from selfsup.schedules import cosine_increase
from selfsup.train.logging import read_metrics
from selfsup.train.optim import build_optimizer

SMALL_HEADS = {
    "simclr": ["method.hidden_dim=64", "method.projection_dim=32"],
    "moco-v2": ["method.hidden_dim=64", "method.projection_dim=32", "method.momentum=0.99"],
    "moco-v3": ["method.hidden_dim=64", "method.projection_dim=32", "method.temperature=0.2"],
    "byol": ["method.hidden_dim=64", "method.projection_dim=32"],
    "simsiam": ["method.projection_dim=64", "method.predictor_dim=16"],
    # The paper's lambda (the default), not lambda x 8192 / 64: at batch 64 the scaled weight puts
    # the off-diagonal terms' sampling noise (E C_ij^2 ~ 1/N on 4,032 terms) above what 6 epochs
    # can learn, and the fall of the loss would not show.
    "barlow-twins": ["method.hidden_dim=64", "method.projection_dim=64"],
    "vicreg": ["method.hidden_dim=64", "method.projection_dim=64"],
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", [n for n in SMALL_HEADS if n != "simclr"])
def test_method_lowers_its_loss_without_collapsing(tmp_path, tiny_overrides, name):
    from selfsup import config as config_module
    from selfsup.config import Config

    overrides = [o for o in tiny_overrides if not o.startswith("method.")]
    config = config_module.apply_overrides(
        Config(), overrides + [f"method.name={name}", *SMALL_HEADS[name], "train.epochs=6", "eval.baselines=false", f"out={tmp_path / 'run'}"]
    )
    summary = runs.pretrain(config)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert not summary["collapse"]["collapsed"], summary["collapse"]


@pytest.mark.e2e
def test_moco_v2_with_its_own_recipe_leaves_the_uniform_loss_on_digits(tmp_path):
    """The whole default method (2048-wide head, m = 0.999, its LARS recipe) on the 8 px digits, 115 steps:
    at initialisation every logit is equal and the loss is ln(K + 1); the paper's SGD stays
    there, the recipe leaves it and the embeddings spread."""
    import math

    from selfsup import config as config_module
    from selfsup.config import Config

    config = config_module.apply_overrides(Config(), [
        "method.name=moco-v2", "data.source=digits", "train.epochs=20", "train.log_every=10", "eval.enabled=false",
        f"out={tmp_path / 'run'}"])
    runs.pretrain(config)
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    uniform = math.log(config_module.load(tmp_path / "run" / "config.yaml").method["queue_size"] + 1)
    assert sum(r["loss"] for r in records[-3:]) / 3 < uniform - 0.1, (uniform, [r["loss"] for r in records])
    assert records[-1]["std_sqrt_d"] > 0.5, records[-1]


def _tiny(cls, **options):
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet-small", 1, width=4)
    return build_method({"name": cls.name, **options}, backbone, dim)


def test_momentum_schedules_reach_their_endpoints():
    assert cosine_increase(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_increase(100, 100, 0.996) == pytest.approx(1.0)
    byol = _tiny(BYOL, hidden_dim=16, projection_dim=8)
    byol.on_step_end(StepInfo(0, 10, 1))
    assert byol.momentum == pytest.approx(0.996)
    byol.on_step_end(StepInfo(10, 10, 1))
    assert byol.momentum == pytest.approx(1.0)
    moco = _tiny(MoCoV3, hidden_dim=16, projection_dim=8)
    moco.on_step_end(StepInfo(5, 10, 1))
    assert moco.momentum == pytest.approx(0.995)


def test_momentum_update_is_an_exponential_moving_average():
    byol = _tiny(BYOL, hidden_dim=16, projection_dim=8)
    online = next(byol.backbone.parameters())
    target = next(byol.target.backbone.parameters())
    with torch.no_grad():
        online.add_(1.0)
    before = target.detach().clone()
    byol.on_step_end(StepInfo(0, 10, 1))  # momentum 0.996
    assert torch.allclose(target, 0.996 * before + 0.004 * online)
    assert target.grad is None and not target.requires_grad


def test_moco_queue_enqueues_the_step_keys_at_step_end_in_order_and_wraps_around():
    moco = _tiny(MoCoV2, hidden_dim=16, projection_dim=4, queue_size=5, bn_groups=1)
    images = torch.randn(3, 1, 8, 8)
    initial = moco.queue.rows.clone()
    moco([images, images])
    assert torch.equal(moco.queue.rows, initial)  # the forward pass changes no state
    keys = torch.nn.functional.normalize(moco.key_encoder(images), dim=1)
    moco.on_step_end(StepInfo(0, 10, 1))
    torch.testing.assert_close(moco.queue.rows[:3], keys)
    assert torch.equal(moco.queue.rows[3:], initial[3:]) and int(moco.queue.next) == 3
    moco([images, images])
    keys = torch.nn.functional.normalize(moco.key_encoder(images), dim=1)
    moco.on_step_end(StepInfo(1, 10, 1))
    torch.testing.assert_close(moco.queue.rows[3:], keys[:2])
    torch.testing.assert_close(moco.queue.rows[0], keys[2])
    assert int(moco.queue.next) == 1 and moco.queue.full


def test_moco_queue_is_fitted_to_the_data():
    options = {"name": "moco-v2", "queue_size": 0}
    assert MoCoV2.fit_options(options, 60000)["queue_size"] == 15000
    assert MoCoV2.fit_options(options, 10_000_000)["queue_size"] == 65536
    assert MoCoV2.fit_options({"name": "moco-v2", "queue_size": 512}, 60000)["queue_size"] == 512


def test_stop_gradient_keeps_targets_out_of_the_graph():
    simsiam = _tiny(SimSiam, projection_dim=16, predictor_dim=4)
    views = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)]
    simsiam(views).loss.backward()
    assert all(p.grad is not None for p in simsiam.predictor.parameters())
    byol = _tiny(BYOL, hidden_dim=16, projection_dim=8)
    byol(views).loss.backward()
    assert all(p.grad is None for p in byol.target.parameters())
    assert all(p.grad is not None for p in byol.predictor.parameters())


def test_simsiam_predictor_keeps_a_fixed_learning_rate():
    simsiam = _tiny(SimSiam, projection_dim=16, predictor_dim=4)
    optimizer = build_optimizer("sgd", simsiam, lr=0.05, weight_decay=1e-4, momentum=0.9,
                                fixed_lr_modules=simsiam.fixed_lr_modules())
    predictor = {id(p) for p in simsiam.predictor.parameters()}
    for group in optimizer.param_groups:
        assert group["fixed_lr"] == all(id(p) in predictor for p in group["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups if g["fixed_lr"]) == len(list(simsiam.predictor.parameters()))
