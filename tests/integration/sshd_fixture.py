"""A real OpenSSH server on 127.0.0.1 for integration tests: the lab's own sshd.

The tests use the same lab code a newcomer runs (`recovery lab up`), so the sshd
under test is configured exactly as the product's lab configures it (StrictModes,
no passwords, no PAM, LogLevel VERBOSE). The lab needs root; without it the test
fails with the lab's message rather than skipping.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from recovery import lab
from recovery.ssh.keys import fingerprint_md5

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SSHServer:
    """A running sshd and what a test needs to know about it."""

    host: str
    port: int
    user: str
    home: Path
    host_key_sha256: str  # "SHA256:..." as `ssh-keygen -l` prints it
    host_key_md5: str  # "MD5:aa:bb:..." as `ssh-keygen -E md5 -l` prints it
    host_public_key: str  # "ssh-ed25519 AAAA... comment", the line of its .pub file
    log_path: Path

    def authorize(self, public_line: str) -> None:
        """Append a public key line to the user's authorized_keys."""
        with (self.home / ".ssh" / "authorized_keys").open("a", encoding="utf-8") as f:
            f.write(public_line.strip() + "\n")

    def log_text(self) -> str:
        """sshd's log so far (LogLevel VERBOSE names every accepted key)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_sshd() -> Iterator[SSHServer]:
    """A lab (sshd, user, console) under /tmp, taken down and removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-sshd-"))
    directory.chmod(0o755)  # the lab user must pass through it to its home
    try:
        info = lab.up(directory)
        yield SSHServer(
            host=info.ssh_host,
            port=info.ssh_port,
            user=info.user,
            home=info.home,
            host_key_sha256=info.host_key_fingerprint,
            host_key_md5="MD5:" + fingerprint_md5(info.host_public_key),
            host_public_key=info.host_public_key,
            log_path=info.sshd_log,
        )
    finally:
        lab.down(directory)
        shutil.rmtree(directory, ignore_errors=True)
