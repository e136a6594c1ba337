"""Stopping a run from outside it: a token any thread may cancel, checked by the runner.

Signal handlers work only on Python's main thread, so a library cannot use them to
stop a run that an application started on a worker thread. The application keeps a
`CancelToken` and calls `cancel()`; the runner checks it before every step and every
retry, and takes the same path as Ctrl-C (cleanup newest first, report written,
status `interrupted`). The CLI turns SIGTERM and SIGHUP into a cancel.
"""

from __future__ import annotations

import threading

__all__ = ["CancelToken", "Cancelled"]


class Cancelled(KeyboardInterrupt):
    """Raised inside a run whose token was cancelled; a KeyboardInterrupt, so it unwinds as Ctrl-C does."""


class CancelToken:
    """Thread-safe, one-way: once cancelled it stays cancelled, with the first reason given."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def raise_if_cancelled(self) -> None:
        """Raises Cancelled when the token was cancelled; a checkpoint for long work."""
        if self._event.is_set():
            raise Cancelled(self._reason)
