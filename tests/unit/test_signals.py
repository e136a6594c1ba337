"""interrupt_on_signals: SIGTERM and SIGHUP become the Ctrl-C that every command already cleans up after."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from recovery.engine.signals import interrupt_on_signals


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_raises_keyboard_interrupt(signum: signal.Signals) -> None:
    with pytest.raises(KeyboardInterrupt), interrupt_on_signals():
        os.kill(os.getpid(), signum)


def test_a_second_signal_does_not_cut_the_cleanup_short() -> None:
    cleaned = False
    with interrupt_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
            cleaned = True
    assert cleaned


def test_previous_handlers_come_back() -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not expected")

    signal.signal(signal.SIGTERM, mine)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    with interrupt_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not mine
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_nohup_keeps_sighup_ignored() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with interrupt_on_signals():
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_off_the_main_thread_it_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def worker() -> None:
        with interrupt_on_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]
