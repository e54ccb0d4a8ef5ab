"""Learning-rate and momentum schedules as pure functions of the step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base: float, final: float = 0.0) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_steps``, then a half cosine to ``final``
    at ``total_steps`` (Loshchilov & Hutter 2017; Goyal et al. 2017 for the warm-up)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _progress(step: float, total_steps: float) -> float:
    """The share of ``total_steps`` done at ``step``, in [0, 1]; 1 when there are no steps to take."""
    if total_steps <= 0:
        return 1.0
    return min(max(step / total_steps, 0.0), 1.0)


def cosine_increase(step: int, total_steps: int, start: float, end: float = 1.0) -> float:
    """From ``start`` at step 0 to ``end`` at ``total_steps`` on a half cosine: the EMA momentum
    schedule of BYOL (Grill et al. 2020, sec. 3.2) and DINO."""
    progress = _progress(step, total_steps)
    return end - (end - start) * 0.5 * (1 + math.cos(math.pi * progress))


def linear_increase(step: int, total_steps: float, start: float, end: float = 1.0) -> float:
    """From ``start`` at step 0 to ``end`` at ``total_steps`` on a straight line: I-JEPA's EMA
    momentum schedule (Assran et al. 2023; ``momentum_scheduler`` in its reference code) and
    DINO's teacher-temperature warm-up (Caron et al. 2021)."""
    progress = _progress(step, total_steps)
    return start + (end - start) * progress
