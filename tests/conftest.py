"""Fixtures every test layer shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`recovery.cli.main()` installs a stderr handler for the CLI; it must not outlive the
    test's captured stderr, or a later test's log record is written to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    paramiko_level = logging.getLogger("paramiko").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("paramiko").setLevel(paramiko_level)
