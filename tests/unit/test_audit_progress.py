"""The progress line: redrawn in place on a terminal, erased at the end, absent otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from recovery.audit.model import Host, HostResult, Status
from recovery.audit.progress import ProgressLine

HOST = Host("h", "10.0.0.1", 22, "ops", (Path("/k"),))


def test_on_a_terminal_the_line_counts_failures_and_is_erased() -> None:
    stream = io.StringIO()
    progress = ProgressLine(2, stream, enabled=True)

    progress.update(HostResult(HOST, Status.TIMEOUT, 5.0))
    progress.update(HostResult(HOST, Status.OK, 0.1))  # the last result is always drawn
    progress.clear()

    frames = stream.getvalue().split("\r\x1b[K")
    assert frames[1].startswith("[1/2] 1 failed, ")
    assert frames[2].startswith("[2/2] 1 failed, ")
    assert frames[-1] == ""  # erased: the report starts on a clean line


def test_without_a_terminal_nothing_is_written() -> None:
    stream = io.StringIO()
    progress = ProgressLine(1, stream, enabled=False)

    progress.update(HostResult(HOST, Status.OK, 0.1))
    progress.clear()

    assert stream.getvalue() == ""
