"""GRUB's menu and editor on a VGA screen, read from the frames a real QEMU sent over VNC.

tests/cases/grub/debian12-vga-session.json is a recording of `GrubConsole` driving GRUB 2.06 (Debian
12) on the VGA console of tests/agentvm/grub.py's VNC variant: each key pressed and the distinct
frames VncChannel received after it (vga-session-NN.720x400.raw.z, zlib, 4 bytes a pixel). Frame 06
shows the editor just opened with the blinking cursor over the `s` of `setparams`, 07 the same with
the cursor hidden; 08 the cursor on the kernel line; 09 ` init=/bin/s` typed at its end. The fake
console below plays them back, so the driver meets the same screens as on the VM.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from recovery.channels.grub import CTRL_E, CTRL_N, CTRL_X, ESC, BootLoaderRefused, GrubConsole, read_editor, read_menu
from recovery.channels.grub_vnc import GridScreen, VncTerminal, changed_cells
from recovery.channels.screen import UNKNOWN, Frame, GlyphReader
from recovery.errors import ChannelError
from recovery.safety.redact import Text, reveal

CASES = Path(__file__).resolve().parents[1] / "cases" / "grub"
SESSION = json.loads((CASES / "debian12-vga-session.json").read_text())
KERNEL_LINE = ("        linux        /boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda ro console=ttyS0,115200 "
               "console=tty0 quiet")
READER = GlyphReader()
CURSOR_SHOWN, CURSOR_HIDDEN, ON_KERNEL_LINE, TYPING = "06", "07", "08", "09"


def captured(number: str) -> Frame:
    path = next(CASES.glob(f"vga-session-{number}.*.raw.z"))
    width, height = map(int, path.name.split(".")[-3].split("x"))
    return Frame(width, height, zlib.decompress(path.read_bytes()))


class Frames:
    """A VNC console showing `frames` one after the other, a new one at each read once the last was looked
    at, then the last two in turn (the cursor's blink). Like VncChannel, it reads each frame it shows into
    `screen` (a new object), which stays as it was where no font reads the frame."""

    has_output = True
    guest_acks = True

    def __init__(self, *frames: Frame, blink: bool = False) -> None:
        self.sent: list[str] = []
        self.probed = False
        self.show(list(frames), blink=blink)

    def show(self, frames: list[Frame], *, blink: bool = True) -> None:
        self.frames, self.blink = frames, blink and len(frames) > 1
        self.shown = self.frames.pop(0)
        self.screen = READER.read(self.shown) or getattr(self, "screen", None)
        self.seen = False  # whether `shown` was looked at: the next read brings the next frame

    def frame(self) -> Frame:
        self.seen = True
        return self.shown

    def read(self, timeout: float) -> str:
        if self.frames and self.seen:
            if self.blink and len(self.frames) == 1:
                self.frames.append(self.shown)  # the last two in turn
            self.shown, self.seen = self.frames.pop(0), False
            self.screen = READER.read(self.shown) or self.screen
        return ""

    def send(self, data: Text) -> None:
        self.sent.append(reveal(data))

    def probe_guest(self, timeout: float) -> bool:
        self.probed = True
        return True

    def open(self, timeout: float) -> None:
        pass

    def check_typeable(self, data: Text) -> None:
        pass

    def close(self) -> None:
        pass


class ReplayedVga(Frames):
    """The recording played back: the power-on frames once ESC arrives, then each key's frames when that
    key is pressed (a key the recording shows nothing after leaves the screen as it is)."""

    def __init__(self, segments: list[dict[str, object]]) -> None:
        self.segments = list(segments)
        super().__init__(captured("00"), captured("00"))

    def send(self, data: Text) -> None:
        keys = reveal(data)
        super().send(keys)
        if not self.segments or (keys == ESC and not str(self.segments[0]["keys"]).startswith("<power-on")):
            return  # Ctrl-X after the recording, or an ESC on its way when the menu showed: it ignores them
        segment = self.segments.pop(0)
        assert keys in (segment["keys"], ESC), f"pressed {keys!r} where the recording pressed {segment['keys']!r}"
        frames = segment["frames"]
        assert isinstance(frames, list)
        if frames:
            self.show([captured(name.rsplit("-", 1)[1]) for name in frames])


def terminal(console: Frames, reads: int) -> VncTerminal:
    term = VncTerminal(console, lambda text: None)
    for _ in range(reads):
        term.read(0)
    return term


def test_the_menu_is_read_with_its_frame_in_unknown_glyphs() -> None:
    text = READER.read(captured("01"))
    assert text is not None
    assert text.font == "iso01a-8x16 in 9x16 cells"
    assert UNKNOWN in text.rows[3], "the frame's corners are glyphs the reader does not know"
    menu = read_menu(GridScreen(text.rows, text.columns))
    assert menu is not None
    assert menu.entries[0] == "Debian GNU/Linux"
    assert menu.entries[1].endswith("(recovery mode)")
    assert menu.selected == 0


@pytest.mark.parametrize("order", [(CURSOR_SHOWN, CURSOR_HIDDEN, CURSOR_SHOWN),
                                   (CURSOR_HIDDEN, CURSOR_SHOWN, CURSOR_HIDDEN)])
def test_the_editor_is_read_with_the_cursor_found_by_its_blink(order: tuple[str, str, str]) -> None:
    term = terminal(Frames(*map(captured, order)), reads=3)
    assert (term.screen.row, term.screen.column) == (4, 2)
    editor = read_editor(term.screen)
    assert editor is not None
    assert editor.cursor == 0
    # The visible cursor makes the `s` under it unreadable: the other frame reads it.
    assert editor.lines[0] == "setparams 'Debian GNU/Linux'"
    assert editor.kernel_lines() == [editor.lines.index(KERNEL_LINE)] == [9]
    assert "        echo        'Loading Linux 6.1.0-50-amd64 ...'" in editor.lines
    assert editor.more_below  # GRUB's ↓, read as another glyph
    assert not editor.more_above


@pytest.mark.parametrize("frames", [(CURSOR_SHOWN,), (CURSOR_SHOWN, CURSOR_HIDDEN), (CURSOR_SHOWN, ON_KERNEL_LINE)])
def test_a_cursor_is_known_from_two_blinks_in_the_same_cell(frames: tuple[str, ...]) -> None:
    """One frame shows no blink; one blink may be a cursor passing by (keys still on their way)."""
    term = terminal(Frames(*map(captured, frames)), reads=3)
    editor = read_editor(term.screen)
    assert editor is not None
    assert editor.cursor is None


def test_a_change_of_many_cells_leaves_the_cursor_unknown_until_the_next_blinks() -> None:
    frames = [captured(number) for number in (CURSOR_SHOWN, CURSOR_HIDDEN, CURSOR_SHOWN, TYPING)]
    assert (terminal(Frames(*frames[:3]), reads=3).screen.row) == 4
    editor = read_editor(terminal(Frames(*frames), reads=4).screen)
    assert editor is not None
    assert editor.cursor is None
    assert editor.lines[9] == KERNEL_LINE + " init=/bin/s"


def test_changed_cells() -> None:
    shown, hidden = captured(CURSOR_SHOWN), captured(CURSOR_HIDDEN)
    assert changed_cells(shown, hidden, 80, 25) == {(4, 2)}
    assert changed_cells(hidden, captured(ON_KERNEL_LINE), 80, 25) == {(13, 2)}
    assert changed_cells(shown, shown, 80, 25) == set()
    assert len(changed_cells(hidden, captured(TYPING), 80, 25) or ()) == 2  # no more than the limit
    assert changed_cells(shown, Frame(640, 480, bytes(640 * 480 * 4)), 80, 25) is None


def test_the_driver_edits_the_kernel_line_by_reading_the_screen() -> None:
    channel = ReplayedVga(SESSION["segments"])
    grub = GrubConsole(channel)
    assert isinstance(grub.terminal, VncTerminal)
    menu = grub.stop(timeout=20)
    assert menu.selected == 0
    grub.edit(timeout=20)
    before, after = grub.append_to_kernel_line("init=/bin/sh", timeout=30)
    grub.boot()
    assert (before, after) == (KERNEL_LINE, KERNEL_LINE + " init=/bin/sh") == (SESSION["before"], SESSION["after"])
    assert [keys for keys in channel.sent if keys != ESC] == ["e", CTRL_N * 9, CTRL_E, " init=/bin/sh", CTRL_X]


def test_an_argument_that_does_not_show_is_seen_before_booting() -> None:
    """The keys typed never reach GRUB (the screen stays as it was): the read-back refuses, and Ctrl-X is
    never pressed."""
    segments = [dict(segment) for segment in SESSION["segments"]]
    segments[-1]["frames"] = []
    channel = ReplayedVga(segments)
    grub = GrubConsole(channel)
    grub.stop(timeout=20)
    grub.edit(timeout=20)
    with pytest.raises(ChannelError, match="does not show the kernel line as typed"):
        grub.append_to_kernel_line("init=/bin/sh", timeout=4)
    assert CTRL_X not in channel.sent


def test_the_guest_is_not_asked_to_acknowledge_keys_until_the_booted_system_is() -> None:
    console = Frames(captured("01"))
    grub = GrubConsole(console)
    assert console.guest_acks is False, "firmware and GRUB do not switch Num Lock: keys go one per barrier"
    grub.handed_over(5)
    assert console.probed


def test_a_console_no_font_reads_is_refused_before_the_reset() -> None:
    console = Frames(captured("01"))
    console.has_output = False
    with pytest.raises(BootLoaderRefused, match="never edits it blind"):
        GrubConsole(console)
    assert console.sent == []


def test_grub_in_graphics_mode_is_refused_with_why() -> None:
    """gfxterm draws in a graphics mode with its own font: no reader knows it, so the menu never shows as text."""
    noise = bytes((index * 7919 >> 3) & 0xFF for index in range(800 * 600 * 4))
    console = Frames(captured(CURSOR_HIDDEN), Frame(800, 600, noise))
    grub = GrubConsole(console)
    with pytest.raises(BootLoaderRefused, match="graphics mode"):
        grub.stop(timeout=1)
    assert set(console.sent) == {ESC}


def test_ctrl_alt_del_goes_as_scancodes_pressed_together_and_released_in_reverse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recovery.channels import vnc
    from recovery.safety.redact import Secret

    channel = vnc.VncChannel(Secret("vnc://127.0.0.1:5900"))
    sent: list[bytes] = []
    monkeypatch.setattr(channel, "_transport", object())  # open, as far as _require sees
    monkeypatch.setattr(channel, "_send", sent.append)
    monkeypatch.setattr(channel, "_sync", lambda deadline: sent.append(b"<barrier>"))
    channel.qemu_keys = True
    channel.send_ctrl_alt_del()
    events = [struct.unpack(">BBHII", sent[0][at:at + 12]) for at in range(0, len(sent[0]), 12)]
    assert [(down, scancode) for _, _, down, _, scancode in events] == [
        (1, 0x1D), (1, 0x38), (1, 0xD3), (0, 0xD3), (0, 0x38), (0, 0x1D)]
    assert {keysym for *_, keysym, _ in events} == {0xFFE3, 0xFFE9, 0xFFFF}  # XK_Control_L, XK_Alt_L, XK_Delete
    assert sent[1:] == [b"<barrier>"]


def test_a_vm_that_ignores_ctrl_alt_del_is_named_when_grub_does_not_come() -> None:
    from recovery.power import power_for

    console = Frames(captured(CURSOR_HIDDEN))  # the screen stays as it is: nothing reboots
    grub = GrubConsole(console)
    power = power_for("ctrl-alt-del", SimpleNamespace(send_ctrl_alt_del=lambda: None))
    masked = r"within 1 s of the reset \(Ctrl-Alt-Del .* ctrl-alt-del.target is masked"
    with pytest.raises(BootLoaderRefused, match=masked):
        grub.stop(timeout=1, after=f"the reset ({power.describe()})")
