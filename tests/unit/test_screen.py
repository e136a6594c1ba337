"""The screen reader: fonts the system ships, real screens captured from each console, and `news`."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import pytest

from recovery.channels.screen import (
    FONT_PATHS,
    UNKNOWN,
    Font,
    Frame,
    GlyphReader,
    ScreenText,
    load_font,
    news,
    system_fonts,
)

SCREENS = Path(__file__).parent / "screens"
SAMPLE = "Hello, World! 0123456789 ~`!@#$%^&*()_+-={}[]|\\:;\"<>,.?/"


def captured(name: str) -> Frame:
    """A framebuffer VncChannel received, saved zlib-compressed as NAME.WxH.raw.z."""
    path = next(SCREENS.glob(f"{name}.*.raw.z"))
    width, height = map(int, path.name.split(".")[-3].split("x"))
    return Frame(width, height, zlib.decompress(path.read_bytes()))


def render(font: Font, lines: list[str], *, width: int, height: int, cell_width: int | None = None,
           origin: tuple[int, int] = (0, 0), paper: bytes = b"\0\0\0\0", ink: bytes = b"\xaa\xaa\xaa\0") -> Frame:
    """A screen showing `lines` in `font`, drawn as a console draws it."""
    cw = cell_width or font.width
    pixels = bytearray(paper * width * height)
    for row, line in enumerate(lines):
        for column, char in enumerate(line):
            glyph = font.glyphs[char]
            for y in range(font.height):
                for x in range(font.width):
                    if glyph[y * font.width + x]:
                        at = ((origin[1] + row * font.height + y) * width + origin[0] + column * cw + x) * 4
                        pixels[at:at + 4] = ink
    return Frame(width, height, bytes(pixels))


@pytest.fixture(scope="module")
def fonts() -> list[Font]:
    found = system_fonts()
    assert len(found) == len(FONT_PATHS), "make deps installs console-data, console-setup-linux and xfonts-base"
    return found


def test_the_system_fonts_load_with_every_printable_ascii_character(fonts: list[Font]) -> None:
    for font in fonts:
        assert all(chr(code) in font.glyphs for code in range(0x20, 0x7F)), font.name
        assert not any(font.glyphs[" "]), font.name
    assert {(font.width, font.height) for font in fonts} == {(8, 16), (6, 13)}


def test_qemus_vga_text_console_is_read_exactly() -> None:
    text = GlyphReader().read(captured("qemu-vga-text-wrong-password"))
    assert text is not None
    assert text.unknown == 0
    assert text.font == "iso01a-8x16 in 9x16 cells"
    assert text.lines[-4:] == ["(none) login: ops", "Password:", "Login incorrect", "(none) login:"]
    assert f"~ $ echo '{SAMPLE}'; ls -la /" in text.lines
    assert SAMPLE in text.lines


def test_an_xterm_is_read_exactly_and_its_border_and_cursor_are_no_text() -> None:
    text = GlyphReader().read(captured("tigervnc-xterm"))
    assert text is not None
    assert text.font == "6x13-ISO8859-1 in 6x13 cells"
    assert text.lines[:3] == [f"# echo '{SAMPLE}'; ls -la /", SAMPLE, "total 96"]
    assert text.lines[-1] == "#"  # the block cursor after it is no character
    assert text.unknown <= 1  # the corner of the window's border
    assert UNKNOWN not in "".join(text.lines[:-1])


def test_reading_a_screen_takes_milliseconds() -> None:
    reader = GlyphReader()
    frame = captured("tigervnc-xterm")
    reader.read(frame)  # finds the grid: once per screen size
    started = time.perf_counter()
    for _ in range(5):
        reader.read(frame)
    assert (time.perf_counter() - started) / 5 < 1.0  # loose: a busy 2-core machine; benchmarks measure


def test_every_character_of_each_font_reads_back_in_colour_and_reverse_video(fonts: list[Font]) -> None:
    printable = "".join(chr(code) for code in range(0x21, 0x7F))
    for font in fonts:
        for cell_width in {font.width, 9 if font.width == 8 else font.width}:
            lines = [printable[:40], printable[40:], "login: " + printable[::-1][:30]]
            frame = render(font, lines, width=640, height=200, cell_width=cell_width, origin=(3, 5),
                           paper=b"\x80\x20\x10\0", ink=b"\x10\xf0\x30\0")
            text = GlyphReader([font]).read(frame)
            assert text is not None, font.name
            assert text.lines == lines, font.name
            assert text.unknown == 0


def test_a_screen_in_a_font_the_reader_does_not_know_is_not_read(fonts: list[Font]) -> None:
    vga = next(font for font in fonts if font.width == 8)
    xterm = next(font for font in fonts if font.width == 6)
    frame = render(vga, ["(none) login: "], width=720, height=400, cell_width=9)
    assert GlyphReader([xterm]).read(frame) is None
    assert GlyphReader([]).read(frame) is None
    assert GlyphReader([vga]).read(render(vga, [""], width=720, height=400)) is None  # nothing to judge by


def test_a_font_file_that_is_no_font_is_skipped(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.psf"
    bogus.write_bytes(b"not a font at all")
    with pytest.raises(ValueError, match="not a PSF"):
        load_font(bogus)
    assert system_fonts([bogus, tmp_path / "missing.pcf.gz"]) == []


def test_recovery_screen_fonts_chooses_the_fonts(monkeypatch: pytest.MonkeyPatch, fonts: list[Font]) -> None:
    monkeypatch.setenv("RECOVERY_SCREEN_FONTS", "")
    assert system_fonts() == []
    assert GlyphReader().read(captured("qemu-vga-text-wrong-password")) is None
    monkeypatch.setenv("RECOVERY_SCREEN_FONTS", f"{FONT_PATHS[0]}:/nonexistent/font.psf")
    assert [font.name for font in system_fonts()] == ["iso01a-8x16"]


def test_wrapped_rows_are_one_line() -> None:
    text = ScreenText(("a" * 10, "bc", "", "x $", "", ""), columns=10, font="f")
    assert text.lines == ["a" * 10 + "bc", "", "x $"]


@pytest.mark.parametrize(
    ("seen", "now", "expected"),
    [
        ([], ["boot", "login:"], "boot\nlogin:"),
        (["boot", "login:"], ["boot", "login:"], ""),
        (["boot", "login:"], ["boot", "login: ops", "Password:"], " ops\nPassword:"),  # typed at the prompt
        (["a", "b", "login:"], ["b", "login: ops", "Password:"], " ops\nPassword:"),  # and scrolled
        (["l:", "l:", "l:"], ["l:", "l:", "l:", "l:"], "\nl:"),  # repeated lines: the smallest scroll
        (["x", "l:", "l:"], ["l:", "l:", "l:"], "\nl:"),
        (["$ ls", "a b", "$"], ["$ ls", "a b", "$ clear"], " clear"),
        (["$ ls", "a b", "$ clear"], ["$"], "\n$"),  # cleared: all of it is new
        (["boot", "login: ops"], ["boot", "login: [  1.000000] eth0: up"], "\nlogin: [  1.000000] eth0: up"),
        (["a", "b", "$ x"], ["a", "b", "$ ^C", "$"], "\n$ ^C\n$"),  # the last line redrawn: reported again
        (["1", "2", "3", "Password:", "x"], ["Password:", "x", "y", "$"], "\ny\n$"),  # not the lines before it
        # A half-painted screen read, then the whole one: the prompt the marker is printed before is no anchor.
        (["boot", "u@vm:~$ id", "u", "u@vm:~$", ">"], ["u", "u@vm:~$ sh <<E", "> x", "> E", "RCV-n-0", "u@vm:~$"],
         "\nu\nu@vm:~$ sh <<E\n> x\n> E\nRCV-n-0\nu@vm:~$"),
    ],
)
def test_news_is_what_a_serial_console_would_have_printed(seen: list[str], now: list[str], expected: str) -> None:
    assert news(seen, now) == expected


def test_the_framebuffer_console_is_read_exactly_in_the_kernels_font() -> None:
    """fbcon (vga=791) draws the kernel's built-in VGA 8x16 font, which SeaBIOS's (iso01a) matches on the first
    prompt but not in 0, f, v, w and ~: the reader chosen on `(none) login:` switches to the exact font."""
    frame = captured("fbcon-wrong-password")
    cp850 = next(font for font in system_fonts() if font.name == "cp850-8x16")
    reader = GlyphReader()
    first = reader.read(render(cp850, ["(none) login:"], width=1024, height=768))
    assert first is not None
    assert first.lines == ["(none) login:"]
    text = reader.read(frame)
    assert text is not None
    assert (text.font, text.unknown, text.inexact) == ("cp850-8x16 in 8x16 cells", 0, 0)
    assert text.lines[-5:] == ["Password:", "Login incorrect",
                               f"(none) login: abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ {SAMPLE}",
                               "", "(none) login:"]
