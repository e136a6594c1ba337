"""Run one check per host on a fixed number of worker threads, and survive Ctrl-C with what is done.

Threads, not asyncio: the checker's work happens in C with the GIL released, so
threads run the handshakes truly in parallel with no event loop to feed, and a
check is plain blocking code. Each worker takes the next host from a queue, so
a slow host (a tarpit costs a whole timeout) holds up one worker, never the run.

The workers are daemon threads. On Ctrl-C the main thread stops handing out
hosts and returns at once with the results so far; a worker still blocked in a
handshake cannot delay the exit (a `ThreadPoolExecutor` would join it first).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from recovery.audit.model import Host, HostResult

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
) -> Outcome:
    """Check every host, at most `concurrency` at a time.

    :param check: must turn every failure into a result; an exception it raises
        anyway ends the run and is re-raised here, since it is a bug.
    :param on_result: called in the calling thread as each result arrives (progress).
    :returns: all results; after Ctrl-C, those finished and the hosts not checked.
    """
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(hosts)):
        todo.put(index)
    done: queue.SimpleQueue[tuple[int, HostResult | BaseException]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((index, check(hosts[index])))
            except BaseException as exc:  # handed to the main thread, which re-raises it
                done.put((index, exc))
                return

    for number in range(min(concurrency, len(hosts))):
        threading.Thread(target=work, name=f"audit-{number}", daemon=True).start()

    results: dict[int, HostResult] = {}
    try:
        while len(results) < len(hosts):
            try:
                index, item = done.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            results[index] = item
            on_result(item)
    except KeyboardInterrupt:
        stop.set()
        # Checks that finished before Ctrl-C but were not taken yet belong in the partial report.
        while True:
            try:
                index, item = done.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, BaseException):
                results[index] = item
        return _outcome(hosts, results, interrupted=True)
    finally:
        stop.set()
    return _outcome(hosts, results, interrupted=False)


def _outcome(hosts: Sequence[Host], results: dict[int, HostResult], *, interrupted: bool) -> Outcome:
    return Outcome(
        results=tuple(results[index] for index in sorted(results)),
        not_checked=tuple(host for index, host in enumerate(hosts) if index not in results),
        interrupted=interrupted,
    )
