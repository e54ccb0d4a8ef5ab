"""The run pipeline behind ``selfsup pretrain`` and ``selfsup evaluate``: resolve the config
once, build the data, the method and the trainer, train, evaluate beside the baselines,
write the summary.

A run directory holds ``config.yaml`` (the fully resolved configuration), ``status.json``
(running, finished, stopped or failed, and at which step), ``metrics.jsonl``,
``tensorboard/``, ``checkpoints/``, ``summary.json`` and, when files of a folder could not
be read, ``skipped_files.txt``. Everything needed to rebuild the model is in
``config.yaml``; everything learned is in the newest checkpoint. One process at a time
works in a run directory (``.lock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup import config as config_module
from selfsup import distributed
from selfsup.augment.views import seeded_generator
from selfsup.cache import BaselineCache
from selfsup.config import Config, ConfigError, TrainConfig, parse_budget
from selfsup.data import BUILTIN_SOURCES, DataError, SampleSet, describe_skipped, labelled_subset
from selfsup.data.folder import describe_warnings
from selfsup.evaluate.finetune import finetune_accuracy
from selfsup.evaluate.pipeline import encode
from selfsup.evaluate.report_data import image_report_data
from selfsup.files import write_atomic
from selfsup.methods import Method, build_method, method_class
from selfsup.modalities import modality_of
from selfsup.modalities.base import LoadedRun, say
from selfsup.modalities.text import fill_mask
from selfsup.report.frames import save_png
from selfsup.report.grids import sample_grid, views_grid
from selfsup.report.html import render_report
from selfsup.report.tensorboard import projector_points, write_evaluation, write_projector
from selfsup.rundir import CONFIG_FILE, SKIPPED_FILE, SUMMARY_FILE, RunLock, last_step, write_status
from selfsup.train import checkpoint
from selfsup.train.logging import METRICS_FILE
from selfsup.train.optim import DEFAULT_LARS_TRUST
from selfsup.train.supervised import supervised_accuracy
from selfsup.train.trainer import Trainer

DEFAULT_BATCH_SIZE = 256


class RunExistsError(ConfigError):
    """A new run was asked for in a directory that already holds one."""

    def __init__(self, run_dir: Path):
        super().__init__(f"{run_dir} already holds a run; resume it or choose another run directory")
        self.run_dir = run_dir


# ---------------------------------------------------------------------------- the config
def resolve(config: Config, pretrain_set: SampleSet) -> Config:
    """Fill every value left open (null), in one place: the method's options (checked, and
    sized to the data where they are 0), its backbone, the training recipe, then the
    modality's own values (crop sizes and normalisation, vocabulary, clip shape).

    The result is what ``config.yaml`` records, so a run can be rebuilt exactly.
    """
    cls = method_class(config.method["name"])
    modality = modality_of(config)
    backbone_name = config.backbone.name or cls.default_backbone or modality.default_backbone
    if cls.backbone_family is not None and not backbone_name.startswith(cls.backbone_family):
        raise ConfigError(f"backbone.name: method {cls.name!r} needs a {cls.backbone_family}* backbone "
                          f"(default {cls.default_backbone}), got {backbone_name!r}")
    if cls.default_backbone and cls.backbone_family is None and backbone_name != cls.default_backbone:
        raise ConfigError(f"backbone.name: method {cls.name!r} uses the {cls.default_backbone!r} encoder, got {backbone_name!r}")
    config = dataclasses.replace(
        config,
        method=cls.fit_options(cls.resolve_options(config.method), len(pretrain_set)),
        backbone=dataclasses.replace(config.backbone, name=backbone_name),
        train=resolve_train(config.train, cls.train_recipe),
    )
    return modality.resolve(config, pretrain_set)


def resolve_train(train: TrainConfig, recipe: dict[str, Any]) -> TrainConfig:
    """The optimisation settings left open, from the method's recipe."""
    return dataclasses.replace(
        train,
        batch_size=train.batch_size or recipe.get("batch_size", DEFAULT_BATCH_SIZE),
        optimizer=train.optimizer or recipe["optimizer"],
        lr=recipe["lr"] if train.lr is None else train.lr,
        weight_decay=recipe["weight_decay"] if train.weight_decay is None else train.weight_decay,
        epochs=train.epochs if (train.epochs or train.budget) else recipe["epochs"],
        clip_grad=recipe.get("clip_grad") if train.clip_grad is None else train.clip_grad,
        lars_trust=recipe.get("lars_trust", DEFAULT_LARS_TRUST) if train.lars_trust is None else train.lars_trust,
        lars_clip=recipe.get("lars_clip", False) if train.lars_clip is None else train.lars_clip,
    )


def build_model(config: Config) -> Method:
    """The method on its backbone, at the initialisation given by ``train.seed``."""
    cls = method_class(config.method["name"])
    torch.manual_seed(config.train.seed)
    backbone, dim, built = modality_of(config).build_backbone(config, cls)
    return build_method(config.method, backbone, dim, **built)


def default_run_dir(config: Config) -> Path:
    data = config.data.source if config.data.source in BUILTIN_SOURCES else Path(config.data.source).name
    return Path("runs") / f"{config.method['name']}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------- the pipeline
REPORT_FILE = "report.html"


@dataclass
class TrainedRun:
    """What training hands to evaluation."""

    config: Config
    run_dir: Path
    method: Method
    view_maker: Any
    eval_train: SampleSet
    eval_test: SampleSet
    device: torch.device
    summary: dict[str, Any]


def pretrain(config: Config, resume_dir: Path | None = None, longer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or resume) a run, evaluate it, write ``summary.json`` and return the summary.

    ``longer`` (``epochs`` and/or ``budget``, with ``resume_dir``) trains the run on to a new
    length: the schedule is planned again for it, from the step the run reached.
    """
    if resume_dir is not None:
        config = _load_config(resume_dir, f"cannot resume {resume_dir}")
        if longer:
            # A budget alone replaces the epoch count the run was planned with.
            longer = {"epochs": None, **longer} if "budget" in longer else longer
            config = config_module.apply_overrides(config, [f"train.{key}={'null' if v is None else v}" for key, v in longer.items()])
        run_dir = resume_dir
        finished = _finished_summary(config, run_dir, replanned=bool(longer))
        if finished is not None:
            return finished
    else:
        if config.data.source == "auto":
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=modality_of(config).default_source()))
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        if checkpoint.latest_checkpoint(run_dir / "checkpoints") is not None:
            raise RunExistsError(run_dir)
    # Under torchrun every process runs this function; rank 0 names the run and writes files.
    launched_here = not distributed.is_initialized() and distributed.init_from_environment(
        distributed.resolve_device(config.train.device)
    )
    run_dir = Path(distributed.broadcast_object(str(run_dir)))
    main = distributed.is_main_process()  # rank 0 locks, evaluates and writes the summary
    with RunLock(run_dir) if main else contextlib.nullcontext():
        try:
            if main:
                write_status(run_dir, "running", step=last_step(run_dir) or 0)
            run = train(config, run_dir, resume=resume_dir is not None, replan=bool(longer))
            summary = run.summary
            if main and summary["stopped_by"] == "signal":
                write_status(run_dir, "stopped", step=summary["steps"], stopped_by="signal",
                             reason=signal.Signals(summary["stop_signal"]).name)
            elif main:
                if run.config.eval.enabled:
                    summary.update(evaluate(run.method, run.view_maker, run.config, run.eval_train, run.eval_test, run.device, run_dir))
                    record_evaluation(run_dir, summary, run.method, run.view_maker, run.config, run.eval_test, run.device)
                write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
                if run.config.eval.enabled and run.config.eval.report:
                    write_report(run_dir, report_data(run.method, run.view_maker, run.config, run.eval_train, run.eval_test, run.device),
                                 fill_mask_examples(LoadedRun(run_dir, run.config, run.method, {})))
                write_status(run_dir, "finished", step=summary["steps"], stopped_by=summary["stopped_by"])
        except BaseException as error:
            if main and run_dir.is_dir():
                stopped = isinstance(error, KeyboardInterrupt)
                with contextlib.suppress(OSError):  # the disk may be what failed
                    write_status(run_dir, "stopped" if stopped else "failed", step=last_step(run_dir),
                                 reason="interrupted" if stopped else f"{type(error).__name__}: {error}")
            raise
    if launched_here:
        distributed.shutdown()
    return summary


def _finished_summary(config: Config, run_dir: Path, replanned: bool = False) -> dict[str, Any] | None:
    """The summary of a run that has nothing left to train (all its planned steps done, or
    its budget spent) and was evaluated; None when resuming has work to do. ``replanned``:
    the planned steps follow ``config`` rather than the checkpoint."""
    summary_path = run_dir / SUMMARY_FILE
    state = checkpoint.latest_state(run_dir / "checkpoints")
    if state is None or not summary_path.is_file():
        return None  # resuming will find the newest readable checkpoint, or say why there is none
    try:
        planned, budget = state["planned_steps"], parse_budget(config.train.budget)
        if replanned:
            planned = config.train.epochs * state["steps_per_epoch"] if config.train.epochs else None
        done = (planned is not None and state["step"] >= planned) or (budget is not None and state["elapsed_seconds"] >= budget)
    except (KeyError, TypeError):
        return None
    if not done:
        return None
    say(f"{run_dir} finished at step {state['step']}; nothing to resume")
    return json.loads(summary_path.read_text())


def train(config: Config, run_dir: Path, resume: bool = False, replan: bool = False) -> TrainedRun:
    """Load the data, resolve and record the config (a new run, or a resumed one trained
    longer: ``replan``), train; every process."""
    main = distributed.is_main_process()
    modality = modality_of(config)
    loading = time.perf_counter()
    pretrain_set, eval_train, eval_test = modality.load_data(config, run_dir)
    data_seconds = time.perf_counter() - loading
    if len(pretrain_set) < 2:
        raise DataError(f"{pretrain_set.name} has {len(pretrain_set)} sample(s); self-supervised training needs at least 2 "
                        "(the samples of a batch are compared with each other)")
    if not resume:
        config = dataclasses.replace(resolve(config, pretrain_set), out=str(run_dir))
    if (not resume or replan) and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    warnings_line = describe_warnings(getattr(pretrain_set, "warned", []))
    if warnings_line and main:
        say(warnings_line)
    if pretrain_set.skipped and main:
        write_atomic(run_dir / SKIPPED_FILE, describe_skipped(pretrain_set.skipped))
        say(f"skipped {len(pretrain_set.skipped)} unreadable file(s), listed in {run_dir / SKIPPED_FILE}")
    distributed.barrier()
    if main:
        say(f"run directory: {run_dir}" + (f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""))
        say(f"data: {pretrain_set.name}, {len(pretrain_set)} {pretrain_set.describe_rows()}")

    method = build_model(config)
    view_maker = modality.build_view_maker(config)
    knn_train, knn_test = labelled_subset(eval_train), labelled_subset(eval_test)
    held_out = (knn_train, knn_test) if len(knn_train) and len(knn_test) else None
    trainer = Trainer(method, view_maker, pretrain_set, config, run_dir, held_out=held_out)
    skipped_before = len(pretrain_set.skipped)
    result = trainer.fit(resume=resume, replan=replan)
    if len(pretrain_set.skipped) > skipped_before and main:  # a streamed folder meets its unreadable files as it goes
        write_atomic(run_dir / SKIPPED_FILE, describe_skipped(pretrain_set.skipped))
        say(f"skipped {len(pretrain_set.skipped) - skipped_before} more unreadable file(s) while streaming, listed in {run_dir / SKIPPED_FILE}")
    summary = {
        "method": config.method["name"],
        "modality": modality.name,
        "run_dir": str(run_dir),
        "data": config.data.source,
        "backbone": config.backbone.name,
        "processes": distributed.world_size(),
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "seconds": round(result.seconds, 2),
        "data_seconds": round(data_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "stopped_by": result.stopped_by,
        **({"stop_signal": result.stop_signal} if result.stop_signal else {}),
        "collapse_alarm_step": result.collapse_alarm_step,
        "skipped_files": len(pretrain_set.skipped),
    }
    method = trainer.method
    if trainer.sharded and main:  # evaluation runs on rank 0 alone: the whole model the last checkpoint holds
        method = build_model(config)
        checkpoint.load_newest_readable(run_dir / "checkpoints", method)
        method.to(trainer.device)
    return TrainedRun(config, run_dir, method, view_maker, eval_train, eval_test, trainer.device, summary)


def train_baselines(config: Config, run_dir: Path) -> dict[str, Method]:
    """The modality's baseline runs (e.g. word2vec beside an MLM), each trained once in
    ``run_dir/baselines/<name>`` and reused by later evaluations. (Not under torchrun:
    evaluation runs on rank 0 alone.)"""
    modality = modality_of(config)
    if not config.eval.baselines or distributed.world_size() > 1:
        return {}
    models = {}
    for name, baseline in modality.baseline_runs(config).items():
        out = run_dir / "baselines" / name
        if checkpoint.latest_checkpoint(out / "checkpoints") is None:
            say(f"training the {name.replace('_', ' ')} baseline in {out}")
            out.mkdir(parents=True, exist_ok=True)
            for shared in modality.shared_files:
                shutil.copyfile(run_dir / shared, out / shared)
            baseline = dataclasses.replace(baseline, eval=dataclasses.replace(baseline.eval, enabled=False), out=str(out))
            trained = train(baseline, out)
            write_atomic(out / SUMMARY_FILE, json.dumps(trained.summary, indent=2))
            models[name] = trained.method
        else:
            models[name] = load_run(out).method
    return models


def evaluate(method: Method, view_maker, config: Config, eval_train: SampleSet, eval_test: SampleSet, device: torch.device,
             run_dir: Path) -> dict[str, Any]:
    """The modality's evaluation of ``method`` beside, with ``eval.baselines``, the same
    backbone at random init and the modality's baseline runs (trained first when missing:
    ``evaluation_seconds`` counts them, a cost the user pays); the evaluation part of the
    summary. Baselines whose figures an earlier run with the same key measured
    (``Modality.baseline_key``, :mod:`selfsup.cache`) are read back instead."""
    started = time.perf_counter()
    modality = modality_of(config)
    key = modality.baseline_key(config, method, eval_train, eval_test) if config.eval.baselines else None
    cache = BaselineCache(key) if key is not None else None
    cached = cache.read() if cache is not None else None
    if cached is not None:
        say(f"baselines: measured {cached['measured']} on the same data, view and backbone; read from {cache.path}")
        unmeasured = dataclasses.replace(config, eval=dataclasses.replace(config.eval, baselines=False))
        result = modality.evaluate(method, view_maker, unmeasured, eval_train, eval_test, device, run_dir, {})
        result["baselines"] = cached["baselines"]
    else:
        baselines = train_baselines(config, run_dir)
        if config.eval.baselines:
            baselines = {"random_init": build_model(config), **baselines}
        result = modality.evaluate(method, view_maker, config, eval_train, eval_test, device, run_dir, baselines)
        if cache is not None and "baselines" in result:
            cache.write(result["baselines"])
    result["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    return result


def record_evaluation(run_dir: Path, summary: dict[str, Any], method: Method, view_maker, config: Config, eval_test: SampleSet,
                      device: torch.device) -> None:
    """The evaluation in the run's TensorBoard folder, at the run's last step: its figures as
    scalars and, for image runs, ``eval.projector`` held-out images in the embedding projector."""
    write_evaluation(run_dir, summary, step=summary["steps"])
    if method.modality != "image" or not config.eval.projector:
        return
    keep = projector_points(len(eval_test), limit=config.eval.projector)
    images = eval_test.images[keep]
    features = encode(method.embed, images, view_maker, device)
    names = [eval_test.class_names[label] if label >= 0 else "unknown" for label in eval_test.labels[keep].tolist()]
    write_projector(run_dir, features, names, images, step=summary["steps"])


def show(config: Config, out: Path, count: int = 64, views: bool = False) -> dict[str, Any]:
    """Draw ``count`` samples of ``config.data.source`` (spread evenly through it) as the model
    will see them, decoded and stored; with ``views``, one row each of their augmented views
    under the config's recipe (the method's own unless ``augment.recipe`` says otherwise)."""
    if modality_of(config).name != "image":
        raise ConfigError(f"selfsup show draws image sources; method.name={config.method['name']} learns from "
                          f"{modality_of(config).name}")
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    modality = modality_of(config)
    if config.data.source == "auto":
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=modality.default_source()))
    pretrain_set, _, _ = modality.load_data(config, out.parent, evaluation=False)
    count = min(count, len(pretrain_set))
    indices = torch.linspace(0, len(pretrain_set) - 1, count).round().long()
    images = pretrain_set.gather(indices, torch.device("cpu"))
    result = {"source": pretrain_set.name, "images": count, "size": list(images.shape[1:]), "out": str(out)}
    if views:
        resolved = resolve(config, pretrain_set)
        crops = modality.build_view_maker(resolved)(images, seeded_generator(resolved.train.seed, 0))
        grid = views_grid(images, crops, resolved.augment.mean, resolved.augment.std)
        result.update(recipe=resolved.augment.recipe, views=len(crops))
    else:
        labels = [pretrain_set.class_names[label] if label >= 0 else "" for label in pretrain_set.labels[indices].tolist()]
        grid = sample_grid(images, labels if any(labels) else None)
    save_png(grid, out)
    return result


# ---------------------------------------------------------------------------- the HTML report
# Sentences of the stdlib-docs style whose masked word a text run's report shows it guessing.
FILL_MASK_PROBES = ("Return the [MASK] of the list.", "Open the [MASK] and read its contents.",
                    "Raise a [MASK] if the value is not valid.")


def fill_mask_examples(run: LoadedRun, top_k: int = 5) -> list[dict[str, Any]]:
    """A masked language model's top guesses for :data:`FILL_MASK_PROBES` (none for other runs;
    a probe whose mask falls after the tokens the run reads is left out)."""
    if not run.method.predicts_tokens or run.method.causal_attention:
        return []
    examples = []
    for text in FILL_MASK_PROBES:
        try:
            predictions = fill_mask(run, text, top_k)
        except ConfigError:
            continue
        for _, candidates in predictions:
            examples.append({"text": text, "predictions": [f"{token} ({probability:.2f})" for token, probability in candidates]})
    return examples


def report_input(run_dir: Path, data: dict[str, Any] | None = None, fill_mask: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One run's input to :func:`report.html.render_report`, read from its directory."""
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    metrics, skipped = run_dir / METRICS_FILE, run_dir / SKIPPED_FILE
    pictures = {path.name: path.read_bytes() for path in [run_dir / "predictions.png"] if path.is_file()}
    return {"name": run_dir.name, "summary": summary, "config_yaml": (run_dir / CONFIG_FILE).read_text(),
            "metrics": [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else [],
            "skipped": skipped.read_text() if skipped.is_file() else "", "data": data, "pictures": pictures,
            "fill_mask": fill_mask or []}


def report_data(method: Method, view_maker, config: Config, eval_train: SampleSet, eval_test: SampleSet,
                device: torch.device) -> dict[str, Any] | None:
    """What the report draws beyond the run's files (image runs): few-shot curve, energies,
    retrieval, 2-D map, spectrum. ``build_model`` rebuilds the same random-init weights. The
    raw-pixel and random-init few-shot curves are the baselines' and kept as they are (under
    the baseline key): a later run on the same data reads them back instead of drawing them."""
    modality = modality_of(config)
    if modality.name != "image":
        return None
    key = modality.baseline_key(config, method, eval_train, eval_test) if config.eval.baselines else None
    cache = BaselineCache({**key, "figures": "report"}) if key is not None else None
    cached = cache.read() if cache is not None else None
    if cached is not None:
        return image_report_data(method, view_maker, eval_train, eval_test, device, baseline_curves=cached["baselines"])
    data = image_report_data(method, view_maker, eval_train, eval_test, device, random_init=build_model(config))
    if cache is not None and "fewshot" in data:
        cache.write({name: curve for name, curve in data["fewshot"].items() if name != "run"})
    return data


def write_report(run_dir: Path, data: dict[str, Any] | None, fill_mask: list[dict[str, Any]] | None = None) -> Path:
    path = run_dir / REPORT_FILE
    write_atomic(path, render_report([report_input(run_dir, data, fill_mask)]))
    return path


def report_runs(run_dirs: list[Path], out: Path) -> Path:
    """One report of several runs side by side (or one run's), written to ``out``."""
    inputs = []
    for run_dir in run_dirs:
        if not (run_dir / SUMMARY_FILE).is_file():
            raise ConfigError(f"{run_dir} has no {SUMMARY_FILE}: evaluate it first (selfsup evaluate {run_dir})")
        run = load_run(run_dir)
        modality = modality_of(run.config)
        _, train, test = modality.load_data(run.config, run_dir)
        view_maker = modality.build_view_maker(run.config)
        inputs.append(report_input(run_dir, report_data(run.method, view_maker, run.config, train, test,
                                                        distributed.resolve_device(run.config.train.device)),
                                   fill_mask_examples(run)))
    write_atomic(out, render_report(inputs))
    return out


# ---------------------------------------------------------------------------- finished runs
def _load_config(run_dir: Path, refusal: str | None = None) -> Config:
    """The run's ``config.yaml``; ``refusal`` begins the error when there is none."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"{refusal + ': ' if refusal else ''}{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    return config_module.load(config_path)


def load_run(run_dir: Path, device: torch.device | None = None) -> LoadedRun:
    """Rebuild a run's method from ``config.yaml`` and its newest checkpoint."""
    config = _load_config(run_dir)
    method = build_model(config)
    _, state, skipped = checkpoint.load_newest_readable(run_dir / "checkpoints", method)
    for path, reason in skipped:
        say(f"skipped checkpoint {path.name}, which cannot be read: {reason}")
    method.to(device or distributed.resolve_device(config.train.device)).eval()
    return LoadedRun(run_dir, config, method, state)


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-run the evaluation protocol on a run's newest checkpoint; updates ``summary.json``."""
    with RunLock(run_dir):
        return _evaluate_run(run_dir)


def _evaluate_run(run_dir: Path) -> dict[str, Any]:
    run = load_run(run_dir)
    config, state = run.config, run.state
    modality = modality_of(config)
    _, eval_train, eval_test = modality.load_data(config, run_dir)
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update(
        method=config.method["name"],
        modality=modality.name,
        data=config.data.source,
        backbone=config.backbone.name,
        steps=state["step"],
        seconds=round(state["elapsed_seconds"], 2),
        images_per_second=round(state["step"] * state["global_batch"] / max(state["elapsed_seconds"], 1e-9), 1),
    )
    view_maker = modality.build_view_maker(config)
    summary.update(evaluate(run.method, view_maker, config, eval_train, eval_test, run.device, run_dir))
    record_evaluation(run_dir, summary, run.method, view_maker, config, eval_test, run.device)
    write_atomic(summary_path, json.dumps(summary, indent=2))
    if config.eval.report:
        write_report(run_dir, report_data(run.method, view_maker, config, eval_train, eval_test, run.device), fill_mask_examples(run))
    return summary


# ---------------------------------------------------------------------------- fine-tuning
def finetune(run_dir: Path, labels_per_class: int, epochs: int, seeds: int = 1) -> dict[str, Any]:
    """Fine-tune a finished image run's encoder end to end on ``labels_per_class`` labels per
    class (:func:`selfsup.evaluate.finetune.finetune_accuracy`, ``seeds`` draws averaged) and
    record the accuracy in ``summary.json`` under ``finetune`` beside the frozen-feature figures."""
    if labels_per_class < 1 or epochs < 1 or seeds < 1:
        raise ConfigError(f"labels per class, epochs and seeds must be at least 1, got {labels_per_class}, {epochs}, {seeds}")
    with RunLock(run_dir):
        run = load_run(run_dir)
        if run.method.modality != "image":
            raise ConfigError(f"{run_dir} is a {run.method.modality} run; fine-tuning takes image runs")
        config, modality = run.config, modality_of(run.config)
        _, eval_train, eval_test = modality.load_data(config, run_dir)
        train_l, test_l = labelled_subset(eval_train), labelled_subset(eval_test)
        if not len(train_l) or not len(test_l):
            raise DataError(f"{config.data.source} has no labelled train and test images to fine-tune and evaluate on")
        view_maker = modality.build_view_maker(config)
        dim = run.method.embed(view_maker.eval_view(train_l.images[:2].to(run.device))).shape[1]
        say(f"fine-tuning {config.backbone.name} end to end on {labels_per_class} labels per class, {epochs} epochs, "
            f"{seeds} draw(s); testing on {len(test_l):,} images")
        started = time.perf_counter()
        accuracies = [finetune_accuracy(run.method.backbone, dim, train_l, test_l, view_maker, labels_per_class, epochs, seed,
                                        run.device) for seed in range(seeds)]
        result = {"top1": sum(accuracies) / len(accuracies), "std": float(torch.tensor(accuracies).std()) if seeds > 1 else 0.0,
                  "epochs": epochs, "seeds": seeds, "seconds": round(time.perf_counter() - started, 1)}
        summary_path = run_dir / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary.setdefault("finetune", {})[str(labels_per_class)] = result
        write_atomic(summary_path, json.dumps(summary, indent=2))
    return {"labels_per_class": labels_per_class, **result, "frozen": {
        "kNN": summary.get("knn_top1"), "linear": summary.get("linear_top1"),
        f"{labels_per_class}-shot": summary.get("fewshot", {}).get(str(labels_per_class))}}


# ---------------------------------------------------------------------------- supervised reference
def supervised_reference(config: Config) -> dict[str, Any]:
    """The ceiling a self-supervised run is read against: the backbone ``config`` resolves
    to, from the same random initialisation, trained with every label of the image data's
    training split for ``train.budget`` (:func:`selfsup.train.supervised.supervised_accuracy`)
    and tested on its test split at the evaluation size. Writes nothing."""
    seconds = parse_budget(config.train.budget)
    if seconds is None:
        raise ConfigError("train.budget: the supervised reference trains for a wall-clock budget; set one, e.g. train.budget=5m")
    modality = modality_of(config)
    if modality.name != "image":
        raise ConfigError(f"the supervised reference takes image data, not {modality.name}")
    pretrain_set, eval_train, eval_test = modality.load_data(config, Path(config.out or "."))
    config = resolve(config, pretrain_set)
    train_l, test_l = labelled_subset(eval_train), labelled_subset(eval_test)
    if not len(train_l) or not len(test_l):
        raise DataError(f"{config.data.source} has no labelled train and test images")
    method, device = build_model(config), distributed.resolve_device(config.train.device)
    view_maker = modality.build_view_maker(config)
    dim = method.embed(view_maker.eval_view(train_l.images[:2])).shape[1]
    say(f"supervised reference: {config.backbone.name} on {len(train_l):,} labelled images for {config.train.budget}, "
        f"tested on {len(test_l):,}")
    result = supervised_accuracy(method.backbone, dim, train_l, test_l, view_maker, seconds, config.train.seed, device)
    return {"backbone": config.backbone.name, "data": config.data.source, "budget": config.train.budget,
            "eval_size": view_maker.eval_size, "train_images": len(train_l), **result}
