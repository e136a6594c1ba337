"""Fixtures every test layer shares, and how `make test` spreads the tests over workers."""

from __future__ import annotations

import logging
import os
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (`make test` runs three workers).

    A test module stays on one worker, so its module fixtures (a test cloud, a booted VM, a
    fleet of sshd) start once. Every module marked `vm` shares one worker: two QEMU guests
    under software emulation on 2 cores would each boot at half speed and miss their timeouts.
    Without xdist the marks change nothing.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "qemu-vms" if item.get_closest_marker("vm") is not None else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `root("why")` fails, naming why, when not run as root: CI runs as root, and a
    skipped test would hide a part that was never tested."""
    marker = item.get_closest_marker("root")
    if marker is not None and os.geteuid() != 0:
        pytest.fail(f"{marker.args[0]}: run the tests as root, as CI does (.ci/run)")
