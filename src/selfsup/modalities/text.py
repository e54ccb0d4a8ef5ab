"""Text: corpus -> tokenizer -> token sequences -> model; masked-token accuracy, the
pseudo-likelihood energy, the homonym check and probes on the documents' packages; and
``selfsup fill-mask``, ``embed --text`` and ``similar-words``.

A text run directory also holds ``tokenizer.json``, trained on the run's training documents.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from selfsup.augment.masking import TokenViews
from selfsup.backbones.text import StaticEmbedding, TransformerEncoder
from selfsup.config import OPTIMISATION_RECIPE_FIELDS, Config, ConfigError
from selfsup.data import labelled_subset
from selfsup.data.text import load_corpus, split_corpus
from selfsup.data.tokenizer import (
    FIRST_REGULAR_ID,
    MASK_ID,
    PAD_ID,
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from selfsup.data.tokens import TokenSet
from selfsup.evaluate.protocol import split_accuracy_metrics
from selfsup.evaluate.text import (
    HOMONYMS,
    bag_of_words,
    homonym_spread,
    masked_token_metrics,
    pseudo_likelihood_auc,
)
from selfsup.methods import Method, method_class
from selfsup.modalities.base import LoadedRun, Modality, fingerprint, say

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_SOURCE = "stdlib-docs"
DEFAULT_WIDTH, DEFAULT_DEPTH, DEFAULT_HEADS = 256, 4, 4
_EVALUATION_SEED = 1234
_ENERGY_SENTENCES, _ENERGY_TOKENS = 256, 32  # PLL costs one forward per token: kept small


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


def build_token_views(config: Config, method: type[Method]) -> TokenViews:
    """The method's masking of the token ids (causal and static models read them as they are)."""
    if method.masking == "none":
        return TokenViews(method.masking, config.text.vocab_size)
    options = config.method
    return TokenViews(
        method.masking, config.text.vocab_size,
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
    if method.predicts_tokens:
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
    default_backbone = "transformer"
    shared_files = (TOKENIZER_FILE,)

    def default_source(self) -> str:
        return DEFAULT_SOURCE

    def load_data(self, config: Config, run_dir: Path) -> tuple[TokenSet, TokenSet, TokenSet]:
        return load_text_data(config, run_dir)

    def resolve(self, config: Config, pretrain_set: TokenSet) -> Config:
        """The encoder's sizes and the vocabulary the tokenizer ended with."""
        backbone = dataclasses.replace(
            config.backbone,
            width=config.backbone.width or DEFAULT_WIDTH,
            depth=config.backbone.depth or DEFAULT_DEPTH,
            heads=config.backbone.heads or DEFAULT_HEADS,
        )
        text = dataclasses.replace(config.text, vocab_size=pretrain_set.vocab_size)
        return dataclasses.replace(config, backbone=backbone, text=text)

    def build_view_maker(self, config: Config) -> TokenViews:
        return build_token_views(config, method_class(config.method["name"]))

    def build_backbone(self, config: Config, method: type[Method]) -> tuple[nn.Module, int, dict[str, Any]]:
        """A transformer, or a lookup table for the static word models."""
        if config.backbone.name == "embedding":
            encoder = StaticEmbedding(config.text.vocab_size, config.backbone.width)
        else:
            encoder = TransformerEncoder(
                config.text.vocab_size, width=config.backbone.width, depth=config.backbone.depth, heads=config.backbone.heads,
                max_length=config.text.max_length, causal=method.causal_attention,
            )
        return encoder, encoder.output_dim, {}

    def baseline_runs(self, config: Config) -> dict[str, Config]:
        """Mean word2vec vectors (5 epochs on the same corpus and vocabulary), the static
        baseline of the probes; none for a word2vec run itself."""
        if config.method["name"] == "word2vec":
            return {}
        return {"mean_word2vec": dataclasses.replace(
            config,
            method={"name": "word2vec"},
            backbone=dataclasses.replace(config.backbone, name=None, depth=None, heads=None),
            train=dataclasses.replace(config.train, epochs=5, budget=None, **dict.fromkeys(OPTIMISATION_RECIPE_FIELDS)),
        )}

    def baseline_key(self, config: Config, method: Method, train: TokenSet, test: TokenSet) -> dict[str, Any]:
        """Bag-of-words reads the token ids, hashed (so the corpus, its split and the run's
        tokenizer are in the key); the random-init encoder also its configuration, seed and
        pooling (the method's ``embed``); mean word2vec also the batch it trains at."""
        return {
            **self.encoder_key(config, method),
            "data": [config.data.source, fingerprint(train.samples, train.labels), fingerprint(test.samples, test.labels)],
            "text": dataclasses.asdict(config.text),
            "batch_size": config.train.batch_size,
        }

    def evaluate(self, method: Method, view_maker: TokenViews, config: Config, train: TokenSet, test: TokenSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        say("evaluating: masked-token accuracy and perplexity, pseudo-likelihood energy AUC, probes, baselines")
        return evaluate_text(method, view_maker, config, train, test, device, run_tokenizer(run_dir), baselines)


# ---------------------------------------------------------------------------- commands
@torch.no_grad()
def fill_mask(run: LoadedRun, text: str, top_k: int = 5) -> list[tuple[int, list[tuple[str, float]]]]:
    """For each [MASK] of ``text``: its index among the masks and the ``top_k`` most likely
    tokens with their probabilities under the run's masked language model."""
    method, tokenizer = run.method, run_tokenizer(run.run_dir)
    if method.causal_attention:
        raise ConfigError(f"{run.run_dir} holds a causal model, which predicts the next token, not masked ones; use an mlm run")
    if not method.predicts_tokens:
        raise ConfigError(f"{run.run_dir} holds a {method.name} model, which predicts no tokens; use an mlm run")
    ids = encode_text(tokenizer, text, run.config.text.max_length).to(run.device)
    positions = (ids[0] == MASK_ID).nonzero().flatten()
    if len(positions) == 0 and "[MASK]" in text:
        raise ConfigError(f"the [MASK] of {text!r} falls after the first {run.config.text.max_length} tokens the run reads "
                          "(text.max_length); move it earlier")
    if len(positions) == 0:
        raise ConfigError(f"no [MASK] in {text!r}; write [MASK] where a word is to be predicted")
    probabilities = method.token_log_probabilities(ids)[0, positions].exp()
    best = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    return [
        (index, [(tokenizer.id_to_token(int(token)), float(p)) for token, p in zip(best.indices[index], best.values[index])])
        for index in range(len(positions))
    ]


@torch.no_grad()
def embed_texts(run: LoadedRun, texts: list[str], out: Path | None, tokens: bool = False) -> dict[str, Any]:
    """Sentence embeddings [len(texts), D] (mean of the contextual token embeddings), or with
    ``tokens`` the contextual embedding of every token of the first text [T, D]; written to
    ``out`` (.npy) when given."""
    method, tokenizer = run.method, run_tokenizer(run.run_dir)
    ids = torch.cat([encode_text(tokenizer, text, run.config.text.max_length) for text in texts]).to(run.device)
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
def similar_words(run: LoadedRun, word: str, top_k: int = 10) -> list[tuple[str, float]]:
    """The ``top_k`` vocabulary entries whose vectors are closest (cosine) to ``word``'s in
    a static word model (word2vec, GloVe)."""
    config, method, tokenizer = run.config, run.method, run_tokenizer(run.run_dir)
    if not method.has_word_vectors:
        raise ConfigError(f"{run.run_dir} holds a {config.method['name']} model, whose word vectors depend on the sentence; "
                          "similar words need a static model (method.name=word2vec or glove)")
    token = tokenizer.token_to_id(word.lower() if config.text.lowercase else word)
    if token is None:
        raise ConfigError(f"{word!r} is not a single token of the run's vocabulary ({config.text.vocab_size} tokens)")
    vectors = torch.nn.functional.normalize(method.word_vectors().float(), dim=1)
    cosines = vectors @ vectors[token]
    cosines[:FIRST_REGULAR_ID] = -2  # special tokens are not words
    cosines[token] = -2
    best = cosines.topk(min(top_k, len(cosines) - FIRST_REGULAR_ID - 1))
    return [(tokenizer.id_to_token(int(i)), float(c)) for i, c in zip(best.indices, best.values)]
