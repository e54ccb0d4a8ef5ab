"""Run directories and the pipelines behind the commands: pretrain, evaluate, embed.

A run directory holds ``config.yaml`` (the fully resolved configuration), ``metrics.jsonl``,
``tensorboard/``, ``checkpoints/``, ``summary.json`` and, when files of a folder could not
be read, ``skipped_files.txt``. Everything needed to rebuild the model is in
``config.yaml``; everything learned is in the newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup import config as config_module
from selfsup import distributed
from selfsup.augment.masking import FIRST_REGULAR_ID, MASK_ID, PAD_ID
from selfsup.backbones import uses_convolutions
from selfsup.config import Config, ConfigError, TrainConfig
from selfsup.data import (
    DataError,
    describe_skipped,
    iter_folder_batches,
    load_splits,
)
from selfsup.data.folder import scan_folder
from selfsup.evaluate.pipeline import encode, labelled_subset
from selfsup.evaluate.video import futures_quality
from selfsup.files import write_atomic
from selfsup.methods import Method, method_class
from selfsup.modalities import modality_of
from selfsup.modalities import text as text_modality
from selfsup.modalities import video as video_modality
from selfsup.modalities.base import say
from selfsup.report.frames import futures_grid, save_png
from selfsup.train import checkpoint
from selfsup.train.trainer import Trainer, resolve_device

DEFAULT_BATCH_SIZE = 256
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped_files.txt"


# ---------------------------------------------------------------------------- building
def modality(config: Config) -> str:
    return method_class(config.method["name"]).modality


def resolve_source(config: Config) -> str:
    """The data source to use; 'auto' is the modality's default (Fashion-MNIST for images,
    stdlib-docs for text, moving sprites for video)."""
    return config.data.source if config.data.source != "auto" else modality_of(config).resolve_source(config)


def load_data(config: Config, run_dir: Path):
    """(pretraining set, labelled train split, test split) of the run's modality (text runs
    train their tokenizer here and keep it in ``run_dir``)."""
    return modality_of(config).load_data(config, run_dir)


def resolve(config: Config, pretrain_set) -> Config:
    """Fill every value left open (null) from the data and the method's recipes.

    The result is what ``config.yaml`` records, so a run can be rebuilt exactly.
    """
    config = modality_of(config).resolve(config, pretrain_set)
    return dataclasses.replace(config, train=resolve_train(config.train, method_class(config.method["name"])))


def resolve_train(train: TrainConfig, cls: type[Method]) -> TrainConfig:
    """The optimisation settings left open, from the method's recipe."""
    recipe = cls.train_recipe
    return dataclasses.replace(
        train,
        batch_size=train.batch_size or recipe.get("batch_size", DEFAULT_BATCH_SIZE),
        optimizer=train.optimizer or recipe["optimizer"],
        lr=recipe["lr"] if train.lr is None else train.lr,
        weight_decay=recipe["weight_decay"] if train.weight_decay is None else train.weight_decay,
        epochs=train.epochs if (train.epochs or train.budget) else recipe["epochs"],
        clip_grad=recipe.get("clip_grad") if train.clip_grad is None else train.clip_grad,
    )


def build_view_maker(config: Config):
    """The run's view maker: augmented crops for images, masked copies for text, (past,
    future) pairs for video."""
    return modality_of(config).build_view_maker(config)


def build_model(config: Config) -> Method:
    """The method with its backbone at the initialisation given by ``train.seed``."""
    return modality_of(config).build_model(config)


def default_run_dir(config: Config) -> Path:
    data = Path(config.data.source).name if config.data.source not in ("fashion-mnist", "digits") else config.data.source
    return Path("runs") / f"{config.method['name']}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------- pipelines
def pretrain(config: Config, resume_dir: Path | None = None) -> dict[str, Any]:
    """Train (or resume) a run, evaluate it, write ``summary.json`` and return the summary."""
    if resume_dir is not None:
        config_path = resume_dir / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"cannot resume {resume_dir}: it has no {CONFIG_FILE} (is it a run directory?)")
        config = config_module.load(config_path)
        run_dir = resume_dir
    else:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=resolve_source(config)))
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        if checkpoint.latest_checkpoint(run_dir / "checkpoints") is not None:
            raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --out")
    # Under torchrun every process runs this function; rank 0 names the run and writes files.
    launched_here = not distributed.is_initialized() and distributed.init_from_environment(resolve_device(config.train.device))
    main = distributed.is_main_process()
    run_dir = Path(distributed.broadcast_object(str(run_dir)))
    pretrain_set, eval_train, eval_test = load_data(config, run_dir)
    if resume_dir is None:
        config = resolve(config, pretrain_set)
        config = dataclasses.replace(config, out=str(run_dir))
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    if pretrain_set.skipped and main:
        write_atomic(run_dir / SKIPPED_FILE, describe_skipped(pretrain_set.skipped))
        say(f"skipped {len(pretrain_set.skipped)} unreadable file(s), listed in {run_dir / SKIPPED_FILE}")
    distributed.barrier()
    if main:
        say(f"run directory: {run_dir}" + (f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""))
        say(f"data: {pretrain_set.name}, {len(pretrain_set)} {pretrain_set.describe_rows()}")

    method = build_model(config)
    view_maker = build_view_maker(config)
    knn_train, knn_test = labelled_subset(eval_train), labelled_subset(eval_test)
    held_out = (knn_train, knn_test) if len(knn_train) and len(knn_test) else None
    trainer = Trainer(method, view_maker, pretrain_set, config, run_dir, held_out=held_out)
    result = trainer.fit(resume=resume_dir is not None)
    summary = {
        "method": config.method["name"],
        "modality": modality(config),
        "data": config.data.source,
        "backbone": config.backbone.name,
        "processes": distributed.world_size(),
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "stopped_by": result.stopped_by,
        "collapse_alarm_step": result.collapse_alarm_step,
        "skipped_files": len(pretrain_set.skipped),
    }
    if not main:  # evaluation and the summary are rank 0's
        if launched_here:
            distributed.shutdown()
        return summary
    if config.eval.enabled:
        summary.update(evaluate_trained(method, view_maker, config, eval_train, eval_test, trainer.device, run_dir))
    write_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    if launched_here:
        distributed.shutdown()
    return summary


def train_baselines(config: Config, run_dir: Path) -> dict[str, Method]:
    """The modality's baseline runs (e.g. word2vec beside an MLM), each trained once in
    ``run_dir/baselines/<name>`` and reused by later evaluations. (Not under torchrun:
    evaluation runs on rank 0 alone.)"""
    pipeline = modality_of(config)
    if not config.eval.baselines or distributed.world_size() > 1:
        return {}
    models = {}
    for name, baseline in pipeline.baseline_runs(config).items():
        out = run_dir / "baselines" / name
        if checkpoint.latest_checkpoint(out / "checkpoints") is None:
            say(f"training the {name.replace('_', ' ')} baseline in {out}")
            out.mkdir(parents=True, exist_ok=True)
            for shared in pipeline.shared_files:
                shutil.copyfile(run_dir / shared, out / shared)
            pretrain(dataclasses.replace(baseline, eval=dataclasses.replace(baseline.eval, enabled=False), out=str(out)))
        models[name] = load_run(out)[1]
    return models


def evaluate_trained(method: Method, view_maker, config: Config, eval_train, eval_test, device, run_dir: Path) -> dict:
    started = time.perf_counter()
    result = modality_of(config).evaluate(
        method, view_maker, config, eval_train, eval_test, device, run_dir, train_baselines(config, run_dir)
    )
    result["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    return result


def load_run(run_dir: Path, device: torch.device | None = None) -> tuple[Config, Method, dict]:
    """Rebuild a run's method from ``config.yaml`` and its newest checkpoint."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    config = config_module.load(config_path)
    latest = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise checkpoint.CheckpointError(f"{run_dir / 'checkpoints'} holds no complete checkpoint")
    method = build_model(config)
    state = checkpoint.load_checkpoint(latest, method)
    method.to(device or resolve_device(config.train.device)).eval()
    return config, method, state


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-run the evaluation protocol on a run's newest checkpoint; updates ``summary.json``."""
    config, method, state = load_run(run_dir)
    device = next(method.parameters()).device
    _, eval_train, eval_test = load_data(config, run_dir)
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update(
        method=config.method["name"],
        modality=modality(config),
        data=config.data.source,
        backbone=config.backbone.name,
        steps=state["step"],
        seconds=round(state["elapsed_seconds"], 2),
        images_per_second=round(state["step"] * state["global_batch"] / max(state["elapsed_seconds"], 1e-9), 1),
    )
    summary.update(evaluate_trained(method, build_view_maker(config), config, eval_train, eval_test, device, run_dir))
    write_atomic(summary_path, json.dumps(summary, indent=2))
    return summary


def embed_to_file(run_dir: Path, source: str, out: Path, batch_size: int = 512) -> dict[str, Any]:
    """Write backbone features of every image of ``source`` to ``out`` (.npy), streaming.

    Built-in sets are embedded train split then test split. A folder is decoded in batches
    by worker processes and written row by row into a memory-mapped file, so memory does
    not grow with the number of images; unreadable files are skipped, and ``<out>.files.txt``
    names the file of each row.
    """
    config, method, _ = load_run(run_dir)
    if modality(config) != "image":
        raise ConfigError(f"{run_dir} is a {modality(config)} run; embed texts with --text \"...\" (repeatable)")
    device = next(method.parameters()).device
    view_maker = build_view_maker(config)
    channels_last = uses_convolutions(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    out.parent.mkdir(parents=True, exist_ok=True)
    dim = method.embed(view_maker.eval_view(torch.zeros(2, config.data.channels, config.data.size, config.data.size, dtype=torch.uint8, device=device))).shape[1]

    if source in ("fashion-mnist", "digits"):
        _, train, test = load_splits(source, config.data.channels, config.data.size)
        features = torch.cat([encode(method.embed, s.images, view_maker, device, channels_last, batch_size) for s in (train, test)])
        np.save(out, features.numpy())
        return {"rows": len(features), "dim": dim, "skipped": 0, "out": str(out)}

    if not Path(source).is_dir():
        raise DataError(f"--data {source!r} is neither fashion-mnist, digits nor a folder")
    paths, _ = scan_folder(source)
    rows = np.lib.format.open_memmap(out.with_suffix(".partial.npy"), mode="w+", dtype=np.float32, shape=(len(paths), dim))
    written, skipped, names = 0, [], []
    for batch in iter_folder_batches(source, config.data.channels, config.data.size, batch_size, config.data.workers):
        skipped += batch.skipped
        if len(batch.images):
            features = encode(method.embed, batch.images, view_maker, device, channels_last, batch_size)
            rows[written : written + len(features)] = features.numpy()
            names += [str(paths[i]) for i in batch.indices.tolist()]
            written += len(features)
    rows.flush()
    del rows
    _finish_memmap(out.with_suffix(".partial.npy"), out, written, dim)
    write_atomic(out.with_name(out.name + ".files.txt"), "".join(name + "\n" for name in names))
    if skipped:
        write_atomic(out.with_name(out.name + ".skipped.txt"), describe_skipped(skipped))
    return {"rows": written, "dim": dim, "skipped": len(skipped), "out": str(out)}


def _finish_memmap(partial: Path, out: Path, rows: int, dim: int, chunk: int = 65536) -> None:
    """Move the first ``rows`` rows of ``partial`` into ``out`` (shorter when files were skipped)."""
    source = np.load(partial, mmap_mode="r")
    if rows == len(source):
        del source
        os.replace(partial, out)
        return
    target = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, chunk):
        target[start : start + chunk] = source[start : min(rows, start + chunk)]
    target.flush()
    del target, source
    partial.unlink()


# ---------------------------------------------------------------------------- text commands
def _load_text_run(run_dir: Path) -> tuple[Config, Method, Any]:
    config, method, _ = load_run(run_dir)
    if modality(config) != "text":
        raise ConfigError(f"{run_dir} is a {modality(config)} run; this command needs a text run (e.g. --method mlm)")
    return config, method, text_modality.run_tokenizer(run_dir)


@torch.no_grad()
def fill_mask(run_dir: Path, text: str, top_k: int = 5) -> list[tuple[int, list[tuple[str, float]]]]:
    """For each [MASK] of ``text``: its index among the masks and the ``top_k`` most likely
    tokens with their probabilities under the run's masked language model."""
    config, method, tokenizer = _load_text_run(run_dir)
    if method.causal_attention:
        raise ConfigError(f"{run_dir} holds a causal model, which predicts the next token, not masked ones; use an mlm run")
    ids = text_modality.encode_text(tokenizer, text, config.text.max_length).to(next(method.parameters()).device)
    positions = (ids[0] == MASK_ID).nonzero().flatten()
    if len(positions) == 0:
        raise ConfigError(f"no [MASK] in {text!r}; write [MASK] where a word is to be predicted")
    probabilities = method.token_log_probabilities(ids)[0, positions].exp()
    best = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    return [
        (index, [(tokenizer.id_to_token(int(token)), float(p)) for token, p in zip(best.indices[index], best.values[index])])
        for index in range(len(positions))
    ]


@torch.no_grad()
def embed_texts(run_dir: Path, texts: list[str], out: Path | None, tokens: bool = False) -> dict[str, Any]:
    """Sentence embeddings [len(texts), D] (mean of the contextual token embeddings), or with
    ``tokens`` the contextual embedding of every token of the first text [T, D]; written to
    ``out`` (.npy) when given."""
    config, method, tokenizer = _load_text_run(run_dir)
    device = next(method.parameters()).device
    ids = torch.cat([text_modality.encode_text(tokenizer, text, config.text.max_length) for text in texts]).to(device)
    if tokens:
        real = ids[0] != PAD_ID
        features = method.hidden(ids[:1])[0, real].float().cpu().numpy()
    else:
        features = method.embed(ids).float().cpu().numpy()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, features)
    return {"rows": len(features), "dim": features.shape[1], "skipped": 0, "out": str(out) if out else "-", "features": features}


@torch.no_grad()
def similar_words(run_dir: Path, word: str, top_k: int = 10) -> list[tuple[str, float]]:
    """The ``top_k`` vocabulary entries whose vectors are closest (cosine) to ``word``'s in
    a static word model (word2vec, GloVe)."""
    config, method, tokenizer = _load_text_run(run_dir)
    if not hasattr(method, "word_vectors"):
        raise ConfigError(f"{run_dir} holds a {config.method['name']} model, whose word vectors depend on the sentence; "
                          "similar-words needs a static model (--method word2vec or glove)")
    token = tokenizer.token_to_id(word.lower() if config.text.lowercase else word)
    if token is None:
        raise ConfigError(f"{word!r} is not a single token of the run's vocabulary ({config.text.vocab_size} tokens)")
    vectors = torch.nn.functional.normalize(method.word_vectors().float(), dim=1)
    cosines = vectors @ vectors[token]
    cosines[:FIRST_REGULAR_ID] = -2  # special tokens are not words
    cosines[token] = -2
    best = cosines.topk(min(top_k, len(cosines) - FIRST_REGULAR_ID - 1))
    return [(tokenizer.id_to_token(int(i)), float(c)) for i, c in zip(best.indices, best.values)]


# ---------------------------------------------------------------------------- video commands
@torch.no_grad()
def predict(run_dir: Path, samples: int = 8, clips: int = 4, seed: int = 0, out: Path | None = None) -> dict[str, Any]:
    """Draw ``samples`` sampled futures for each of the first ``clips`` held-out clips of a
    video run into a PNG grid (the past and the true future on top of each block), and
    measure on those clips the best-of-K error and the diversity of the samples."""
    config, method, _ = load_run(run_dir)
    if modality(config) != "video":
        raise ConfigError(f"{run_dir} is a {modality(config)} run; predict needs a video run (e.g. --method lvp)")
    if not hasattr(method, "sample_futures"):
        raise ConfigError(f"{run_dir} holds a {config.method['name']} model, which predicts embeddings, not frames; "
                          "predict needs a model with a decoder (--method lvp)")
    if samples < 1 or clips < 1:
        raise ConfigError(f"--samples and --clips must be at least 1, got {samples} and {clips}")
    test = video_modality.load_clips(config, "test")
    test = test.subset(torch.arange(min(clips, len(test))), test.name)
    out = out or run_dir / f"futures-K{samples}.png"
    past, future, futures = video_modality.sample_predictions(method, build_view_maker(config), test, samples, seed)
    save_png(futures_grid(past, future, futures), out)
    best, diversity = futures_quality(futures, future, (samples,))
    return {"clips": len(test), "samples": samples, "best_of_k": round(float(best[samples].mean()), 4),
            "sample_diversity": round(float(diversity.mean()), 4), "out": str(out)}
