"""Fixtures for integration tests: one real part at a time, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recovery.ssh.keys import KeyPair, generate_keypair
from tests.integration.sshd_fixture import SSHServer, running_sshd
from tests.integration.sshd_fleet import closed_port


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """One sshd for the session; tests only append keys to authorized_keys."""
    with running_sshd() as server:
        yield server


@pytest.fixture(scope="module")
def audit_key(tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer) -> KeyPair:
    """A key pair in the lab user's authorized_keys: the audit's key that gets in."""
    key = generate_keypair(tmp_path_factory.mktemp("audit-keys") / "audit", comment="audit")
    sshd.authorize(key.public_line)
    return key


@pytest.fixture(scope="module")
def closed() -> Iterator[int]:
    """A port nothing listens on: a connection is refused."""
    with closed_port() as port:
        yield port
