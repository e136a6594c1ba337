"""Where each file of a lab lives inside its directory.

One place for the names, so that `up` (which clears stale files before it starts),
`down` (which removes what it made) and `status` agree on what a lab consists of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The files of the lab rooted at `directory`."""

    directory: Path

    @property
    def info(self) -> Path:
        return self.directory / "lab.json"

    @property
    def started(self) -> Path:
        """The user and PIDs `up` has made so far, written as each appears: `down` reads it
        when `up` was killed before lab.json existed."""
        return self.directory / "started.json"

    @property
    def console_password(self) -> Path:
        return self.directory / "console_password"

    def console_url(self, console: str) -> Path:
        """The URL of the lab's `console` ("serial" or "vnc"), for `recovery run -e console_url=@FILE`:
        the serial one carries its token, which a command line would show to every local user."""
        return self.directory / f"{console}_console_url"

    @property
    def homes(self) -> Path:
        return self.directory / "home"

    @property
    def old_key(self) -> Path:
        return self.directory / "old_key"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def sshd_log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def serial_port_file(self) -> Path:
        return self.directory / "serial_port.port"

    @property
    def serial_port_log(self) -> Path:
        return self.directory / "serial_port.log"

    @property
    def tokens(self) -> Path:
        return self.directory / "tokens"

    @property
    def websockify_log(self) -> Path:
        return self.directory / "websockify.log"

    def home(self, user: str) -> Path:
        return self.homes / user

    def state_files(self) -> tuple[Path, ...]:
        """Everything but the logs: what `down` removes (secrets included)."""
        return (
            self.info,
            self.started,
            self.console_password,
            self.console_url("serial"),
            self.console_url("vnc"),
            self.old_key,
            self.old_key.with_name(self.old_key.name + ".pub"),
            self.host_key,
            self.host_key.with_name(self.host_key.name + ".pub"),
            self.sshd_config,
            self.serial_port_file,
            self.tokens,
        )

    def logs(self) -> tuple[Path, ...]:
        """Kept by `down` for whoever must explain a failure; cleared by the next `up`."""
        return (self.sshd_log, self.serial_port_log, self.websockify_log)
