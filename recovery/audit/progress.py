"""The live progress line of an audit on a terminal: `[ 120/200] 3 failed, 1.4 s`.

Drawn on stderr only when stderr is a terminal: in cron, CI or a pipe the
audit prints nothing but its report. Redrawn at most ten times a second, since
a fast fleet finishes a hundred hosts a second and a terminal is slow.
"""

from __future__ import annotations

import time
from typing import TextIO

from recovery.audit.model import HostResult

__all__ = ["ProgressLine"]

_REDRAW_EVERY = 0.1


class ProgressLine:
    """Counts results as they arrive and keeps one line on `stream` up to date; `clear()` erases it."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, result: HostResult) -> None:
        self.done += 1
        self.failed += 0 if result.ok else 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= _REDRAW_EVERY or self.done == self.total):
            self._drawn_at = now
            width = len(str(self.total))
            self.stream.write(
                f"\r\x1b[K[{self.done:>{width}}/{self.total}] {self.failed} failed, {now - self._started:.1f} s"
            )
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
