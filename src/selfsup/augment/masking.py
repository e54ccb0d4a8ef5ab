"""Token masking for masked language modelling: single tokens, whole words, spans.

Each function takes a batch of token ids ``[N, L]`` and a bool mask of the special
positions (``[PAD]``, ``[CLS]``, ``[SEP]``), *selects* some of the other positions, and
returns ``(inputs, targets)``:

* ``inputs``: the ids with each selected position replaced as in BERT (Devlin et al.
  2019, sec. 3.1 and appendix A.1): by ``mask_id`` with probability ``mask_fraction``
  (0.8), by a random regular token with probability ``random_fraction`` (0.1), kept as
  it is otherwise (0.1). Unselected and special positions are never changed.
* ``targets``: the original id at selected positions, ``-100`` elsewhere (the
  ``ignore_index`` of :func:`torch.nn.functional.cross_entropy`): the loss is on the
  selected positions only, replaced or not.

Everything is vectorised over the batch (no Python loop over samples) and every random
number comes from the ``generator`` passed in, which must live on the device of ``ids``.
Dynamic masking (RoBERTa, Liu et al. 2019, sec. 4.1: a new mask each time a sequence is
seen) is the caller's business: pass a fresh generator per step, e.g.
:func:`selfsup.augment.views.seeded_generator` of (seed, step).

Random replacements are drawn uniformly from the regular tokens, ids
``first_regular_id .. vocab_size - 1``; ``first_regular_id`` defaults to 5, the number of
special tokens of :mod:`selfsup.data.tokenizer` (``[PAD] [UNK] [CLS] [SEP] [MASK]``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from selfsup.data.tokenizer import FIRST_REGULAR_ID, MASK_ID
from selfsup.losses.masked import IGNORE

__all__ = [
    "IGNORE_INDEX",
    "MASKINGS",
    "TokenViews",
    "mask_spans",
    "mask_tokens",
    "mask_whole_words",
]

#: Target value of unselected positions: the losses' ignore value (cross_entropy's default).
IGNORE_INDEX = IGNORE
#: The masking schemes TokenViews knows; "none" leaves the ids as they are (causal models).
MASKINGS = ("tokens", "whole-words", "spans", "none")


def mask_tokens(
    ids: Tensor,
    special: Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator,
    rate: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    *,
    first_regular_id: int = FIRST_REGULAR_ID,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption (Devlin et al. 2019, sec. 3.1, appendix A.1).

    Each non-special token is selected independently with probability ``rate``
    (15%), so the number selected per sequence varies (as in RoBERTa and Hugging Face's
    collator; BERT's original data script picks exactly ``round(0.15 * length)``).
    Selected tokens are replaced 80/10/10 as described in the module docstring.

    Args:
        ids: integer token ids ``[N, L]``.
        special: bool ``[N, L]``, True at positions never to select (``[PAD]``,
            ``[CLS]``, ``[SEP]``).
        vocab_size: number of token ids; random replacements are drawn from
            ``first_regular_id .. vocab_size - 1``.
        mask_id: id of ``[MASK]``.
        generator: source of all randomness, on the device of ``ids``.

    Returns:
        ``(inputs, targets)``, both int64 ``[N, L]``.
    """
    replacement = (vocab_size, mask_id, mask_fraction, random_fraction, first_regular_id)
    _check(ids, special, rate, *replacement)
    noise = torch.rand(ids.shape, generator=generator, device=ids.device)
    selected = (noise < rate) & ~special
    return _replace(ids, selected, generator, *replacement)


def mask_whole_words(
    ids: Tensor,
    word_ids: Tensor,
    special: Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator,
    rate: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    *,
    first_regular_id: int = FIRST_REGULAR_ID,
) -> tuple[Tensor, Tensor]:
    """Whole-word masking (BERT's released whole-word-masking models, Devlin et al. 2019).

    Every token of a selected word is selected, so a model cannot fill in ``##ing``
    from the unmasked ``walk``. A word is a maximal run of equal ``word_ids`` (as
    :func:`selfsup.data.tokenizer.encode_documents` returns them; ``-1`` and special
    positions belong to no word). Each word is selected independently with probability
    ``rate``, so each token is selected with probability ``rate`` and the expected
    fraction of selected tokens is exactly ``rate``. Selected tokens are replaced
    80/10/10, token by token, as in :func:`mask_tokens`.

    Args:
        word_ids: integer ``[N, L]``, the word each token belongs to, ``-1`` for none.
        (the others as in :func:`mask_tokens`)
    """
    replacement = (vocab_size, mask_id, mask_fraction, random_fraction, first_regular_id)
    _check(ids, special, rate, *replacement)
    if word_ids.shape != ids.shape:
        raise ValueError(
            f"word_ids must have the shape of ids {tuple(ids.shape)}, got {tuple(word_ids.shape)}"
        )
    in_word = (word_ids >= 0) & ~special
    # A word starts where the word id changes or a word follows a non-word position; the
    # running count of starts numbers the words of a row 0, 1, 2, ... (at most L of them).
    previous_ids = torch.nn.functional.pad(word_ids, (1, 0), value=-1)[:, :-1]
    previous_in_word = torch.nn.functional.pad(in_word, (1, 0), value=False)[:, :-1]
    starts = in_word & ((word_ids != previous_ids) | ~previous_in_word)
    word_index = (starts.cumsum(dim=1) - 1).clamp(min=0)
    word_noise = torch.rand(ids.shape, generator=generator, device=ids.device)
    selected = (word_noise.gather(1, word_index) < rate) & in_word
    return _replace(ids, selected, generator, *replacement)


def mask_spans(
    ids: Tensor,
    special: Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator,
    rate: float = 0.15,
    geometric_p: float = 0.2,
    max_span: int = 10,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    *,
    first_regular_id: int = FIRST_REGULAR_ID,
) -> tuple[Tensor, Tensor]:
    """SpanBERT's span masking (Joshi et al. 2020, sec. 3.1), on tokens.

    Span lengths follow a geometric distribution ``P(l) ~ p (1 - p)^(l - 1)`` truncated
    to ``1 .. max_span`` and renormalised, as in SpanBERT's code (mean 3.80 for
    ``p = 0.2``, ``max_span = 10``: the paper's "3.8"; clipping instead, which piles the
    tail onto ``max_span``, would give 4.46). Spans cover only non-special tokens, never
    overlap, and are separated by at least one unselected token, so each selected run
    is one span. Each token of a span is replaced 80/10/10 on its own, as in the paper.

    Budget: the number of spans of a row is drawn so that the expected number of
    covered tokens is ``rate`` times its non-special tokens (the count is
    ``rate * n / mean_length`` rounded up or down at random), and every span keeps its
    sampled length. SpanBERT instead samples spans until the budget is spent and cuts
    the last one short: the same coverage on average, a slightly smaller spread per row,
    and span lengths that no longer follow the stated distribution. A span that does not
    fit in a (very short) row is cut to fit, and the spans after it are dropped.

    Differences from the paper: lengths count tokens, not whole words, and spans are
    placed among the non-special tokens of a row as if those were contiguous (with one
    segment per row, as :func:`selfsup.data.tokenizer.encode_documents` makes, they are).

    Args:
        geometric_p: success probability ``p`` of the geometric distribution (0.2).
        max_span: longest span (10).
        (the others as in :func:`mask_tokens`)
    """
    replacement = (vocab_size, mask_id, mask_fraction, random_fraction, first_regular_id)
    _check(ids, special, rate, *replacement)
    if not 0.0 < geometric_p <= 1.0:
        raise ValueError(f"geometric_p must lie in (0, 1], got {geometric_p}")
    if max_span < 1:
        raise ValueError(f"max_span must be at least 1, got {max_span}")
    rows, length = ids.shape
    device = ids.device
    if rows == 0:
        return _replace(ids, torch.zeros_like(special), generator, *replacement)
    regular = ~special
    available = regular.sum(dim=1)  # n: tokens a span may cover, per row
    probabilities = _span_length_probabilities(geometric_p, max_span, device)
    mean_length = float((torch.arange(1, max_span + 1, device=device) * probabilities).sum())

    # 1. Number of spans per row, then their lengths. max_spans bounds every row's count.
    max_spans = min(math.floor(rate * length / mean_length) + 1, length + 1)
    expected_spans = rate * available / mean_length
    count = (expected_spans + torch.rand(rows, generator=generator, device=device)).floor()
    lengths = 1 + torch.multinomial(
        probabilities, rows * max_spans, replacement=True, generator=generator
    ).view(rows, max_spans)
    lengths = lengths * (torch.arange(max_spans, device=device) < count.unsqueeze(1))
    # Each span takes its length plus one gap token; n + 1 places leave the last gap
    # outside the row. A span with less room than its length is cut, later ones dropped.
    occupied_before = (lengths + 1).cumsum(dim=1) - (lengths + 1)
    room = (available.unsqueeze(1) - occupied_before).clamp(min=0)
    lengths = torch.minimum(lengths, room) * (lengths > 0)
    kept = lengths > 0  # a prefix of each row

    # 2. Placement (stars and bars): the n + 1 places hold k span items (span + gap) and
    # n + 1 - sum(length + 1) single free places; choose which k of the items are spans,
    # uniformly, then span j starts at its item position plus the lengths before it.
    spans = kept.sum(dim=1, keepdim=True)
    items = available.unsqueeze(1) + 1 - (lengths + kept.long()).sum(dim=1, keepdim=True) + spans
    places = torch.arange(length + 1, device=device)
    noise = torch.rand(rows, length + 1, generator=generator, device=device)
    noise = noise.masked_fill(places >= items, 2.0)  # positions beyond a row's item count
    positions = noise.argsort(dim=1)[:, :max_spans].masked_fill(~kept, length + 1)
    positions = positions.sort(dim=1).values
    starts = positions + lengths.cumsum(dim=1) - lengths

    # 3. Coverage in "regular token" coordinates (+1 at a start, -1 after an end), then
    # mapped back to the row through each regular token's rank.
    boundaries = torch.zeros(rows, length + 2, dtype=torch.long, device=device)
    starts = starts.masked_fill(~kept, 0)
    boundaries.scatter_add_(1, starts, kept.long())
    boundaries.scatter_add_(1, starts + lengths, -kept.long())
    covered = boundaries.cumsum(dim=1)[:, :length] > 0
    rank = (regular.cumsum(dim=1) - 1).clamp(min=0)
    selected = covered.gather(1, rank) & regular
    return _replace(ids, selected, generator, *replacement)


class TokenViews:
    """The text counterpart of :class:`~selfsup.augment.views.ViewMaker`: a batch of token
    sequences in, the views a language method's ``forward`` takes out.

    ``views = TokenViews("spans", vocab_size)(samples, generator)`` with ``samples``
    int64 ``[B, 2, T]`` (token ids, then word ids; see
    :func:`selfsup.data.tokenizer.encode_documents`) or ``[B, T]`` (ids only; not enough
    for ``"whole-words"``) gives ``[inputs, targets]`` from :func:`mask_tokens`
    (``"tokens"``), :func:`mask_whole_words` or :func:`mask_spans` (SpanBERT's length
    distribution), and ``[ids]`` for ``"none"``. All five special tokens (ids below
    ``first_regular_id``) are never selected. The masks are drawn on the generator's
    device, so a CPU generator works for a batch on an accelerator (at the cost of a copy).
    """

    def __init__(
        self,
        masking: str,
        vocab_size: int,
        rate: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
        *,
        mask_id: int = MASK_ID,
        first_regular_id: int = FIRST_REGULAR_ID,
    ) -> None:
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {', '.join(MASKINGS)}, got {masking!r}")
        self.masking = masking
        self.vocab_size = vocab_size
        self.rate = rate
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.mask_id = mask_id
        self.first_regular_id = first_regular_id

    def __call__(self, samples: Tensor, generator: torch.Generator) -> list[Tensor]:
        if samples.dim() not in (2, 3) or (samples.dim() == 3 and samples.shape[1] != 2):
            raise ValueError(
                f"samples must be token ids [B, T] or ids and word ids [B, 2, T], "
                f"got shape {tuple(samples.shape)}"
            )
        ids = samples[:, 0] if samples.dim() == 3 else samples
        if self.masking == "none":
            return [ids]
        device = ids.device
        ids = ids.to(generator.device)
        special = ids < self.first_regular_id
        options = {
            "vocab_size": self.vocab_size,
            "mask_id": self.mask_id,
            "generator": generator,
            "rate": self.rate,
            "mask_fraction": self.mask_fraction,
            "random_fraction": self.random_fraction,
            "first_regular_id": self.first_regular_id,
        }
        if self.masking == "whole-words":
            if samples.dim() != 3:
                raise ValueError("whole-word masking needs word ids: samples [B, 2, T]")
            word_ids = samples[:, 1].to(generator.device)
            inputs, targets = mask_whole_words(ids, word_ids, special, **options)
        elif self.masking == "spans":
            inputs, targets = mask_spans(ids, special, **options)
        else:
            inputs, targets = mask_tokens(ids, special, **options)
        return [inputs.to(device), targets.to(device)]

    def eval_view(self, samples: Tensor) -> Tensor:
        """The uncorrupted token ids [B, T], what embedding and evaluation read."""
        return samples[:, 0] if samples.dim() == 3 else samples


def _span_length_probabilities(geometric_p: float, max_span: int, device: torch.device) -> Tensor:
    """``P(l)`` for ``l = 1 .. max_span``: Geometric(p) truncated and renormalised."""
    lengths = torch.arange(1, max_span + 1, dtype=torch.float64, device=device)
    weights = geometric_p * (1.0 - geometric_p) ** (lengths - 1)
    return (weights / weights.sum()).float()


def _replace(
    ids: Tensor,
    selected: Tensor,
    generator: torch.Generator,
    vocab_size: int,
    mask_id: int,
    mask_fraction: float,
    random_fraction: float,
    first_regular_id: int,
) -> tuple[Tensor, Tensor]:
    """BERT's 80/10/10 replacement of the ``selected`` positions; ``(inputs, targets)``."""
    ids = ids.long()
    choice = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_ids = torch.randint(
        first_regular_id, vocab_size, ids.shape, generator=generator, device=ids.device
    )
    to_mask = selected & (choice < mask_fraction)
    to_random = selected & (choice >= mask_fraction) & (choice < mask_fraction + random_fraction)
    inputs = torch.where(to_random, random_ids, ids).masked_fill(to_mask, mask_id)
    targets = ids.masked_fill(~selected, IGNORE_INDEX)
    return inputs, targets


def _check(
    ids: Tensor,
    special: Tensor,
    rate: float,
    vocab_size: int,
    mask_id: int,
    mask_fraction: float,
    random_fraction: float,
    first_regular_id: int,
) -> None:
    if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(
            f"ids must be an integer tensor [N, L], got {ids.dtype} {tuple(ids.shape)}"
        )
    if special.dtype != torch.bool or special.shape != ids.shape:
        raise ValueError(
            f"special must be a bool tensor of the shape of ids {tuple(ids.shape)}, "
            f"got {special.dtype} {tuple(special.shape)}"
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    if mask_fraction < 0.0 or random_fraction < 0.0 or mask_fraction + random_fraction > 1.0:
        raise ValueError(
            "mask_fraction and random_fraction must be >= 0 with a sum <= 1, "
            f"got {mask_fraction} and {random_fraction}"
        )
    if not 0 <= mask_id < vocab_size:
        raise ValueError(
            f"mask_id must be a token id below vocab_size ({vocab_size}), got {mask_id}"
        )
    if not 0 <= first_regular_id < vocab_size:
        raise ValueError(
            f"vocab_size ({vocab_size}) must exceed first_regular_id ({first_regular_id}) "
            "so that random replacements have a regular token to draw"
        )
