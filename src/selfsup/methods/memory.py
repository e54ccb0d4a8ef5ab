"""Memories a method keeps across steps: the newest rows in a ring (MoCo's queue of keys,
SwAV's queue of embeddings, the latent-variable predictor's bank of inferred latents)."""

from __future__ import annotations

import torch
from torch import nn


class RingBuffer(nn.Module):
    """The newest ``size`` rows of shape ``row_shape`` pushed into it, in a ring.

    ``rows`` holds them (oldest overwritten first), ``next`` the slot the next row goes to
    and ``count`` how many slots hold a pushed (or ``initial``) row. All three are buffers,
    so checkpoints hold the memory and a resumed run continues with it.
    """

    def __init__(self, size: int, row_shape: tuple[int, ...] | int, initial: torch.Tensor | None = None):
        super().__init__()
        shape = (size, *((row_shape,) if isinstance(row_shape, int) else row_shape))
        if initial is not None and tuple(initial.shape) != shape:
            raise ValueError(f"initial rows of shape {tuple(initial.shape)} do not fit a ring of shape {shape}")
        self.register_buffer("rows", torch.zeros(shape) if initial is None else initial.clone())
        self.register_buffer("next", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.full((), 0 if initial is None else size, dtype=torch.long))

    @staticmethod
    def state(prefix: str, rows: torch.Tensor, next_slot: int, count: int) -> dict[str, torch.Tensor]:
        """The state-dict entries of a ring at ``prefix`` holding ``rows`` (for checkpoints
        written before the ring existed)."""
        return {f"{prefix}rows": rows, f"{prefix}next": torch.tensor(next_slot), f"{prefix}count": torch.tensor(count)}

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def full(self) -> bool:
        return int(self.count) == len(self)

    def stored(self) -> torch.Tensor:
        """The rows written so far (all of them once the ring is full), in slot order."""
        return self.rows[: int(self.count)]

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        """Write ``rows`` [N, *row_shape] into the next slots (only the last ``size`` of them
        when N is larger than the ring)."""
        size = len(self)
        if size == 0:
            return
        rows = rows[-size:]
        slots = (self.next + torch.arange(len(rows), device=rows.device)) % size
        self.rows[slots] = rows.to(self.rows.dtype)
        self.next.copy_((self.next + len(rows)) % size)
        self.count.copy_(torch.clamp(self.count + len(rows), max=size))
