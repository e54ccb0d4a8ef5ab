"""Stopping at a step boundary when the process is asked to: SIGTERM (a scheduler's
preemption) or SIGINT (Ctrl-C). The trainer then checkpoints the step it finished and
returns, so that ``--resume`` continues exactly where it stopped."""

from __future__ import annotations

import signal
import threading

from selfsup import distributed

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While active (a context manager), SIGTERM and SIGINT set :attr:`received` instead of
    ending the process; a second one ends it at once, as Ctrl-C would have. Outside the main
    thread, where handlers cannot be installed, it does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            self.__exit__()
            raise KeyboardInterrupt
        self.received = number

    def requested(self) -> bool:
        """Whether any process received a signal (every process gets the same answer)."""
        return distributed.any_rank(self.received is not None)
