"""A conversation with a console: wait for prompts, log in, run a command and read its marker.

Serial consoles give text, not exit codes, and they echo what we type, wrapped
and redrawn at 80 columns. So we never parse the echo. Every command we type
ends with `printf 'RCV-%s-%s\\n' NONCE "$?"`: the typed text holds `RCV-%s` and
the nonce apart, and only the shell's *output* holds `RCV-<nonce>-<status>`.

Everything received goes to the journal transcript, scrubbed of secrets;
everything sent is recorded in its masked form.

A console without text (VNC: `channel.has_output` is False) is driven blind: the
same keys, typed after fixed pauses instead of prompts, and no status read back;
the SSH login that follows is the proof.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from recovery.channels import Channel
from recovery.errors import ChannelTimeout, GuestCommandError, LoginRejected
from recovery.redact import Secret, Text, reveal, scrub

log = logging.getLogger(__name__)

# CSI (including bracketed-paste toggles such as ESC[?2004h), OSC and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78M]")
_CURSOR_QUERY = "\x1b[6n"  # busybox ash asks where the cursor is; a terminal must answer

LOGIN_PROMPT = re.compile(r"(?:^|\n)[^\n]*login:[ \t]*$")
PASSWORD_PROMPT = re.compile(r"[Pp]assword:[ \t]*$")
LOGIN_INCORRECT = re.compile(r"Login incorrect")
LOGGED_OUT = re.compile(r"(?:^|\n)logout\b")
CONTINUATION_PROMPT = re.compile(r"(?:^|\n)> $")
SHELL_PROMPT = re.compile(r"[$#%>][ \t]*$")

WAKE_ATTEMPTS = 4
WAKE_INTERVAL = 2.0
IDENTITY_TIMEOUT = 10.0
BLIND_PAUSE = 1.0  # seconds for a prompt to appear on a console we cannot read
# busybox login takes Ctrl-C at its password prompt for a failed attempt: it pauses 3 s, echoing
# whatever is typed meanwhile, before the next `login:` (util-linux login and PAM pause 2-3 s too).
FAILED_LOGIN_PAUSE = 5.0
# Between the user name and the password: typed before login turns echo off, the password would
# show on the screen (and in the screenshots). A VM under software emulation needs well under 1 s.
PASSWORD_PROMPT_PAUSE = 2.0


def normalize(text: str) -> str:
    """Screen text as a reader sees it: no escape codes, CR/LF folded to LF."""
    text = _ANSI.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def heredoc_command(lines: Sequence[Text], *, delimiter: str, nonce: str) -> list[Text]:
    """The exact lines typed to run `lines` with `sh` and print `RCV-<nonce>-<status>` after.

    The leading space keeps the command out of history where HISTCONTROL ignores spaces;
    unsetting HISTFILE keeps it out everywhere else.
    """
    if any(reveal(line) == delimiter for line in lines):
        raise GuestCommandError(f"internal error: a script line equals the heredoc delimiter {delimiter}")
    opening = f" unset HISTFILE; sh <<'{delimiter}'; printf 'RCV-%s-%s\\n' {nonce} \"$?\""
    return [opening, *lines, delimiter]


@dataclass(frozen=True)
class LoginResult:
    user: str
    already_logged_in: bool
    logged_out_other_user: str | None


@dataclass(frozen=True)
class CommandResult:
    status: int | None  # None on a blind console: the marker cannot be read
    output: str


class ConsoleSession:
    """Prompt-aware typing over any `Channel`; `transcript` receives every byte, masked."""

    def __init__(self, channel: Channel, transcript: Callable[[str], None] = lambda text: None) -> None:
        self.channel = channel
        self._transcript = transcript
        self._pending = ""  # normalized text not yet consumed by an expectation
        self.typed: list[str] = []  # masked lines we typed, for the report

    # -- primitives ---------------------------------------------------------------------------

    def send(self, text: Text, *, show: str | None = None) -> None:
        """Type `text`. `show` overrides what the transcript and report record (e.g. "<password>")."""
        shown = show if show is not None else str(text) if isinstance(text, Secret) else scrub(text)
        self._transcript(f"\n>>> {shown.rstrip()}\n")
        self.channel.send(text)

    def _receive(self, timeout: float) -> str:
        chunk = self.channel.read(timeout)
        if chunk:
            self._transcript(chunk)
            if _CURSOR_QUERY in chunk:
                self.channel.send("\x1b[24;1R")
            self._pending += normalize(chunk)
        return chunk

    def expect(self, patterns: Mapping[str, re.Pattern[str]], timeout: float) -> tuple[str, re.Match[str]]:
        """Wait until one of `patterns` matches unconsumed output; consume up to the match.

        Raises:
            ChannelTimeout: nothing matched in `timeout` seconds (the message shows the screen's tail).
            ChannelClosed: the console went away.
        """
        deadline = time.monotonic() + timeout
        while True:
            for name, pattern in patterns.items():
                match = pattern.search(self._pending)
                if match:
                    self._pending = self._pending[match.end():]
                    return name, match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(
                    f"waited {timeout:.0f} s for {' or '.join(patterns)} on the console",
                    transcript_tail=self.tail(),
                )
            self._receive(min(remaining, 0.5))

    def settle(self, quiet: float = 0.3, limit: float = 3.0) -> None:
        """Read until the console has been quiet for `quiet` seconds (MOTDs, redraws)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self._receive(quiet):
                return

    def tail(self, lines: int = 20) -> list[str]:
        return [scrub(line) for line in self._pending.splitlines()[-lines:]]

    # -- login --------------------------------------------------------------------------------

    def login(self, user: str, password: Secret | None, timeout: float) -> LoginResult:
        """Reach a shell as `user`, whatever state the console is in.

        Handles `login:`, `Password:`, an open shell (checked with `id -un`; another user is
        logged out first), and a half-typed heredoc left by an interrupted run (`> `).

        Raises:
            LoginRejected: wrong password or unknown user; nothing is typed after it.
            ChannelTimeout: no prompt appeared in time.
            ChannelError: the user name or password has a character this console cannot type
                (nothing was typed).
        """
        self.channel.check_typeable(user)
        if password is not None:
            self.channel.check_typeable(Secret(reveal(password), "the console password"))
        if not self.channel.has_output:
            return self._blind_login(user, password)
        deadline = time.monotonic() + timeout
        patterns = {
            "login incorrect": LOGIN_INCORRECT,
            "password prompt": PASSWORD_PROMPT,
            "login prompt": LOGIN_PROMPT,
            "continuation prompt": CONTINUATION_PROMPT,
            "shell prompt": SHELL_PROMPT,
        }
        self._pending = ""
        self.send("\r", show="<Enter>")
        wakes = 1
        sent_user = sent_password = False
        logged_out: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(
                    f"no login or shell prompt on the console within {timeout:.0f} s", transcript_tail=self.tail()
                )
            try:
                name, _ = self.expect(patterns, min(remaining, WAKE_INTERVAL))
            except ChannelTimeout:
                if wakes >= WAKE_ATTEMPTS and not (sent_user or sent_password):
                    raise ChannelTimeout(
                        f"the console printed no prompt after {wakes} presses of Enter; is anything "
                        "running a getty/login on this serial port?",
                        transcript_tail=self.tail(),
                    ) from None
                if not sent_password:
                    self.send("\r", show="<Enter>")
                    wakes += 1
                continue
            if name == "login incorrect" and not sent_password:
                continue  # the end of an attempt we did not make (a stale prompt we just answered)
            if name == "login incorrect":
                raise LoginRejected(
                    f"the console rejected the login for {user!r} (\"Login incorrect\"): the console "
                    "password is wrong, or the user does not exist on this VM. Nothing was typed after it. "
                    "Check RECOVERY_CONSOLE_PASSWORD or --secret console_password=@FILE",
                    transcript_tail=self.tail(),
                )
            if name == "password prompt" and not sent_user:
                # Someone else's (or an interrupted) login is waiting for its password: never type
                # ours into it. An empty answer ends it; login then asks for a user name again.
                self.send("\r", show="<Enter>")
                continue
            if name == "password prompt":
                if sent_password or password is None:
                    raise LoginRejected(
                        f"the console asks for a password for {user!r} "
                        + ("again: the password was not accepted" if sent_password else "but none was given"),
                        transcript_tail=self.tail(),
                    )
                self.send(Secret(reveal(password) + "\r", "<password>"), show="<password>")
                sent_password = True
            elif name == "login prompt":
                if sent_password:
                    raise LoginRejected(
                        f"the console went back to the login prompt after the password for {user!r}: "
                        "the password is wrong or the account is locked. Nothing was typed after it.",
                        transcript_tail=self.tail(),
                    )
                self.send(user + "\r")
                sent_user = True
            elif name == "continuation prompt":
                # An interrupted earlier run left a heredoc open: abandon it, it never executed.
                self.send("\x03", show="<Ctrl-C>")
                self.send("\r", show="<Enter>")
            else:
                who = self.identity(min(IDENTITY_TIMEOUT, max(deadline - time.monotonic(), 1.0)))
                if who == user:
                    return LoginResult(user, already_logged_in=not sent_password, logged_out_other_user=logged_out)
                if logged_out is not None:
                    raise LoginRejected(f"logged in as {who!r}, not {user!r}, even after logging {logged_out!r} out")
                logged_out = who
                self.send("exit\r")
                # Wait for login: itself; the old shell's last prompt may still be on its way.
                self.expect({"login prompt after logout": LOGIN_PROMPT}, max(deadline - time.monotonic(), 0.1))
                self.send(user + "\r")
                sent_user, sent_password = True, False

    def _blind_login(self, user: str, password: Secret | None) -> LoginResult:
        """Log in where no prompt can be seen: reset the console to a fresh `login:`, then type.

        Ctrl-C, `exit`, Ctrl-C ends at a fresh `login:` from any state, so the password can never
        land in a shell: a heredoc half-typed by an interrupted run is abandoned (it never executed)
        and its shell exits; at a login prompt, `exit` is taken for a user name and the Ctrl-C at
        its password prompt ends that attempt. util-linux login ends at once; busybox login counts
        a failed attempt and pauses, echoing what is typed meanwhile, so the user name waits
        FAILED_LOGIN_PAUSE: typed during the pause, it would be lost and the password would land,
        visible, at the next `login:` (a real VM behind QEMU's VNC server showed exactly that).
        Nothing here can tell a wrong password: the SSH login at the end is the judge.
        """
        steps = (("\x03", "<Ctrl-C>", BLIND_PAUSE), ("exit\r", "exit", BLIND_PAUSE),
                 ("\x03", "<Ctrl-C>", FAILED_LOGIN_PAUSE), (user + "\r", user, PASSWORD_PROMPT_PAUSE))
        for keys, shown, pause in steps:
            self.send(keys, show=shown)
            self.settle(quiet=pause, limit=pause)
        if password is not None:
            self.send(Secret(reveal(password) + "\r", "<password>"), show="<password>")
            self.settle(quiet=BLIND_PAUSE)
        return LoginResult(user, already_logged_in=password is None, logged_out_other_user=None)

    def logout(self, timeout: float = 5.0) -> None:
        """Leave the shell, so no shell stays open on the console.

        A login shell says `logout` as it ends (bash does); otherwise we wait for the next
        login prompt, which a getty may take a second to print.

        Raises:
            ChannelTimeout: neither came back (the shell may still be open).
        """
        self._pending = ""
        self.send("exit\r")
        if not self.channel.has_output:
            self.settle(quiet=BLIND_PAUSE)
            return
        self.expect({"logout": LOGGED_OUT, "login prompt after logout": LOGIN_PROMPT}, timeout)

    def identity(self, timeout: float) -> str:
        """The user of the shell at the console, read from a marker line."""
        nonce = secrets.token_hex(4)
        self.send(f"printf 'RCV-%s-%s\\n' {nonce} \"$(id -un)\"\r")
        _, match = self.expect({"identity marker": re.compile(rf"RCV-{nonce}-(\S+)\n")}, timeout)
        return match.group(1)

    # -- commands -----------------------------------------------------------------------------

    def run_script(self, lines: Sequence[Text], *, delimiter: str, nonce: str, timeout: float) -> CommandResult:
        """Pipe `lines` into `sh` through a quoted heredoc and wait for the status marker.

        The whole script runs only when the closing delimiter arrives, so a console that
        drops mid-typing leaves nothing half-done. HISTFILE is unset first: the script may
        hold a signed URL that must not land in the user's shell history.

        Raises:
            ChannelTimeout: no marker within `timeout`.
            ChannelClosed: the console went away while typing or waiting.
            ChannelError: a line has a character this console cannot type (nothing was typed).

        On a blind console the status is None: the script is typed and given a moment to run.
        """
        self._pending = ""
        command = heredoc_command(lines, delimiter=delimiter, nonce=nonce)
        for line in command:
            self.channel.check_typeable(line)
        for line in command:
            shown = str(line) if isinstance(line, Secret) else line
            self.typed.append(shown)
            wire = Secret(reveal(line) + "\r", shown) if isinstance(line, Secret) else line + "\r"
            self.send(wire, show=shown)
        if not self.channel.has_output:
            self.settle(quiet=BLIND_PAUSE)
            return CommandResult(status=None, output="")
        marker = re.compile(rf"RCV-{nonce}-(\d+)\n")
        _, match = self.expect({"status marker": marker}, timeout)
        return CommandResult(status=int(match.group(1)), output=match.string[: match.start()])
