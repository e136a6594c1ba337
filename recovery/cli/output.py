"""Where a fleet command's report goes: stdout, or a file that no reader ever sees half-written."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recovery.errors import UsageError
from recovery.safety.files import write_atomic


def write_output(text: str, output: Path | None) -> None:
    """To stdout, or to `output` atomically: node_exporter and CI must never read half a file.

    The file gets the usual 0666-minus-umask mode rather than 0600, because the
    textfile collector or the CI's report reader usually runs as another user.
    """
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    umask = os.umask(0)
    os.umask(umask)
    try:
        write_atomic(output, text, mode=0o666 & ~umask)
    except OSError as exc:
        raise UsageError(f"--output {output}: cannot write in {output.parent}: {exc.strerror or exc}") from exc
