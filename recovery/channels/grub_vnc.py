"""GRUB on a VNC console: its VGA screen read as rows of text, its cursor found by its blinking.

GRUB's console terminal draws on the VGA screen, which a VNC console shows as pixels: the channel's
glyph reader (`recovery.channels.screen.GlyphReader`) reads them as rows, QEMU's text mode as
`iso01a-8x16 in 9x16 cells`. Its reading is the one used here, not a second reader's: a reader takes
about a second to find the grid of a screen size it has not seen (the firmware's, after the reset),
and no ESC goes out meanwhile: a second reader would double the gap GRUB's countdown must outlast.
GRUB's frame and arrows are box-drawing glyphs the reader does not know: their straight lines read
as blanks, corners and arrows as U+FFFD or the nearest character, and `recovery.channels.grub`
reads the menu and editor from those rows as from its serial screen.

A screen has no cursor position to read, only a cursor to see: VGA's hardware cursor blinks
(QEMU: every 0.27 s). Between two frames whose pixels differ in exactly one cell, that cell is
where the cursor is, whether it just appeared or vanished; the same cell twice in a row confirms
it. Once is not enough: keys still on their way move the cursor after `send` returns (QEMU feeds
them 10 ms an event), so a moving cursor shows for a blink where it passes (recorded: Ctrl-N x9
read at the 8th line, then moved on), and a character typed or an arrow drawn changes one cell
once. A change of more cells (a key that moved it, typing) leaves it unknown until it is confirmed
again. Over a character the visible cursor makes the cell unreadable (U+FFFD): the other frame of
the pair reads the character.

The keys are the serial path's (ESC, Ctrl-N, Ctrl-E, Ctrl-X: GRUB takes the same Emacs keys from
the BIOS keyboard, measured on GRUB 2.06), typed by `VncChannel.send`. From the reset until the
booted system's shell, the guest does not acknowledge keys with its Num Lock light (firmware and
GRUB do not): they go one per barrier, and the booted system is probed again afterwards.

Where no font reads the screen the route is refused: before the reset if the console's screen is
not read at all, after it (the VM reset to boot normally) if GRUB draws in graphics mode (gfxterm
with its own font). Editing GRUB blind is never done: a count of lines edits the wrong one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from recovery.channels.grub import BootLoaderRefused
from recovery.channels.screen import UNKNOWN, Frame, ScreenText
from recovery.safety.redact import Text

__all__ = ["GridScreen", "PixelConsole", "VncTerminal", "changed_cells"]


@runtime_checkable
class PixelConsole(Protocol):
    """What the terminal needs of a VNC channel (`recovery.channels.vnc.VncChannel`)."""

    has_output: bool
    guest_acks: bool
    screen: ScreenText | None  # the screen as last read: a new object at every read; unchanged where unreadable

    def frame(self) -> Frame: ...

    def read(self, timeout: float) -> str: ...

    def send(self, data: Text) -> None: ...

    def probe_guest(self, timeout: float) -> bool: ...


@dataclass(frozen=True)
class GridScreen:
    """Rows of a screen read by glyphs, and the cursor where it was seen (-1 where not)."""

    rows: tuple[str, ...]
    columns: int
    row: int = -1
    column: int = -1

    def lines(self) -> list[str]:
        return [row.ljust(self.columns)[: self.columns] for row in self.rows]

    def text(self) -> str:
        return "\n".join(row.rstrip() for row in self.rows).rstrip()


def changed_cells(before: Frame, after: Frame, columns: int, rows: int, limit: int = 2) -> set[tuple[int, int]] | None:
    """The (row, column) cells of a `columns` x `rows` grid whose pixels differ between two frames, up to
    `limit` of them; None where the frames differ in size (a mode switch: nothing compares)."""
    if (before.width, before.height) != (after.width, after.height) or not columns or not rows:
        return None
    cell_width, cell_height = after.width // columns, after.height // rows
    stride, span = after.width * 4, cell_width * 4
    cells: set[tuple[int, int]] = set()
    for y in range(min(after.height, rows * cell_height)):
        old, new = before.pixels[y * stride:(y + 1) * stride], after.pixels[y * stride:(y + 1) * stride]
        if old == new:
            continue
        for column in range(columns):
            if old[column * span:(column + 1) * span] != new[column * span:(column + 1) * span]:
                cells.add((y // cell_height, column))
                if len(cells) >= limit:
                    return cells
    return cells


class VncTerminal:
    """A `recovery.channels.grub.Terminal` over a VNC console whose screen the glyph reader reads."""

    where = "the VNC console"

    def __init__(self, channel: PixelConsole, transcript: Callable[[str], None]) -> None:
        if not channel.has_output:
            raise BootLoaderRefused(
                "no font we know reads the VNC console's screen, so GRUB's editor could not be read there, and the "
                "boot loader route never edits it blind (a count of lines edits the wrong one). Nothing was "
                "changed. Use the serial console (a ws:// or wss:// URL), or give the console's font in "
                "RECOVERY_SCREEN_FONTS")
        self.channel = channel
        self._transcript = transcript
        self.screen = GridScreen((), 80)
        self._frame: Frame | None = None  # the last frame read, and its text as read
        self._read: ScreenText | None = None
        self._blinked: tuple[int, int] | None = None  # the cell of the last single-cell change
        self.unreadable = False  # the last frame was read by no font
        channel.guest_acks = False  # from the reset on: firmware and GRUB do not answer Num Lock

    def press(self, keys: str) -> None:
        self.channel.send(keys)

    def read(self, timeout: float) -> bool:
        news = self.channel.read(timeout)
        if news:
            self._transcript(news)
        frame, text = self.channel.frame(), self.channel.screen
        if self._frame is not None and frame.pixels != self._frame.pixels and text is self._read:
            self.unreadable = True  # new pixels, and the channel's reader did not read them
            return False
        self.unreadable = False
        if text is None or text is self._read:
            return False
        before = self.screen
        self.screen = self._next(frame, text)
        return self.screen.rows != before.rows

    def _next(self, frame: Frame, text: ScreenText) -> GridScreen:
        """The screen after `frame`: its rows, and the cursor where a blink shows it."""
        previous, previous_text = self._frame, self._read
        self._frame, self._read = frame, text
        cells = (changed_cells(previous, frame, text.columns, len(text.rows))
                 if previous is not None and previous_text is not None and len(previous_text.rows) == len(text.rows)
                 else None)
        if cells is not None and not cells:  # nothing changed: what was seen stands
            return GridScreen(self.screen.rows, text.columns, self.screen.row, self.screen.column)
        if cells is None or len(cells) != 1:
            self._blinked = None
            return GridScreen(text.rows, text.columns)
        (row, column), = cells
        confirmed, self._blinked = self._blinked == (row, column), (row, column)
        assert previous_text is not None
        rows = list(text.rows)
        shown, other = _char(text.rows, row, column), _char(previous_text.rows, row, column)
        if shown == UNKNOWN and other != UNKNOWN:  # the visible cursor over a character: the other frame reads it
            line = rows[row].ljust(column + 1)
            rows[row] = (line[:column] + other + line[column + 1:]).rstrip()
        return GridScreen(tuple(rows), text.columns, *((row, column) if confirmed else (-1, -1)))

    def no_menu(self) -> str:
        if self.unreadable:
            return ("no font we know reads the screen GRUB draws (graphics mode: gfxterm with its own font), so its "
                    "editor cannot be read, and it is never edited blind; use the serial console")
        return ("GRUB's terminal is not the screen (GRUB_TERMINAL=serial), or its menu is hidden with no timeout "
                "(GRUB_TIMEOUT=0): over VNC a key reaches GRUB through the BIOS keyboard, which GRUB's single look "
                "for a key missed in every try under QEMU; such a VM needs its serial console, or a GRUB timeout of "
                "a few seconds (the first ESC after the reset can go out a second late)")

    def handed_over(self, timeout: float) -> bool:
        return self.channel.probe_guest(timeout)


def _char(rows: tuple[str, ...], row: int, column: int) -> str:
    return rows[row][column] if row < len(rows) and column < len(rows[row]) else " "
