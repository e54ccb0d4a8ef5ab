"""Watching training: the embeddings for collapse (the metrics logged and the alarm
raised), and the loss for values that are not finite."""

from __future__ import annotations

import torch

from selfsup import distributed
from selfsup.evaluate.collapse import CollapseThresholds, collapse_report, prototype_usage
from selfsup.methods import StepOutput


class CollapseMonitor:
    """std·√d and effective rank of a step's embeddings (and prototype usage, for
    clustering methods); the first step whose figures cross the ``thresholds`` raises the
    alarm, which a resumed run carries on (``alarm_step``)."""

    def __init__(self, thresholds: CollapseThresholds | None = None, alarm_step: int | None = None):
        self.thresholds = thresholds or CollapseThresholds()
        self.alarm_step = alarm_step

    def check(self, step: int, output: StepOutput) -> tuple[dict[str, float], str | None]:
        """(metrics to log, the alarm message when this step raises it)."""
        if output.embeddings is None or len(output.embeddings) < 2:  # one row has no spread to measure
            return {}, None
        report = collapse_report(output.embeddings.float(), thresholds=self.thresholds)
        metrics = {"std_sqrt_d": report["std_sqrt_d"], "effective_rank": report["effective_rank"]}
        reasons = report["reasons"]
        if output.assignments is not None:
            usage = prototype_usage(output.assignments.float())
            metrics.update({f"prototype_{key}": usage[key] for key in ("entropy", "used", "largest_share", "assignment_entropy")})
            reasons = reasons + usage["reasons"]
        if reasons and self.alarm_step is None:
            self.alarm_step = step
            return metrics, f"COLLAPSE ALARM at step {step}: " + "; ".join(reasons)
        return metrics, None


class LossWatch:
    """The first step whose loss is not finite, found without making the host wait for the
    device at every step: the record stays on the device and :meth:`first_bad_step` reads
    it (a synchronisation, and a collective under torchrun) only when the trainer asks,
    at every step on the CPU (where reading costs nothing) and every few on a GPU."""

    def __init__(self, device: torch.device):
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, step: int, loss: torch.Tensor) -> None:
        not_finite = ~torch.isfinite(loss.detach())
        self._first_bad = torch.where(not_finite & (self._first_bad < 0), step, self._first_bad)

    def first_bad_step(self) -> int | None:
        """The first bad step of this process (-1 when only another one saw a bad loss); None
        when every process's losses were finite."""
        local = int(self._first_bad.item())
        return (local if local >= 0 else -1) if distributed.any_rank(local >= 0) else None
