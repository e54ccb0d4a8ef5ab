"""The training loop shared by every method.

Determinism is by construction rather than by saved random state: the order of the data
in epoch e is a permutation drawn from a generator seeded with (seed, e), and the
augmentations of step t from a generator seeded with (seed, rank, t). A checkpoint therefore
needs only the weights, the optimiser state and the step; a run killed at any point and
resumed from its last checkpoint replays exactly the steps it lost and ends with the same
weights as an uninterrupted run (on the same device and thread count).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from selfsup import distributed
from selfsup.augment.views import ViewMaker, seeded_generator
from selfsup.backbones import uses_convolutions
from selfsup.config import Config, ConfigError, parse_budget
from selfsup.data import ImageSet
from selfsup.evaluate.collapse import (
    CollapseThresholds,
    collapse_report,
    prototype_usage,
)
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.pipeline import encode
from selfsup.methods import Batch, Method
from selfsup.train import checkpoint
from selfsup.train.logging import RunLogger
from selfsup.train.optim import build_optimizer
from selfsup.train.schedules import warmup_cosine

# Steps timed, counted from the start of this process, to fit the schedule to a budget
# (the first few are skipped: they include one-off allocation costs).
_CALIBRATION_STEPS = range(3, 13)
# Share of the measured step rate planned for, leaving room for logging and checkpoints.
_BUDGET_SAFETY = 0.95
_ONLINE_KNN_TRAIN, _ONLINE_KNN_TEST = 10_000, 2_000
# Augmentation streams besides the per-rank training views (seeded_generator's ``stream``).
_SUPPORT_STREAM, _EPOCH_PASS_STREAM, _METHOD_STREAM = 1 << 20, 1 << 21, 1 << 22


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    steps: int
    seconds: float
    images_per_second: float
    epochs: float
    stopped_by: str  # "schedule" (all planned steps done) or "budget" (wall clock spent)
    collapse_alarm_step: int | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=cpu or auto")
    return torch.device(name)


def _seed_mix(*values: int) -> int:
    mixed = 0x9E3779B97F4A7C15
    for value in values:
        mixed = (mixed ^ (value + 0x9E3779B97F4A7C15 + (mixed << 6) + (mixed >> 2))) & 0xFFFFFFFFFFFFFFFF
    return mixed


class Trainer:
    """Runs ``config.train`` for ``method`` on ``train_set`` and writes into ``run_dir``.

    ``held_out`` = (train split, test split) for the online kNN monitor.
    """

    def __init__(
        self,
        method: Method,
        view_maker: ViewMaker,
        train_set: ImageSet,
        config: Config,
        run_dir: Path,
        held_out: tuple[ImageSet, ImageSet] | None = None,
    ):
        self.config = config
        self.train_config = config.train
        self.run_dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.device = resolve_device(self.train_config.device)
        if self.train_config.sync_batchnorm and distributed.world_size() > 1:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_batchnorm=true needs CUDA: torch's SyncBatchNorm does not run on the CPU")
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        self.method = method.to(self.device)
        self.channels_last = uses_convolutions(method)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.view_maker = view_maker
        self.held_out = held_out
        self.autocast = self.device.type == "cuda" and self.train_config.precision in ("auto", "bf16")
        if self.train_config.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("train.precision=bf16 runs on CUDA only (it is far slower than fp32 on most CPUs); use fp32 or auto")

        self.samples = train_set.samples
        if self.device.type == "cuda" and self.samples.numel() < 2**31:
            self.samples = self.samples.to(self.device)  # small sets live on the GPU: no per-step copies
        self.labels = train_set.labels
        self.world = distributed.world_size()
        self.rank = distributed.rank()
        self.global_batch = self.train_config.batch_size * self.world
        self.steps_per_epoch = len(train_set) // self.global_batch
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size={self.train_config.batch_size} x {self.world} process(es) is larger than the data "
                f"({len(train_set)} images in {train_set.name}); lower train.batch_size"
            )
        self.lr = self.train_config.lr * self.global_batch / 256
        self.warmup_steps = round(self.train_config.warmup_epochs * self.steps_per_epoch)
        self.budget = parse_budget(self.train_config.budget)
        self.planned_steps = self.train_config.epochs * self.steps_per_epoch if self.train_config.epochs else None
        self.optimizer = build_optimizer(
            self.train_config.optimizer, self.method, self.lr, self.train_config.weight_decay, self.train_config.momentum
        )
        self.thresholds = CollapseThresholds()
        self.support_pool = self._support_pool(train_set) if method.labels_per_class else None
        self._epoch_order: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, permutation of the data)

    # ------------------------------------------------------------------ state
    def _state(self, elapsed: float, collapse_alarm_step: int | None) -> dict:
        return {
            "planned_steps": self.planned_steps,
            "elapsed_seconds": elapsed,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch": self.global_batch,
            "collapse_alarm_step": collapse_alarm_step,
        }

    def _save(self, step: int, elapsed: float, collapse_alarm_step: int | None) -> None:
        # A checkpoint is only ever a good one: weights that overflowed are never written.
        tensors = self.method.state_dict().values()
        if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
            raise TrainingDiverged(f"weights became non-finite at step {step}; training stopped, {self._last_good()}")
        if distributed.is_main_process():
            checkpoint.save_checkpoint(
                self.checkpoint_dir, step, self.method, self.optimizer, self._state(elapsed, collapse_alarm_step)
            )
        distributed.barrier()

    def _last_good(self) -> str:
        last = checkpoint.latest_checkpoint(self.checkpoint_dir)
        if last is None:
            return "no checkpoint had been written"
        return f"the last good checkpoint is {last} (step {json.loads((last / checkpoint.STATE_FILE).read_text())['step']})"

    # ------------------------------------------------------------------ data
    def _batch_indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed(_seed_mix(self.train_config.seed, epoch) % 2**63)
            self._epoch_order = (epoch, torch.randperm(len(self.labels), generator=generator))
        start = position * self.global_batch + self.rank * self.train_config.batch_size
        return self._epoch_order[1][start : start + self.train_config.batch_size]

    def _augment(self, indices: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        samples = self.samples[indices.to(self.samples.device)].to(self.device, non_blocking=True)
        views = self.view_maker(samples, generator)
        if self.channels_last:
            # Image batches only: channels-last is a 4-d layout (clips are [B, T, C, H, W]).
            views = [view.contiguous(memory_format=torch.channels_last) if view.dim() == 4 else view for view in views]
        return views

    def _step_inputs(self, step: int) -> tuple[list[torch.Tensor], Batch]:
        indices = self._batch_indices(step)
        views = self._augment(indices, seeded_generator(self.train_config.seed, step, self.device, stream=self.rank))
        generator = seeded_generator(self.train_config.seed, step, self.device, stream=_METHOD_STREAM + self.rank)
        batch = Batch(indices=indices.to(self.device), generator=generator)
        if self.support_pool is not None:
            batch.support_views, batch.support_labels = self._support_batch(step)
        return views, batch

    def _support_pool(self, train_set: ImageSet) -> torch.Tensor:
        """[C, N]: the dataset indices of the N labelled images per class a semi-supervised
        method may use, drawn once from ``train.seed``; every other label stays hidden."""
        per_class = self.method.labels_per_class
        generator = torch.Generator().manual_seed(_seed_mix(self.train_config.seed, 0x5EED) % 2**63)
        order = torch.randperm(len(self.labels), generator=generator)
        classes = sorted(set(self.labels[self.labels >= 0].tolist()))
        if not classes:
            raise ConfigError(f"method {self.config.method['name']!r} needs labelled images, but {train_set.name} has no labels")
        pool = []
        for label in classes:
            members = order[self.labels[order] == label][:per_class]
            if len(members) < per_class:
                raise ConfigError(
                    f"method.labels_per_class={per_class} but class {label} of {train_set.name} has only {len(members)} images"
                )
            pool.append(members)
        return torch.stack(pool)

    def _support_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``support_per_class`` images of every class from the labelled pool, without
        replacement (all of them when the pool is that small), two augmented views each."""
        classes, per_class = self.support_pool.shape
        generator = torch.Generator().manual_seed(_seed_mix(self.train_config.seed, step, 0x5EED) % 2**63)
        picks = torch.rand(classes, per_class, generator=generator).argsort(dim=1)[:, : self.method.support_per_class]
        indices = self.support_pool.gather(1, picks).flatten()
        views = self._augment(indices, seeded_generator(self.train_config.seed, step, self.device, stream=_SUPPORT_STREAM))
        return torch.cat(views[:2]), self.labels[indices].repeat(2).to(self.device)

    def _training_views(self, epoch: int):
        """A pass over the whole training set in index order with training augmentations
        (seeded by the epoch), for methods that need every image at an epoch's start."""
        for start in range(0, len(self.labels), self.train_config.batch_size):
            indices = torch.arange(start, min(start + self.train_config.batch_size, len(self.labels)))
            generator = seeded_generator(self.train_config.seed, epoch, self.device, stream=_EPOCH_PASS_STREAM + start)
            yield self._augment(indices, generator), indices.to(self.device)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        step, elapsed_before, collapse_alarm_step = 0, 0.0, None
        if resume:
            latest = checkpoint.latest_checkpoint(self.checkpoint_dir)
            if latest is None:
                raise checkpoint.CheckpointError(f"nothing to resume: {self.checkpoint_dir} holds no complete checkpoint")
            state = checkpoint.load_checkpoint(latest, self.method, self.optimizer)
            if state["global_batch"] != self.global_batch:
                raise checkpoint.CheckpointError(
                    f"{latest} was written with a global batch of {state['global_batch']}, this run has {self.global_batch}; "
                    "resume with the same batch size and number of processes"
                )
            step, elapsed_before = state["step"], state["elapsed_seconds"]
            self.planned_steps = state["planned_steps"]
            collapse_alarm_step = state["collapse_alarm_step"]
        logger = RunLogger(self.run_dir, resume_step=step if resume else None)
        if resume:
            logger.message(f"resumed from step {step} ({elapsed_before:.0f} s of training done)")

        # Without a fixed number of epochs the schedule is fitted to the budget once the step
        # time is measured; until then a provisional length keeps the warm-up correct.
        provisional_steps = self.planned_steps or max(self.warmup_steps * 10, self.steps_per_epoch * 1000)
        progress = tqdm(
            total=self.planned_steps, initial=step, unit="step", dynamic_ncols=True,
            disable=None if distributed.is_main_process() else True, desc=f"{self.config.method['name']}",
        )
        start = time.perf_counter() - elapsed_before
        calibration_start = None
        steps_at_start = saved_step = step
        stopped_by = "schedule"
        self.method.train()
        self.method.on_train_start(lambda: self._training_views(epoch=-1))
        try:
            while step < (self.planned_steps or provisional_steps):
                # Rank 0's clock decides for every process, so that all stop at the same step.
                if self.budget is not None and distributed.broadcast_int(int(time.perf_counter() - start >= self.budget)):
                    stopped_by = "budget"
                    break
                total = self.planned_steps or provisional_steps
                # Short runs (small budgets) would spend most of their steps warming up.
                lr = warmup_cosine(step, total, min(self.warmup_steps, total // 10), self.lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr if group.get("fixed_lr") else lr

                if step % self.steps_per_epoch == 0:
                    epoch = step // self.steps_per_epoch
                    self.method.on_epoch_start(epoch, lambda epoch=epoch: self._training_views(epoch))
                self.method.on_step_start(step, total, self.steps_per_epoch)
                views, batch = self._step_inputs(step)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    output = self.method(views, batch)
                loss_value = distributed.all_reduce_mean(output.loss.detach()).item()
                if not math.isfinite(loss_value):
                    logger.log(step, {"loss": loss_value, "event": "diverged"})
                    raise TrainingDiverged(f"loss is {loss_value} at step {step}; training stopped, {self._last_good()}")
                self.optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                distributed.average_gradients(self.method)
                if self.train_config.clip_grad:
                    torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.train_config.clip_grad)
                self.optimizer.step()
                self.method.on_step_end(step, total)
                step += 1
                progress.update(1)

                if step - steps_at_start == _CALIBRATION_STEPS.start:
                    calibration_start = time.perf_counter()
                if self.planned_steps is None and step - steps_at_start == _CALIBRATION_STEPS.stop:
                    seconds_per_step = (time.perf_counter() - calibration_start) / len(_CALIBRATION_STEPS)
                    remaining = self.budget - (time.perf_counter() - start)
                    self.planned_steps = distributed.broadcast_int(max(step + 1, step + int(_BUDGET_SAFETY * remaining / seconds_per_step)))
                    progress.total = self.planned_steps
                    progress.refresh()
                    logger.message(
                        f"budget {self.train_config.budget}: {seconds_per_step * 1000:.0f} ms/step, "
                        f"schedule fitted to {self.planned_steps} steps ({self.planned_steps / self.steps_per_epoch:.1f} epochs)"
                    )

                if step % self.train_config.log_every == 0:
                    metrics = {"loss": loss_value, "lr": lr, "epoch": step / self.steps_per_epoch, **output.metrics}
                    if output.embeddings is not None:
                        report = collapse_report(output.embeddings.float(), thresholds=self.thresholds)
                        metrics.update(std_sqrt_d=report["std_sqrt_d"], effective_rank=report["effective_rank"])
                        reasons = report["reasons"]
                        if output.assignments is not None:
                            usage = prototype_usage(output.assignments.float())
                            metrics.update({f"prototype_{key}": usage[key] for key in ("entropy", "used", "largest_share", "assignment_entropy")})
                            reasons = reasons + usage["reasons"]
                        if reasons and collapse_alarm_step is None:
                            collapse_alarm_step = step
                            logger.message(f"COLLAPSE ALARM at step {step}: " + "; ".join(reasons))
                    seconds = time.perf_counter() - start
                    metrics["images_per_second"] = (step - steps_at_start) * self.global_batch / max(seconds - elapsed_before, 1e-9)
                    logger.log(step, metrics)
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")

                epoch_end = step % self.steps_per_epoch == 0
                if self.held_out and self.train_config.knn_every and epoch_end and (step // self.steps_per_epoch) % self.train_config.knn_every == 0:
                    logger.log(step, {"knn_top1": self.online_knn()}, kind="eval")
                if step % self.train_config.checkpoint_every == 0 or epoch_end:
                    self._save(step, time.perf_counter() - start, collapse_alarm_step)
                    saved_step = step
        finally:
            progress.close()

        seconds = time.perf_counter() - start
        if saved_step != step:
            self._save(step, seconds, collapse_alarm_step)
        logger.close()
        images_per_second = (step - steps_at_start) * self.global_batch / max(seconds - elapsed_before, 1e-9)
        return TrainResult(step, seconds, images_per_second, step / self.steps_per_epoch, stopped_by, collapse_alarm_step)

    @torch.no_grad()
    def online_knn(self) -> float:
        """kNN (k=20) top-1 on subsets of the held-out splits, for monitoring during training."""
        train_split, test_split = self.held_out
        self.method.eval()
        try:
            train_x, test_x = (
                encode(self.method.embed, split.samples[:count], self.view_maker, self.device, self.channels_last)
                for split, count in ((train_split, _ONLINE_KNN_TRAIN), (test_split, _ONLINE_KNN_TEST))
            )
        finally:
            self.method.train()
        return knn_accuracy(
            train_x, train_split.labels[:_ONLINE_KNN_TRAIN], test_x, test_split.labels[:_ONLINE_KNN_TEST],
            num_classes=train_split.num_classes, k=20,
        )
