"""Secrets that cannot leak by accident, and the filter that scrubs what slips through.

A `Secret` is deliberately not a `str`: formatting one gives `***`, so a secret
that reaches a log line, an f-string or the journal shows up masked. Only a
driver at the wire calls `reveal()`. Every secret's value is also registered
here, and `scrub()` removes registered values from any text, including text a
terminal mangled while echoing it (line wraps, carriage returns, escape codes).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Terminal noise that can sit between two echoed characters of one secret:
# carriage returns, newlines, a wrap's " \r", and CSI/OSC escape sequences.
_NOISE = r"(?:\r|\n|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07)*"
_MIN_SCRUB_LEN = 4  # shorter values would turn ordinary words into ***


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
    """The URL with user info and every query value masked: tokens and signatures live there."""
    parts = urlsplit(reveal(url))
    query = urlencode([(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < _MIN_SCRUB_LEN:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                longest_first = sorted(self._values, key=len, reverse=True)
                alternatives = (_NOISE.join(re.escape(c) for c in v) for v in longest_first)
                self._pattern = re.compile("|".join(alternatives))
            return self._pattern


_registry = _Registry()


def register(value: str) -> None:
    """Remember a secret value so that `scrub` removes it wherever it turns up."""
    _registry.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret in `text`, even one split by terminal noise."""
    pattern = _registry.pattern()
    return pattern.sub(MASK, text) if pattern else text


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
