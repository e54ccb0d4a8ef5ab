"""Masked-language-model training speed and accuracy against Hugging Face BERT of the same
size, and what `selfsup pretrain --modality text` reaches in a fixed budget.

    python benchmarks/text.py [--steps 60] [--batch-size 32] [--no-write]
    python benchmarks/text.py --quality 15m [--method mlm] [key=value ...]
    python benchmarks/text.py --readouts RUN_DIR

Prints, measured in this one run on the stdlib-docs corpus:
- the peak fp32 matmul FLOP/s of the device;
- training tokens/s of selfsup's MLM step (pre-LN encoder, fused attention, no dropout,
  vocabulary softmax on the masked positions only) and of ``transformers``'
  BertForMaskedLM built with the same vocabulary, width, depth, heads, feed-forward size,
  sequence length and batch, with its defaults otherwise (dropout 0.1, logits at every
  position); both get the same masked batches and AdamW settings, timed in alternating
  blocks so that machine load affects both alike;
- the held-out masked-token accuracy of both after the same number of steps.
and writes the table into BENCHMARKS.md. Needs ``pip install transformers``.

``--readouts RUN_DIR`` reads a finished text run's encoder at every stage (the summed
embeddings, each block, the final LayerNorm that ``embed`` reads), mean-pooled over the
real tokens, as is and centred on the training split's mean (the simplest remedy for
anisotropic states: cosine kNN is dominated by the direction every sentence shares), and
probes each beside the same readout of the encoder at random initialisation.

``--quality BUDGET`` instead pretrains the method on stdlib-docs for that wall-clock
budget with its defaults and tabulates its summary: held-out masked-token accuracy and
perplexity, energy AUC, the homonym check, and the package probes beside bag-of-words,
mean word2vec vectors and the encoder at random initialisation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import (
    machine,
    markdown_table,
    peak_matmul_flops,
    percent,
    synchronize,
    update_section,
)

from selfsup import config as config_module
from selfsup import runs
from selfsup.augment.masking import TokenViews
from selfsup.augment.views import seeded_generator
from selfsup.backbones.text import TransformerEncoder
from selfsup.config import Config
from selfsup.data import labelled_subset
from selfsup.data.text import load_corpus, split_corpus
from selfsup.data.tokenizer import PAD_ID, encode_documents, train_tokenizer
from selfsup.distributed import resolve_device
from selfsup.evaluate.protocol import split_accuracy_metrics
from selfsup.losses.masked import IGNORE
from selfsup.methods.language import MaskedLanguageModel, mean_pool
from selfsup.modalities import modality_of

LR, WEIGHT_DECAY = 5e-4, 0.01


def hugging_face_bert(vocab_size: int, width: int, depth: int, heads: int, length: int):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=4 * width, max_position_embeddings=length, pad_token_id=0,
    )
    return BertForMaskedLM(config)


def ours_step(model: MaskedLanguageModel, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model([inputs, targets]).loss


def bert_step(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(input_ids=inputs, attention_mask=(inputs != 0).long(), labels=targets).loss


def train(models: dict, batches: list, steps: int, block: int, device) -> dict[str, float]:
    """Train every model for ``steps`` on the same batches, alternating blocks of ``block``
    steps between them; returns seconds spent per model (after one untimed warm-up step)."""
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY) for name, (model, _) in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    for name, (model, step) in models.items():  # warm-up: allocation and first-call costs
        step(model, *batches[0]).backward()
        optimizers[name].zero_grad(set_to_none=True)
    for start in range(0, steps, block):
        for name, (model, step) in models.items():
            synchronize(device)
            began = time.perf_counter()
            for index in range(start, min(steps, start + block)):
                loss = step(model, *batches[index % len(batches)])
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
            synchronize(device)
            seconds[name] += time.perf_counter() - began
    return seconds


@torch.no_grad()
def masked_accuracy(model, step_kind: str, batches: list) -> float:
    correct = count = 0
    model.eval()
    for inputs, targets in batches:
        selected = targets != IGNORE
        if step_kind == "ours":
            logits = model.backbone.logits(model.hidden(inputs)[selected])
        else:
            logits = model(input_ids=inputs, attention_mask=(inputs != 0).long()).logits[selected]
        correct += int((logits.argmax(dim=-1) == targets[selected]).sum())
        count += int(selected.sum())
    model.train()
    return correct / max(1, count)


def quality(budget: str, method: str, out: Path, overrides: list[str], write: bool, section: str | None) -> None:
    run_dir = out / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config_module.apply_overrides(
        Config(), [f"method.name={method}", "data.source=stdlib-docs", f"train.budget={budget}", f"out={run_dir}", *overrides],
    )
    summary = runs.pretrain(config)
    rows = []
    for name, metrics in [(method, summary), *[(n.replace("_", " "), m) for n, m in summary["baselines"].items()]]:
        fewshot = metrics["fewshot"]
        rows.append([name, percent(metrics["knn_top1"]), percent(metrics["linear_top1"]),
                     *(percent(fewshot[k]) for k in ("1", "10", "100"))])
    probes = markdown_table(["features", "kNN k=20", "linear", "1-shot", "10-shot", "100-shot"], rows)
    changed = " and " + ", ".join(f"`{o}`" for o in overrides) if overrides else ""
    homonyms = summary["homonyms"]
    body = (
        f"Machine: {machine()}. `{method}` with its defaults{changed} (encoder width {config.backbone.width or 256}, "
        f"depth {config.backbone.depth or 4}), {budget} of training on stdlib-docs: {summary['steps']} steps, "
        f"{summary['epochs']:.1f} epochs, {summary['images_per_second']:,.0f} sequences/s.\n\n"
        f"Held-out masked-token accuracy {percent(summary.get('masked_accuracy'))}%, perplexity "
        f"{summary.get('perplexity', float('nan')):.1f}; energy AUC (sentence vs one token replaced) "
        f"{summary['energy_auc']:.3f}; homonym check: mean cosine {homonyms['mean_cosine']:.3f} between a word's "
        f"vectors in different sentences over {len(homonyms['words'])} words (static models: 1).\n\n"
        f"Probes on the documents' top-level package (sentence embeddings; accuracy in %, few-shot mean of "
        f"{config.eval.fewshot_seeds} draws):\n\n"
        f"{probes}\n\n`python benchmarks/text.py --quality {budget} --method {method}{''.join(' ' + o for o in overrides)}`"
    )
    print(body)
    if write:
        variant = "".join("-" + o.replace("=", "-") for o in overrides)
        update_section(section or f"text-quality-{'cuda' if torch.cuda.is_available() else 'cpu'}-{method}-{budget}{variant}", body)


@torch.no_grad()
def pooled_stages(encoder: TransformerEncoder, ids: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """Mean-pooled hidden states [N, D] of every stage of ``encoder`` (``layer_states``)."""
    parts = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        parts.append([mean_pool(state, chunk) for state in encoder.layer_states(chunk, chunk != PAD_ID)])
    return [torch.cat([part[k] for part in parts]) for k in range(len(parts[0]))]


def readouts(run_dir: Path, write: bool, section: str | None) -> None:
    run = runs.load_run(run_dir)
    config = run.config
    _, train, test = modality_of(config).load_data(config, run_dir)
    train, test = labelled_subset(train), labelled_subset(test)
    torch.manual_seed(config.train.seed)
    random_init = runs.build_model(config).eval()
    stages = {}
    for name, model in (("trained", run.method), ("random init", random_init)):
        stages[name] = list(zip(pooled_stages(model.backbone, train.ids), pooled_stages(model.backbone, test.ids), strict=True))
    depth = len(stages["trained"]) - 2
    names = ["embeddings", *(f"block {i}" for i in range(1, depth + 1)), "final norm (what embed reads)"]
    rows = []
    for index, stage in enumerate(names):
        for centred in (False, True):
            cells = [stage + (", centred" if centred else "")]
            for model in ("trained", "random init"):
                train_x, test_x = stages[model][index]
                if centred:
                    mean = train_x.mean(dim=0)
                    train_x, test_x = train_x - mean, test_x - mean
                metrics = split_accuracy_metrics(train_x, train, test_x, test, config.eval.fewshot_seeds)
                cells += [percent(metrics["knn_top1"]), percent(metrics["linear_top1"]), percent(metrics["fewshot"]["10"])]
            rows.append(cells)
            print(" | ".join(cells), flush=True)
    header = ["readout", "kNN", "linear", "10-shot", "kNN (random init)", "linear (random init)", "10-shot (random init)"]
    summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
    baselines = ", ".join(
        f"{name.replace('_', ' ')} {percent(m['knn_top1'])} / {percent(m['linear_top1'])} / {percent(m['fewshot']['10'])}"
        for name, m in summary.get("baselines", {}).items() if name != "random_init"
    )
    body = (
        f"Machine: {machine()}. The encoder of `{run_dir}` ({config.method['name']}, {summary['steps']} steps, "
        f"lr {config.train.lr}) and the same encoder at random initialisation, each stage mean-pooled over the real tokens, "
        f"as is and centred on the training split's mean; probes on the documents' top-level package (accuracy in %, "
        f"10-shot mean of {config.eval.fewshot_seeds} draws). The run's other baselines (kNN / linear / 10-shot): "
        f"{baselines}.\n\n{markdown_table(header, rows)}\n\n`python benchmarks/text.py --readouts {run_dir}`"
    )
    if write:
        update_section(section or "text-readouts", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--block", type=int, default=5, help="steps timed in a row before switching model")
    parser.add_argument("--quality", metavar="BUDGET", help="pretrain for BUDGET and tabulate its summary instead")
    parser.add_argument("--method", default="mlm", help="with --quality: the text method")
    parser.add_argument("--out", default="runs/benchmark-text", type=Path, help="with --quality: parent folder of the run")
    parser.add_argument("--readouts", metavar="RUN_DIR", type=Path, help="probe every layer of a finished text run instead")
    parser.add_argument("--section", help="with --quality or --readouts: BENCHMARKS.md section name "
                        "(default: text-quality-DEVICE-METHOD-BUDGET[-OVERRIDES], text-readouts)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.readouts:
        readouts(args.readouts, not args.no_write, args.section)
        return
    if args.quality:
        quality(args.quality, args.method, args.out, args.overrides, not args.no_write, args.section)
        return
    device = resolve_device("auto")

    train_docs, test_docs = split_corpus(load_corpus("stdlib-docs"))
    tokenizer = train_tokenizer(train_docs.documents, args.vocab_size)
    vocab_size = tokenizer.get_vocab_size()
    views = TokenViews("tokens", vocab_size)

    def masked_batches(documents, count, seed):
        ids, word_ids = encode_documents(tokenizer, documents, args.length)
        samples = torch.stack([ids, word_ids], dim=1)
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
        batches = []
        for index in range(count):
            rows = order[(index * args.batch_size) % len(order):][: args.batch_size]
            inputs, targets = views(samples[rows].to(device), seeded_generator(seed, index, device))
            batches.append((inputs, targets))
        return batches

    train_batches = masked_batches(train_docs.documents, args.steps + 1, seed=0)
    test_batches = masked_batches(test_docs.documents, max(1, len(test_docs) // args.batch_size), seed=1)

    torch.manual_seed(0)
    encoder = TransformerEncoder(vocab_size, args.width, args.depth, args.heads, max_length=args.length)
    ours = MaskedLanguageModel(encoder, encoder.output_dim).to(device)
    bert = hugging_face_bert(vocab_size, args.width, args.depth, args.heads, args.length).to(device)
    models = {"selfsup MLM": (ours, ours_step), "transformers BertForMaskedLM": (bert, bert_step)}
    seconds = train(models, train_batches, args.steps, args.block, device)
    accuracy = {"selfsup MLM": masked_accuracy(ours, "ours", test_batches), "transformers BertForMaskedLM": masked_accuracy(bert, "bert", test_batches)}

    tokens = sum(int((inputs != 0).sum()) for inputs, _ in train_batches[: args.steps])
    reference = tokens / seconds["transformers BertForMaskedLM"]
    rows = []
    for name in models:
        rate = tokens / seconds[name]
        parameters = sum(p.numel() for p in models[name][0].parameters())
        rows.append([name, f"{parameters / 1e6:.1f} M", f"{rate:,.0f}", f"{rate / reference:.2f}x", f"{100 * accuracy[name]:.1f}"])
    peak = peak_matmul_flops(device)
    table = markdown_table(["model", "parameters", "tokens/s", "vs BERT", f"masked-token accuracy after {args.steps} steps"], rows)
    body = (
        f"Machine: {machine()}. Measured peak fp32 matmul: {peak / 1e9:.1f} GFLOP/s. Encoder width {args.width}, "
        f"depth {args.depth}, heads {args.heads}, vocabulary {vocab_size} (WordPiece on stdlib-docs), sequences of "
        f"{args.length} tokens, batch {args.batch_size}, AdamW lr {LR}; tokens/s counts real (non-padding) tokens.\n\n"
        f"{table}\n\n`python benchmarks/text.py --steps {args.steps} --batch-size {args.batch_size}`"
    )
    print(table)
    if not args.no_write:
        update_section(f"text-mlm-{device.type}", body)


if __name__ == "__main__":
    main()
