"""A scripted serial console implementing the Channel protocol, for the login state machine.

What the guest prints comes from a `Guest`: one real login transcript (tests/cases/transcripts/).
The output can be delivered in pieces cut at chosen offsets of everything the console prints, as a
websocket or a serial line splits it, and with a pause (one empty read: longer than the session's
quiet window) at each cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import ChannelClosed
from recovery.safety.redact import Text, reveal

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "cases" / "transcripts"
IDENTITY = re.compile(r"printf 'RCV-%s-%s\\n' (\w+) \"\$\(id -un\)\"\r")
SCRIPT_END = re.compile(r"printf 'RCV-%s-%s\\n' (\w+) \"\$\?\"")
CURSOR_ANSWER = "\x1b[24;1R"


@dataclass(frozen=True)
class Guest:
    """What one guest prints at each turn of the login dialogue (see tests/cases/transcripts/README)."""

    name: str
    user: str
    password: str
    wake: str  # getty's answer to Enter: issue and login prompt
    password_prompt: str  # printed after the echo of the user name
    after_password: str  # after the right password: MOTD ... shell prompt (or a refusal and a new login prompt)
    incorrect: str  # after a wrong password: "Login incorrect" and the next login prompt
    prompt: str  # the shell prompt
    logout: str  # what the shell and getty print after `exit`
    shell_user: str  # what `id -un` prints once logged in
    outcome: str  # "shell" or "rejected": what a login with the right password must end in

    @classmethod
    def load(cls, path: Path) -> Guest:
        data = json.loads(path.read_text(encoding="utf-8"))
        text = {key: "".join(value) if isinstance(value, list) else value for key, value in data.items()}
        text.pop("about")
        return cls(name=path.stem, **text)


def transcripts() -> list[Guest]:
    return [Guest.load(path) for path in sorted(TRANSCRIPTS.glob("*.json"))]


DEBIAN = Guest(
    name="builtin-debian",
    user="ops",
    password="s3cret-pass",
    wake="\r\r\nDebian GNU/Linux 12 vm ttyS0\r\n\r\nvm login: ",
    password_prompt="Password: ",
    after_password="\r\nLinux vm 6.1.0\r\n\r\nThe programs included... # not a prompt\r\n\x1b[?2004hops@vm:~$ ",
    incorrect="\r\nLogin incorrect\r\nvm login: ",
    prompt="\x1b[?2004hops@vm:~$ ",
    logout="\x1b[?2004l\rlogout\r\n\r\nvm login: ",
    shell_user="ops",
    outcome="shell",
)


class FakeConsole:
    """Behaves like getty + login + a shell, with the noise real consoles make."""

    has_output = True

    def __init__(
        self,
        *,
        guest: Guest = DEBIAN,
        password: str | None = None,
        state: str = "login",
        shell_user: str | None = None,  # who is logged in when the console starts in a shell
        script_status: int = 0,
        script_output: str = "",
        cuts: Iterable[int] = (),
        pause_at_cuts: bool = False,
    ) -> None:
        self.guest = guest
        self.password = guest.password if password is None else password
        self.state = state  # login | password | shell | heredoc | closed
        self.shell_user = guest.shell_user if shell_user is None else shell_user
        self.script_status = script_status
        self.script_output = script_output
        self.sent: list[str] = []
        self.output = ""  # everything delivered so far
        self._cuts = sorted(set(cuts))
        self._pause_at_cuts = pause_at_cuts
        self._paused = False
        self._outbox = ""
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
        if not self._outbox or self._paused:
            self._paused = False
            return ""
        emitted = self.emitted
        end = emitted + len(self._outbox)
        cut = next((cut for cut in self._cuts if emitted < cut < end), end)
        piece, self._outbox = self._outbox[: cut - emitted], self._outbox[cut - emitted:]
        self.output += piece
        self._paused = self._pause_at_cuts and cut in self._cuts
        return piece

    @property
    def emitted(self) -> int:
        """Characters delivered so far."""
        return len(self.output)

    @property
    def cursor_queries(self) -> int:
        """ESC[6n delivered so far, cut or whole."""
        return self.output.count("\x1b[6n")

    def _print(self, text: str) -> None:
        self._outbox += text

    def send(self, data: Text) -> None:
        text = reveal(data)
        self.sent.append(text)
        if text == CURSOR_ANSWER:
            return  # the shell reads it as the answer to its question, and prints nothing
        guest = self.guest
        if self.state == "login":
            if text == "\r":
                self._print(guest.wake)
            else:
                self._user = text.strip()
                self._print(text.replace("\r", "\r\n") + guest.password_prompt)
                self.state = "password"
        elif self.state == "password":
            if text.strip() == self.password and self._user == guest.user and guest.outcome == "shell":
                self._print(guest.after_password)
                self.shell_user = guest.shell_user
                self.state = "shell"
            elif text.strip() == self.password and self._user == guest.user:
                self._print(guest.after_password)
                self.state = "login"
            else:
                self._print(guest.incorrect)
                self.state = "login"
        elif self.state == "heredoc":
            if text == "\x03":
                self._print("^C\r\n" + guest.prompt)
                self.state = "shell"
            elif text.strip().startswith("RECOVERY_SCRIPT_"):
                self._print(f"{self.script_output}RCV-{self._nonce}-{self.script_status}\r\n{guest.prompt}")
                self.state = "shell"
            else:
                self._print("\x1b[?2004l\r> ")
        elif self.state == "shell":
            identity = IDENTITY.search(text)
            script = SCRIPT_END.search(text)
            if identity:
                # the echo wraps at 80 columns; only the output line counts
                echo = text[:40] + "\r\n" + text[40:]
                self._print(echo + f"\r\nRCV-{identity.group(1)}-{self.shell_user}\r\n" + guest.prompt)
            elif script:
                self._nonce = script.group(1)
                self._print("\x1b[?2004l\r> ")
                self.state = "heredoc"
            elif text == "exit\r":
                self._print("exit\r\n" + guest.logout)
                self.state = "login"
            else:
                self._print("\r\n" + guest.prompt)
