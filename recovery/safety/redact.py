"""Secrets that cannot leak by accident, and the filter that scrubs what slips through.

A `Secret` is deliberately not a `str`: formatting one gives `***`, so a secret
that reaches a log line, an f-string or the journal shows up masked. Only a
driver at the wire calls `reveal()`. Every secret's value is also registered
here, and `scrub()` removes registered values from any text, including text a
terminal mangled while echoing it (line wraps, carriage returns, escape codes).

`scrub` runs on every log record and every byte of console output, which a
hostile VM controls, so it is linear in the text: it strips the terminal noise
once (remembering where each kept character came from), searches the cleaned
text with plain substring search, and masks the original span of every match,
noise included. A regex with optional noise between every character of every
secret (what this replaced) backtracks quadratically on output such as many
unterminated escape sequences.

A secret shorter than four characters cannot be masked without masking ordinary
words too, or without revealing it by which words got masked (`too_short_to_mask`):
a run holding one keeps no transcript and no debug output, and says so.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

MASK = "***"
# Terminal noise that can sit between two echoed characters of one secret: carriage
# returns and newlines (a line wrap; readline wraps at the last column with " \r"),
# CSI sequences (colours, cursor moves) and OSC sequences (window titles) ended by BEL
# or ST. Possessive quantifiers, and an OSC body that stops at the next ESC, keep every
# failed attempt bounded by the run of characters it looked at, so finding all noise
# is linear.
_NOISE = re.compile(r" ?+[\r\n]++|\x1b\[[0-9;?]*+[ -/]*+[@-~]|\x1b\][^\x07\x1b]*+(?:\x07|\x1b\\)")
_NOISE_CHARS = ("\r", "\n", "\x1b")
MIN_SCRUB_LEN = 4  # shorter values would turn ordinary words into ***


class Secret:
    """A value that must never be shown. `label` is what a reader sees instead."""

    __slots__ = ("_value", "label")

    def __init__(self, value: str, label: str = MASK) -> None:
        self._value = value
        self.label = label
        register(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"Secret({self.label!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


Text = str | Secret


def reveal(value: Text) -> str:
    """The raw text of a str or Secret; for drivers at the wire only."""
    return value.reveal() if isinstance(value, Secret) else value


def masked_url(url: Text) -> str:
    """The URL with user info and every query value masked: tokens and signatures live there.

    Text that is not a URL with a scheme and a host is masked whole: a sensitive value
    of another shape (a bare token) must not be shown just because it has no query. A
    path segment that looks like a token (16 or more URL characters, a digit among them:
    a UUID, base64) is masked too; `vnc_auto.html` or `websockify` stay readable.
    """
    try:
        parts = urlsplit(reveal(url))
        port = parts.port
    except ValueError:  # a bad port or bracket: not a URL we can take apart
        return MASK
    if not parts.scheme or not parts.netloc:
        return MASK
    query = urlencode([(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    netloc = parts.hostname or ""
    if port:
        netloc += f":{port}"
    path = "/".join(MASK if _TOKEN_LIKE.fullmatch(segment) else segment for segment in parts.path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, query, ""))


_TOKEN_LIKE = re.compile(r"(?=[^/]*[0-9])[A-Za-z0-9._~%+=-]{16,}")


def _without_noise(text: str) -> tuple[str, list[int], list[int]]:
    """`text` with terminal noise removed, and where each kept segment starts in both texts."""
    clean: list[str] = []
    clean_starts: list[int] = []
    raw_starts: list[int] = []
    kept = 0
    position = 0
    for noise in _NOISE.finditer(text):
        if noise.start() > position:
            clean_starts.append(kept)
            raw_starts.append(position)
            clean.append(text[position : noise.start()])
            kept += noise.start() - position
        position = noise.end()
    if position < len(text):
        clean_starts.append(kept)
        raw_starts.append(position)
        clean.append(text[position:])
    return "".join(clean), clean_starts, raw_starts


def _find_all(haystack: str, needle: str) -> Iterable[int]:
    start = haystack.find(needle)
    while start >= 0:
        yield start
        start = haystack.find(needle, start + len(needle))


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if len(value) < MIN_SCRUB_LEN:
            return
        with self._lock:
            if value not in self._values:
                self._values = (*self._values, value)

    def values(self) -> tuple[str, ...]:
        return self._values


_registry = _Registry()


_CREDENTIAL_NAMES = re.compile(r"token|pass|sig|key|secret|auth|credential", re.IGNORECASE)


def register(value: str) -> None:
    """Remember a secret value so that `scrub` removes it wherever it turns up.

    A secret that is a URL also registers the credentials inside it on their own (the
    password in its user info, query values named like a token, password, signature or
    key, also inside a nested query such as noVNC's `path=websockify%3Ftoken%3DT`): a
    library may log them apart from the URL, decoded or not.
    """
    _registry.add(value)
    for part in _url_credentials(value):
        _registry.add(part)


def _url_credentials(value: str, depth: int = 0) -> list[str]:
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL after all (a bad port, an unclosed IPv6 bracket)
        return []
    found = [password] if password else []
    query = parts.query if parts.scheme else value.partition("?")[2]
    for name, inner in parse_qsl(query, keep_blank_values=False):
        if _CREDENTIAL_NAMES.search(name):
            found += [inner, quote_plus(inner), quote(inner, safe="")]
        elif depth < 2 and "=" in inner:
            found += _url_credentials(inner, depth + 1)
    return found


def too_short_to_mask(value: Text) -> bool:
    """True for a secret of 1 to 3 characters, which `scrub` leaves alone."""
    return 0 < len(reveal(value)) < MIN_SCRUB_LEN


def scrub(text: str) -> str:
    """Replace every registered secret in `text`, even one split by terminal noise."""
    values = _registry.values()
    if not values or not text:
        return text
    spans: list[tuple[int, int]] = []
    for value in values:  # as it is, also inside an OSC title, which the cleaning drops
        spans += [(at, at + len(value)) for at in _find_all(text, value)]
    if any(char in text for char in _NOISE_CHARS):
        clean, clean_starts, raw_starts = _without_noise(text)
        for value in values:
            needle = _without_noise(value)[0] or value
            for at in _find_all(clean, needle):
                first = _raw_index(at, clean_starts, raw_starts)
                last = _raw_index(at + len(needle) - 1, clean_starts, raw_starts)
                spans.append((first, last + 1))
    return _mask(text, spans) if spans else text


def _raw_index(clean_index: int, clean_starts: list[int], raw_starts: list[int]) -> int:
    segment = bisect.bisect_right(clean_starts, clean_index) - 1
    return raw_starts[segment] + clean_index - clean_starts[segment]


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span, overlapping ones merged, replaced by one MASK."""
    out: list[str] = []
    kept_until = 0
    current: tuple[int, int] | None = None
    for start, stop in sorted(spans):
        if current is not None and start < current[1]:
            current = (current[0], max(current[1], stop))
            continue
        if current is not None:
            out += [text[kept_until : current[0]], MASK]
            kept_until = current[1]
        current = (start, stop)
    if current is not None:
        out += [text[kept_until : current[0]], MASK]
        kept_until = current[1]
    out.append(text[kept_until:])
    return "".join(out)


def scrub_all(texts: Iterable[str]) -> list[str]:
    return [scrub(t) for t in texts]


class RedactingFilter(logging.Filter):
    """Scrubs registered secrets from every record, third-party loggers included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
