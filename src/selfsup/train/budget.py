"""How long a run trains: a fixed number of steps, or as many as a wall-clock budget allows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from selfsup import distributed

# Steps timed, counted from the start of this process, to fit the schedule to a budget
# (the first few are skipped: they include one-off allocation costs).
CALIBRATION_STEPS = range(3, 13)
# Share of the measured step rate planned for, leaving room for logging and checkpoints.
BUDGET_SAFETY = 0.95
# The schedule is fitted once more after this share of the first plan, to the pace since the
# first fit: later steps often run faster than the first ones (caches, allocator and data
# warm up), which left up to a ninth of a budget unspent (BENCHMARKS.md, "RGB drawings": 798
# of 900 s). A longer window, logging and checkpoints included, needs less room. The second
# fit only lengthens the plan: a window slowed by something passing (another process, a
# checkpoint) would cut a run short for good (a 60 s run trained 45 s), while a run whose
# pace really falls is stopped by the budget near the end of its decay. The change comes
# early in the cosine decay, where the rate is within a few percent of its peak, so the
# schedule hardly bends.
REFIT_SHARE = 0.1
REFIT_SAFETY = 0.98


class BudgetFit(NamedTuple):
    """What a fit of the schedule to the budget did: the pace it measured and the plan it
    left, with ``change`` saying how ("fitted to", "lengthened to" or "kept at")."""

    seconds_per_step: float
    planned_steps: int
    change: str


class BudgetPlanner:
    """The planned number of steps and whether the budget is spent.

    With ``planned_steps`` (a number of epochs) the length is known. With only a
    ``budget`` (seconds), the schedule is fitted once the step time is measured on
    :data:`CALIBRATION_STEPS`, and lengthened to the pace since then after
    :data:`REFIT_SHARE` of that plan if that pace allows more steps; until the first fit
    :attr:`total_steps` is a provisional length that keeps the warm-up correct. Time comes
    from ``clock`` (seconds), rank 0's clock deciding for every process so that all stop at
    the same step; ``elapsed_before`` is the training time of the run before a resumption
    (a resumed run keeps the plan it was saved with).
    """

    def __init__(self, budget: float | None, planned_steps: int | None, provisional_steps: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.budget, self.planned_steps, self.provisional_steps, self.clock = budget, planned_steps, provisional_steps, clock
        self.start(0, 0.0)

    def start(self, step: int, elapsed_before: float) -> None:
        self.steps_at_start, self.elapsed_before = step, elapsed_before
        self.started = self.clock() - elapsed_before
        self._calibration_start: float | None = None
        # (step, time) of the first fit and the step of the second; all ranks compute the
        # same step from the broadcast plan, so they meet at the same broadcast.
        self._fitted: tuple[int, float] | None = None
        self._refit_step: int | None = None

    @property
    def total_steps(self) -> int:
        return self.planned_steps or self.provisional_steps

    def elapsed(self) -> float:
        """Training seconds of the run so far, earlier processes included."""
        return self.clock() - self.started

    def budget_spent(self) -> bool:
        return self.budget is not None and bool(distributed.broadcast_int(int(self.elapsed() >= self.budget)))

    def after_step(self, step: int) -> BudgetFit | None:
        """Call after each step with the steps done; returns what the fit did when this step
        fitted the schedule to the budget (the first time or the second), else None."""
        done_here = step - self.steps_at_start
        if done_here == CALIBRATION_STEPS.start:
            self._calibration_start = self.clock()
        if self.planned_steps is None and done_here == CALIBRATION_STEPS.stop:
            now = self.clock()
            seconds_per_step = (now - self._calibration_start) / len(CALIBRATION_STEPS)
            self._fit(step, now, seconds_per_step, BUDGET_SAFETY)
            self._fitted, self._refit_step = (step, now), step + max(1, round(REFIT_SHARE * (self.planned_steps - step)))
            return BudgetFit(seconds_per_step, self.planned_steps, "fitted to")
        if step == self._refit_step and self._fitted is not None:
            now = self.clock()
            fitted_step, fitted_at = self._fitted
            seconds_per_step = (now - fitted_at) / (step - fitted_step)
            first_plan = self.planned_steps
            self._fit(step, now, seconds_per_step, REFIT_SAFETY)
            self.planned_steps = max(first_plan, self.planned_steps)
            self._fitted = self._refit_step = None
            return BudgetFit(seconds_per_step, self.planned_steps, "lengthened to" if self.planned_steps > first_plan else "kept at")
        return None

    def _fit(self, step: int, now: float, seconds_per_step: float, safety: float) -> None:
        remaining = self.budget - (now - self.started)
        self.planned_steps = distributed.broadcast_int(max(step + 1, step + int(safety * remaining / seconds_per_step)))

    def samples_per_second(self, step: int, global_batch: int) -> float:
        """Samples per second of this process's steps."""
        return (step - self.steps_at_start) * global_batch / max(self.elapsed() - self.elapsed_before, 1e-9)
