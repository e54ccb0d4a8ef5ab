"""The trainer's named pieces, each on its own: step inputs and the support sampler, the
budget planner (with an injected clock), the learning-rate schedule and LARS's trust
coefficient, the collapse monitor,
the loss watch, the checkpoint policy and activation checkpointing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from selfsup.config import TrainConfig
from selfsup.data import ImageSet
from selfsup.methods import StepOutput
from selfsup.runs import resolve_train
from selfsup.train import checkpoint
from selfsup.train.batches import SupportSampler, TrainingBatches
from selfsup.train.budget import BUDGET_SAFETY, CALIBRATION_STEPS, REFIT_SAFETY, REFIT_SHARE, BudgetPlanner
from selfsup.train.checkpoint import CheckpointPolicy, TrainingDiverged
from selfsup.train.monitor import CollapseMonitor, LossWatch
from selfsup.train.optim import DEFAULT_LARS_TRUST, LARS, LearningRateSchedule, build_optimizer


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _images(count: int = 40, classes: int = 4) -> ImageSet:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 4, 4).contiguous()
    return ImageSet(images, torch.arange(count) % classes, "toy", [str(c) for c in range(classes)])


def _identity_views(samples: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    return [samples.float(), samples.float() + torch.rand(len(samples), 1, 1, 1, generator=generator)]


# ---------------------------------------------------------------------------- step inputs
def test_each_epoch_is_a_seeded_permutation_split_between_ranks():
    data = _images()
    ranks = [TrainingBatches(data, _identity_views, 0, 5, 2, rank, torch.device("cpu"), False) for rank in range(2)]
    assert ranks[0].steps_per_epoch == 4  # 40 samples / (5 x 2 processes)
    epoch = torch.cat([torch.cat([r.indices(step) for r in ranks]) for step in range(4)])
    assert sorted(epoch.tolist()) == list(range(40))  # every sample once per epoch, across ranks
    next_epoch = torch.cat([torch.cat([r.indices(step) for r in ranks]) for step in range(4, 8)])
    assert not torch.equal(epoch, next_epoch)
    again = TrainingBatches(data, _identity_views, 0, 5, 2, 1, torch.device("cpu"), False)
    assert torch.equal(again.indices(6), ranks[1].indices(6))  # a function of (seed, step, rank)
    views, batch = ranks[0].step_inputs(3)
    views_again, _ = TrainingBatches(data, _identity_views, 0, 5, 2, 0, torch.device("cpu"), False).step_inputs(3)
    assert torch.equal(views[1], views_again[1]) and torch.equal(views[0][:, 0, 0, 0].long(), batch.indices)


def test_a_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(ValueError, match="train.batch_size=32 x 2 process"):
        TrainingBatches(_images(), _identity_views, 0, 32, 2, 0, torch.device("cpu"), False)


def test_support_sampler_draws_a_fixed_pool_and_a_batch_per_class_per_step():
    data = _images(count=60, classes=3)
    sampler = SupportSampler(data.labels, labels_per_class=4, support_per_class=2, seed=0, set_name="toy")
    assert sampler.pool.shape == (3, 4) and len(set(sampler.pool.flatten().tolist())) == 12
    assert all((data.labels[sampler.pool[c]] == c).all() for c in range(3))
    picks = sampler.pool.flatten()[sampler.indices(step=5)]  # positions in the pool -> dataset indices
    assert torch.equal(data.labels[picks], torch.tensor([0, 0, 1, 1, 2, 2]))
    assert len(set(picks.tolist())) == 6
    assert torch.equal(sampler.indices(step=5), sampler.indices(step=5))  # a function of the step: resumption replays it
    assert torch.equal(sampler.pool, SupportSampler(data.labels, 4, 2, 0, "toy").pool)

    batches = TrainingBatches(data, _identity_views, 0, 6, 1, 0, torch.device("cpu"), False, support=sampler)
    _, batch = batches.step_inputs(5)
    assert batch.support_views.shape[0] == 2 * 6  # two views of each support image
    assert torch.equal(batch.support_labels, data.labels[picks].repeat(2))


def test_support_sampler_names_what_is_missing():
    labels = torch.tensor([0, 0, 1, -1])
    with pytest.raises(ValueError, match="class 1 of toy has only 1 images"):
        SupportSampler(labels, 2, 2, 0, "toy")
    with pytest.raises(ValueError, match="toy has no labels"):
        SupportSampler(torch.full((4,), -1), 1, 1, 0, "toy")


# ---------------------------------------------------------------------------- budget
def test_a_fixed_schedule_ignores_the_clock():
    clock = ManualClock()
    planner = BudgetPlanner(None, planned_steps=50, provisional_steps=1000, clock=clock)
    clock.now += 1e6
    assert not planner.budget_spent() and planner.total_steps == 50
    assert all(planner.after_step(step) is None for step in range(1, 51))


def test_the_budget_fits_the_schedule_to_the_measured_step_time_and_stops_on_time():
    clock = ManualClock()
    planner = BudgetPlanner(60.0, planned_steps=None, provisional_steps=1000, clock=clock)
    planner.start(step=0, elapsed_before=0.0)
    assert planner.total_steps == 1000  # provisional until the step time is known
    fitted = None
    for step in range(1, CALIBRATION_STEPS.stop + 1):
        clock.now += 2.0 if step <= CALIBRATION_STEPS.start else 0.5  # slow first steps are not timed
        fitted = planner.after_step(step)
    assert fitted.seconds_per_step == pytest.approx(0.5) and fitted.change == "fitted to"
    elapsed = CALIBRATION_STEPS.start * 2.0 + len(CALIBRATION_STEPS) * 0.5
    expected = CALIBRATION_STEPS.stop + int(BUDGET_SAFETY * (60.0 - elapsed) / 0.5)
    assert planner.planned_steps == planner.total_steps == expected
    assert planner.samples_per_second(CALIBRATION_STEPS.stop, 8) == pytest.approx(CALIBRATION_STEPS.stop * 8 / elapsed)
    assert not planner.budget_spent()
    clock.now += 60.0 - elapsed
    assert planner.budget_spent()


def _planner_through_second_window(seconds_per_step: float) -> tuple[BudgetPlanner, ManualClock, int, int, list]:
    """A 100 s planner fitted at 0.5 s a step, then run to its second fit at ``seconds_per_step``:
    the planner, its clock, the first plan, the second fit's step and what each step returned."""
    clock = ManualClock()
    planner = BudgetPlanner(100.0, planned_steps=None, provisional_steps=1000, clock=clock)
    for step in range(1, CALIBRATION_STEPS.stop + 1):
        clock.now += 0.5
        planner.after_step(step)
    first_plan = planner.planned_steps
    refit_step = CALIBRATION_STEPS.stop + round(REFIT_SHARE * (first_plan - CALIBRATION_STEPS.stop))
    returned = []
    for step in range(CALIBRATION_STEPS.stop + 1, refit_step + 1):
        clock.now += seconds_per_step
        returned.append(planner.after_step(step))
    return planner, clock, first_plan, refit_step, returned


def test_the_schedule_is_fitted_again_to_the_pace_after_the_first_steps():
    planner, clock, first_plan, refit_step, refitted = _planner_through_second_window(0.4)  # later steps run faster
    assert refitted[:-1] == [None] * (len(refitted) - 1) and refitted[-1].seconds_per_step == pytest.approx(0.4)
    elapsed = CALIBRATION_STEPS.stop * 0.5 + (refit_step - CALIBRATION_STEPS.stop) * 0.4
    assert planner.planned_steps == refitted[-1].planned_steps == refit_step + int(REFIT_SAFETY * (100.0 - elapsed) / 0.4) > first_plan
    assert refitted[-1].change == "lengthened to"
    # Once only: the plan stays put afterwards, whatever the pace.
    for step in range(refit_step + 1, refit_step + 50):
        clock.now += 0.1
        assert planner.after_step(step) is None
    assert planner.planned_steps == refit_step + int(REFIT_SAFETY * (100.0 - elapsed) / 0.4)


def test_a_slower_second_window_does_not_shorten_the_plan():
    planner, _, first_plan, _, returned = _planner_through_second_window(1.0)  # something else ran meanwhile
    assert returned[-1].seconds_per_step == pytest.approx(1.0) and planner.planned_steps == first_plan
    assert returned[-1].change == "kept at"


def test_lars_trust_comes_from_the_configuration_else_the_recipe_else_the_reference():
    recipe = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "epochs": 100}
    assert resolve_train(TrainConfig(), recipe).lars_trust == DEFAULT_LARS_TRUST == 0.001
    assert resolve_train(TrainConfig(), {**recipe, "lars_trust": 0.02}).lars_trust == 0.02
    assert resolve_train(TrainConfig(lars_trust=0.05), {**recipe, "lars_trust": 0.02}).lars_trust == 0.05
    assert not resolve_train(TrainConfig(), recipe).lars_clip
    assert resolve_train(TrainConfig(), {**recipe, "lars_clip": True}).lars_clip
    optimizer = build_optimizer("lars", nn.Linear(4, 4), lr=0.3, weight_decay=0.0, momentum=0.9, lars_trust=0.02, lars_clip=True)
    assert [(group["trust_coefficient"], group["clip"]) for group in optimizer.param_groups] == [(0.02, True), (0.02, True)]


@pytest.mark.parametrize("gradient_scale", [1.0, 1e-4])
def test_clipped_lars_steps_by_the_trust_share_of_the_weight_at_most_and_never_beyond_sgd(gradient_scale):
    """solo-learn's clip_lr: the step is min(trust ||w|| / ||g||, lr) g, written out here."""
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    gradient = torch.tensor([0.6, -0.8]) * gradient_scale
    weight.grad = gradient.clone()
    lr, trust = 0.4, 0.02
    LARS([{"params": [weight]}], lr=lr, momentum=0.0, trust_coefficient=trust, clip=True).step()
    expected_step = min(trust * 5.0 / gradient.norm().item(), lr) * gradient
    assert torch.allclose(weight.detach(), torch.tensor([3.0, 4.0]) - expected_step)
    # Large gradients: a step of exactly trust x ||w||; tiny ones: plain SGD's lr x g.
    assert (gradient.norm() * lr > trust * 5.0) == (gradient_scale == 1.0)


def test_a_resumed_budget_counts_the_time_already_spent():
    clock = ManualClock()
    planner = BudgetPlanner(10.0, planned_steps=40, provisional_steps=1000, clock=clock)
    planner.start(step=30, elapsed_before=9.0)
    assert planner.elapsed() == pytest.approx(9.0) and not planner.budget_spent()
    clock.now += 1.0
    assert planner.budget_spent()
    assert planner.samples_per_second(32, 4) == pytest.approx(2 * 4 / 1.0)  # this process's steps only


# ---------------------------------------------------------------------------- learning rate
def test_learning_rate_warms_up_then_decays_and_fixed_groups_keep_the_base_rate():
    layer, fixed = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": layer.parameters()}, {"params": fixed.parameters(), "fixed_lr": True}], lr=0.0)
    schedule = LearningRateSchedule(optimizer, base_lr=1.0, warmup_steps=10)
    assert schedule.apply(0, 200) == pytest.approx(0.1)
    assert schedule.apply(9, 200) == pytest.approx(1.0)
    assert schedule.apply(105, 200) == pytest.approx(0.5 * (1 + math.cos(math.pi * 95 / 190)))
    assert optimizer.param_groups[1]["lr"] == 1.0
    assert schedule.apply(200, 200) == pytest.approx(0.0)
    # A short run warms up for at most a tenth of its steps.
    assert schedule.apply(0, 30) == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------- collapse
def test_the_collapse_monitor_raises_the_alarm_once_at_the_first_collapsed_step():
    monitor = CollapseMonitor()
    healthy = StepOutput(torch.tensor(0.0), embeddings=torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    metrics, alarm = monitor.check(10, healthy)
    assert alarm is None and metrics["std_sqrt_d"] > 0.5 and monitor.alarm_step is None
    collapsed = StepOutput(torch.tensor(0.0), embeddings=torch.ones(64, 16))
    metrics, alarm = monitor.check(20, collapsed)
    assert monitor.alarm_step == 20 and alarm.startswith("COLLAPSE ALARM at step 20") and metrics["std_sqrt_d"] < 0.2
    assert monitor.check(30, collapsed)[1] is None and monitor.alarm_step == 20
    assert monitor.check(40, StepOutput(torch.tensor(0.0))) == ({}, None)  # no embeddings, nothing to watch


def test_the_collapse_monitor_reads_prototype_usage():
    embeddings = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    one_prototype = torch.zeros(64, 8)
    one_prototype[:, 0] = 1
    metrics, alarm = CollapseMonitor().check(5, StepOutput(torch.tensor(0.0), embeddings=embeddings, assignments=one_prototype))
    assert metrics["prototype_used"] == 1 and alarm is not None


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_policy_saves_when_due_restores_and_refuses_non_finite_weights(tmp_path):
    policy = CheckpointPolicy(tmp_path / "checkpoints", every=5, steps_per_epoch=7)
    assert [step for step in range(1, 16) if policy.due(step)] == [5, 7, 10, 14, 15]
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert policy.last_good() == "no checkpoint had been written"
    policy.save(5, model, optimizer, {"global_batch": 8, "elapsed_seconds": 1.0, "planned_steps": 10, "collapse_alarm_step": None})
    assert policy.saved_step == 5 and "step 5" in policy.last_good()

    restored, restored_optimizer = nn.Linear(3, 2), torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    fresh = CheckpointPolicy(tmp_path / "checkpoints", every=5, steps_per_epoch=7)
    assert fresh.restore(restored, restored_optimizer, global_batch=8)["step"] == 5 and fresh.saved_step == 5
    assert torch.equal(restored.weight, model.weight)
    with pytest.raises(checkpoint.CheckpointError, match="global batch of 8, this run has 16"):
        fresh.restore(restored, restored_optimizer, global_batch=16)

    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 10.*step 5"):
        policy.save(10, model, optimizer, {"global_batch": 8, "elapsed_seconds": 2.0})
    assert checkpoint.latest_checkpoint(tmp_path / "checkpoints").name == checkpoint.checkpoint_name(5)
    with pytest.raises(checkpoint.CheckpointError, match="nothing to resume"):
        CheckpointPolicy(tmp_path / "empty", 5, 7).restore(restored, restored_optimizer, 8)


def test_loss_watch_names_the_first_step_whose_loss_is_not_finite():
    watch = LossWatch(torch.device("cpu"))
    for step, loss in enumerate([1.0, 0.5, float("nan"), float("inf"), 0.2]):
        watch.record(step, torch.tensor(loss))
        if step == 1:
            assert watch.first_bad_step() is None
    assert watch.first_bad_step() == 2


def test_activation_checkpointing_keeps_gradients_and_updates_batchnorm_statistics_once():
    from selfsup.backbones import blocks, build_backbone
    from selfsup.train.parallel import checkpoint_activations

    torch.manual_seed(0)
    plain, _ = build_backbone("regnety-200mf-small", 1, image_size=16)
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_activations(checkpointed) == len(blocks(plain)) > 0
    images = torch.randn(4, 1, 16, 16)
    for model in (plain, checkpointed):
        model(images).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(a, b), name  # running statistics and batch counts: updated once
    assert list(plain.state_dict()) == list(checkpointed.state_dict())  # checkpoints keep their names
