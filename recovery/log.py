"""Logging for the CLI only; library modules log to their own loggers and add no handlers."""

from __future__ import annotations

import logging
import sys

from recovery.redact import RedactingFilter


def setup_logging(verbosity: int) -> None:
    """-v: one line per step; -vv: masked console I/O; -vvv: paramiko too. Secrets are scrubbed."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paramiko logs every failed banner as an ERROR traceback from its own thread; the verifier
    # already reports those failures in plain words.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbosity >= 3 else logging.CRITICAL)
    logging.getLogger("websocket").setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
