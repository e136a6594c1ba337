"""Stopping a server a test started: through its own Popen (so by its PID), never by name."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_child(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM `process`, SIGKILL it if it is still there after `grace` seconds, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)
