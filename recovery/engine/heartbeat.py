"""A progress line while a step waits: 60 s of silence at a login prompt looks like a hang.

The runner starts one for every step. If the step is still running after
`first` seconds it reports what it waits for (the step's own words, set with
`StepContext.waiting_for`, else its title) and how long, then again every
`every` seconds, from a daemon thread, until the step ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Heartbeat"]


class Heartbeat:
    def __init__(
        self,
        report: Callable[[str], None],
        what: Callable[[], str],
        *,
        first: float = 2.0,
        every: float = 10.0,
    ) -> None:
        self._report = report
        self._what = what
        self._first = first
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="recovery-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _beat(self) -> None:
        delay = self._first
        while not self._stop.wait(delay):
            self._report(f"    ... {self._what()} ({time.monotonic() - self._started:.0f} s)")
            delay = self._every
