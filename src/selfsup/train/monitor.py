"""Watching the training embeddings for collapse: the metrics logged and the alarm raised."""

from __future__ import annotations

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
