"""SIGTERM and SIGHUP take the Ctrl-C path, so a stopped command still cleans up.

systemd stopping a unit, a Kubernetes pod ending, `timeout` and a CI cancel send
SIGTERM; a dropped SSH session to the jump host sends SIGHUP. Python's default for
both is to die on the spot, leaving a console logged in, objects published and lab
daemons running. Every command already cleans up on KeyboardInterrupt, so the
cheapest correct answer is to make these signals raise it too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["interrupt_on_signals"]

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_Handler = Callable[[int, FrameType | None], object] | int | None


def interrupt_on_signals(
    on_signal: Callable[[str], None] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """While active, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread.

    `on_signal` is told the signal's name first (the CLI cancels the run's
    `CancelToken` with it, so the report says which signal stopped the run).

    Only the first signal raises: the cleanup that KeyboardInterrupt starts must not be
    cut short by the SIGTERM that often follows a SIGHUP, or by a supervisor repeating
    itself. Later ones are ignored until the block ends; SIGKILL and Ctrl-C still stop
    the process at once. A SIGHUP that was ignored on entry (`nohup`) stays ignored:
    the user asked for that. The previous handlers are restored on exit.

    Off the main thread this does nothing: Python runs handlers only there, and
    `signal.signal` refuses to be called elsewhere.
    """
    return _interrupt_on_signals(on_signal)


@contextlib.contextmanager
def _interrupt_on_signals(on_signal: Callable[[str], None] | None) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if interrupted:
            return
        interrupted = True
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous: dict[signal.Signals, _Handler] = {}
    try:
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            previous[signum] = current
            if signum == signal.SIGHUP and current == signal.SIG_IGN:
                continue
            signal.signal(signum, interrupt)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
