"""The progress line while a step waits: what it waits for, and for how long."""

from __future__ import annotations

import threading

from recovery.engine.heartbeat import Heartbeat


def test_a_long_wait_is_reported_with_what_and_how_long() -> None:
    lines: list[str] = []
    seen = threading.Event()

    def report(line: str) -> None:
        lines.append(line)
        seen.set()

    with Heartbeat(report, lambda: "login: waiting for the login prompt", first=0.01, every=0.01):
        assert seen.wait(10), "no progress line while waiting"
    assert lines[0].startswith("    ... login: waiting for the login prompt (")
    assert lines[0].endswith(" s)")


def test_a_short_step_prints_nothing_and_the_heartbeat_stops_with_it() -> None:
    lines: list[str] = []
    with Heartbeat(lines.append, lambda: "x", first=60, every=60) as beat:
        pass
    assert lines == []
    assert not beat._thread.is_alive()
