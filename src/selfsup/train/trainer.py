"""The training loop shared by every method, put together from named pieces: the step
inputs (:mod:`selfsup.train.batches`), the budget planner, the learning-rate schedule, the
collapse monitor and the checkpoint policy.

A checkpoint needs only the weights, the optimiser state and the step: the data and the
augmentations of every step are functions of (seed, step, rank), so a run killed at any
point and resumed from its last checkpoint ends with the same weights as an uninterrupted
run (on the same device and thread count).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from selfsup import distributed
from selfsup.backbones import uses_convolutions
from selfsup.config import Config, ConfigError, parse_budget
from selfsup.data import SampleSet
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.pipeline import encode
from selfsup.methods import Method, StepInfo
from selfsup.train.batches import SupportSampler, ViewMaker, training_batches
from selfsup.train.budget import BudgetPlanner
from selfsup.train.checkpoint import CheckpointPolicy, TrainingDiverged
from selfsup.train.logging import RunLogger
from selfsup.train.monitor import CollapseMonitor, LossWatch
from selfsup.train.optim import LearningRateSchedule, build_optimizer
from selfsup.train.parallel import checkpoint_activations, compile_blocks, distribute, is_sharded
from selfsup.train.stop import StopSignals

_ONLINE_KNN_TRAIN, _ONLINE_KNN_TEST = 10_000, 2_000


@dataclass
class TrainResult:
    steps: int
    seconds: float
    images_per_second: float
    epochs: float
    stopped_by: str  # "schedule" (all planned steps done), "budget" (wall clock spent) or "signal"
    collapse_alarm_step: int | None
    stop_signal: int | None = None  # the signal that stopped the run (SIGTERM, SIGINT)


class Trainer:
    """Runs ``config.train`` for ``method`` on ``train_set`` and writes into ``run_dir``.

    ``held_out`` = (train split, test split) for the online kNN monitor; ``clock`` gives
    the seconds that a time budget counts.
    """

    def __init__(
        self,
        method: Method,
        view_maker: ViewMaker,
        train_set: SampleSet,
        config: Config,
        run_dir: Path,
        held_out: tuple[SampleSet, SampleSet] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.config = config
        self.train_config = train = config.train
        self.run_dir = run_dir
        self.device = distributed.resolve_device(train.device)
        if train.sync_batchnorm and distributed.world_size() > 1:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_batchnorm=true needs CUDA: torch's SyncBatchNorm does not run on the CPU")
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        self.method = method.to(self.device)
        self.channels_last = uses_convolutions(method)
        if self.channels_last and not (train.strategy == "fsdp" and distributed.world_size() > 1):
            self.method.to(memory_format=torch.channels_last)  # FSDP2 shards contiguous weights only
        self.view_maker = view_maker
        self.held_out = held_out
        self.autocast = self.device.type == "cuda" and train.precision in ("auto", "bf16")
        if train.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("train.precision=bf16 runs on CUDA only (it is far slower than fp32 on most CPUs); use fp32 or auto")
        if train.activation_checkpointing:
            checkpoint_activations(self.method)
        if train.compile:
            compile_blocks(self.method)
        # What forward is called on: DDP's wrapper, or the method itself (sharded under FSDP).
        self.model = distribute(self.method, train.strategy, self.device, bf16=self.autocast)
        self.sharded = is_sharded(self.method)

        support = None
        if method.labels_per_class:
            support = SupportSampler(train_set.labels, method.labels_per_class, method.support_per_class, train.seed, train_set.name)
        self.batches = training_batches(
            train_set, view_maker, train.seed, train.batch_size, distributed.world_size(), distributed.rank(),
            self.device, self.channels_last, support,
        )
        self.global_batch = self.batches.global_batch
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.lr = train.lr * self.global_batch / 256
        self.warmup_steps = round(train.warmup_epochs * self.steps_per_epoch)
        self.optimizer = build_optimizer(
            train.optimizer, self.method, self.lr, train.weight_decay, train.momentum, self.method.fixed_lr_modules(),
            fused=self.device.type == "cuda", lars_trust=train.lars_trust, lars_clip=train.lars_clip,
        )
        self.schedule = LearningRateSchedule(self.optimizer, self.lr, self.warmup_steps)
        self.budget = BudgetPlanner(
            parse_budget(train.budget),
            train.epochs * self.steps_per_epoch if train.epochs else None,
            provisional_steps=max(self.warmup_steps * 10, self.steps_per_epoch * 1000),
            clock=clock,
        )
        self.checkpoints = CheckpointPolicy(run_dir / "checkpoints", train.checkpoint_every, self.steps_per_epoch)
        self.monitor = CollapseMonitor()
        self.loss_watch = LossWatch(self.device)
        # Reading the loss makes the host wait for the device: free on the CPU, not on a GPU.
        self.loss_check_every = 1 if self.device.type == "cpu" else train.log_every

    def _state(self, elapsed: float) -> dict:
        return {
            "planned_steps": self.budget.planned_steps,
            "elapsed_seconds": elapsed,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch": self.global_batch,
            "collapse_alarm_step": self.monitor.alarm_step,
        }

    def _save(self, step: int, elapsed: float, final: bool = False) -> None:
        self.checkpoints.save(step, self.method, self.optimizer, self._state(elapsed), final=final)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False, replan: bool = False) -> TrainResult:
        """Train from scratch, or from the newest readable checkpoint (``resume``) on the
        schedule it was planned with, or on one planned again from the config (``replan``:
        a run trained longer)."""
        step, elapsed_before, skipped = 0, 0.0, []
        if resume:
            state = self.checkpoints.restore(self.method, self.optimizer, self.global_batch)
            step, elapsed_before = state["step"], state["elapsed_seconds"]
            if not replan:
                self.budget.planned_steps = state["planned_steps"]
            self.monitor.alarm_step = state["collapse_alarm_step"]
            skipped = state["skipped"]
        self.checkpoints.saved_step = step
        logger = RunLogger(self.run_dir, resume_step=step if resume else None)
        for path, reason in skipped:
            logger.message(f"skipped checkpoint {path.name}, which cannot be read: {reason}")
        if resume:
            logger.message(f"resumed from step {step} ({elapsed_before:.0f} s of training done)")
        if distributed.world_size() > 1:
            logger.message(f"train.strategy={self.train_config.strategy} over {distributed.world_size()} processes"
                           + (" (parameters, gradients and optimiser state sharded per block)" if self.sharded else ""))
        progress = tqdm(
            total=self.budget.planned_steps, initial=step, unit="step", dynamic_ncols=True,
            disable=None if distributed.is_main_process() else True, desc=f"{self.config.method['name']}",
        )
        self.budget.start(step, elapsed_before)
        stopped_by = "schedule"
        self.method.train()
        self.method.on_train_start(lambda: self.batches.epoch_pass(epoch=-1))
        with StopSignals() as signals, progress:
            while step < self.budget.total_steps:
                if self.budget.budget_spent():
                    stopped_by = "budget"
                    break
                if signals.requested():
                    stopped_by = "signal"
                    logger.message(f"stop requested: checkpointing step {step} and stopping; resuming the run continues from there")
                    break
                info = StepInfo(step, self.budget.total_steps, self.steps_per_epoch)
                lr = self.schedule.apply(step, info.total_steps)
                output = self._step(info)
                step += 1
                if step % self.loss_check_every == 0 or self.checkpoints.due(step):
                    self._stop_if_diverged(logger)
                progress.update(1)

                fit = self.budget.after_step(step)
                if fit is not None:
                    progress.total = fit.planned_steps
                    progress.refresh()
                    logger.message(f"budget {self.train_config.budget}: {fit.seconds_per_step * 1000:.0f} ms/step, schedule {fit.change} "
                                   f"{fit.planned_steps} steps ({fit.planned_steps / self.steps_per_epoch:.1f} epochs)")
                if step % self.train_config.log_every == 0:
                    loss_value = distributed.all_reduce_mean(output.loss.detach()).item()
                    metrics, alarm = self.monitor.check(step, output)
                    if alarm:
                        logger.message(alarm)
                    samples_per_second = self.budget.samples_per_second(step, self.global_batch)
                    # A method's metrics may be device tensors: read here, at log steps only.
                    method_metrics = {key: value.item() if isinstance(value, torch.Tensor) else value
                                      for key, value in output.metrics.items()}
                    logger.log(step, {"loss": loss_value, "lr": lr, "epoch": step / self.steps_per_epoch, **method_metrics,
                                      **metrics, "images_per_second": samples_per_second})
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")
                epoch_end = step % self.steps_per_epoch == 0
                knn_every = self.train_config.knn_every
                if self.held_out and knn_every and epoch_end and (step // self.steps_per_epoch) % knn_every == 0:
                    logger.log(step, {"knn_top1": self.online_knn()}, kind="eval")
                if self.checkpoints.due(step):
                    self._save(step, self.budget.elapsed(), final=step >= self.budget.total_steps)

        seconds, samples_per_second = self.budget.elapsed(), self.budget.samples_per_second(step, self.global_batch)
        self._stop_if_diverged(logger)
        # Under FSDP the last checkpoint also holds the whole model: a run stopped early writes it here.
        if self.checkpoints.saved_step != step or (self.sharded and not self.checkpoints.saved_final):
            self._save(step, seconds, final=True)
        logger.close()
        return TrainResult(step, seconds, samples_per_second, step / self.steps_per_epoch, stopped_by, self.monitor.alarm_step,
                           signals.received if stopped_by == "signal" else None)

    def _step(self, info: StepInfo):
        """One optimisation step with the method's hooks around it; the step's output."""
        if info.step % self.steps_per_epoch == 0:
            self.method.on_epoch_start(info, lambda epoch=info.epoch: self.batches.epoch_pass(epoch))
        self.method.on_step_start(info)
        views, batch = self.batches.step_inputs(info.step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(views, batch)
        self.loss_watch.record(info.step, output.loss)
        self.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()  # DDP and FSDP average the gradients over processes here
        if self.train_config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.train_config.clip_grad)
        self.optimizer.step()
        self.method.on_step_end(info)
        return output

    def _stop_if_diverged(self, logger: RunLogger) -> None:
        """Stop with the last good checkpoint when a loss since the last check was not finite."""
        bad_step = self.loss_watch.first_bad_step()
        if bad_step is None:
            return
        where = f"at step {bad_step}" if bad_step >= 0 else "on another process"
        logger.log(max(bad_step, 0), {"event": "diverged"})
        raise TrainingDiverged(f"the loss is not finite {where}; training stopped, {self.checkpoints.last_good()}")

    @torch.no_grad()
    def online_knn(self) -> float:
        """kNN (k=20) top-1 on subsets of the held-out splits, for monitoring during training."""
        train_split, test_split = self.held_out
        self.method.eval()
        try:
            train_x, test_x = (
                encode(self.method.embed, split.gather(torch.arange(min(count, len(split))), torch.device("cpu")),
                       self.view_maker, self.device, self.channels_last)
                for split, count in ((train_split, _ONLINE_KNN_TRAIN), (test_split, _ONLINE_KNN_TEST))
            )
        finally:
            self.method.train()
        return knn_accuracy(
            train_x, train_split.labels[:_ONLINE_KNN_TRAIN], test_x, test_split.labels[:_ONLINE_KNN_TEST],
            num_classes=train_split.num_classes, k=20,
        )
