"""GRUB on a console: stop it at power-on, read its menu and editor, add a kernel argument.

GRUB's serial terminal draws full screens with cursor addressing (`ESC[row;colH`), not lines of
text, so what it shows is only known by replaying its output on a screen (`Screen`, the few VT100
sequences GRUB's terminfo sends). The editor is then read like a person reads it: the entry's
lines inside the box, a line longer than the box continued on the next row after a `\\` in the
border column, and the cursor's row. The kernel line is found by its text (`linux`, `linuxefi`,
`linux16`), and the cursor is moved onto it one line at a time, reading the screen after each
key, never by counting lines blindly: entries differ (`insmod`, `search`, `echo 'Loading Linux'`
lines), and a count that is off by one edits the `initrd` line instead.

The keys are GRUB's Emacs-like control keys (Ctrl-N, Ctrl-P, Ctrl-E, Ctrl-X), one byte each:
the arrow keys are escape sequences, and an ESC that arrives alone in the editor discards the
edits and returns to the menu. The edit is never saved: GRUB boots the edited entry once.

Where the route cannot work it is refused, with what was seen: a GRUB password (`Enter
username:`), a GRUB that never shows up on the serial port (its terminal is the screen only), or
an entry without a kernel line.

The same reading serves a VNC console (`recovery.channels.grub_vnc`): there GRUB draws on the VGA
screen, read as rows of text by the glyph reader, its box and arrows in glyphs the reader may not
know (U+FFFD, or the nearest character). Both consoles are a `Terminal`: keys in, a `GrubScreen` out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from recovery.channels import Channel
from recovery.errors import ChannelError

__all__ = [
    "CTRL_E",
    "CTRL_N",
    "CTRL_P",
    "CTRL_X",
    "ESC",
    "BootLoaderRefused",
    "Editor",
    "GrubConsole",
    "GrubScreen",
    "Menu",
    "Screen",
    "SerialTerminal",
    "Terminal",
    "read_editor",
    "read_menu",
]

ESC = "\x1b"
CTRL_N = "\x0e"  # next line
CTRL_P = "\x10"  # previous line
CTRL_E = "\x05"  # end of line
CTRL_X = "\x18"  # boot the edited entry

KERNEL_COMMANDS = frozenset({"linux", "linuxefi", "linux16"})
PASSWORD_PROMPT = re.compile(r"Enter username:")
ESC_INTERVAL = 0.2  # seconds between ESCs from power-on: a hidden menu with timeout=0 looks for one once
KEY_ECHO = 3.0  # seconds for GRUB to redraw after a key that moves the cursor
QUIET = 0.3  # seconds without output after which the screen is taken as drawn


class BootLoaderRefused(ChannelError):
    """The boot loader route cannot work on this VM (a GRUB password, no GRUB on the serial port...)."""


class GrubScreen(Protocol):
    """A screen as the menu and editor readers see it: rows of text and the cursor (-1 where unknown)."""

    @property
    def columns(self) -> int: ...

    @property
    def row(self) -> int: ...

    @property
    def column(self) -> int: ...

    def lines(self) -> list[str]:
        """Every row, padded to `columns`."""
        ...

    def text(self) -> str:
        """The screen for messages."""
        ...


class Terminal(Protocol):
    """The console GRUB is driven through: keys go in, its screen is read."""

    where: str  # "the serial console", for messages

    @property
    def screen(self) -> GrubScreen: ...

    def press(self, keys: str) -> None:
        """Send `keys` (characters and control characters)."""

    def read(self, timeout: float) -> bool:
        """Take what the console shows within `timeout` seconds; whether the screen's text changed."""
        ...

    def no_menu(self) -> str:
        """Why GRUB's menu may not have shown, for the message after ESC from power-on did not stop it."""
        ...

    def handed_over(self, timeout: float) -> bool | None:
        """The edited entry booted: the console is the booted system's again (for what types at it next).
        Whether that system acknowledges keys (VNC), None where nothing asks (serial)."""
        ...


# A CSI sequence, another escape, a control character that moves the cursor, or a run of text.
_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([ -/]*)([@-~])|\x1b.|([\r\n\b])|([^\x1b\r\n\b]+)", re.S)
_PARTIAL = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*)?\Z")


class Screen:
    """A terminal screen that GRUB's serial output is replayed on; chunks may end anywhere."""

    def __init__(self, rows: int = 24, columns: int = 80) -> None:
        self.rows, self.columns = rows, columns
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = self.column = 0
        self._held = ""  # an escape sequence cut short, completed by the next chunk

    def feed(self, chunk: str) -> None:
        data = self._held + chunk
        partial = _PARTIAL.search(data[-64:]) if "\x1b" in data[-64:] else None
        cut = len(data) - (len(partial.group(0)) if partial else 0)
        self._held = data[cut:]
        for found in _TOKEN.finditer(data[:cut]):
            final, control, run = found.group(3), found.group(4), found.group(5)
            if final:
                self._control(found.group(1), final)
            elif control:
                self._put_control(control)
            elif run:
                self._put_text(run)
            # any other escape (ESC 7, ESC =) moves nothing GRUB's screen needs

    def _put_control(self, char: str) -> None:
        if char == "\r":
            self.column = 0
        elif char == "\n":
            self._line_feed()
        else:  # backspace
            self.column = max(0, self.column - 1)

    def _put_text(self, run: str) -> None:
        text = run if run.isprintable() else "".join(char for char in run if char.isprintable())
        while text:
            if self.column >= self.columns:  # the character past the last column goes to the next row
                self.column = 0
                self._line_feed()
            piece = text[: self.columns - self.column]
            self.cells[self.row][self.column: self.column + len(piece)] = list(piece)
            self.column += len(piece)
            text = text[len(piece):]

    def _line_feed(self) -> None:
        if self.row == self.rows - 1:
            self.cells = [*self.cells[1:], [" "] * self.columns]
        else:
            self.row += 1

    def _control(self, parameters: str, final: str) -> None:
        numbers = [int(part) if part.isdigit() else 0 for part in parameters.lstrip("?").split(";")]
        first = numbers[0] if numbers else 0
        if final in "Hf":
            row = numbers[0] if numbers and numbers[0] else 1
            column = numbers[1] if len(numbers) > 1 and numbers[1] else 1
            self.row, self.column = min(row, self.rows) - 1, min(column, self.columns) - 1
        elif final == "J":
            if first == 2:
                self._clear(0, self.rows)
            elif first == 0:
                self.cells[self.row][self.column:] = [" "] * (self.columns - self.column)
                self._clear(self.row + 1, self.rows)
        elif final == "K":
            if first == 0:
                self.cells[self.row][self.column:] = [" "] * (self.columns - self.column)
            elif first == 2:
                self.cells[self.row] = [" "] * self.columns
        elif final == "A":
            self.row = max(0, self.row - max(first, 1))
        elif final == "B":
            self.row = min(self.rows - 1, self.row + max(first, 1))
        elif final == "C":
            self.column = min(self.columns - 1, self.column + max(first, 1))
        elif final == "D":
            self.column = max(0, self.column - max(first, 1))
        # colours and attributes (m), cursor visibility (?25h/l): nothing to read in them

    def _clear(self, start: int, end: int) -> None:
        for row in range(start, end):
            self.cells[row] = [" "] * self.columns

    def lines(self) -> list[str]:
        return ["".join(row) for row in self.cells]

    def text(self) -> str:
        """The screen as text, trailing blanks and empty rows at the end dropped (for messages)."""
        return "\n".join(line.rstrip() for line in self.lines()).rstrip()


@dataclass(frozen=True)
class Box:
    """GRUB's frame: the rows of its top and bottom borders and the columns of its sides."""

    top: int
    bottom: int
    left: int
    right: int


# GRUB's terminfo draws the frame in ASCII (`+----+`); on a VGA screen it is box-drawing glyphs, whose
# straight lines a glyph reader takes for blanks and whose corners it does not know (U+FFFD): a border
# row there is two corners and nothing else.
_BORDER = re.compile(r"\+-{20,}\+|^ *([+\ufffd]) {20,}[+\ufffd] *$")


def _box(screen: GrubScreen) -> Box | None:
    borders = [(row, found) for row, line in enumerate(screen.lines()) if (found := _BORDER.search(line))]
    if len(borders) < 2:
        return None
    (top, first), (bottom, _) = borders[0], borders[1]
    if bottom - top < 2:
        return None
    left = first.start(1) if first.group(1) else first.start()
    return Box(top, bottom, left, len(first.group(0).rstrip()) - 1 if first.group(1) else first.end() - 1)


@dataclass(frozen=True)
class Menu:
    """GRUB's menu as shown: the visible entries and the highlighted one (GRUB marks it with `*`)."""

    entries: tuple[str, ...]
    selected: int | None


def read_menu(screen: GrubScreen) -> Menu | None:
    """The menu on `screen`, or None where the screen shows no GRUB menu (or shows the editor)."""
    lines = screen.lines()
    box = _box(screen)
    if box is None or not any("GNU GRUB" in line for line in lines[: box.top]) or read_editor(screen):
        return None
    entries: list[str] = []
    selected = None
    for row in range(box.top + 1, box.bottom):
        content = lines[row][box.left + 1: box.right].rstrip()
        if not content.strip():
            continue
        if content.startswith("*"):
            selected = len(entries)
        entries.append(content[1:].strip())
    return Menu(tuple(entries), selected) if entries else None


@dataclass(frozen=True)
class Editor:
    """GRUB's entry editor as shown: its logical lines, and where the cursor is.

    `lines` are the visible logical lines (a wrapped line joined again, without the `\\` marks);
    `cursor` indexes them; `more_above`/`more_below` say the entry scrolls past the box.
    """

    lines: tuple[str, ...]
    cursor: int | None
    more_above: bool
    more_below: bool

    def kernel_lines(self) -> list[int]:
        """Indexes of the lines that load a kernel, by their first word."""
        return [index for index, line in enumerate(self.lines)
                if line.split(maxsplit=1)[:1] and line.split(maxsplit=1)[0] in KERNEL_COMMANDS]


def read_editor(screen: GrubScreen) -> Editor | None:
    """The entry editor on `screen`, or None. GRUB 2's editor always opens on `setparams 'TITLE'`,
    in every language; the help under the box says Ctrl-x in English."""
    box = _box(screen)
    if box is None:
        return None
    lines = screen.lines()
    below = " ".join(lines[box.bottom + 1:])
    rows = range(box.top + 1, box.bottom)
    contents = [lines[row][box.left + 1: box.right] for row in rows]
    if not ("Ctrl-x" in below or any(content.lstrip().startswith("setparams ") for content in contents)):
        return None
    logical: list[str] = []
    row_line: dict[int, int] = {}
    current = ""
    continued = False
    for row, content in zip(rows, contents, strict=True):
        # GRUB keeps the box's last column for the `\\` that says the line goes on below.
        wraps = content.endswith("\\")
        row_line[row] = len(logical)
        piece = content[:-1] if wraps else content
        current = current + piece if continued else piece
        continued = wraps
        if not wraps:
            logical.append(current.rstrip())
            current = ""
    if continued:
        logical.append(current.rstrip())
    # The editor leaves the cursor on the character it edits, inside the box.
    inside = box.top < screen.row < box.bottom and box.left < screen.column < box.right
    cursor = row_line.get(screen.row) if inside else None
    # The arrows beside the box: `^` and `v` on serial, `↑` and `↓` on VGA (which a reader may not know).
    scroll_column = box.right + 1
    return Editor(
        lines=tuple(logical), cursor=cursor,
        more_above=scroll_column < screen.columns and lines[box.top + 1][scroll_column] != " ",
        more_below=scroll_column < screen.columns and lines[box.bottom - 1][scroll_column] != " ",
    )


class SerialTerminal:
    """A serial console: every byte read is replayed on a `Screen` and passed to `transcript`."""

    where = "the serial console"

    def __init__(self, channel: Channel, transcript: Callable[[str], None]) -> None:
        self.channel = channel
        self.screen = Screen()
        self._transcript = transcript

    def press(self, keys: str) -> None:
        self.channel.send(keys)

    def read(self, timeout: float) -> bool:
        chunk = self.channel.read(timeout)
        if chunk:
            self._transcript(chunk)
            self.screen.feed(chunk)
        return bool(chunk)

    def no_menu(self) -> str:
        return "GRUB's terminal is not the serial port (the VM's GRUB_TERMINAL has no `serial`)"

    def handed_over(self, timeout: float) -> bool | None:
        return None  # a serial console types the same for every system


def terminal_for(channel: Channel, transcript: Callable[[str], None]) -> Terminal:
    """The serial terminal, or for a console that shows pixels (VNC) its screen read by glyphs."""
    from recovery.channels import Screen as Pixels
    from recovery.channels.grub_vnc import PixelConsole, VncTerminal

    if isinstance(channel, PixelConsole):
        return VncTerminal(channel, transcript)
    if isinstance(channel, Pixels):
        raise BootLoaderRefused("this console shows pixels but gives no frames to read: GRUB's editor cannot be "
                                "read there, and is never edited blind; nothing was changed")
    return SerialTerminal(channel, transcript)


class GrubConsole:
    """GRUB driven over a console `Channel`; what it shows goes to `transcript` (the journal's console
    transcript)."""

    def __init__(self, channel: Channel, transcript: Callable[[str], None] = lambda text: None) -> None:
        self.terminal = terminal_for(channel, transcript)
        self._transcript = transcript
        self.keys: list[str] = []  # what was pressed, for the report

    @property
    def screen(self) -> GrubScreen:
        return self.terminal.screen

    def press(self, keys: str, shown: str) -> None:
        self._transcript(f"\n>>> {shown}\n")
        self.keys.append(shown)
        self.terminal.press(keys)

    def _read(self, timeout: float) -> bool:
        return self.terminal.read(timeout)

    def settle(self, timeout: float) -> None:
        """Read until the screen has been quiet for QUIET seconds (GRUB finished drawing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._read(min(QUIET, max(deadline - time.monotonic(), 0.01))):
                return

    def _refuse_password(self) -> None:
        if PASSWORD_PROMPT.search(self.screen.text()):
            self.press("\x03", "<Ctrl-C>")  # leave the prompt; nothing was typed into it
            raise BootLoaderRefused(
                "GRUB asks for a user name and password (`Enter username:`): its menu entries are protected "
                "(set superusers / password_pbkdf2), so the boot loader route cannot edit the kernel line. Use "
                "the guest agent or rescue mode instead; nothing was changed on the VM, which now waits in GRUB "
                "and boots normally on the next reset")

    def stop(self, timeout: float, after: str = "the reset") -> Menu:
        """Press ESC every ESC_INTERVAL from power-on until GRUB's menu is on the screen.

        A hidden menu with `timeout=0` looks for a key once, in a moment: only a key that is already
        waiting then stops it, so the ESCs start before GRUB does.
        """
        deadline = time.monotonic() + timeout
        last = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise BootLoaderRefused(
                    f"GRUB's menu did not appear on {self.terminal.where} within {timeout:.0f} s of {after}, "
                    f"although ESC was pressed from power-on: {self.terminal.no_menu()}, or the VM does not boot "
                    f"with GRUB. The screen ends: {self.screen.text()[-400:]!r}")
            if now - last >= ESC_INTERVAL:
                self.terminal.press(ESC)  # not in the transcript: dozens of them
                last = now
            self._read(ESC_INTERVAL / 2)
            self._refuse_password()
            menu = read_menu(self.screen)
            if menu is not None:
                self._transcript(f"\n>>> <ESC every {ESC_INTERVAL} s from power-on>\n")
                self.keys.append("<ESC> (from power-on until the menu showed)")
                self.settle(2.0)  # the ESCs still queued reach a menu that ignores them
                return read_menu(self.screen) or menu

    def edit(self, timeout: float) -> Editor:
        """Open the editor on the highlighted entry (the one that boots by default)."""
        self.press("e", "e")
        deadline = time.monotonic() + timeout
        while True:
            self.settle(min(2.0, max(deadline - time.monotonic(), 0.1)))
            self._refuse_password()
            editor = read_editor(self.screen)
            if editor is not None and editor.cursor is not None:
                return editor
            if time.monotonic() >= deadline:
                raise ChannelError(
                    f"GRUB's editor did not open after `e` within {timeout:.0f} s; the screen shows: "
                    f"{self.screen.text()[-400:]!r}")

    def append_to_kernel_line(self, argument: str, timeout: float) -> tuple[str, str]:
        """Move to the kernel line by reading the editor, append ` argument`, and read it back.

        Returns the line before and after. Raises BootLoaderRefused where the entry has no kernel
        line or several, and ChannelError where the screen does not show what was typed.
        """
        deadline = time.monotonic() + timeout
        editor = self._editor(deadline)
        for _ in range(200):  # an entry of a few hundred lines is not a boot entry
            targets = editor.kernel_lines()
            if len(targets) > 1:
                raise BootLoaderRefused(
                    "the GRUB entry has several kernel lines: " + "; ".join(editor.lines[i] for i in targets)
                    + ". Which one boots is not clear, so none is edited")
            if editor.cursor is not None and targets and editor.cursor == targets[0]:
                break
            if targets and editor.cursor is not None:
                # The distance read off the screen, then read again: the screen, not the count, decides.
                distance = targets[0] - editor.cursor
                key, name = (CTRL_N, "<Ctrl-N>") if distance > 0 else (CTRL_P, "<Ctrl-P>")
                self.press(key * abs(distance), f"{name} x{abs(distance)}")
            elif editor.more_below:
                self.press(CTRL_N, "<Ctrl-N>")
            else:
                raise BootLoaderRefused(
                    "the GRUB entry has no kernel line (linux, linuxefi or linux16); its lines: "
                    + " | ".join(line.strip() for line in editor.lines if line.strip()))
            editor = self._editor(deadline, moved_from=editor)
        else:
            raise ChannelError("the cursor did not reach GRUB's kernel line after 200 moves")
        assert editor.cursor is not None
        before = editor.lines[editor.cursor]
        self.press(CTRL_E, "<Ctrl-E>")
        self.press(f" {argument}", f" {argument}")
        expected = f"{before} {argument}"
        while True:
            self.settle(min(1.0, max(deadline - time.monotonic(), 0.1)))
            editor = read_editor(self.screen) or editor
            now = editor.lines[editor.cursor] if editor.cursor is not None else ""
            if now == expected:
                return before, now
            if time.monotonic() >= deadline:
                raise ChannelError(
                    f"GRUB's editor does not show the kernel line as typed: expected {expected!r}, it shows "
                    f"{now!r}. Nothing was booted; the edit is not saved")

    def _editor(self, deadline: float, moved_from: Editor | None = None) -> Editor:
        """The editor once GRUB has redrawn it: after a key, until it differs from `moved_from` or
        KEY_ECHO seconds passed (a key that moves nothing, Ctrl-N on the last line, changes nothing)."""
        waited_until = min(deadline, time.monotonic() + KEY_ECHO)
        while True:
            self.settle(min(1.0, max(deadline - time.monotonic(), 0.1)))
            editor = read_editor(self.screen)
            readable = editor is not None and editor.cursor is not None
            if readable and (moved_from is None or editor != moved_from or time.monotonic() >= waited_until):
                assert editor is not None
                return editor
            if time.monotonic() >= deadline:
                raise ChannelError(f"GRUB's editor is not on the screen any more: {self.screen.text()[-400:]!r}")

    def boot(self) -> None:
        """Boot the edited entry (Ctrl-X); GRUB does not save the edit."""
        self.press(CTRL_X, "<Ctrl-X>")

    def handed_over(self, timeout: float) -> bool | None:
        """The edited entry booted to its shell: the console types for that system from now on; whether
        it acknowledges keys (VNC: typing goes faster), None on a serial console."""
        return self.terminal.handed_over(timeout)
