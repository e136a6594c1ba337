"""Text from a console's pixels: exact glyph matching against the console fonts the system ships.

A VNC console sends pixels. The consoles a recovery meets draw text with bitmap fonts and no
smoothing: QEMU's VGA text mode draws the IBM VGA 8x16 font (the one SeaBIOS loads) in 9x16 cells,
Linux's framebuffer console the kernel's copy of it (a few glyphs differ) in 8x16 cells, or the font a
distribution sets (Debian's Lat15-Fixed16), xterm the X "fixed" font (6x13).
Each character is then an exact bitmap, so reading is a dictionary lookup per cell: no OCR, no
model, a few milliseconds per screen. The fonts come from Debian packages (console-setup-linux's
`Lat15-VGA16.psf.gz`, xfonts-base's misc-fixed `.pcf.gz`); `system_fonts` finds what is installed.

How a screen is read (`GlyphReader`):
- Binarise: the most common colour on the screen is the background; a pixel is ink when it differs.
  A cell that comes out all ink (a block cursor, text on another background) is binarised again by
  its own most common colour, so colour, reverse video and a cursor do not matter.
- Find the grid once per screen size: each font's cell size, with the origin tried at every
  offset against the first rows of text; the font and origin that match the most cells win. A
  screen is readable only when nearly all of its non-blank cells are known glyphs.
- Read: each cell's bitmap looked up among the glyphs (and their inverse: reverse video); a cell
  that matches nothing exactly takes the nearest glyph within a few pixels (a font that differs
  in a pixel or two), else U+FFFD. A cell whose ink is whole rows only is a text cursor over an
  empty cell: a space. When a screen has more such doubtful cells than when its font was chosen,
  the fonts of the same cell size are tried again and the exactest wins: fonts that read the first
  prompt alike can differ later, where the nearest glyph of the wrong one is a wrong character.

`read` returns None when no font reads the screen (an unknown font, or nothing on it yet): the
caller then drives the console blind, as before, and says so. RECOVERY_SCREEN_FONTS (font files,
separated by `:`) replaces FONT_PATHS: a guest's own console font can be added, and an empty value
turns reading off.

`news` turns two successive screens into the text that appeared between them, the way a serial
console would have printed it, so the dialogue logic written for serial consoles reads a screen.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

UNKNOWN = "\ufffd"
# Where Debian puts the fonts; the order breaks ties. console-data's iso01a-8x16 has the IBM VGA
# glyphs SeaBIOS loads for QEMU's text mode (measured: every cell of a busybox session; kbd's
# default8x16 and console-setup's Lat15-VGA16 differ in 0, m, v, w); its cp850-8x16 has the glyphs of the
# kernel's built-in VGA 8x16 font, which fbcon draws (measured: every printable ASCII character on a
# vga=791 console; iso01a differs in 0, f, v, w and ~), console-setup-linux's fonts
# are what Debian and Ubuntu guests set on their consoles, xfonts-base's 6x13 is xterm's "fixed".
FONT_PATHS = (
    Path("/usr/share/consolefonts/iso01a-8x16.psf.gz"),
    Path("/usr/share/consolefonts/cp850-8x16.psf.gz"),
    Path("/usr/share/consolefonts/Lat15-Fixed16.psf.gz"),
    Path("/usr/share/fonts/X11/misc/6x13-ISO8859-1.pcf.gz"),
)
READABLE = 0.9  # share of a screen's non-blank cells that must be known glyphs,
POINTER_CELLS = 4  # or all but this many: a mouse pointer some servers draw into the screen hides a few
NEAREST_LIMIT = 0.08  # a cell may differ from its glyph in this share of its pixels, at most
_GRID_SAMPLE = 24  # non-blank cells, from the first text rows, that judge a grid origin
_MIN_GLYPHS = 1  # a fresh shell shows only its prompt: `$` read exactly, in the only grid that reads it


@dataclass(frozen=True)
class Frame:
    """A screen as VncChannel keeps it: 4 bytes a pixel (blue, green, red, unused), rows top to bottom."""

    width: int
    height: int
    pixels: bytes


@dataclass(frozen=True)
class ScreenText:
    """The text on a screen: each row of the grid, trailing spaces removed."""

    rows: tuple[str, ...]
    columns: int
    font: str
    unknown: int = 0  # cells that matched no glyph (U+FFFD in `rows`)
    known: int = 0  # non-blank cells read as a glyph
    inexact: int = 0  # of those, cells read as the nearest glyph, not an exact one

    @property
    def lines(self) -> list[str]:
        """Logical lines: a row that fills every column continues on the next (the terminal wrapped
        it); empty rows at the bottom dropped."""
        lines: list[str] = []
        joined = ""
        for row in self.rows:
            joined += row
            if len(row) < self.columns:
                lines.append(joined)
                joined = ""
        if joined:
            lines.append(joined)
        while lines and not lines[-1]:
            lines.pop()
        return lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ScreenReader(Protocol):
    def read(self, frame: Frame) -> ScreenText | None:
        """The screen's text, or None when it cannot be read (no known font on it)."""


@dataclass(frozen=True)
class Font:
    """A bitmap font: each character's cell, `width` x `height` bytes of 0 (paper) or 1 (ink), by rows."""

    name: str
    width: int
    height: int
    glyphs: Mapping[str, bytes]


# -- fonts ----------------------------------------------------------------------------------------

def _open(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _bits(data: bytes, width: int, stride: int, rows: int, *, lsb_first: bool = False) -> list[bytes]:
    """Rows of 0/1 bytes from packed bitmap rows of `stride` bytes."""
    out = []
    for row in range(rows):
        value = int.from_bytes(data[row * stride:(row + 1) * stride], "big")
        bits = f"{value:0{stride * 8}b}"
        if lsb_first:
            bits = "".join(bits[i:i + 8][::-1] for i in range(0, len(bits), 8))
        out.append(bytes(int(bit) for bit in bits[:width]))
    return out


def load_psf(path: Path) -> Font:
    """A Linux console font (PSF 1 or 2); characters by its Unicode table, else by code point.

    Raises:
        ValueError: not a PSF font.
    """
    data = _open(path)
    if data[:2] == b"\x36\x04":
        mode, height = data[2], data[3]
        count, width, start, stride = (512 if mode & 1 else 256), 8, 4, 1
        has_table = bool(mode & 6)
        table = _psf1_table(data[start + count * height:], count) if has_table else None
    elif data[:4] == b"\x72\xb5\x4a\x86":
        _, start, flags, count, size, height, width = struct.unpack_from("<7I", data, 4)
        stride = (width + 7) // 8
        if size != stride * height:
            raise ValueError(f"{path}: a PSF2 glyph of {size} bytes for {width}x{height}")
        table = _psf2_table(data[start + count * size:], count) if flags & 1 else None
    else:
        raise ValueError(f"{path} is not a PSF console font")
    glyphs: dict[str, bytes] = {}
    size = stride * height
    for index in range(count):
        bitmap = b"".join(_bits(data[start + index * size:start + (index + 1) * size], width, stride, height))
        chars = table[index] if table is not None else [chr(index)]
        for char in chars:
            glyphs.setdefault(char, bitmap)
    return Font(path.name.split(".")[0], width, height, glyphs)


def _psf1_table(data: bytes, count: int) -> list[list[str]]:
    table: list[list[str]] = []
    chars: list[str] = []
    sequence = False
    for (value,) in struct.iter_unpack("<H", data[:len(data) // 2 * 2]):
        if len(table) == count:
            break
        if value == 0xFFFF:
            table.append(chars)
            chars, sequence = [], False
        elif value == 0xFFFE:
            sequence = True
        elif not sequence:
            chars.append(chr(value))
    return table + [[] for _ in range(count - len(table))]


def _psf2_table(data: bytes, count: int) -> list[list[str]]:
    table: list[list[str]] = []
    for entry in data.split(b"\xff")[:count]:
        single = entry.split(b"\xfe")[0]
        table.append(list(single.decode("utf-8", errors="ignore")))
    return table + [[] for _ in range(count - len(table))]


_PCF_ACCELERATORS, _PCF_METRICS, _PCF_BITMAPS, _PCF_ENCODINGS, _PCF_BDF_ACCELERATORS = 2, 4, 8, 32, 256


def load_pcf(path: Path) -> Font:
    """An X11 bitmap font (PCF, as xfonts-base ships them), for its Latin-1 characters.

    Raises:
        ValueError: not a PCF font, or not a character-cell font.
    """
    data = _open(path)
    if data[:4] != b"\x01fcp":
        raise ValueError(f"{path} is not a PCF font")
    (tables,) = struct.unpack_from("<I", data, 4)
    toc = {kind: offset for kind, _, _, offset in struct.iter_unpack("<4I", data[8:8 + 16 * tables])}

    def table(kind: int) -> tuple[int, str, int]:
        offset = toc[kind]
        (fmt,) = struct.unpack_from("<I", data, offset)
        return fmt, (">" if fmt & 4 else "<"), offset + 4

    fmt, order, at = table(_PCF_BDF_ACCELERATORS if _PCF_BDF_ACCELERATORS in toc else _PCF_ACCELERATORS)
    ascent, descent = struct.unpack_from(order + "ii", data, at + 8)
    fmt, order, at = table(_PCF_METRICS)
    metrics: list[tuple[int, int, int, int, int]] = []
    if fmt & 0x100:  # compressed: five unsigned bytes, each offset by 0x80
        (count,) = struct.unpack_from(order + "H", data, at)
        for i in range(count):
            metrics.append(tuple(value - 0x80 for value in data[at + 2 + 5 * i:at + 7 + 5 * i]))  # type: ignore[arg-type]
    else:
        (count,) = struct.unpack_from(order + "I", data, at)
        for i in range(count):
            metrics.append(struct.unpack_from(order + "5h", data, at + 4 + 12 * i))
    widths = {width for _, _, width, _, _ in metrics}
    if len(widths) != 1:
        raise ValueError(f"{path} is not a character-cell font (widths {sorted(widths)[:5]})")
    (cell_width,) = widths
    fmt, order, at = table(_PCF_BITMAPS)
    (count,) = struct.unpack_from(order + "I", data, at)
    offsets = struct.unpack_from(f"{order}{count}I", data, at + 4)
    bitmaps = at + 4 + 4 * count + 16
    pad = 1 << (fmt & 3)
    lsb_first = not fmt & 8
    unit = 1 << ((fmt >> 4) & 3)
    fmt, order, at = table(_PCF_ENCODINGS)
    low, high, byte1_low, byte1_high, _ = struct.unpack_from(order + "5h", data, at)
    span = high - low + 1
    glyphs: dict[str, bytes] = {}
    for byte1 in range(byte1_low, byte1_high + 1):
        for byte2 in range(low, high + 1):
            (index,) = struct.unpack_from(order + "H", data, at + 10 + 2 * ((byte1 - byte1_low) * span + byte2 - low))
            code = byte1 << 8 | byte2
            if index == 0xFFFF or index >= len(metrics) or code > 0xFF:
                continue
            left, right, _, glyph_ascent, glyph_descent = metrics[index]
            rows = glyph_ascent + glyph_descent
            stride = ((right - left + 7) // 8 + pad - 1) // pad * pad
            raw = data[bitmaps + offsets[index]:bitmaps + offsets[index] + stride * rows]
            if not fmt & 4 and unit > 1:  # least significant byte first within each scan unit
                raw = b"".join(raw[i:i + unit][::-1] for i in range(0, len(raw), unit))
            cell = [bytearray(cell_width) for _ in range(ascent + descent)]
            for row, bits in enumerate(_bits(raw, right - left, stride, rows, lsb_first=lsb_first)):
                y = ascent - glyph_ascent + row
                for column, bit in enumerate(bits):
                    x = left + column
                    if bit and 0 <= y < len(cell) and 0 <= x < cell_width:
                        cell[y][x] = 1
            glyphs[chr(code)] = b"".join(bytes(row) for row in cell)
    return Font(path.name.split(".")[0], cell_width, ascent + descent, glyphs)


def load_font(path: Path) -> Font:
    """A PSF or PCF font, by its content.

    Raises:
        ValueError: neither.
        OSError: unreadable.
    """
    data = _open(path)
    return load_pcf(path) if data[:4] == b"\x01fcp" else load_psf(path)


def system_fonts(paths: Iterable[Path] | None = None) -> list[Font]:
    """The fonts in `paths` (default: RECOVERY_SCREEN_FONTS, else FONT_PATHS) that are installed and load;
    the rest are skipped."""
    if paths is None:
        chosen = os.environ.get("RECOVERY_SCREEN_FONTS")
        paths = FONT_PATHS if chosen is None else [Path(part) for part in chosen.split(os.pathsep) if part]
    fonts = []
    for path in paths:
        try:
            fonts.append(load_font(path))
        except (OSError, ValueError, struct.error, EOFError):
            continue
    return fonts


# -- reading --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """A font in cells on a screen: `cell_width` may exceed the font's (VGA text mode's 9th column)."""

    font: Font
    cell_width: int
    cell_height: int
    keys: dict[bytes, str] = field(repr=False)  # cell bitmap (and its inverse) -> character
    nearest: tuple[tuple[int, str, int], ...] = field(repr=False)  # (bits as int, char, ink) for near matches

    @classmethod
    def of(cls, font: Font, cell_width: int) -> Layout:
        keys: dict[bytes, str] = {}
        nearest = []
        size = cell_width * font.height
        for char, bitmap in sorted(font.glyphs.items()):
            if not (char == " " or (char.isprintable() and char.isascii())):
                continue
            rows = [bitmap[row * font.width:(row + 1) * font.width] + bytes(cell_width - font.width)
                    for row in range(font.height)]
            cell = b"".join(rows)
            keys.setdefault(cell, char)
            keys.setdefault(cell.translate(_INVERT), char)
            ink = cell.count(1)
            if ink:
                nearest.append((int.from_bytes(cell, "big"), char, ink))
        keys[bytes(size)] = keys[b"\x01" * size] = " "
        return cls(font, cell_width, font.height, keys, tuple(nearest))

    @property
    def name(self) -> str:
        return f"{self.font.name} in {self.cell_width}x{self.cell_height} cells"


_INVERT = bytes([1, 0]) + bytes(254)


@dataclass(frozen=True)
class _Grid:
    layout: Layout
    x: int  # the first column's left edge
    y: int  # the first row's top edge
    columns: int
    rows: int


class GlyphReader:
    """A `ScreenReader` for the given fonts (by default `system_fonts()`); keeps the grid it found."""

    def __init__(self, fonts: Sequence[Font] | None = None) -> None:
        fonts = system_fonts() if fonts is None else fonts
        self.layouts = [Layout.of(font, width) for font in fonts
                        for width in ((font.width, font.width + 1) if font.width == 8 else (font.width,))]
        self._grids: dict[tuple[int, int], _Grid] = {}
        self._doubts: dict[tuple[int, int], int] = {}  # inexact and unknown cells when the font was last chosen

    def read(self, frame: Frame) -> ScreenText | None:
        if not self.layouts:
            return None
        mask = _ink(frame)
        size = (frame.width, frame.height)
        grid = self._grids.get(size)
        if grid is not None:
            text = _read_grid(frame, mask, grid)
            if text.inexact + text.unknown > self._doubts.get(size, 0):
                grid, text = self._exactest(frame, mask, grid, text)
            if _readable(text) or not text.unknown:  # a blank screen is read as blank
                return text
        grid = self._find_grid(frame, mask)
        if grid is None:
            return None
        text = _read_grid(frame, mask, grid)
        if not _readable(text):
            return None
        self._grids[size] = grid
        self._doubts[size] = 0
        return text

    def _exactest(self, frame: Frame, mask: bytes, grid: _Grid, text: ScreenText) -> tuple[_Grid, ScreenText]:
        """The font, among those of the grid's cell size, that reads the screen with the fewest inexact and
        unknown cells. Fonts that agree on the first text seen (`(none) login:`) can differ further on:
        the kernel's VGA font (fbcon) and SeaBIOS's (VGA text mode) do in 0, f, v, w and ~, where the
        nearest glyph of the other one is a wrong character, so the grid's font is chosen again whenever
        the screen shows more doubtful cells than when it was last chosen."""
        best = (text.inexact + text.unknown, grid, text)
        for layout in self.layouts:
            if layout is grid.layout or (layout.cell_width, layout.cell_height) != (grid.layout.cell_width,
                                                                                    grid.layout.cell_height):
                continue
            other = _Grid(layout, grid.x, grid.y, grid.columns, grid.rows)
            read = _read_grid(frame, mask, other)
            if read.inexact + read.unknown < best[0]:
                best = (read.inexact + read.unknown, other, read)
        doubts, grid, text = best
        self._grids[(frame.width, frame.height)], self._doubts[(frame.width, frame.height)] = grid, doubts
        return grid, text

    def _find_grid(self, frame: Frame, mask: bytes) -> _Grid | None:
        """The layout and origin that read the first non-blank cells best; None if none reads them."""
        width = frame.width
        top = next((y for y in range(frame.height) if 1 in mask[y * width:(y + 1) * width]
                    and 0 in mask[y * width:(y + 1) * width]), None)
        if top is None:
            return None
        best: tuple[int, _Grid] | None = None
        for layout in self.layouts:
            cw, ch = layout.cell_width, layout.cell_height
            for dy in range(ch):
                first = top - (top - dy) % ch  # the row of this phase holding the first ink
                for dx in range(cw):
                    scores = [score for y in range(max(first, dy), min(first + 3 * ch, frame.height - ch + 1), ch)
                              if (score := _score(mask, width, layout, y, dx, width)) is not None]
                    if scores and (best is None or sum(scores) > best[0]):
                        grid_y = first % ch
                        grid = _Grid(layout, dx, grid_y, (width - dx) // cw, (frame.height - grid_y) // ch)
                        best = (sum(scores), grid)
        return best[1] if best is not None else None


def _readable(text: ScreenText) -> bool:
    cells = text.known + text.unknown
    return text.known >= max(_MIN_GLYPHS, text.unknown) and text.unknown <= max(POINTER_CELLS, (1 - READABLE) * cells)


def _score(mask: bytes, width: int, layout: Layout, y: int, x0: int, limit: int) -> int | None:
    """Known minus unknown among the first _GRID_SAMPLE non-blank cells of the text row at (x0, y)."""
    cw, ch = layout.cell_width, layout.cell_height
    known = unknown = 0
    for x in range(x0, limit - cw + 1, cw):
        key = b"".join(mask[(y + row) * width + x:(y + row) * width + x + cw] for row in range(ch))
        char = layout.keys.get(key) or _cursor(key, cw)
        if char == " ":
            continue
        if char is None:
            unknown += 1
        else:
            known += 1
        if known + unknown >= _GRID_SAMPLE or (unknown >= 4 and unknown > known):
            break
    if known < _MIN_GLYPHS:
        return None
    return known - unknown


def _ink(frame: Frame) -> bytes:
    """One byte per pixel: 1 where it differs from the screen's most common colour, else 0."""
    pixels = frame.pixels
    step = max(1, frame.width * frame.height // 4096) * 4 + 4
    sample = Counter(pixels[i:i + 3] for i in range(0, len(pixels) - 3, step))
    background = sample.most_common(1)[0][0]
    ink = 0
    size = frame.width * frame.height
    for channel in range(3):
        table = bytes(0 if value == background[channel] else 1 for value in range(256))
        ink |= int.from_bytes(pixels[channel::4].translate(table), "big")
    return ink.to_bytes(size, "big")


def _cell_ink(frame: Frame, x: int, y: int, cw: int, ch: int) -> bytes:
    """A cell binarised by its own most common colour (text on another background, a block cursor)."""
    width = frame.width
    colours = [frame.pixels[((y + row) * width + x + column) * 4:((y + row) * width + x + column) * 4 + 3]
               for row in range(ch) for column in range(cw)]
    background = Counter(colours).most_common(1)[0][0]
    return bytes(colour != background for colour in colours)


def _read_grid(frame: Frame, mask: bytes, grid: _Grid) -> ScreenText:
    layout = grid.layout
    cw, ch = layout.cell_width, layout.cell_height
    width, span = frame.width, grid.columns * cw
    rows: list[str] = []
    known = unknown = inexact = 0
    for row in range(grid.rows):
        top = grid.y + row * ch
        band = [mask[(top + line) * width + grid.x:(top + line) * width + grid.x + span] for line in range(ch)]
        numbers = [int.from_bytes(line, "big") for line in band]
        any_ink = all_ink = 0
        for number in numbers:
            any_ink |= number
        all_ink = numbers[0]
        for number in numbers[1:]:
            all_ink &= number
        if not any_ink or all_ink == int.from_bytes(b"\x01" * span, "big"):
            rows.append("")
            continue
        some = any_ink.to_bytes(span, "big")
        every = all_ink.to_bytes(span, "big")
        chars = []
        for column in range(grid.columns):
            start = column * cw
            if 1 not in some[start:start + cw]:
                chars.append(" ")
                continue
            x = grid.x + start
            if 0 not in every[start:start + cw]:  # all ink: one colour (a margin, a cursor), or its own paper
                key = b"" if _uniform(frame, x, top, cw, ch) else _cell_ink(frame, x, top, cw, ch)
            else:
                key = b"".join(line[start:start + cw] for line in band)
            char = " " if not key else layout.keys.get(key) or _cursor(key, cw)
            if char is None:
                char = _nearest(layout, key)
                inexact += char != UNKNOWN
            if char == UNKNOWN:
                unknown += 1
            elif char != " ":
                known += 1
            chars.append(char)
        rows.append("".join(chars).rstrip())
    return ScreenText(tuple(rows), grid.columns, layout.name, unknown, known, inexact)


def _uniform(frame: Frame, x: int, y: int, cw: int, ch: int) -> bool:
    pixels = frame.pixels
    first = pixels[(y * frame.width + x) * 4:(y * frame.width + x) * 4 + 4] * cw
    return all(pixels[((y + row) * frame.width + x) * 4:((y + row) * frame.width + x + cw) * 4] == first
               for row in range(ch))


def _cursor(key: bytes, cw: int) -> str | None:
    """A space for what is no character: whole rows of ink (a text cursor over an empty cell), whole
    columns (a window's border), or both (its corner); else None."""
    full = b"\x01" * cw
    rows = {key[i:i + cw] for i in range(0, len(key), cw)} - {full}
    return " " if len(rows) <= 1 else None


def _nearest(layout: Layout, key: bytes) -> str:
    """The glyph within NEAREST_LIMIT of the cell's pixels, if exactly one is nearest; else UNKNOWN."""
    bits = int.from_bytes(key, "big")
    ink = key.count(1)
    limit = max(1, int(NEAREST_LIMIT * len(key)))
    best, best_char, tie = limit + 1, UNKNOWN, False
    for glyph, char, glyph_ink in layout.nearest:
        if abs(glyph_ink - ink) > limit:
            continue
        distance = (glyph ^ bits).bit_count()
        if distance < best:
            best, best_char, tie = distance, char, False
        elif distance == best:
            tie = True
    return UNKNOWN if tie or best > limit else best_char


# -- a screen as a stream -------------------------------------------------------------------------

def news(seen: Sequence[str], now: Sequence[str]) -> str:
    """The text that turned the screen's lines `seen` into `now`, as a terminal would have printed it.

    The screen may have scrolled by any number of lines, and its last line grown (a prompt, then
    what was typed at it): the smallest scroll that keeps every earlier line and extends the last
    one wins. Else the last line was redrawn in place (an edit, `^C`): the smallest scroll that
    keeps the lines before it, and the last line is new again. Else the screen was redrawn from
    some line on (a cleared screen, a half-painted screen, a scroll too far to align): what follows
    the longest run of `seen`'s last lines still on the screen, no lower than it was, is new, or all
    of it. So a line already reported is
    reported again only when it was redrawn.
    """
    if list(now) == list(seen):
        return ""
    if not seen:
        return "\n".join(now)
    last = seen[-1]
    for shift in range(len(seen)):
        kept = len(seen) - shift - 1  # complete lines of `seen` still on the screen
        if kept < len(now) and list(seen[shift:-1]) == list(now[:kept]) and now[kept].startswith(last):
            return "\n".join([now[kept][len(last):], *now[kept + 1:]])
    for shift in range(len(seen) - 1):
        kept = len(seen) - shift - 1
        if kept < len(now) and list(seen[shift:-1]) == list(now[:kept]):
            return "\n" + "\n".join(now[kept:])
    for run in range(min(len(seen), len(now)) - 1, 0, -1):
        tail = list(seen[-run - 1:-1])  # complete lines only: the last one may have changed
        # Lines only move up (a terminal scrolls up): a run found lower than it was is a later copy of it
        # (the same prompt printed again), and what came between the two would be lost.
        for start in range(min(len(now) - run, len(seen) - run - 1), -1, -1):
            if list(now[start:start + run]) == tail:
                return "\n" + "\n".join(now[start + run:])
    return "\n" + "\n".join(now)
