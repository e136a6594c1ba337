"""Putting the public key where the VM can fetch it, for minutes, not forever.

A publisher is a driver: it stores bytes under a URL that the VM can download and
removes them again. The URL is a `Secret` (a random path, or a signature in the
query string, is what lets anyone download), so it is masked wherever it is shown.

Drivers are registered by scheme as ``"module:Class"`` strings and imported on first
use, so a driver with heavy or optional dependencies costs nothing until chosen.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

from recovery.errors import ConfigError
from recovery.safety.redact import Secret

__all__ = ["PUBLISHERS", "ClosingPublisher", "Published", "Publisher", "load_publisher_class"]


@dataclass(frozen=True)
class Published:
    """One published object: where the VM downloads it, what it must hash to, until when.

    `sha256` is the hex digest of the published bytes: the guest script checks the
    download against it. `expires_at` is timezone-aware UTC.
    """

    scheme: str
    url: Secret
    sha256: str
    expires_at: datetime
    name: str


class Publisher(Protocol):
    """The I/O verbs of a publishing driver; retries and journaling live above it.

    Drivers are built from keyword options (each driver documents its own) and are
    context managers in practice; `close` releases whatever the driver holds and may be
    called more than once.
    """

    scheme: ClassVar[str]

    def __init__(self, **options: Any) -> None: ...

    def publish(self, name: str, data: bytes, ttl: timedelta) -> Published:
        """Store `data` under a fresh secret URL that stops working after `ttl`.

        Raises:
            PublishError: the object could not be stored.
        """
        ...

    def withdraw(self, item: Published) -> None:
        """Remove `item` so its URL no longer serves it; a no-op if it is already gone."""
        ...

    def close(self) -> None: ...


class ClosingPublisher(ABC):
    """The context-manager half every driver shares: `with Driver(...) as publisher:` closes it."""

    @abstractmethod
    def close(self) -> None:
        """Release what the driver holds; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


PUBLISHERS: dict[str, str] = {
    "http": "recovery.publishers.local_http:LocalHTTPPublisher",
    "swift": "recovery.publishers.swift:SwiftPublisher",
    "s3": "recovery.publishers.s3:S3Publisher",
}
"""Scheme → ``"module:Class"``; the module is imported only when the scheme is used. Plug-ins add
theirs under the entry point group ``recovery.publishers`` (see `recovery.engine.plugins`)."""


def load_publisher_class(scheme: str) -> type[Publisher]:
    """Import and return the publisher class registered for `scheme`.

    Raises:
        ConfigError: the scheme is unknown (the message lists the known ones), or its
            module cannot be imported (typically an optional dependency is missing).
    """
    from recovery.engine.plugins import PUBLISHERS_GROUP, targets

    every = targets(PUBLISHERS_GROUP, PUBLISHERS)
    try:
        target = every[scheme]
    except KeyError:
        known = ", ".join(sorted(every))
        raise ConfigError(f"unknown publisher {scheme!r}; known publishers: {known}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"publisher {scheme!r} cannot be loaded: {exc} (is its optional dependency installed?)"
        ) from exc
    cls: type[Publisher] = getattr(module, class_name)
    return cls
