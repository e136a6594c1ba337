"""A conversation with a console: wait for prompts, log in, run a command and read its marker.

Serial consoles give text, not exit codes, and they echo what we type, wrapped
and redrawn at 80 columns. So we never parse the echo. Every command we type
ends with `printf 'RCV-%s-%s\\n' NONCE "$?"`: the typed text holds `RCV-%s` and
the nonce apart, and only the shell's *output* holds `RCV-<nonce>-<status>`.

Everything received goes to the journal transcript, scrubbed of secrets;
everything sent is recorded in its masked form. At `-vv` both also go, a line at a
time and scrubbed, to the `recovery.console.io` logger at DEBUG.

A VNC console whose screen is read (recovery.channels.screen) has text too: its channel reports what
appears on the screen as a serial console would print it, and the dialogue is the same. A console
without text (`channel.has_output` is False: a VNC screen in a font no reader knows) is driven
blind: the same keys, typed after fixed pauses instead of prompts, and no status read back; the SSH
login that follows is the proof.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recovery.channels import Channel, Screen
from recovery.channels.echo import typed_shown
from recovery.errors import ChannelTimeout, GuestCommandError, LoginRejected
from recovery.safety.redact import Secret, Text, reveal, scrub

if TYPE_CHECKING:
    from recovery.channels.screen import ScreenText

log = logging.getLogger(__name__)
io_log = logging.getLogger("recovery.console.io")  # recovery.cli.log.CONSOLE_IO: shown from -vv

# CSI (including bracketed-paste toggles such as ESC[?2004h), OSC and two-byte escapes; bounded, so
# that one cut short can be held back (_ANSI_PARTIAL) until the next piece of output completes it.
# An OSC (a window title) never spans lines: a stray ESC ] must not swallow the marker line after it.
_ANSI = re.compile(
    r"\x1b\[[0-9;?]{0,32}[ -/]{0,4}[@-~]|\x1b\][^\x07\x1b\r\n]{0,200}(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78M]"
)
_ANSI_PARTIAL = re.compile(r"\x1b(?:\[[0-9;?]{0,32}[ -/]{0,4}|\][^\x07\x1b\r\n]{0,200}\x1b?|[()])?\Z")
_MAX_ESCAPE = 256  # longer than any sequence _ANSI matches
_CURSOR_QUERY = "\x1b[6n"  # busybox ash asks where the cursor is; a terminal must answer
_CURSOR_ANSWER = "\x1b[24;1R"
_MAX_IO_LINE = 4096  # a longer line without a newline is logged in pieces


def _visible(text: str) -> str:
    """Console text for a terminal: control characters (the VM controls them) written as escapes."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)
# A kernel message printed on the console, `[   12.345678] text`: printk writes it wherever the cursor
# is, in the middle of a prompt too, and the program that printed the prompt is still waiting. A
# printk line holds at most 1024 characters; _KERNEL_PARTIAL matches every beginning of one.
_KERNEL_MESSAGE = re.compile(r"\[ {0,16}\d{1,10}\.\d{6}\] [^\n]{0,1024}\n")
_KERNEL_PARTIAL = re.compile(
    r"\[(?: {0,16}(?:\d{1,10}(?:\.(?:\d{0,5}|\d{6}(?:\](?: [^\n]{0,1024})?)?))?)?)?\Z"
)
_MAX_KERNEL_LINE = 1100  # longer than any line _KERNEL_MESSAGE matches

# Prompts are judged on the last line of the screen only (the text after the last newline), whole
# (`fullmatch`), and only once the console has been quiet for PROMPT_QUIET: a program waiting for
# input prints nothing after its prompt, while `Last login: ...` cut after its colon is followed by
# the rest of its line. Translations are the ones shadow's login(1) and Linux-PAM print in German,
# French and Spanish (Debian's shadow.mo and Linux-PAM.mo; "Denière" is shadow's French spelling).
_HOST = r"\S+"  # a host name, or "(none)" where none is set (busybox in an initramfs)
LOGIN_PROMPT = re.compile(rf"(?:{_HOST} )?(?:login|Login|connexion|nombre(?: de usuario)?) ?:[ \t]*")
PASSWORD_PROMPT = re.compile(
    r"(?:\S+'s )?(?:[Pp]assword|Passwort|Mot de passe|Contrase\u00f1a)(?: for \S+)? ?:[ \t]*"
)
CONTINUATION_PROMPT = re.compile(r"> ?")  # a screen shows no trailing space: a bare `>` too
SHELL_PROMPT = re.compile(r"[^\n]{0,200}[$#%>][ \t]?")
# Lines that look like a prompt when cut short, and never are one: pam_lastlog's and login's own
# last-login lines (`Last login: Mon ... on ttyS0`), as they are printed right after a password.
NOT_A_PROMPT = re.compile(
    r"Last (?:failed )?login|Letzte (?:fehlgeschlagene )?Anmeldung|Letztes Login"
    r"|Derni\u00e8re connexion|Deni\u00e8re connexion|\u00daltimo (?:acceso|inicio de sesi\u00f3n)"
)
# Events are whole lines anywhere in the unread output.
LOGIN_INCORRECT = re.compile(r"^(?:Login incorrect|Login fehlerhaft|Identificaci\u00f3n incorrecta)[ \t]*\n",
                             re.MULTILINE)
LOGGED_OUT = re.compile(r"^logout[ \t]*\n", re.MULTILINE)

_EVENT_REACH = 512  # longer than any event line (a marker, `Login incorrect`) we search for

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
PROMPT_QUIET = 0.3  # seconds without output after a prompt-like last line before it counts as a prompt
# A read screen: seconds for the echo of a typed line to show before it counts as mistyped, and how many
# times a command is typed (a mistyped one abandoned with Ctrl-C, never entered) before the run stops.
ECHO_TIMEOUT = 3.0
# A checked line is typed in pieces of this many characters, each checked with OVERLAP characters before
# it as it shows: on a small screen that keeps scrolling (kernel messages), a long line's beginning may be
# gone from it by the time its end is typed. A piece is checked while the next one is typed (waiting for
# each echo stalled QEMU's key queue ~0.25 s a piece); only the last one is waited for.
ECHO_PIECE = 96
ECHO_OVERLAP = 16
TYPING_ATTEMPTS = 2
CANCEL_TIMEOUT = 10.0  # seconds for the shell prompt after a Ctrl-C
# Seconds a shell gets to prompt after the Ctrl-C before it counts as one the interrupt cannot reach.
CANCEL_QUIET = 3.0
_SYNTAX_ERROR = 2  # sh's exit status for a script it could not parse


def normalize(text: str) -> str:
    """Screen text as a reader sees it: no escape codes, CR/LF folded to LF."""
    text = _ANSI.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


class TerminalText:
    """Console output arriving in arbitrary pieces, turned into the text a reader sees.

    A piece can end anywhere: inside an escape sequence, between CR and LF, inside a kernel
    message. What may still be completed is held back until the next piece, so the text never
    depends on where the output was split (tests/unit/test_fuzz_console.py checks exactly that).
    Kernel messages (`[   12.345678] ...`) are taken out: they land in the middle of other
    programs' lines. What is held is bounded, so the work is linear in the output.
    """

    def __init__(self) -> None:
        self._raw = ""  # the start of an escape sequence the next piece may complete
        self._cr = False  # the text so far ends with a CR that an LF may follow
        self._line = ""  # text from where a kernel message may have begun

    def feed(self, chunk: str) -> tuple[str, int]:
        """The text `chunk` completes, and how many cursor-position queries (ESC[6n) it completes."""
        data = self._raw + chunk
        cut = _earliest(data, "\x1b", _ANSI_PARTIAL, _MAX_ESCAPE)
        self._raw = data[cut:]
        complete = data[:cut]
        text = ("\r" if self._cr else "") + _ANSI.sub("", complete)
        self._cr = text.endswith("\r")
        text = text.removesuffix("\r").replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        text, settled = _without_kernel_messages(self._line + text)
        partial = _earliest(text, "[", _KERNEL_PARTIAL, _MAX_KERNEL_LINE, settled)
        self._line = text[partial:]
        return text[:partial], complete.count(_CURSOR_QUERY)


def _without_kernel_messages(text: str) -> tuple[str, int]:
    """`text` without its kernel messages, and the length of what precedes the last one removed:
    that is settled, whatever follows."""
    kept: list[str] = []
    settled = last = 0
    for found in _KERNEL_MESSAGE.finditer(text):
        kept.append(text[last:found.start()])
        settled += found.start() - last
        last = found.end()
    kept.append(text[last:])
    return "".join(kept), settled


def _earliest(text: str, start: str, partial: re.Pattern[str], window: int, floor: int = 0) -> int:
    """The first offset from `floor`, in the last `window` characters of `text`, where `partial` matches
    to its end: where something unfinished begins, to be held back; len(text) if nothing is.
    """
    position = text.find(start, max(floor, len(text) - window))
    while position >= 0:
        if partial.match(text, position):
            return position
        position = text.find(start, position + 1)
    return len(text)


def _echo_reached(screen: ScreenText, typed: str, low: int, seen: int) -> int | None:
    """How far into `typed` the screen's echo has got, at `low` or beyond, with everything typed since the
    first `seen` characters (and ECHO_OVERLAP before them) shown as typed; None if not that far."""
    for reached in range(len(typed), low - 1, -1):
        shown = len(typed[:reached].rstrip())
        if typed_shown(screen, typed[:reached]) >= min(shown, max(shown - seen, 0) + ECHO_OVERLAP):
            return reached
    return None


def _continues(screen: ScreenText) -> bool:
    """Whether the screen's last line is the shell's continuation prompt: it waits for the next line."""
    return bool(screen.lines) and CONTINUATION_PROMPT.fullmatch(screen.lines[-1]) is not None


def same_user(login: str, shown: str) -> bool:
    """Whether the shell of `shown` (what `id -un` printed) is the account `login` logged in to.

    Directory users are printed with their domain: SSSD prints `alice@corp.example` (with
    `use_fully_qualified_names`) for a login as `alice`, winbind `CORP\\alice`; and a login as
    `alice@corp.example` may show as `alice`. So the names must be equal, or the same user part
    where either side carries a domain, compared without case (directory names are case-insensitive),
    with equal domains where both carry one. Local names are compared exactly.
    """
    if login == shown:
        return True
    login_name, login_domain = _split_domain(login)
    shown_name, shown_domain = _split_domain(shown)
    if login_domain is None and shown_domain is None:
        return False
    if login_domain is not None and shown_domain is not None and login_domain.lower() != shown_domain.lower():
        return False
    return bool(login_name) and login_name.lower() == shown_name.lower()


def _split_domain(name: str) -> tuple[str, str | None]:
    if "\\" in name:
        domain, _, user = name.partition("\\")
        return user, domain
    if "@" in name:
        user, _, domain = name.rpartition("@")
        return user, domain
    return name, None


def heredoc_command(lines: Sequence[Text], *, delimiter: str, nonce: str) -> list[Text]:
    """The exact lines typed to run `lines` with `sh` and print `RCV-<nonce>-<status>` after.

    The leading space keeps the command out of history where HISTCONTROL ignores spaces;
    unsetting HISTFILE keeps it out everywhere else (a script may hold a signed URL). A script of one
    line without a single quote and without a secret (recovery.guest's terse install) is typed as one
    line, `sh -c '<line>'`: no here-document, no delimiter line, nothing to keep out of history, and
    the marker printed by an EXIT trap inside, its nonce typed in two halves so the echo never shows
    it whole. Every proper
    prefix of that line leaves a quote open or runs nothing of the script, so an Enter pressed on a
    line cut short runs nothing; the shell parses the whole line before running any of it.
    """
    if len(lines) == 1 and isinstance(lines[0], str) and "'" not in lines[0]:
        half = len(nonce) // 2
        return [f" sh -c 'trap \"echo RCV-{nonce[:half]}\"\"{nonce[half:]}-\\$?\" 0;{lines[0]}'"]
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
        self._text = TerminalText()
        self._pending = ""  # normalized text not yet consumed by an expectation
        self.typed: list[str] = []  # masked lines we typed, for the report
        self._io_line = ""  # output not yet logged to io_log: the line is not complete
        # True from the moment a shell may be open on the console (the password went, or a shell
        # prompt showed) until one is known not to be: only then has `logout` something to end.
        self.shell_may_be_open = False

    # -- primitives ---------------------------------------------------------------------------

    def send(self, text: Text, *, show: str | None = None) -> None:
        """Type `text`. `show` overrides what the transcript and report record (e.g. "<password>")."""
        self._record(show if show is not None else str(text) if isinstance(text, Secret) else scrub(text))
        self.channel.send(text)

    def _record(self, shown: str) -> None:
        """What is typed, as the transcript and the -vv log show it."""
        self._transcript(f"\n>>> {shown.rstrip()}\n")
        if io_log.isEnabledFor(logging.DEBUG):
            self._log_output("", flush=True)  # the prompt before what is typed at it
            for line in shown.rstrip().splitlines():
                io_log.debug(">>> %s", _visible(line))

    def _receive(self, timeout: float) -> str:
        chunk = self.channel.read(timeout)
        if chunk:
            self._transcript(chunk)
            text, queries = self._text.feed(chunk)
            self._log_output(text)
            for _ in range(queries):
                self.channel.send(_CURSOR_ANSWER)
            self._pending += text
        return chunk

    def _log_output(self, text: str, *, flush: bool = False) -> None:
        """Output to io_log whole lines at a time, so that a secret split across two reads is scrubbed."""
        if not io_log.isEnabledFor(logging.DEBUG):
            return
        *lines, self._io_line = (self._io_line + text).split("\n")
        if flush or len(self._io_line) > _MAX_IO_LINE:
            lines.append(self._io_line)
            self._io_line = ""
        for line in lines:
            if line.strip():
                io_log.debug("<<< %s", _visible(scrub(line)))

    def expect(
        self,
        patterns: Mapping[str, re.Pattern[str]],
        timeout: float,
        *,
        prompts: Mapping[str, re.Pattern[str]] | None = None,
        on_screen: bool = False,
    ) -> tuple[str, re.Match[str]]:
        """Wait until one of `patterns` matches unconsumed output, or one of `prompts` is on screen.

        `patterns` are events, searched anywhere in what has not been consumed; the earliest match
        wins and the output is consumed up to its end. `prompts` must match the whole last line,
        after the console has been quiet for PROMPT_QUIET, and not be a NOT_A_PROMPT line (see
        there); all output is then consumed. With `on_screen`, `patterns` are also searched in the
        whole screen of a console whose screen is read: for markers whose nonce is new, which no
        earlier screen can hold, so a line the screen-to-text conversion missed (a redraw it could
        not align) is still found; all output is then consumed.

        Raises:
            ChannelTimeout: nothing matched in `timeout` seconds (the message shows the screen's tail).
            ChannelClosed: the console went away.
        """
        deadline = time.monotonic() + timeout
        quiet = False
        scanned = 0  # output before this, less _EVENT_REACH, has been searched in vain: linear work
        while True:
            start = max(0, scanned - _EVENT_REACH)
            found = min(
                ((name, match) for name, pattern in patterns.items()
                 if (match := pattern.search(self._pending, start))),
                key=lambda item: item[1].start(),
                default=None,
            )
            if found is not None:
                self._pending = self._pending[found[1].end():]
                return found
            if on_screen and (screen := self.screen()) is not None:
                shown = screen.text
                on = min(((name, match) for name, pattern in patterns.items() if (match := pattern.search(shown))),
                         key=lambda item: item[1].start(), default=None)
                if on is not None:
                    self._pending = ""
                    return on
            scanned = len(self._pending)
            if quiet and prompts:
                last_line = self._pending[self._pending.rfind("\n") + 1:]
                if not NOT_A_PROMPT.match(last_line):
                    for name, pattern in prompts.items():
                        match = pattern.fullmatch(last_line)
                        if match:
                            self._pending = ""
                            return name, match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(
                    f"waited {timeout:.0f} s for {' or '.join([*patterns, *(prompts or ())])} on the console",
                    transcript_tail=self.tail(),
                )
            quiet = not self._receive(min(remaining, PROMPT_QUIET if prompts else 0.5))

    def settle(self, quiet: float = 0.3, limit: float = 3.0) -> None:
        """Read until the console has been quiet for `quiet` seconds (MOTDs, redraws)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self._receive(quiet):
                return

    def tail(self, lines: int = 20) -> list[str]:
        return [scrub(line) for line in self._pending.splitlines()[-lines:]]

    def screen(self) -> ScreenText | None:
        """The console's screen as last read, where it is read (a VNC channel with a font); else None."""
        if not self.channel.has_output:
            return None
        screen: ScreenText | None = getattr(self.channel, "screen", None)
        return screen

    def _last_line_unfinished(self) -> bool:
        """Whether the screen's last line holds something that is no prompt: a command line a cut
        connection left half-typed (or typed whole, never checked) must be dropped with Ctrl-C, never
        entered with the Enter that wakes a console."""
        screen = self.screen()
        return screen is not None and bool(screen.lines) and bool(screen.lines[-1].strip())

    # -- login --------------------------------------------------------------------------------

    def login(self, user: str, password: Secret | None, timeout: float) -> LoginResult:
        """Reach a shell as `user`, whatever state the console is in.

        Handles `login:`, `Password:`, an open shell (checked with `id -un`; another user is
        logged out first, see `same_user`), and a half-typed heredoc left by an interrupted run
        (`> `). `shell_may_be_open` is set the moment a shell may be open, also when this raises.

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
        events = {"login incorrect": LOGIN_INCORRECT}
        prompts = {
            "password prompt": PASSWORD_PROMPT,
            "login prompt": LOGIN_PROMPT,
            "continuation prompt": CONTINUATION_PROMPT,
            "shell prompt": SHELL_PROMPT,
        }
        self._pending = ""
        wakes = 0
        if not isinstance(self.channel, Screen):  # a screen shows its prompt already: an Enter would be an answer
            self.send("\r", show="<Enter>")
            wakes = 1
        sent_user = sent_password = cancelled = False
        logged_out: str | None = None
        # When we last answered a prompt: login may pause (FAILED_LOGIN_PAUSE) before its next one, and
        # an Enter typed to wake it meanwhile would be taken as the next user name.
        answered = -FAILED_LOGIN_PAUSE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout(
                    f"no login or shell prompt on the console within {timeout:.0f} s", transcript_tail=self.tail()
                )
            try:
                name, _ = self.expect(events, min(remaining, WAKE_INTERVAL), prompts=prompts)
            except ChannelTimeout:
                if wakes >= WAKE_ATTEMPTS and not (sent_user or sent_password):
                    raise ChannelTimeout(
                        f"the console printed no prompt after {wakes} presses of Enter; is anything "
                        "running a getty/login on this serial port?",
                        transcript_tail=self.tail(),
                    ) from None
                # Never after the user name: an Enter at the password prompt fails the attempt, and
                # the password would then be typed, visible, while login pauses.
                if not (sent_user or sent_password) and time.monotonic() - answered >= FAILED_LOGIN_PAUSE:
                    if not cancelled and self._last_line_unfinished():
                        self.send("\x03", show="<Ctrl-C>")
                        cancelled = True
                    else:
                        self.send("\r", show="<Enter>")
                    wakes += 1
                continue
            if name == "login incorrect" and not sent_password:
                continue  # the end of an attempt we did not make (a stale prompt we just answered)
            if name == "login incorrect":
                self.shell_may_be_open = False
                raise LoginRejected(
                    f"the console refused the password: it rejected the login for {user!r} (\"Login incorrect\"): "
                    "the console password is wrong, or the user does not exist on this VM. Nothing was typed after it. "
                    "Check RECOVERY_CONSOLE_PASSWORD or --secret console_password=@FILE",
                    transcript_tail=self.tail(),
                )
            if name == "password prompt" and not sent_user:
                # Someone else's (or an interrupted) login is waiting for its password: never type
                # ours into it. An empty answer ends it; login then asks for a user name again.
                self.send("\r", show="<Enter>")
                answered = time.monotonic()
                continue
            if name == "password prompt":
                if sent_password or password is None:
                    self.shell_may_be_open = False
                    raise LoginRejected(
                        f"the console asks for a password for {user!r} "
                        + ("again: the password was not accepted" if sent_password else "but none was given"),
                        transcript_tail=self.tail(),
                    )
                self.shell_may_be_open = True
                self.send(Secret(reveal(password) + "\r", "<password>"), show="<password>")
                sent_password = True
            elif name == "login prompt":
                self.shell_may_be_open = False
                if sent_password:
                    raise LoginRejected(
                        f"the console refused the password: it went back to the login prompt after the password "
                        f"for {user!r}: the password is wrong or the account is locked. Nothing was typed after it.",
                        transcript_tail=self.tail(),
                    )
                self.send(user + "\r")
                sent_user = True
                answered = time.monotonic()
            elif name == "continuation prompt":
                # An interrupted earlier run left a heredoc open: abandon it, it never executed.
                self.shell_may_be_open = True
                self.send("\x03", show="<Ctrl-C>")
                self.send("\r", show="<Enter>")
            else:
                self.shell_may_be_open = True
                if not (sent_password or cancelled) and isinstance(self.channel, Screen):
                    # A shell found open: its line may hold a command a cut connection left unfinished,
                    # which what we type next would complete. Ctrl-C drops it; the next prompt is ours.
                    self.send("\x03", show="<Ctrl-C>")
                    cancelled = True
                    continue
                if sent_password and logged_out is None:
                    # login(1) took our user name and password and started this shell: it is `user`'s. Asking
                    # `id -un` costs a typed command (a second on QEMU's VNC) and can tell nothing more. After
                    # logging another user out it is asked all the same: that shell did not end as expected.
                    return LoginResult(user, already_logged_in=False, logged_out_other_user=None)
                who = self.identity(min(IDENTITY_TIMEOUT, max(deadline - time.monotonic(), 1.0)))
                if same_user(user, who):
                    return LoginResult(who, already_logged_in=not sent_password, logged_out_other_user=logged_out)
                if logged_out is not None:
                    raise LoginRejected(
                        f"logged in as {who!r}, not {user!r}, even after logging {logged_out!r} out (the shell "
                        "stays open and is logged out when the run ends)",
                        transcript_tail=self.tail(),
                    )
                logged_out = who
                self.send("exit\r")
                # Wait for login: itself; the old shell's last prompt may still be on its way.
                self.expect({}, max(deadline - time.monotonic(), 0.1),
                            prompts={"login prompt after logout": LOGIN_PROMPT})
                self.shell_may_be_open = False
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
        self.shell_may_be_open = True  # a user without a password is in a shell now
        if password is not None:
            self.send(Secret(reveal(password) + "\r", "<password>"), show="<password>")
            self.settle(quiet=BLIND_PAUSE)
        return LoginResult(user, already_logged_in=password is None, logged_out_other_user=None)

    def logout(self, timeout: float = 5.0) -> None:
        """Leave the shell, so no shell stays open on the console; nothing to do if none may be open.

        A login shell says `logout` as it ends (bash does); otherwise we wait for the next
        login prompt, which a getty may take a second to print.

        Raises:
            ChannelTimeout: neither came back (the shell may still be open).
        """
        if not self.shell_may_be_open:
            return
        self._pending = ""
        self.send("exit\r")
        if not self.channel.has_output:
            self.settle(quiet=BLIND_PAUSE)
            self.shell_may_be_open = False
            return
        self.expect({"logout": LOGGED_OUT}, timeout, prompts={"login prompt after logout": LOGIN_PROMPT})
        self.shell_may_be_open = False

    def identity(self, timeout: float) -> str:
        """The user of the shell at the console, read from a marker line."""
        nonce = secrets.token_hex(4)
        self.send(f"printf 'RCV-%s-%s\\n' {nonce} \"$(id -un)\"\r")
        _, match = self.expect({"identity marker": re.compile(rf"RCV-{nonce}-(\S+)\n")}, timeout, on_screen=True)
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

        Where the screen is read, each line is typed without its Enter, and the Enter follows only
        once the screen shows the line as typed (`recovery.channels.echo.typed_shown`). A line
        shown otherwise (a key lost or changed on the way) is abandoned with Ctrl-C, with everything
        typed before it (nothing ran: the script runs at its last Enter), and the command is typed
        again, TYPING_ATTEMPTS times in all; then the run stops (GuestCommandError), nothing run.
        """
        self._pending = ""
        command = heredoc_command(lines, delimiter=delimiter, nonce=nonce)
        for line in command:
            self.channel.check_typeable(line)
        checked = self.screen() is not None
        for attempt in range(1, TYPING_ATTEMPTS + 1):
            wrong = self._type(command, checked=checked, overlapped=attempt == 1)  # a retype waits for each piece
            if wrong is None:
                break
            self.send("\x03", show="<Ctrl-C>")  # abandons the line, or the here-document: nothing of it ran
            screen = self.screen()
            shown = scrub(screen.text).splitlines()[-4:] if screen is not None else []
            closed = self._after_ctrl_c(command, delimiter, nonce, timeout)
            if closed is not None:
                if closed.status != _SYNTAX_ERROR:
                    return closed  # every line of it had been shown as typed: it ran once, whole
                # Its marker may stay on the screen: the retype prints another.
                nonce = f"{nonce[:56]}r{attempt}"
                command = heredoc_command(lines, delimiter=delimiter, nonce=nonce)
            if attempt == TYPING_ATTEMPTS:
                raise GuestCommandError(
                    f"the console did not show what was typed ({wrong}) in {TYPING_ATTEMPTS} attempts: keys "
                    "were lost or changed between us and the VM. The command was abandoned with Ctrl-C before "
                    "its Enter: nothing of it ran, and nothing on the VM changed",
                    transcript_tail=shown,
                )
            log.warning("the console did not show what was typed (%s); abandoned it with Ctrl-C, typing it again",
                        wrong)
        if not self.channel.has_output:
            self.settle(quiet=BLIND_PAUSE)
            return CommandResult(status=None, output="")
        return self._status(nonce, timeout)

    def _status(self, nonce: str, timeout: float) -> CommandResult:
        """The status the command's marker prints, and the output before it."""
        marker = re.compile(rf"RCV-{nonce}-(\d+)\n")
        _, match = self.expect({"status marker": marker}, timeout, on_screen=True)
        return CommandResult(status=int(match.group(1)), output=match.string[: match.start()])

    def _after_ctrl_c(
        self, command: Sequence[Text], delimiter: str, nonce: str, timeout: float
    ) -> CommandResult | None:
        """Back to the shell prompt after the Ctrl-C that abandoned a mistyped command: None where the shell took
        the Ctrl-C, else the result of the here-document closed (status 2 when nothing of it ran).

        The terminal drops the line being typed at Ctrl-C, and a shell that gets the interrupt drops an open
        here-document and prompts. A shell Ctrl-C cannot reach prints nothing: one without a controlling
        terminal, such as the kernel's `init=/bin/sh`, and its here-document stays open. An Enter then shows
        which it is: a shell prompt (only the line was open) or the continuation prompt. A here-document is
        then closed with its delimiter: the guest scripts open a `{` on their first line, so the lines typed
        so far, cut short inside it, fail to parse (sh's status 2) and nothing of them runs. Only a script
        whose every line was shown as typed, its delimiter line alone mistyped, runs in full then: its result
        is the run, as if typed once (a status of 2 from it is taken for the parse failure, and the script,
        idempotent as every guest script is, typed again).
        """
        try:
            self.expect({}, CANCEL_QUIET, prompts={"shell prompt": SHELL_PROMPT})
            return None
        except ChannelTimeout:
            log.warning("no prompt after the Ctrl-C: a shell the interrupt cannot reach (no controlling terminal)")
        self.send("\r", show="<Enter>")
        name, _ = self.expect({}, CANCEL_TIMEOUT, prompts={"continuation prompt": CONTINUATION_PROMPT,
                                                           "shell prompt": SHELL_PROMPT})
        if name != "continuation prompt" or len(command) == 1:
            return None
        self.send(delimiter + "\r", show=delimiter)
        closed = self._status(nonce, timeout)
        self.expect({}, CANCEL_TIMEOUT, prompts={"shell prompt": SHELL_PROMPT})
        if closed.status != _SYNTAX_ERROR:
            log.warning("the here-document closed after the Ctrl-C ran its script (every line of it was shown as "
                        "typed; only the delimiter line was not): status %d", closed.status)
        return closed

    def _type(self, command: Sequence[Text], *, checked: bool, overlapped: bool) -> str | None:
        """Type the lines of `command`; with `checked`, each line's Enter only once the screen shows the
        line as typed, piece by piece, each piece checked while the next is typed when `overlapped` (two
        pieces must then fit on the screen at once, between the kernel messages that scroll it), else
        before it. Returns which line was not shown so (its number, masked text), else None."""
        for number, line in enumerate(command, 1):
            shown = str(line) if isinstance(line, Secret) else line
            self.typed.append(shown)
            raw = reveal(line)
            if not checked:
                self.send(Secret(raw + "\r", shown) if isinstance(line, Secret) else raw + "\r", show=shown)
                continue
            self._record(shown)
            seen = 0  # raw[:seen] was seen on the screen as typed
            for start in range(0, len(raw), ECHO_PIECE):
                piece = raw[start:start + ECHO_PIECE]
                self.channel.send(Secret(piece, shown) if isinstance(line, Secret) else piece)
                end = start + len(piece)
                # Overlapped, the piece before this one had this one's typing time to show; the last is waited for.
                low = start if overlapped and end < len(raw) else end
                if low > seen:
                    reached = self._await_echo(raw[:end], low, seen)
                    if reached is None:
                        return f"line {number} of {len(command)}: {shown[:60]}"
                    seen = reached
            self.channel.send("\r")  # the transcript has the line already
            if number < len(command):  # the next line waits for the shell's `> `: typed before it, its echo
                self._await_screen(_continues)  # would come before the prompt
        return None

    def _await_echo(self, typed: str, low: int, seen: int) -> int | None:
        """Read the screen until its echo reaches `low` (`_echo_reached`), for ECHO_TIMEOUT at most; how far
        it got, or None."""
        deadline = time.monotonic() + ECHO_TIMEOUT
        while (screen := self.screen()) is None or (reached := _echo_reached(screen, typed, low, seen)) is None:
            if time.monotonic() >= deadline:
                return None
            self._receive(0.05)
        return reached

    def _await_screen(self, ready: Callable[[ScreenText], bool]) -> bool:
        """Read the screen until `ready` says yes of it, for ECHO_TIMEOUT at most; whether it did."""
        deadline = time.monotonic() + ECHO_TIMEOUT
        while not ((screen := self.screen()) is not None and ready(screen)):
            if time.monotonic() >= deadline:
                return False
            self._receive(0.05)
        return True
