"""Before the Enter that runs a typed command, the screen must show it as typed (`shows_typed`); a mistyped
command is abandoned with Ctrl-C and typed again, and never run."""

from __future__ import annotations

import re
import subprocess

import pytest

from recovery.channels.dialogue import ConsoleSession
from recovery.channels.echo import shows_typed
from recovery.channels.screen import ScreenText
from recovery.errors import GuestCommandError
from recovery.safety.redact import Text, reveal

COLUMNS = 40


def screen_of(text: str, columns: int = COLUMNS) -> ScreenText:
    """`text` as a terminal shows it: each line wrapped at `columns`, rows without trailing spaces."""
    rows: list[str] = []
    for line in text.split("\n"):
        rows += [line[i:i + columns] for i in range(0, max(len(line), 1), columns)]
    return ScreenText(tuple(row.rstrip() for row in rows), columns, "test")


TYPED = "echo abcdefghij klm opqrstu vwxyz 0123456789 abcdefghij 0123456789 done"


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (f"boot\n$ {TYPED}", True),
        (f"$ {TYPED}\n", True),  # the cursor on a row of its own
        (f"$ {TYPED.replace('klm', 'kLm')}", False),  # a character changed
        (f"$ {TYPED.replace('klm ', 'klm')}", False),  # a character lost
        (f"$ {TYPED[:-5]}", False),  # not all shown yet
        (f"$ {TYPED[12:]}", False),  # the beginning lost
        # printk wrote over the line where the cursor was; the typed text goes on on the next row
        ("$ echo abcdefghij klm[   12.345678] noise\n opqrstu vwxyz 0123456789 abcdefghij 0123456789 done", True),
        (f"$ {TYPED}[   12.345678] noise\n[   14.345678] more noise\n", True),
        # busybox's line editor breaks a row early after a kernel message moved its cursor
        ("$ echo abcdefghij[   1.000000] x\n klm opqrstu vwxyz\n0123456789 abcdefghij 0123456789 done", True),
    ],
)
def test_shows_typed(shown: str, expected: bool) -> None:
    assert shows_typed(screen_of(shown), TYPED) is expected


def test_spaces_at_a_row_break_are_the_row_s_missing_columns() -> None:
    typed = "x" * 38 + "  yz"  # two spaces at the end of the first row: the row keeps neither
    assert shows_typed(screen_of("$ " + typed), typed)
    assert not shows_typed(ScreenText(("$ " + "x" * 38, "  yz"), COLUMNS, "test"), typed + "!")


class FakeShell:
    """A shell on a read screen: echoes keys, runs a line at Enter (printing its marker), drops it at Ctrl-C.
    `lose` drops that character of the first `lose_times` lines typed: a key lost on the way."""

    has_output = True

    def __init__(self, lose: str = "", lose_times: int = 0) -> None:
        self.text = self.unread = "$ "
        self.line = ""
        self.ran: list[str] = []
        self.lose, self.lose_times = lose, lose_times
        self.screen = screen_of(self.text)

    def check_typeable(self, data: Text) -> None:
        pass

    def send(self, data: Text) -> None:
        before = len(self.text)
        for char in reveal(data):
            if char == "\r":
                self.ran.append(self.line)
                status = re.search(r'"echo RCV-(\w+)""(\w+)-', self.line)
                self.text += "\n" + (f"RCV-{status[1]}{status[2]}-0\n" if status else "") + "$ "
                self.line = ""
            elif char == "\x03":
                self.text += "^C\n$ "
                self.line = ""
            elif char == self.lose and self.lose_times:
                self.lose_times -= 1
            else:
                self.line += char
                self.text += char
        self.screen = screen_of(self.text)
        self.unread += self.text[before:]

    def read(self, timeout: float) -> str:
        text, self.unread = self.unread, ""
        return text

    def close(self) -> None:
        pass


def run(shell: FakeShell) -> int | None:
    session = ConsoleSession(shell)
    return session.run_script(["echo one;echo two"], delimiter="X", nonce="abcd1234", timeout=5).status


def test_a_command_shown_as_typed_is_entered_once() -> None:
    shell = FakeShell()
    assert run(shell) == 0
    assert len(shell.ran) == 1
    assert shell.ran[0].endswith("echo one;echo two'")


def test_a_mistyped_command_is_abandoned_and_typed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recovery.channels.dialogue.ECHO_TIMEOUT", 0.2)
    shell = FakeShell(lose=";", lose_times=1)
    assert run(shell) == 0
    assert len(shell.ran) == 1, "only the command shown right was entered"
    assert "^C" in shell.text


def test_a_command_mistyped_every_time_is_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recovery.channels.dialogue.ECHO_TIMEOUT", 0.2)
    shell = FakeShell(lose=";", lose_times=99)
    with pytest.raises(GuestCommandError, match=r"did not show what was typed .* nothing of it ran"):
        run(shell)
    assert shell.ran == []
    assert shell.text.count("^C") == 2


def small_screen(rows: int, lose: str = "", lose_times: int = 0) -> FakeShell:
    """A small screen that keeps scrolling: only its last `rows` rows are seen."""

    class SmallScreen(FakeShell):
        def send(self, data: Text) -> None:
            super().send(data)
            self.screen = ScreenText(self.screen.rows[-rows:], COLUMNS, "test")

    return SmallScreen(lose, lose_times)


SCRIPT = ";".join(f"echo {number:03}" for number in range(40))  # 359 characters


@pytest.mark.parametrize("rows", [4, 6])
def test_a_long_line_is_checked_piece_by_piece_as_its_beginning_scrolls_off(
    monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The whole line is never on the screen at once, every piece of it was; a key lost in a piece long gone
    from the screen by the end is still seen."""
    monkeypatch.setattr("recovery.channels.dialogue.ECHO_TIMEOUT", 0.2)
    shell = small_screen(rows)
    assert ConsoleSession(shell).run_script([SCRIPT], delimiter="X", nonce="abcd1234", timeout=5).status == 0
    assert len(shell.ran) == 1
    assert shell.ran[0].endswith(f"{SCRIPT}'")
    shell = small_screen(rows, lose="7", lose_times=2)
    with pytest.raises(GuestCommandError):
        ConsoleSession(shell).run_script([SCRIPT], delimiter="X", nonce="abcd1234", timeout=5)
    assert shell.ran == []


def test_each_piece_is_checked_while_the_next_is_typed_where_two_fit_on_the_screen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six rows of 40 hold two pieces and the overlap: typed once. Four do not: the first attempt cannot
    check it, and the retype waits for each piece to show before the next."""
    monkeypatch.setattr("recovery.channels.dialogue.ECHO_TIMEOUT", 0.2)
    for rows, cancelled in ((6, 0), (4, 1)):
        shell = small_screen(rows)
        ConsoleSession(shell).run_script([SCRIPT], delimiter="X", nonce="abcd1234", timeout=5)
        assert shell.text.count("^C") == cancelled, f"{rows} rows"


def test_the_marker_is_found_on_the_screen_when_the_text_stream_missed_it() -> None:
    """A redraw the screen-to-text conversion could not align once lost the marker line, and the run waited
    for it 120 s: a marker (its nonce new) is also looked for on the whole screen."""

    class Unaligned(FakeShell):
        def read(self, timeout: float) -> str:
            self.unread = ""
            return ""  # nothing new as far as the text stream can tell

    shell = Unaligned()
    assert ConsoleSession(shell).run_script(["echo one"], delimiter="X", nonce="abcd1234", timeout=5).status == 0


class ShellWithoutTerminal(FakeShell):
    """The kernel's `init=/bin/sh` on a read screen: no controlling terminal, so Ctrl-C only drops the line
    being typed (the terminal echoes `^C`; no prompt follows, an open here-document stays open). A
    here-document's body runs under the real /bin/sh when its delimiter arrives, then the opening line's
    marker prints the status. `garbled` is the number of the line (counting every Enter) whose first
    character is lost, once."""

    def __init__(self, garbled: int) -> None:
        super().__init__()
        self.text = self.unread = "# "
        self.screen = screen_of(self.text)
        self.garbled, self.lines = garbled, 0
        self.body: list[str] | None = None
        self.opening = ""
        self.outputs: list[str] = []

    def send(self, data: Text) -> None:
        before = len(self.text)
        for char in reveal(data):
            if char == "\r":
                self._enter()
            elif char == "\x03":
                self.text += "^C"
                self.line = ""
            elif not self.line and self.lines + 1 == self.garbled:
                self.garbled = 0
            else:
                self.line += char
                self.text += char
        self.screen = screen_of(self.text)
        self.unread += self.text[before:]

    def _enter(self) -> None:
        line, self.line = self.line, ""
        self.lines += 1
        self.text += "\n"
        if self.body is None:
            if "<<'X'" in line:
                self.opening, self.body = line, []
                self.text += "> "
            else:
                self.text += "# "
        elif line != "X":
            self.body.append(line)
            self.text += "> "
        else:
            done = subprocess.run(["/bin/sh"], input="".join(f"{body}\n" for body in self.body), text=True,
                                  capture_output=True, check=False, timeout=10)
            self.outputs.append(done.stdout)
            nonce = re.search(r"printf 'RCV-%s-%s\\n' (\S+)", self.opening)
            assert nonce is not None
            self.text += f"{done.stdout}{done.stderr}RCV-{nonce[1]}-{done.returncode}\n# "
            self.body = None


BRACED = ["{", "echo one", "echo two", "}"]  # as every guest script: its first line opens a group


def run_without_terminal(shell: ShellWithoutTerminal, monkeypatch: pytest.MonkeyPatch) -> int | None:
    monkeypatch.setattr("recovery.channels.dialogue.ECHO_TIMEOUT", 0.2)
    monkeypatch.setattr("recovery.channels.dialogue.CANCEL_QUIET", 0.2)
    return ConsoleSession(shell).run_script(BRACED, delimiter="X", nonce="abcd1234", timeout=5).status


def test_where_ctrl_c_reaches_no_shell_the_open_script_is_closed_unparsable_and_typed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell = ShellWithoutTerminal(garbled=4)  # "echo two": "one" was entered already

    assert run_without_terminal(shell, monkeypatch) == 0
    assert shell.outputs == ["", "one\ntwo\n"], "the script cut short ran nothing; the retype ran whole"
    assert "RCV-abcd1234-2" in shell.text  # the cut script's parse failure, with the first marker's nonce


def test_where_only_the_delimiter_was_mistyped_the_closed_script_is_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = ShellWithoutTerminal(garbled=6)  # the delimiter line: every line of the script was entered

    assert run_without_terminal(shell, monkeypatch) == 0
    assert shell.outputs == ["one\ntwo\n"], "run once, not typed again"


def test_where_ctrl_c_reaches_no_shell_a_mistyped_first_line_leaves_nothing_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell = ShellWithoutTerminal(garbled=1)

    assert run_without_terminal(shell, monkeypatch) == 0
    assert shell.outputs == ["one\ntwo\n"]
