"""Whether a read screen shows a line as it was typed: the check before the Enter that runs it.

A terminal echoes a typed line at its cursor, and the screen keeps it as rows of cells. Reading the
line back from the rows meets three things besides the typed characters:
- A wrapped row: the line goes on on the next row. A row keeps no trailing blanks, so a row that
  ends in blanks may have been full (the line had spaces there) or may have ended early.
- An early break: busybox's line editor counts columns, and after a kernel message moved the
  cursor it breaks its line where its count, not the screen, ends a row.
- A kernel message (`[   12.345678] text`): printk writes it wherever the cursor is, in the middle
  of the line too, and ends it with a newline; the echo goes on on the row after it. A long
  message wraps, and its rows may end in blanks like any other (`... kernel` at the end of a row,
  `noise` on the next).

So the rows are read backwards from the cursor, and at each row boundary there are two readings:
the row before goes on into this one (a wrap or an early break: the typed spaces there may stand
for the blanks the row lost), or a kernel message ended on the row before, and the line goes on
just before that message's timestamp, wherever the message began. The reading that matches the
most typed characters counts. Every other character is compared exactly; a line only matches where
the screen holds every typed character in order, with nothing but kernel messages between them.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recovery.channels.screen import ScreenText

# A kernel message's timestamp, `[   12.345678] `; the message runs from it to the end of its line.
_TIMESTAMP = re.compile(r"\[ {0,16}\d{1,10}\.\d{6}\] ")
# How far back from the end of a row a message that ends there may begin: printk lines are at most
# 1024 characters, plus the timestamp.
_MAX_MESSAGE = 1100


def shows_typed(screen: ScreenText, typed: str) -> bool:
    """Whether the screen ends with the whole of `typed` as a terminal echoes it (see `typed_shown`)."""
    return typed_shown(screen, typed) == len(typed.rstrip())


def typed_shown(screen: ScreenText, typed: str) -> int:
    """How many of the last characters of `typed` (its trailing spaces aside) the screen ends with, as
    a terminal echoes a line typed at its cursor, with kernel messages printed into it: all of them, or
    as many as match before a difference or the screen's top. What precedes the line (the prompt) is
    not compared."""
    whole = typed.rstrip()
    rows = list(screen.rows)
    while rows and not rows[-1]:
        rows.pop()
    if not whole or not rows:
        return 0
    return len(whole) - _Echo(tuple(rows), screen.columns, whole).unmatched()


class _Echo:
    """The backward reading of one screen against one typed line."""

    def __init__(self, rows: tuple[str, ...], columns: int, typed: str) -> None:
        self.rows = rows
        self.columns = max(columns, max(len(row) for row in rows))
        self.typed = typed
        cells = "".join(row.ljust(self.columns) for row in rows)
        self.messages = [found.start() for found in _TIMESTAMP.finditer(cells)]
        self.memo: dict[tuple[int, int], int] = {}

    def unmatched(self) -> int:
        """The fewest typed characters left unmatched over every reading (0: the whole line is shown)."""
        return self._at_row_start(len(self.rows), len(self.typed))

    def _at_row_start(self, row: int, left: int) -> int:
        """Typed characters left, reading on from the start of `row` (len(rows): below the last row) with
        `left` typed characters still to find. Each (row, left) is worked out once: the readings branch at
        every row boundary, and their branches meet again."""
        if left == 0 or row == 0:
            return left
        if (row, left) not in self.memo:
            self.memo[row, left] = self._either_reading(row, left)
        return self.memo[row, left]

    def _either_reading(self, row: int, left: int) -> int:
        before = self.rows[row - 1]
        # The row before goes on into this one; the typed spaces at the break may be its lost blanks.
        best = self._along(row - 1, len(before), len(self.typed[:left].rstrip(" ")))
        # A kernel message ended on the row before: the line goes on just before its timestamp.
        end = row * self.columns
        latest = bisect.bisect_left(self.messages, end) - 1
        if best and latest >= 0 and end - self.messages[latest] <= _MAX_MESSAGE:
            start = self.messages[latest]
            best = min(best, self._along(start // self.columns, start % self.columns, left))
        return best

    def _along(self, row: int, column: int, left: int) -> int:
        """Typed characters left, reading back along `row` from before `column`."""
        cells = self.rows[row].ljust(column)
        while left and column:
            if cells[column - 1] != self.typed[left - 1]:
                return left
            left -= 1
            column -= 1
        return self._at_row_start(row, left) if left else 0
