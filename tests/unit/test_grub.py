"""GRUB's menu and editor read from what a real GRUB printed on its serial console, cut anywhere.

tests/cases/grub/*.json are recordings of GRUB 2.06 (Debian 12) on the test VM of
tests/agentvm/grub.py: a hidden menu with timeout=0 stopped by ESC from power-on, `e`, the moves to
the kernel line, the typed argument and Ctrl-X. Each holds the keys pressed and the output that
followed, and the fake channel below plays them back, so the driver meets the same screens as on
the VM, in pieces of any size.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery.channels.grub import (
    CTRL_E,
    CTRL_N,
    CTRL_X,
    ESC,
    BootLoaderRefused,
    GrubConsole,
    Screen,
    read_editor,
    read_menu,
)
from recovery.errors import ChannelError
from recovery.safety.redact import Text, reveal

CASES = Path(__file__).resolve().parents[1] / "cases" / "grub"
RECORDING = json.loads((CASES / "debian12-hidden-menu.json").read_text())
SEGMENTS = RECORDING["segments"]
KERNEL_LINE = ("        linux        /boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda ro console=tty0 "
               "console=ttyS0,115200 quiet")


def output_until(keys: str) -> str:
    """Everything GRUB printed up to and including the answer to the first press of `keys`."""
    text = ""
    for segment in SEGMENTS:
        text += segment["output"]
        if segment["keys"] == keys:
            return text
    raise AssertionError(f"the recording never pressed {keys!r}")


def screen_of(text: str, cut: Callable[[str], list[str]] = lambda text: [text]) -> Screen:
    screen = Screen()
    for piece in cut(text):
        screen.feed(piece)
    return screen


def test_the_hidden_menu_is_read_after_the_escs() -> None:
    menu = read_menu(screen_of(SEGMENTS[0]["output"]))
    assert menu is not None
    assert menu.entries[0] == "Debian GNU/Linux"
    assert menu.entries[1].endswith("(recovery mode)")
    assert menu.selected == 0


def test_the_editor_is_read_with_the_wrapped_kernel_line_joined() -> None:
    screen = screen_of(output_until("e"))
    assert read_menu(screen) is None
    editor = read_editor(screen)
    assert editor is not None
    assert editor.lines[0] == "setparams 'Debian GNU/Linux'"
    assert editor.cursor == 0
    # Found by its first word: not the `echo 'Loading Linux ...'` line above it, not `initrd` below.
    assert editor.kernel_lines() == [editor.lines.index(KERNEL_LINE)]
    assert "        echo        'Loading Linux 6.1.0-50-amd64 ...'" in editor.lines
    assert editor.lines.index(KERNEL_LINE) == 9


def test_the_edited_line_reads_back_with_the_argument() -> None:
    editor = read_editor(screen_of(output_until(" init=/bin/sh")))
    assert editor is not None
    assert editor.cursor is not None
    assert editor.lines[editor.cursor] == KERNEL_LINE + " init=/bin/sh"


@pytest.mark.parametrize("keys", ["e", " init=/bin/sh"])
def test_the_screen_is_the_same_wherever_the_output_was_cut(keys: str) -> None:
    text = output_until(keys)
    answer = next(s["output"] for s in SEGMENTS if s["keys"] == keys)
    before = screen_of(text[: len(text) - len(answer)])
    whole = screen_of(text)
    for at in range(len(answer) + 1):  # every cut of the answer to `keys`
        cut = copy.copy(before)
        cut.cells = [row[:] for row in before.cells]
        cut.feed(answer[:at])
        cut.feed(answer[at:])
        assert (cut.cells, cut.row, cut.column) == (whole.cells, whole.row, whole.column), at


def test_the_screen_is_the_same_fed_one_character_at_a_time() -> None:
    text = output_until(" init=/bin/sh")
    whole, single = screen_of(text), screen_of(text, list)
    assert (single.lines(), single.row, single.column) == (whole.lines(), whole.row, whole.column)


class ReplayedGrub:
    """A serial channel playing the recording back: power-on output once ESC arrives, then each key's
    answer when that key is pressed, in pieces of `chunk` characters."""

    has_output = True

    def __init__(self, segments: list[dict[str, str]], chunk: int = 1 << 20) -> None:
        self.segments = list(segments)
        self.chunk = chunk
        self.pending = ""
        self.sent: list[str] = []

    def open(self, timeout: float) -> None:
        pass

    def check_typeable(self, data: Text) -> None:
        pass

    def send(self, data: Text) -> None:
        keys = reveal(data)
        self.sent.append(keys)
        if keys == ESC:
            if self.segments and self.segments[0]["keys"].startswith("<power-on"):
                self.pending += self.segments.pop(0)["output"]
            return
        expected = self.segments.pop(0)
        assert keys == expected["keys"], f"pressed {keys!r} where the recording pressed {expected['keys']!r}"
        self.pending += expected["output"]

    def read(self, timeout: float) -> str:
        if not self.pending:
            time.sleep(min(timeout, 0.01))
            return ""
        piece, self.pending = self.pending[: self.chunk], self.pending[self.chunk:]
        return piece

    def close(self) -> None:
        pass


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_the_driver_edits_the_kernel_line_by_reading_the_editor(chunk: int) -> None:
    channel = ReplayedGrub(SEGMENTS, chunk)
    grub = GrubConsole(channel)
    menu = grub.stop(timeout=10)
    assert menu.selected == 0
    grub.edit(timeout=10)
    before, after = grub.append_to_kernel_line("init=/bin/sh", timeout=20)
    grub.boot()
    assert (before, after) == (KERNEL_LINE, KERNEL_LINE + " init=/bin/sh")
    pressed = [keys for keys in channel.sent if keys != ESC]
    assert pressed == ["e", CTRL_N * 9, CTRL_E, " init=/bin/sh", CTRL_X]


def test_a_grub_password_is_refused() -> None:
    segments = [SEGMENTS[0], {"keys": "e", "output": "\x1b[H\x1b[J\r\nEnter username: \r\n"}, {"keys": "\x03",
                                                                                                 "output": ""}]
    grub = GrubConsole(ReplayedGrub(segments))
    grub.stop(timeout=10)
    with pytest.raises(BootLoaderRefused, match="Enter username"):
        grub.edit(timeout=10)


def replaced(old: str, new: str) -> list[dict[str, str]]:
    return [{**segment, "output": segment["output"].replace(old, new)} for segment in SEGMENTS]


def test_an_entry_without_a_kernel_line_is_refused() -> None:
    segments = replaced("linux        /boot", "chainl        /boot")
    segments[1]["output"] = segments[1]["output"].replace("\x1b[16;80Hv", "\x1b[16;80H ")  # nothing below
    grub = GrubConsole(ReplayedGrub(segments))
    grub.stop(timeout=10)
    grub.edit(timeout=10)
    with pytest.raises(BootLoaderRefused, match="no kernel line"):
        grub.append_to_kernel_line("init=/bin/sh", timeout=10)


def test_an_entry_with_two_kernel_lines_is_refused() -> None:
    grub = GrubConsole(ReplayedGrub(replaced("insmod gzio", "linux gzio ")))
    grub.stop(timeout=10)
    grub.edit(timeout=10)
    with pytest.raises(BootLoaderRefused, match="several kernel lines"):
        grub.append_to_kernel_line("init=/bin/sh", timeout=10)


def test_a_dropped_character_is_seen_before_booting() -> None:
    """The screen shows `init=/bn/sh`: the read-back refuses, and Ctrl-X is never pressed."""
    segments = replaced("init=/bin/sh", "init=/bn/sh ")
    channel = ReplayedGrub(segments)
    grub = GrubConsole(channel)
    grub.stop(timeout=10)
    grub.edit(timeout=10)
    with pytest.raises(ChannelError, match="does not show the kernel line as typed"):
        grub.append_to_kernel_line("init=/bin/sh", timeout=2)
    assert CTRL_X not in channel.sent


def test_no_grub_on_the_serial_port_is_refused_with_what_was_seen() -> None:
    segments = [{"keys": "<power-on>", "output": "Loading Linux 6.1.0-50-amd64 ...\r\nagentvm login: "}]
    with pytest.raises(BootLoaderRefused, match="GRUB_TERMINAL"):
        GrubConsole(ReplayedGrub(segments)).stop(timeout=1)
