"""A real OpenSSH server on 127.0.0.1 for integration tests.

`running_sshd()` starts `sshd -D` on a free loopback port with its own Ed25519
host key and a throwaway login user, waits until it sends its banner, and
undoes all of it on exit. It needs root (useradd, and sshd must switch to the
user) and Debian's `openssh-server`; without either the test fails with a
message saying so, rather than skipping.

Why the layout looks the way it does (see TESTBED.md, OpenSSH server):
- the user's home lives in a fresh 0755 directory, not under pytest's 0700
  tmp tree: sshd reads `authorized_keys` as the user, and StrictModes checks
  the home, `~/.ssh` and the file itself;
- `useradd` leaves the password locked (`!`), which `UsePAM no` sshd treats as
  "account is locked" even for key logins, so the password field is set to `*`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

HOST = "127.0.0.1"
_SSHD_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_PACKAGE_HINT = "apt-get install -y --no-install-recommends openssh-server openssh-client"


@dataclass(frozen=True)
class SSHServer:
    """A running sshd and what a test needs to know about it."""

    host: str
    port: int
    user: str
    home: Path
    host_key_sha256: str  # "SHA256:..." as `ssh-keygen -l` prints it
    host_key_md5: str  # "MD5:aa:bb:..." as `ssh-keygen -E md5 -l` prints it
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
    """Start sshd with a throwaway user; stop it and remove both on exit."""
    if os.geteuid() != 0:
        pytest.fail("the sshd integration tests need root (useradd, and sshd switching users)")
    sshd = shutil.which("sshd", path=_SSHD_SEARCH_PATH)
    if sshd is None or shutil.which("ssh-keygen") is None:
        pytest.fail(f"sshd/ssh-keygen not found: {_PACKAGE_HINT}")

    base = Path(tempfile.mkdtemp(prefix="recovery-sshd-"))
    base.chmod(0o755)  # the user must be able to reach its home inside
    user = "rcv" + secrets.token_hex(4)
    try:
        home = _add_user(user, base / "home")
        try:
            host_key = base / "host_ed25519"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(host_key))
            port = _free_port()
            config = base / "sshd_config"
            config.write_text(_config(port, host_key, base / "sshd.pid", user))
            log_path = base / "sshd.log"
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
            server = SSHServer(
                host=HOST,
                port=port,
                user=user,
                home=home,
                host_key_sha256=_fingerprint(host_key, "sha256"),
                host_key_md5=_fingerprint(host_key, "md5"),
                log_path=log_path,
            )
            process = subprocess.Popen(
                [sshd, "-D", "-f", str(config), "-E", str(log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_for_banner(process, server)
                yield server
            finally:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            _run("userdel", user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _add_user(user: str, home: Path) -> Path:
    """Create `user` with a StrictModes-proof home and an empty authorized_keys."""
    _run("useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", user)
    _run("usermod", "-p", "*", user)
    entry = pwd.getpwnam(user)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True)
    home.chmod(0o755)
    (ssh_dir / "authorized_keys").touch(mode=0o600)
    for path in (home, ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return home


def _config(port: int, host_key: Path, pid_file: Path, user: str) -> str:
    return "\n".join(
        [
            f"Port {port}",
            f"ListenAddress {HOST}",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            f"AllowUsers {user}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            "LogLevel VERBOSE",
            "PrintMotd no",
            "",
        ]
    )


def _fingerprint(host_key: Path, hash_name: str) -> str:
    line = _run("ssh-keygen", "-E", hash_name, "-lf", f"{host_key}.pub")
    return line.split()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_banner(process: subprocess.Popen[bytes], server: SSHServer) -> None:
    """Poll until sshd greets us; fail at once, with its log, if it died."""

    def greet() -> None:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with status {process.returncode}:\n{server.log_text()}")
        with socket.create_connection((server.host, server.port), timeout=1) as conn:
            if not conn.recv(64).startswith(b"SSH-"):
                raise ConnectionError("no SSH banner yet")

    for attempt in Retrying(
        stop=stop_after_delay(10),
        wait=wait_fixed(0.05),
        retry=retry_if_exception_type(OSError),
        reraise=True,
    ):
        with attempt:
            greet()


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
