"""The lab's OpenSSH server: its own host key and config, checked, started, awaited.

The settings are those of a typical cloud image with password logins off, so a
recovery is proven the way it must be on a real VM: by a key in
~/.ssh/authorized_keys that StrictModes accepts. `LogLevel VERBOSE` makes sshd
log the fingerprint of each accepted key, so a test can prove which key got in.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from recovery.errors import LabError
from recovery.lab.commands import find_tool, generate_key, run
from recovery.lab.directory import create_exclusive
from recovery.lab.layout import Layout
from recovery.lab.processes import alive, log_tail, poll_until, spawn

_PRIVSEP_DIR = "/run/sshd"  # made by systemd on a real host; sshd will not start without it
_BANNER_TIMEOUT = 0.5


def config_text(
    *,
    ports: Sequence[int],
    host_keys: Sequence[Path],
    pid_file: Path | None,
    user: str,
    authorized_keys: str = ".ssh/authorized_keys",
) -> str:
    """An sshd_config for a loopback test server: keys only, StrictModes, every accepted key logged.

    Paths are quoted, so a directory may contain spaces. With no `pid_file`, sshd
    writes none: `sshd -D` stays in the foreground, so its PID is known anyway.
    """
    return "\n".join(
        [
            *(f"Port {port}" for port in ports),
            "ListenAddress 127.0.0.1",
            *(f'HostKey "{key}"' for key in host_keys),
            f'PidFile "{pid_file}"' if pid_file is not None else "PidFile none",
            f"AuthorizedKeysFile {authorized_keys}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            "LogLevel VERBOSE",
            "PrintMotd no",
            "PermitRootLogin no",
            f"AllowUsers {user}",
            # The default 10:30:100 drops connections when tests or an audit open many at once.
            "MaxStartups 200:30:400",
            "",
        ]
    )


def configure(layout: Layout, *, port: int, user: str) -> str:
    """Make the host key, write sshd_config, check it with `sshd -t`; returns the host key line.

    Raises:
        LabError: sshd rejected the configuration (its message is quoted).
    """
    host_public_key = generate_key(layout.host_key, comment="rcvlab-host")
    text = config_text(ports=[port], host_keys=[layout.host_key], pid_file=None, user=user)
    create_exclusive(layout.sshd_config, text)
    os.makedirs(_PRIVSEP_DIR, mode=0o755, exist_ok=True)
    run(
        [_sshd(), "-t", "-f", str(layout.sshd_config)],
        purpose=f"validate the lab's sshd configuration {layout.sshd_config}",
    )
    return host_public_key


def start(layout: Layout, record: Callable[[int], None]) -> int:
    """Start `sshd -D` (in the foreground, so its PID is the listener's); returns the PID, given to `record` first."""
    return spawn(
        [_sshd(), "-D", "-f", str(layout.sshd_config), "-E", str(layout.sshd_log)],
        log_path=layout.sshd_log,
        record=record,
    )


def wait_ready(layout: Layout, *, pid: int, port: int, timeout: float) -> None:
    """Poll until sshd on `port` sends its SSH banner.

    Raises:
        LabError: sshd exited, or sent no banner within `timeout` seconds.
    """
    if poll_until(lambda: answers(port) or not alive(pid), timeout) and alive(pid):
        return
    state = "exited" if not alive(pid) else f"sent no SSH banner within {timeout:.0f} s"
    raise LabError(
        f"The lab's sshd (pid {pid}, port {port}) {state}. Its log {layout.sshd_log} "
        f"ends with: {log_tail(layout.sshd_log)}"
    )


def answers(port: int) -> bool:
    """True when something on 127.0.0.1:`port` accepts and speaks SSH first."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=_BANNER_TIMEOUT) as conn,
    ):
        return conn.recv(64).startswith(b"SSH-")
    return False


def _sshd() -> str:
    return find_tool("sshd", "openssh-server")
