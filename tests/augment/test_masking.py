"""Statistics and invariants of BERT token masking, whole-word masking and SpanBERT spans."""

from __future__ import annotations

import pytest
import torch

from selfsup.augment.masking import (
    IGNORE_INDEX,
    TokenViews,
    mask_spans,
    mask_tokens,
    mask_whole_words,
)
from selfsup.data.tokenizer import CLS_ID, FIRST_REGULAR_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

VOCAB = 1000
ROWS, LENGTH = 200, 128


def batch(seed: int = 0, rows: int = ROWS, length: int = LENGTH):
    """Rows ``[CLS] tokens [SEP] [PAD]...`` of random lengths, and words of 1-4 tokens."""
    source = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_REGULAR_ID, VOCAB, (rows, length), generator=source)
    ends = torch.randint(length // 2, length, (rows, 1), generator=source)  # position of [SEP]
    positions = torch.arange(length)
    ids[:, 0] = CLS_ID
    ids = torch.where(positions == ends, SEP_ID, ids).masked_fill(positions > ends, PAD_ID)
    special = (positions == 0) | (positions >= ends)
    word_lengths = torch.randint(1, 5, (rows, length), generator=source)
    starts = torch.zeros(rows, length, dtype=torch.bool)
    for row in range(rows):  # test data only: word boundaries at cumulative word lengths
        boundaries = word_lengths[row].cumsum(0)
        starts[row, 1 + boundaries[boundaries < length - 1]] = True
    starts[:, 1] = True
    word_ids = (starts.cumsum(dim=1) - 1).masked_fill(special, -1)
    return ids, special, word_ids


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_replacement(ids, special, inputs, targets, tolerance_sigmas=4.0):
    """Invariants shared by every masking function, and the 80/10/10 split."""
    selected = targets != IGNORE_INDEX
    assert inputs.dtype == targets.dtype == torch.int64
    assert not selected[special].any(), "a special position was selected"
    assert torch.equal(inputs[special], ids[special]), "a special token was altered"
    assert torch.equal(targets[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    chosen, original = inputs[selected], ids[selected]
    count = len(chosen)
    masked = (chosen == MASK_ID).float().mean().item()
    randomised = ((chosen != MASK_ID) & (chosen != original)).float().mean().item()
    kept = (chosen == original).float().mean().item()
    # A random replacement equals the original token with probability 1/995.
    collision = 1 / (VOCAB - FIRST_REGULAR_ID)
    for value, expected in [
        (masked, 0.8),
        (randomised, 0.1 * (1 - collision)),
        (kept, 0.1 + 0.1 * collision),
    ]:
        sigma = (expected * (1 - expected) / count) ** 0.5
        assert abs(value - expected) < tolerance_sigmas * sigma, (value, expected)
    replacements = chosen[(chosen != MASK_ID) & (chosen != original)]
    assert replacements.min() >= FIRST_REGULAR_ID and replacements.max() < VOCAB
    return selected


def runs(selected: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of True in each row."""
    lengths = []
    for row in selected.tolist():
        current = 0
        for flag in row + [False]:
            if flag:
                current += 1
            elif current:
                lengths.append(current)
                current = 0
    return lengths


def test_special_ids_match_the_tokenizer():
    assert FIRST_REGULAR_ID == len(SPECIAL_TOKENS)
    assert SPECIAL_TOKENS[MASK_ID] == "[MASK]"


def test_mask_tokens_selection_rate_and_replacement_split():
    ids, special, _ = batch()
    inputs, targets = mask_tokens(ids, special, VOCAB, MASK_ID, generator(1))
    selected = check_replacement(ids, special, inputs, targets)
    regular = int((~special).sum())
    rate = selected.sum().item() / regular
    assert abs(rate - 0.15) < 4 * (0.15 * 0.85 / regular) ** 0.5


def test_mask_tokens_is_determined_by_the_generator():
    ids, special, _ = batch()
    first = mask_tokens(ids, special, VOCAB, MASK_ID, generator(3))
    again = mask_tokens(ids, special, VOCAB, MASK_ID, generator(3))
    other = mask_tokens(ids, special, VOCAB, MASK_ID, generator(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_mask_tokens_custom_fractions_and_rate():
    ids, special, _ = batch()
    inputs, targets = mask_tokens(
        ids, special, VOCAB, MASK_ID, generator(0), rate=1.0, mask_fraction=1.0, random_fraction=0.0
    )
    assert torch.equal(targets != IGNORE_INDEX, ~special)
    assert (inputs[~special] == MASK_ID).all()
    inputs, targets = mask_tokens(ids, special, VOCAB, MASK_ID, generator(0), rate=0.0)
    assert (targets == IGNORE_INDEX).all() and torch.equal(inputs, ids)


def test_whole_words_are_masked_together():
    ids, special, word_ids = batch()
    inputs, targets = mask_whole_words(ids, word_ids, special, VOCAB, MASK_ID, generator(2))
    selected = check_replacement(ids, special, inputs, targets)
    same_word = (word_ids[:, 1:] == word_ids[:, :-1]) & (word_ids[:, 1:] >= 0)
    assert torch.equal(selected[:, 1:][same_word], selected[:, :-1][same_word]), (
        "a word was partly selected"
    )
    starts = (word_ids >= 0) & ~torch.nn.functional.pad(same_word, (1, 0), value=False)
    words = int(starts.sum())
    word_rate = (selected & starts).sum().item() / words
    assert abs(word_rate - 0.15) < 4 * (0.15 * 0.85 / words) ** 0.5
    token_rate = selected.sum().item() / int((~special).sum())
    assert abs(token_rate - 0.15) < 0.02


def test_whole_words_with_restarting_word_ids_are_distinct_words():
    # [CLS] a a b [SEP] a a b [SEP]: word ids restart in the second segment (as for pairs),
    # yet the two segments' words are different words, selected independently.
    ids = torch.full((2000, 9), 50)
    ids[:, 0], ids[:, 4], ids[:, 8] = CLS_ID, SEP_ID, SEP_ID
    special = (ids == CLS_ID) | (ids == SEP_ID)
    word_ids = torch.tensor([-1, 0, 0, 1, -1, 0, 0, 1, -1]).expand(2000, 9)
    _, targets = mask_whole_words(ids, word_ids, special, VOCAB, MASK_ID, generator(5), rate=0.5)
    selected = targets != IGNORE_INDEX
    assert torch.equal(selected[:, 1], selected[:, 2]) and torch.equal(
        selected[:, 5], selected[:, 6]
    )
    both = (selected[:, 1] & selected[:, 5]).float().mean().item()
    assert abs(both - 0.25) < 0.04  # independent: 0.5 * 0.5, not 0.5


def test_spans_rate_lengths_and_placement():
    ids, special, _ = batch(seed=6)
    inputs, targets = mask_spans(ids, special, VOCAB, MASK_ID, generator(7))
    selected = check_replacement(ids, special, inputs, targets)
    regular = ~special
    assert abs(selected.sum().item() / int(regular.sum()) - 0.15) < 0.015
    # Exact mean of Geometric(0.2) truncated to 1..10 and renormalised: SpanBERT's 3.8.
    probabilities = [0.2 * 0.8 ** (length - 1) for length in range(1, 11)]
    expected_mean = sum(length * p for length, p in zip(range(1, 11), probabilities)) / sum(
        probabilities
    )
    assert abs(expected_mean - 3.8) < 0.01
    lengths = torch.tensor(runs(selected), dtype=torch.float64)
    assert lengths.max() <= 10 and lengths.min() >= 1
    assert (
        abs(lengths.mean().item() - expected_mean) < 4 * lengths.std().item() / len(lengths) ** 0.5
    )
    share_of_ones = (lengths == 1).double().mean().item()
    assert abs(share_of_ones - probabilities[0] / sum(probabilities)) < 0.05
    # Uniform placement: the first and second halves of each row's tokens are covered alike,
    # and spans reach both ends (the first token after [CLS], the last before [SEP]).
    rank = regular.cumsum(dim=1) - 1
    first_half = regular & (rank < regular.sum(dim=1, keepdim=True) // 2)
    second_half = regular & ~first_half
    cover = [
        (selected & half).sum().item() / half.sum().item() for half in (first_half, second_half)
    ]
    assert abs(cover[0] - cover[1]) < 0.03
    last = regular.sum(dim=1)  # position of the last regular token: they start after [CLS]
    assert selected[:, 1].any() and selected.gather(1, last.unsqueeze(1)).any()


def test_spans_fit_short_rows_and_skip_rows_without_regular_tokens():
    ids, special, _ = batch(seed=8, rows=300, length=12)
    special[:10] = True  # rows with nothing to mask
    _, targets = mask_spans(ids, special, VOCAB, MASK_ID, generator(9), rate=1.0)
    selected = targets != IGNORE_INDEX
    assert not selected[:10].any() and not selected[special].any()
    assert selected[10:].any(dim=1).all()  # every row with room gets a span
    # Asked for everything, spans fill most of each row (less the gaps between them).
    assert selected.sum().item() / (~special).sum().item() > 0.6
    assert max(runs(selected)) <= 10


def test_spans_are_determined_by_the_generator():
    ids, special, _ = batch(seed=10, rows=20)
    first = mask_spans(ids, special, VOCAB, MASK_ID, generator(11))
    again = mask_spans(ids, special, VOCAB, MASK_ID, generator(11))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rate": 1.5}, "rate"),
        ({"mask_fraction": 0.9, "random_fraction": 0.2}, "mask_fraction"),
        ({"vocab_size": 5}, "vocab_size"),
        ({"special": torch.zeros(3, 4, dtype=torch.bool)}, "special"),
        ({"special": torch.zeros(2, 4, dtype=torch.int64)}, "special"),
        ({"ids": torch.zeros(2, 4)}, "ids"),
    ],
)
def test_bad_arguments_are_rejected(change, message):
    arguments = {
        "ids": torch.full((2, 4), 7),
        "special": torch.zeros(2, 4, dtype=torch.bool),
        "vocab_size": VOCAB,
        "mask_id": MASK_ID,
    }
    arguments.update(change)
    for function in (mask_tokens, mask_spans):
        with pytest.raises(ValueError, match=message):
            function(generator=generator(0), **arguments)


@pytest.mark.parametrize("masking", ["tokens", "whole-words", "spans"])
def test_token_views_mask_the_ids_channel(masking):
    ids, special, word_ids = batch(rows=50)
    samples = torch.stack([ids, word_ids], dim=1)
    views = TokenViews(masking, VOCAB)(samples, generator(12))
    assert len(views) == 2 and views[0].shape == views[1].shape == ids.shape
    selected = check_replacement(ids, special, *views, tolerance_sigmas=6.0)
    assert abs(selected.sum().item() / int((~special).sum()) - 0.15) < 0.03
    again = TokenViews(masking, VOCAB)(samples, generator(12))
    assert all(torch.equal(a, b) for a, b in zip(views, again))


def test_token_views_without_masking_and_bad_input():
    ids, _, _ = batch(rows=4)
    assert torch.equal(TokenViews("none", VOCAB)(ids, generator(0))[0], ids)
    with pytest.raises(ValueError, match="whole-word masking needs word ids"):
        TokenViews("whole-words", VOCAB)(ids, generator(0))
    with pytest.raises(ValueError, match="masking must be one of"):
        TokenViews("random", VOCAB)
