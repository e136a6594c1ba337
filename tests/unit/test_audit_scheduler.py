"""The worker pool: bounded concurrency, results in inventory order, Ctrl-C keeps what is done."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from recovery.audit.model import Host, HostResult, Status
from recovery.audit.scheduler import run_checks

HOSTS = [Host(f"h{n}", "10.0.0.1", 22, "ops", (Path("/k"),)) for n in range(20)]


class CountingCheck:
    """Sleeps a little per host and records the most checks that ever ran at once. With `gather`, checks
    wait (2 s at most) until that many run at once: how wide the pool is shows on a busy machine too."""

    def __init__(self, seconds: float = 0.01, gather: int = 0) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.gathered = threading.Event()
        self.gather = gather

    def __call__(self, host: Host) -> HostResult:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            if self.running >= self.gather:
                self.gathered.set()
        self.gathered.wait(2)
        # Later hosts finish first, so arrival order differs from inventory order.
        time.sleep(self.seconds * (len(HOSTS) - int(host.name[1:])) / len(HOSTS))
        with self.lock:
            self.running -= 1
        return HostResult(host, Status.OK, self.seconds)


def test_results_come_back_in_inventory_order_within_the_concurrency() -> None:
    check = CountingCheck(gather=4)  # 4 at once was seen only when the machine was not busy

    outcome = run_checks(HOSTS, check, concurrency=4)

    assert [result.host for result in outcome.results] == HOSTS
    assert check.peak == 4
    assert outcome.not_checked == ()
    assert outcome.interrupted is False


def test_ctrl_c_returns_at_once_with_what_is_done() -> None:
    seen: list[str] = []

    def slow_after_three(host: Host) -> HostResult:
        if int(host.name[1:]) >= 3:
            time.sleep(30)  # a worker stuck in a handshake must not delay the return
        return HostResult(host, Status.OK, 0.0)

    def interrupt_on_third(result: HostResult) -> None:
        seen.append(result.host.name)
        if len(seen) == 3:
            raise KeyboardInterrupt

    started = time.monotonic()
    outcome = run_checks(HOSTS, slow_after_three, concurrency=2, on_result=interrupt_on_third)

    assert time.monotonic() - started < 5
    assert outcome.interrupted is True
    assert [result.host.name for result in outcome.results] == ["h0", "h1", "h2"]
    assert [host.name for host in outcome.not_checked] == [f"h{n}" for n in range(3, 20)]


def test_a_real_ctrl_c_keeps_every_result_already_finished() -> None:
    """SIGINT lands wherever the main thread happens to be; a finished check must never fall out of the report.

    The interrupt comes the moment the third check starts, so the first two are
    finished; repeated because the window this guards was a few bytecodes wide.
    """
    release = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_on_third(host: Host) -> HostResult:
        if host.name == "h2":
            signal.pthread_kill(main, signal.SIGINT)
            release.wait(30)
        return HostResult(host, Status.OK, 0.0)

    try:
        for _ in range(50):
            outcome = run_checks(HOSTS, interrupt_on_third, concurrency=1)
            assert outcome.interrupted is True
            assert [result.host.name for result in outcome.results] == ["h0", "h1"]
    finally:
        release.set()


def test_a_check_that_raises_is_a_bug_and_surfaces() -> None:
    def broken(host: Host) -> HostResult:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_checks(HOSTS, broken, concurrency=3)


def test_no_hosts_is_an_empty_outcome() -> None:
    assert run_checks([], CountingCheck(), concurrency=5).results == ()
