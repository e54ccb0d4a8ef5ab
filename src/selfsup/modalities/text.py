"""Text: corpus -> tokenizer -> token sequences -> model; masked-token accuracy, the
pseudo-likelihood energy, the homonym check and probes on the documents' packages.

A text run directory also holds ``tokenizer.json``, trained on the run's training documents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from selfsup.augment.masking import FIRST_REGULAR_ID, TokenViews
from selfsup.backbones.text import TransformerEncoder
from selfsup.config import Config, ConfigError
from selfsup.data.text import load_corpus, split_corpus
from selfsup.data.tokenizer import (
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from selfsup.evaluate.pipeline import labelled_subset
from selfsup.evaluate.protocol import split_accuracy_metrics
from selfsup.evaluate.text import (
    HOMONYMS,
    bag_of_words,
    homonym_spread,
    masked_token_metrics,
    pseudo_likelihood_auc,
)
from selfsup.methods import (
    MaskedLanguageModel,
    Method,
    build_method,
    method_class,
    resolve_method_options,
)
from selfsup.methods.static import StaticEmbedding, StaticWordModel
from selfsup.modalities.base import Modality, say

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_SOURCE = "stdlib-docs"
DEFAULT_WIDTH, DEFAULT_DEPTH, DEFAULT_HEADS = 256, 4, 4
_EVALUATION_SEED = 1234
_ENERGY_SENTENCES, _ENERGY_TOKENS = 256, 32  # PLL costs one forward per token: kept small


@dataclass
class TokenSet:
    """Tokenised documents: ``samples`` [N, 2, T] int64 holds the token ids (channel 0) and
    the word index of each token (channel 1, -1 at special tokens), which whole-word masking
    needs; ``labels`` [N] (-1 unlabelled) index ``class_names``."""

    samples: Tensor
    labels: Tensor
    name: str
    class_names: list[str]
    vocab_size: int
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def describe_rows(self) -> str:
        return f"documents of up to {self.samples.shape[-1]} tokens (vocabulary {self.vocab_size})"

    @property
    def ids(self) -> Tensor:
        return self.samples[:, 0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Tensor, name: str) -> TokenSet:
        return TokenSet(self.samples[indices], self.labels[indices], name, self.class_names, self.vocab_size, self.skipped)


def load_text_data(config: Config, run_dir: Path) -> tuple[TokenSet, TokenSet, TokenSet]:
    """(pretraining set, labelled train split, test split) of the corpus, tokenised with the
    run's ``tokenizer.json`` (trained on the training documents and saved when absent)."""
    corpus = load_corpus(config.data.source)
    train_docs, test_docs = split_corpus(corpus, test_fraction=config.text.test_fraction, seed=config.train.seed)
    path = run_dir / TOKENIZER_FILE
    if path.is_file():
        tokenizer = load_tokenizer(path)
    else:
        tokenizer = train_tokenizer(train_docs.documents, config.text.vocab_size, config.text.tokenizer, config.text.lowercase)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tokenizer, path)
    sets = []
    for split, documents in (("train", train_docs), ("test", test_docs)):
        ids, word_ids = encode_documents(tokenizer, documents.documents, config.text.max_length)
        sets.append(TokenSet(
            torch.stack([ids, word_ids], dim=1), torch.tensor(documents.labels, dtype=torch.long), f"{corpus.name}:{split}",
            list(corpus.label_names), tokenizer.get_vocab_size(), list(corpus.skipped),
        ))
    return sets[0], sets[0], sets[1]


def resolve_text(config: Config, pretrain_set: TokenSet) -> Config:
    """Fill the values left open for a text run: the encoder's sizes, the vocabulary the
    tokenizer ended with and the method's options."""
    method_options = resolve_method_options(config.method)
    static = issubclass(method_class(method_options["name"]), StaticWordModel)
    backbone = dataclasses.replace(
        config.backbone,
        name=config.backbone.name or ("embedding" if static else "transformer"),
        width=config.backbone.width or DEFAULT_WIDTH,
        depth=config.backbone.depth or DEFAULT_DEPTH,
        heads=config.backbone.heads or DEFAULT_HEADS,
    )
    expected = "embedding" if static else "transformer"
    if backbone.name != expected:
        raise ConfigError(f"backbone.name: method {method_options['name']!r} uses the {expected!r} encoder, got {backbone.name!r}")
    text = dataclasses.replace(config.text, vocab_size=pretrain_set.vocab_size)
    return dataclasses.replace(config, method=method_options, backbone=backbone, text=text)


def build_text_model(config: Config) -> Method:
    """The text model with its encoder (a transformer, or a lookup table for the static
    word models) at the initialisation given by ``train.seed``."""
    torch.manual_seed(config.train.seed)
    cls = method_class(config.method["name"])
    if issubclass(cls, StaticWordModel):
        encoder = StaticEmbedding(config.text.vocab_size, config.backbone.width)
    else:
        encoder = TransformerEncoder(
            config.text.vocab_size, width=config.backbone.width, depth=config.backbone.depth, heads=config.backbone.heads,
            max_length=config.text.max_length, causal=cls.causal_attention,
        )
    return build_method(config.method, encoder, encoder.output_dim)


def build_token_views(config: Config) -> TokenViews:
    options = resolve_method_options(config.method)
    masking = method_class(options["name"]).masking
    if masking == "none":  # causal and static models read the sequences as they are
        return TokenViews(masking, config.text.vocab_size)
    return TokenViews(
        masking, config.text.vocab_size,
        rate=options["mask_rate"], mask_fraction=options["mask_fraction"], random_fraction=options["random_fraction"],
    )


@torch.no_grad()
def evaluate_text(method: Method, views: TokenViews, config: Config, train: TokenSet, test: TokenSet, device: torch.device,
                  tokenizer, baselines: dict[str, Method] | None = None) -> dict:
    """The text part of ``summary.json``: held-out masked-token accuracy and perplexity
    (language models), the sentence energy AUC, the homonym check, and probes on the
    documents' labels beside bag-of-words and the ``baselines`` models (e.g. the same
    encoder at random initialisation, mean word2vec vectors)."""
    method.eval()
    generator = torch.Generator().manual_seed(_EVALUATION_SEED)
    result = {}
    if isinstance(method, MaskedLanguageModel):
        result.update(masked_token_metrics(method, views, test.samples.to(device), generator))
    sentences = test.ids[:_ENERGY_SENTENCES, : _ENERGY_TOKENS].to(device)
    result["energy_auc"] = pseudo_likelihood_auc(method, sentences, config.text.vocab_size, generator)
    result["homonyms"] = homonym_spread(method, test.ids.to(device), homonym_candidates(tokenizer, test.ids))

    labelled_train, labelled_test = labelled_subset(train), labelled_subset(test)
    if len(labelled_train) and len(labelled_test):
        def features(model: Method, split: TokenSet) -> Tensor:
            return torch.cat([model.embed(split.ids[i : i + 256].to(device)).float().cpu() for i in range(0, len(split), 256)])

        def probe(train_x: Tensor, test_x: Tensor) -> dict:
            return split_accuracy_metrics(train_x, labelled_train, test_x, labelled_test, config.eval.fewshot_seeds)

        result.update(probe(features(method, labelled_train), features(method, labelled_test)))
        if config.eval.baselines:
            result["baselines"] = {
                "bag_of_words": probe(bag_of_words(labelled_train.ids, config.text.vocab_size),
                                      bag_of_words(labelled_test.ids, config.text.vocab_size)),
            }
            for name, model in (baselines or {}).items():
                model.to(device).eval()
                result["baselines"][name] = probe(features(model, labelled_train), features(model, labelled_test))
    return result


def homonym_candidates(tokenizer, ids: Tensor, fallback: int = 10) -> dict[str, int]:
    """The words of :data:`HOMONYMS` that are single tokens of the vocabulary; for corpora
    without them, the ``fallback`` most frequent whole-word tokens of ``ids``."""
    words = {word: token for word in HOMONYMS if (token := tokenizer.token_to_id(word)) is not None}
    if words:
        return words
    counts = torch.bincount(ids[ids >= FIRST_REGULAR_ID].flatten(), minlength=tokenizer.get_vocab_size())
    frequent = [int(t) for t in counts.argsort(descending=True) if counts[t] > 1]
    whole = [(tokenizer.id_to_token(t), t) for t in frequent if not tokenizer.id_to_token(t).startswith("##")]
    return dict(whole[:fallback])


def run_tokenizer(run_dir: Path):
    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {TOKENIZER_FILE}; is it a text run?")
    return load_tokenizer(path)


def encode_text(tokenizer, text: str, max_length: int) -> Tensor:
    """Token ids [1, T] of one text, as the run's documents were encoded."""
    ids, _ = encode_documents(tokenizer, [text], max_length)
    return ids


class TextModality(Modality):
    name = "text"
    shared_files = (TOKENIZER_FILE,)

    def resolve_source(self, config: Config) -> str:
        return DEFAULT_SOURCE

    def load_data(self, config: Config, run_dir: Path) -> tuple[TokenSet, TokenSet, TokenSet]:
        return load_text_data(config, run_dir)

    def resolve(self, config: Config, pretrain_set: TokenSet) -> Config:
        return resolve_text(config, pretrain_set)

    def build_view_maker(self, config: Config) -> TokenViews:
        return build_token_views(config)

    def build_model(self, config: Config) -> Method:
        return build_text_model(config)

    def baseline_runs(self, config: Config) -> dict[str, Config]:
        """Mean word2vec vectors (5 epochs on the same corpus and vocabulary), the static
        baseline of the probes; none for a word2vec run itself."""
        if config.method["name"] == "word2vec":
            return {}
        return {"mean_word2vec": dataclasses.replace(
            config,
            method={"name": "word2vec"},
            backbone=dataclasses.replace(config.backbone, name=None, depth=None, heads=None),
            train=dataclasses.replace(config.train, epochs=5, budget=None, optimizer=None, lr=None, weight_decay=None, clip_grad=None),
        )}

    def evaluate(self, method: Method, view_maker: TokenViews, config: Config, train: TokenSet, test: TokenSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        say("evaluating: masked-token accuracy and perplexity, pseudo-likelihood energy AUC, probes, baselines")
        if config.eval.baselines:
            baselines = {"random_init": self.build_model(config), **baselines}
        return evaluate_text(method, view_maker, config, train, test, device, run_tokenizer(run_dir), baselines)
