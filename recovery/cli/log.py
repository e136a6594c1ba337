"""Logging for the CLI only; library modules log to their own loggers and add no handlers."""

from __future__ import annotations

import logging
import sys

from recovery.safety.redact import RedactingFilter

# Libraries whose DEBUG output carries credentials in shapes we cannot all foresee:
# keystoneauth logs request headers (a Swift account's Temp-URL key signs anything in
# the account), botocore logs presigned requests, urllib3 every URL with its query,
# paramiko the transport. They say only warnings below -vvv, where the operator asks for all.
THIRD_PARTY = ("keystoneauth", "keystoneauth1", "openstack", "botocore", "boto3", "urllib3", "paramiko",
               "websocket", "s3transfer", "stevedore")


CONSOLE_IO = "recovery.console.io"
"""The logger that carries every line typed into and read from a console, at DEBUG (shown from -vv)."""


def setup_logging(verbosity: int, *, quiet: bool = False) -> None:
    """-q: errors only; -v: what each part does; -vv: also the console I/O (`CONSOLE_IO`) and other debug
    lines of recovery; -vvv: third-party libraries too. Secrets are scrubbed from every record."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    # paramiko logs every failed banner as an ERROR traceback from its own thread; the verifier
    # already reports those failures in plain words.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbosity >= 3 else logging.CRITICAL)


def without_debug_output(reason: str) -> None:
    """Stop every record below INFO from here on: a secret too short to scrub is held.

    Console I/O at -vv and library chatter at -vvv could show it, and nothing can mask it.
    """
    root = logging.getLogger()
    if root.getEffectiveLevel() < logging.INFO:
        logging.getLogger(__name__).warning("debug output is off for this run: %s", reason)
    for handler in root.handlers:
        handler.setLevel(max(handler.level, logging.INFO))
