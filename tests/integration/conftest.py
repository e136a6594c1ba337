"""Fixtures for integration tests: one real part at a time, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.sshd_fixture import SSHServer, running_sshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """One sshd for the session; tests only append keys to authorized_keys."""
    with running_sshd() as server:
        yield server
