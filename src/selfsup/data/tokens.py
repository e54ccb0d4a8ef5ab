"""Tokenised documents: the samples of text runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

from selfsup.data.base import InMemorySamples


@dataclass
class TokenSet(InMemorySamples):
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

    def subset(self, indices: Tensor, name: str) -> TokenSet:
        return TokenSet(self.samples[indices], self.labels[indices], name, self.class_names, self.vocab_size, self.skipped)
