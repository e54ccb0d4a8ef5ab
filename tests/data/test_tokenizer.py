"""WordPiece and byte-level BPE tokenizers: fixed special ids, round trips, files, batches."""

from __future__ import annotations

import json
import unicodedata

import pytest
import torch

from selfsup.data import DataError
from selfsup.data.tokenizer import (
    CLS_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    encode_documents,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TEXTS = [
    "Return a new dictionary initialized from an optional positional argument.",
    "The Héllo module parses e-mail messages, headers and MIME documents!",
    "Raise ValueError when the   value is negative;\n\tinclude the value in the message.",
    "Unbelievably, the tokenizer splits unbelievable words into word pieces.",
] * 5


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer(TEXTS, vocab_size=120, kind="wordpiece")


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(TEXTS, vocab_size=300, kind="bpe", lowercase=False)


def normalised(text: str) -> str:
    """Lower-cased, accents stripped, whitespace removed: what WordPiece keeps of a text."""
    stripped = "".join(
        c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn"
    )
    return "".join(stripped.split())


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_special_tokens_have_fixed_ids(kind):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, kind=kind)
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.get_vocab_size() <= 300
    encoding = tokenizer.encode("the value")
    assert encoding.ids[0] == CLS_ID and encoding.ids[-1] == SEP_ID
    # Only the five are special: text that looks like a word piece stays text.
    assert set(tokenizer.get_added_tokens_decoder()) == {0, 1, 2, 3, 4}
    assert tokenizer.encode("##e").tokens[1:-1] != ["##e"]


def test_wordpiece_round_trip_gives_the_normalised_text(wordpiece):
    for text in TEXTS[:4]:
        decoded = wordpiece.decode(wordpiece.encode(text).ids)
        assert "".join(decoded.split()) == normalised(text)
    assert (
        wordpiece.decode(wordpiece.encode("Return  a NEW\n dictionary").ids)
        == "return a new dictionary"
    )
    pieces = wordpiece.encode("unbelievably").tokens
    assert len(pieces) > 3 and pieces[2].startswith("##")  # [CLS] unbel ##iev ... [SEP]


def test_byte_level_bpe_round_trip_is_exact(bpe):
    for text in [*TEXTS[:4], "Unseen: ünïcödé, emoji 🤗, tabs\t\tand\r\nnew lines  "]:
        assert bpe.decode(bpe.encode(text).ids) == text
    assert bpe.token_to_id("[UNK]") == 1 and 1 not in bpe.encode("🤗 ☃").ids


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_deterministic(kind):
    # WordPiece needs a workaround for huggingface/tokenizers#1794; a few runs show it.
    first = train_tokenizer(TEXTS, vocab_size=320, kind=kind).to_str()
    for _ in range(4):
        assert train_tokenizer(TEXTS, vocab_size=320, kind=kind).to_str() == first


def test_encode_documents_pads_truncates_and_numbers_words(wordpiece):
    texts = ["unbelievably short", TEXTS[0], ""]
    before = wordpiece.to_str()
    ids, word_ids = encode_documents(wordpiece, texts, max_length=8)
    assert ids.shape == word_ids.shape == (3, 8) and ids.dtype == word_ids.dtype == torch.int64
    assert wordpiece.to_str() == before  # the caller's tokenizer keeps no padding/truncation
    assert (ids[:, 0] == CLS_ID).all()
    short = wordpiece.encode(texts[0]).ids
    assert ids[0].tolist() == short + [PAD_ID] * (8 - len(short))
    assert ids[1, -1] == SEP_ID and (ids[1] != PAD_ID).all()  # truncated, [SEP] kept
    assert ids[2].tolist() == [CLS_ID, SEP_ID] + [PAD_ID] * 6
    special = (ids == CLS_ID) | (ids == SEP_ID) | (ids == PAD_ID)
    assert (word_ids[special] == -1).all() and (word_ids[~special] >= 0).all()
    # "unbelievably" is several pieces of word 0, "short" is word 1.
    pieces = len(wordpiece.encode("unbelievably").ids) - 2
    assert word_ids[0, 1 : 1 + pieces].tolist() == [0] * pieces
    assert word_ids[0, 1 + pieces] == 1
    with pytest.raises(ValueError, match="max_length"):
        encode_documents(wordpiece, texts, max_length=1)


def test_save_and_load_round_trip(tmp_path, bpe):
    written = save_tokenizer(bpe, tmp_path / "run")
    assert written == tmp_path / "run" / TOKENIZER_FILE
    assert [path.name for path in (tmp_path / "run").iterdir()] == [
        TOKENIZER_FILE
    ]  # no temp file left
    for path in (tmp_path / "run", written):
        loaded = load_tokenizer(path)
        assert loaded.to_str() == bpe.to_str()
        assert loaded.encode(TEXTS[1]).ids == bpe.encode(TEXTS[1]).ids
    assert save_tokenizer(bpe, tmp_path / "named.json") == tmp_path / "named.json"
    assert load_tokenizer(tmp_path / "named.json").to_str() == bpe.to_str()


def test_load_missing_or_corrupt_tokenizer_names_the_file(tmp_path, wordpiece):
    with pytest.raises(DataError, match=f"{tmp_path / TOKENIZER_FILE}.*does not exist"):
        load_tokenizer(tmp_path)
    corrupt = tmp_path / TOKENIZER_FILE
    corrupt.write_text(wordpiece.to_str()[:200])
    with pytest.raises(DataError, match=f"{corrupt} is corrupt"):
        load_tokenizer(tmp_path)
    state = json.loads(wordpiece.to_str())
    state["model"]["vocab"] = {"[UNK]": 0, "a": 1}
    state["added_tokens"] = [
        token for token in state["added_tokens"] if token["content"] == "[UNK]"
    ]
    state["added_tokens"][0]["id"] = 0
    state["post_processor"] = None
    corrupt.write_text(json.dumps(state))
    with pytest.raises(DataError, match="special tokens at ids 0..4"):
        load_tokenizer(corrupt)


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(TEXTS, kind="unigram")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, vocab_size=100, kind="bpe")
