"""A scripted serial console implementing the Channel protocol, for the login state machine."""

from __future__ import annotations

import re

from recovery.errors import ChannelClosed
from recovery.redact import Text, reveal

PROMPT = "\x1b[?2004hops@vm:~$ "
IDENTITY = re.compile(r"printf 'RCV-%s-%s\\n' (\w+) \"\$\(id -un\)\"\r")
SCRIPT_END = re.compile(r"printf 'RCV-%s-%s\\n' (\w+) \"\$\?\"")


class FakeConsole:
    """Behaves like agetty + login + bash, with the noise real consoles make."""

    has_output = True

    def __init__(
        self,
        *,
        password: str = "s3cret-pass",
        state: str = "login",
        shell_user: str = "ops",  # who is logged in when the console starts in a shell
        script_status: int = 0,
        script_output: str = "",
    ) -> None:
        self.password = password
        self.state = state  # login | password | shell | heredoc | closed
        self.shell_user = shell_user
        self.script_status = script_status
        self.script_output = script_output
        self.sent: list[str] = []
        self._outbox: list[str] = []
        self._user = ""
        self._nonce = ""

    def open(self, timeout: float) -> None:
        return None

    def check_typeable(self, data: Text) -> None:
        return None

    def close(self) -> None:
        self.state = "closed"

    def read(self, timeout: float) -> str:
        if self.state == "closed" and not self._outbox:
            raise ChannelClosed("the fake console closed")
        return self._outbox.pop(0) if self._outbox else ""

    def send(self, data: Text) -> None:
        text = reveal(data)
        self.sent.append(text)
        if self.state == "login":
            if text == "\r":
                self._outbox.append("\r\r\nDebian GNU/Linux 12 vm ttyS0\r\n\r\nvm login: ")
            else:
                self._user = text.strip()
                self._outbox.append(text.replace("\r", "\r\n") + "Password: ")
                self.state = "password"
        elif self.state == "password":
            if text.strip() == self.password and self._user == "ops":
                self._outbox += ["\r\n", "Linux vm 6.1.0\r\n\r\nThe programs included... # not a prompt\r\n", PROMPT]
                self.shell_user = self._user
                self.state = "shell"
            else:
                self._outbox.append("\r\nLogin incorrect\r\nvm login: ")
                self.state = "login"
        elif self.state == "heredoc":
            if text == "\x03":
                self._outbox.append("^C\r\n" + PROMPT)
                self.state = "shell"
            elif text.strip().startswith("RECOVERY_SCRIPT_"):
                self._outbox.append(f"{self.script_output}RCV-{self._nonce}-{self.script_status}\r\n{PROMPT}")
                self.state = "shell"
            else:
                self._outbox.append("\x1b[?2004l\r> ")
        elif self.state == "shell":
            identity = IDENTITY.search(text)
            script = SCRIPT_END.search(text)
            if identity:
                # the echo wraps at 80 columns; only the output line counts
                echo = text[:40] + "\r\n" + text[40:]
                self._outbox.append(echo + f"\r\nRCV-{identity.group(1)}-{self.shell_user}\r\n")
                self._outbox.append(PROMPT)
            elif script:
                self._nonce = script.group(1)
                self._outbox.append("\x1b[?2004l\r> ")
                self.state = "heredoc"
            elif text == "exit\r":
                self._outbox.append("logout\r\n\r\nvm login: ")
                self.state = "login"
            else:
                self._outbox.append(PROMPT)
