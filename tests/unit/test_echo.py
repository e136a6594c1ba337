"""The echo check against a model of the terminal it reads: wrapped rows that keep no trailing blanks,
busybox's line editor breaking its rows by its own count, and kernel messages printed at the cursor,
anywhere in the line, wrapping like any text. Every place a message can land is tried."""

from __future__ import annotations

import pytest

from recovery.channels.echo import shows_typed, typed_shown
from recovery.channels.screen import ScreenText

COLUMNS = 80
PROMPT = "~ $ "
# The terse install as the VNC playbook types it (recovery.guest), a key and nonces of a real run.
TYPED = (
    " sh -c 'n=3d92a73d;trap \"echo RCV-\\$n-\\$?\" 0;k=\"ssh-ed25519 "
    "AAAAC3NzaC1lZDI1NTE5AAAAIO3gb86+IArZBemNusUReQFNf80PuIku/DobFNWWb1hn recovery-20261206T131818Z-e90593\";"
    "c=u;h=$(echo \"$k\"|sha256sum)&&case $h in 47d28f1e*)c=v;;*)exit 15;esac;cd||exit 10;umask 077;d=0;"
    "[ -d .ssh ]||{ mkdir .ssh||exit 10;d=1;};a=.ssh/authorized_keys;b=-;[ -e $a ]&&"
    "{ b=~/$a.recovery-20261206T131818Z-e90593;[ -e \"$b\" ]||cp -p $a \"$b\"||exit 17;};l=0;[ -s $a ]&&"
    "[ -n \"$(tail -c1 $a)\" ]&&{ echo>>$a||exit 18;l=1;};p=0;grep -sqxF \"$k\" $a||{ echo \"$k\">>$a&&"
    "grep -qxF \"$k\" $a||exit 18;p=1;};chmod 700 .ssh&&chmod 600 $a||exit 19;/sbin/restorecon -R .ssh 2>&-;"
    "echo RCV-$n facts=$d$c$l$p \"$b\"'"
)
# Real messages of the test VM, and ones whose words end exactly at a row's last column from some offsets.
MESSAGES = ("[   16.702811] recovery-test: kernel noise", "[    8.661024] random: crng init done",
            "[  123.456789] EXT4-fs (vda): mounted filesystem with ordered data mode. Quota mode: none.")


class Terminal:
    """A VT's cells: a character at the last column leaves the cursor pending (the next one wraps);
    a newline is CR LF, as the tty and printk send it."""

    def __init__(self, rows: int | None = None) -> None:
        self.cells: list[list[str]] = [[]]
        self.column = 0
        self.pending = False
        self.height = rows

    def write(self, text: str) -> None:
        for char in text:
            if char == "\n":
                self.cells.append([])
                self.column, self.pending = 0, False
                continue
            if self.pending:
                self.cells.append([])
                self.column, self.pending = 0, False
            row = self.cells[-1]
            row.extend(" " * (self.column + 1 - len(row)))
            row[self.column] = char
            if self.column == COLUMNS - 1:
                self.pending = True
            else:
                self.column += 1

    def screen(self) -> ScreenText:
        rows = ["".join(row).rstrip() for row in self.cells]
        return ScreenText(tuple(rows[-self.height:] if self.height else rows), COLUMNS, "test")


def echoed(typed: str, messages: dict[int, str], *, rows: int | None = None) -> ScreenText:
    """The screen after `typed` was typed at busybox's prompt, with each message printed before the typed
    character at its offset. busybox counts columns from its prompt and starts a new row at each multiple
    of the width: invisible on a screen nobody wrote over, an early break after a kernel message."""
    terminal = Terminal(rows)
    terminal.write("boot\n" + PROMPT)
    count = len(PROMPT)
    for offset, char in enumerate(typed):
        if offset in messages:
            terminal.write(messages[offset] + "\n")
        terminal.write(char)
        count += 1
        if count % COLUMNS == 0:
            terminal.write("\n")
    if len(typed) in messages:
        terminal.write(messages[len(typed)] + "\n")
    return terminal.screen()


@pytest.mark.parametrize("message", MESSAGES)
def test_a_kernel_message_anywhere_in_the_line(message: str) -> None:
    for offset in range(len(TYPED) + 1):
        assert shows_typed(echoed(TYPED, {offset: message}), TYPED), f"message before character {offset}"


def test_two_kernel_messages_anywhere_in_the_line() -> None:
    for first in range(0, len(TYPED), 7):
        for gap in (1, 40, 79, 80, 81, 200):
            messages = {first: MESSAGES[0], first + gap: MESSAGES[2]}
            assert shows_typed(echoed(TYPED, messages), TYPED), f"messages before {first} and {first + gap}"


def test_a_changed_character_is_seen_wherever_a_message_lands() -> None:
    for changed in (5, 80, 300, len(TYPED) - 2):
        wrong = TYPED[:changed] + ("x" if TYPED[changed] != "x" else "y") + TYPED[changed + 1:]
        for offset in range(0, len(TYPED) + 1, 3):
            screen = echoed(wrong, {offset: MESSAGES[0]})
            assert not shows_typed(screen, TYPED), f"changed {changed}, message before {offset}"
            assert typed_shown(screen, TYPED) == len(TYPED) - changed - 1


def test_a_lost_character_is_seen_wherever_a_message_lands() -> None:
    lost = TYPED[:400] + TYPED[401:]
    for offset in range(0, len(TYPED), 5):
        assert not shows_typed(echoed(lost, {offset: MESSAGES[0]}), TYPED), f"message before {offset}"


def test_on_a_screen_that_scrolled_the_last_rows_still_show_the_end() -> None:
    for offset in range(0, len(TYPED), 11):
        screen = echoed(TYPED, {offset: MESSAGES[0]}, rows=4)  # a message takes at most one row of the four
        shown = sum(len(row) for row in screen.rows) - len(MESSAGES[0])
        assert shown <= typed_shown(screen, TYPED) < len(TYPED)


def test_the_real_screens_that_were_abandoned_as_mistyped() -> None:
    """Rows read from a QEMU VGA console (80 columns) where the old check saw a mismatch and retyped:
    a message whose last word wrapped after a blank last column, and a timestamp cut after its `[`."""
    typed = "mkdir .ssh||exit 10;d=1;};a=.ssh/authorized_keys;c="
    wrapped = ("~ $ " + " " * 34 + "mkdir .ssh||exit 10;d=1;};a=.ssh/authorize[   16.702811] recovery-test: kernel",
               "noise", "d_keys;c=")
    assert shows_typed(ScreenText(wrapped, COLUMNS, "test"), typed)
    typed = "d=0;[ -d .ssh ]||{ mkdir .ssh"
    cut = ("x" * 62 + "d=0;[ -d .ssh [", "40.495217] recovery-test: kernel noise", "]||{", " mkdir .ssh")
    assert shows_typed(ScreenText(cut, COLUMNS, "test"), typed)
