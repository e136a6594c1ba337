"""Run one check per host on a fixed number of worker threads, and survive Ctrl-C with what is done.

Threads, not asyncio: the checker's work happens in C with the GIL released, so
threads run the handshakes truly in parallel with no event loop to feed, and a
check is plain blocking code. Each worker takes the next host from a queue, so
a slow host (a tarpit costs a whole timeout) holds up one worker, never the run.

The workers are daemon threads. On Ctrl-C, or when the caller's `CancelToken`
is cancelled from another thread, the calling thread stops handing out hosts and
returns at once with the results so far; a worker still blocked in a handshake
cannot delay the exit (a `ThreadPoolExecutor` would join it first), and it ends
by its host's deadline.

The checks of one run share their logins to jump hosts (`recovery.ssh.jump.shared_logins`):
200 hosts behind one bastion cost it a few logins, not 200; they are closed when the run ends.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from recovery.audit.model import Host, HostResult
from recovery.engine.cancel import CancelToken
from recovery.ssh.jump import shared_logins

__all__ = ["Outcome", "run_checks"]

Check = Callable[[Host], HostResult]

_POLL = 0.2  # how often the waiting main thread wakes, so Ctrl-C is seen promptly


@dataclass(frozen=True)
class Outcome:
    """Results in the hosts' original order; `not_checked` is non-empty only after an interruption."""

    results: tuple[HostResult, ...]
    not_checked: tuple[Host, ...]
    interrupted: bool


def run_checks(
    hosts: Sequence[Host],
    check: Check,
    *,
    concurrency: int,
    on_result: Callable[[HostResult], None] = lambda result: None,
    cancel: CancelToken | None = None,
) -> Outcome:
    """Check every host, at most `concurrency` at a time.

    :param check: must turn every failure into a result; an exception it raises
        anyway ends the run and is re-raised here, since it is a bug.
    :param on_result: called in the calling thread as each result arrives (progress).
    :param cancel: seen within `_POLL` seconds of being cancelled; the run then ends as on Ctrl-C.
    :returns: all results; after Ctrl-C or a cancel, those finished and the hosts not checked.
    """
    with _jump_logins(hosts):
        return _run(hosts, check, concurrency=concurrency, on_result=on_result, cancel=cancel)


@contextlib.contextmanager
def _jump_logins(hosts: Sequence[Host]) -> Iterator[None]:
    """Shared jump host logins for the run, when any host is behind one."""
    if not any(host.jumps for host in hosts):
        yield
        return
    with shared_logins():
        yield


def _run(
    hosts: Sequence[Host],
    check: Check,
    *,
    concurrency: int,
    on_result: Callable[[HostResult], None],
    cancel: CancelToken | None,
) -> Outcome:
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(hosts)):
        todo.put(index)
    # A worker records its result itself, before it says so: Ctrl-C can land between
    # any two bytecodes of the main thread, and a result it had taken off a queue but
    # not yet stored would be lost from the partial report.
    results: dict[int, HostResult] = {}
    finished: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = check(hosts[index])
            except BaseException as exc:  # handed to the main thread, which re-raises it
                finished.put(exc)
                return
            finished.put(index)

    reported = 0
    try:  # starting the workers is inside: a fast worker can finish checks before the last one starts
        for number in range(min(concurrency, len(hosts))):
            threading.Thread(target=work, name=f"audit-{number}", daemon=True).start()
        while reported < len(hosts):
            if cancel is not None and cancel.cancelled:
                stop.set()
                return _outcome(hosts, dict(results), interrupted=True)
            try:
                item = finished.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            reported += 1
            on_result(results[item])
    except KeyboardInterrupt:
        stop.set()
        return _outcome(hosts, dict(results), interrupted=True)
    finally:
        stop.set()
    return _outcome(hosts, results, interrupted=False)


def _outcome(hosts: Sequence[Host], results: dict[int, HostResult], *, interrupted: bool) -> Outcome:
    return Outcome(
        results=tuple(results[index] for index in sorted(results)),
        not_checked=tuple(host for index, host in enumerate(hosts) if index not in results),
        interrupted=interrupted,
    )
