"""Subword tokenizers for masked language modelling, built on Hugging Face ``tokenizers``.

Two kinds, both trained from the corpus in a few seconds:

* ``"wordpiece"`` (BERT, Devlin et al. 2019): BERT's normaliser (control characters
  removed, accents stripped and lower-cased when ``lowercase``) and pre-tokeniser
  (split on whitespace and punctuation), continuation pieces marked ``##``.
* ``"bpe"``: byte-level BPE (GPT-2, RoBERTa): every byte sequence is encodable, nothing
  is ever unknown, and decoding gives back the exact text.

The special tokens :data:`SPECIAL_TOKENS` have the fixed ids 0..4 in every tokenizer made
here, so that padding is 0 and masking code can rely on ``id >= 5`` being a real token.
Every encoding is ``[CLS] tokens [SEP]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from selfsup.data.base import DataError
from selfsup.files import write_atomic

__all__ = [
    "CLS_ID",
    "FIRST_REGULAR_ID",
    "MASK_ID",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "UNK_ID",
    "encode_documents",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
#: First id of a regular token (a word or word piece): the special tokens come first.
FIRST_REGULAR_ID = len(SPECIAL_TOKENS)
TOKENIZER_FILE = "tokenizer.json"
_KINDS = ("wordpiece", "bpe")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, kind: str = "wordpiece", lowercase: bool = True
) -> Tokenizer:
    """Train a ``kind`` tokenizer (``"wordpiece"`` or ``"bpe"``) of ``vocab_size`` tokens.

    ``vocab_size`` counts the special tokens and, for byte-level BPE, the 256 byte
    symbols; a small corpus can give fewer tokens than asked, and for WordPiece every
    character of the corpus (and its ``##`` form) is kept even beyond ``vocab_size``. ``lowercase`` lower-cases
    (and, for WordPiece, strips accents from) the text before anything else, in training
    and in every later encoding. The result is deterministic: the same texts give the
    same vocabulary. Encodings are ``[CLS] ... [SEP]`` (pairs ``[CLS] a [SEP] b [SEP]``).

    Raises:
        ValueError: for an unknown ``kind`` or a ``vocab_size`` too small to hold the
            special tokens (and the 256 bytes for BPE).
    """
    if kind not in _KINDS:
        raise ValueError(f"tokenizer kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    smallest = len(SPECIAL_TOKENS) + (256 if kind == "bpe" else 1)
    if vocab_size < smallest:
        raise ValueError(f"vocab_size must be at least {smallest} for {kind}, got {vocab_size}")
    if kind == "wordpiece":
        texts = list(texts)  # read twice: for the continuation alphabet, then to train
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        continuations = _continuation_tokens(tokenizer, texts)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=[*SPECIAL_TOKENS, *continuations],
            continuing_subword_prefix="##",
            show_progress=False,
        )
    else:
        continuations = []
        tokenizer = Tokenizer(models.BPE())
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if continuations:
        tokenizer = _without_added_tokens(tokenizer, continuations)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    _check_special_tokens(tokenizer, "the trained tokenizer")
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write ``tokenizer`` as JSON, atomically; returns the file written.

    ``path`` is a ``.json`` file or a folder (created if needed) that receives
    :data:`TOKENIZER_FILE`. The JSON goes to a temporary file beside the target first and
    replaces it in one step, so a crash never leaves a half-written tokenizer.
    """
    file = _tokenizer_file(path)
    write_atomic(file, tokenizer.to_str())
    return file


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by :func:`save_tokenizer` (a ``.json`` file or its folder).

    Raises:
        DataError: when the file is missing, is not a tokenizer ``tokenizers`` can read,
            or does not have :data:`SPECIAL_TOKENS` at ids 0..4; the message names the file.
    """
    file = _tokenizer_file(path)
    if not file.is_file():
        raise DataError(f"tokenizer file {file} does not exist")
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as error:  # tokenizers raises a bare Exception for malformed JSON
        reason = " ".join(str(error).split())
        raise DataError(f"tokenizer file {file} is corrupt or not a tokenizer: {reason}") from error
    _check_special_tokens(tokenizer, f"tokenizer file {file}")
    return tokenizer


def encode_documents(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and word ids of ``texts``, each an int64 tensor ``[N, max_length]``.

    Row ``i`` is ``[CLS] tokens [SEP]`` of ``texts[i]``, truncated so that the
    ``[SEP]`` still fits, then padded with ``[PAD]`` (id 0). ``word_ids[i, j]`` is the
    index, within text ``i``, of the word (pre-tokenised piece) that token ``j`` belongs
    to, and ``-1`` for ``[CLS]``, ``[SEP]`` and padding: whole-word masking selects by it.
    The caller's tokenizer is not changed.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    # A copy, so that setting truncation and padding leaves the caller's tokenizer as it was.
    encoder = Tokenizer.from_str(tokenizer.to_str())
    encoder.enable_truncation(max_length=max_length)
    encoder.enable_padding(pad_id=PAD_ID, pad_token=SPECIAL_TOKENS[PAD_ID], length=max_length)
    encodings = encoder.encode_batch(list(texts))
    ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.int64)
    word_ids = torch.tensor(
        [[-1 if word is None else word for word in encoding.word_ids] for encoding in encodings],
        dtype=torch.int64,
    )
    return ids.reshape(len(encodings), max_length), word_ids.reshape(len(encodings), max_length)


def _continuation_tokens(tokenizer: Tokenizer, texts: Iterable[str]) -> list[str]:
    """``##c`` for every character ``c`` that follows another inside a word, sorted.

    The trainer of ``tokenizers`` (huggingface/tokenizers#1794, still open in 0.23)
    numbers these tokens in hash-map order, which changes from run to run and, through
    the tie-breaking between equally frequent merges, changes the vocabulary. Handing
    them to the trainer, in sorted order, as extra special tokens fixes their ids.
    """
    characters: set[str] = set()
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.normalizer.normalize_str(text)
        ):
            characters.update(word[1:])
    return [f"##{character}" for character in sorted(characters)]


def _without_added_tokens(tokenizer: Tokenizer, contents: Sequence[str]) -> Tokenizer:
    """``tokenizer`` with ``contents`` demoted from added (special) tokens to plain vocabulary.

    Left as special tokens they would be matched in raw text before pre-tokenising and
    dropped by ``decode``; in the model's vocabulary they are ordinary word pieces.
    """
    state = json.loads(tokenizer.to_str())
    demoted = set(contents)
    state["added_tokens"] = [
        token for token in state["added_tokens"] if token["content"] not in demoted
    ]
    return Tokenizer.from_str(json.dumps(state))


def _tokenizer_file(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / TOKENIZER_FILE


def _check_special_tokens(tokenizer: Tokenizer, what: str) -> None:
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        found = ", ".join(f"{token}={id_}" for token, id_ in zip(SPECIAL_TOKENS, ids))
        raise DataError(f"{what} must have the special tokens at ids 0..4, has {found}")
