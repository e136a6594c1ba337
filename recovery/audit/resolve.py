"""A host's addresses, found within the check's deadline; a name that cannot be one is that host's result.

`socket.create_connection` resolves with `getaddrinfo`, which blocks for as long
as the system resolver likes (5 s per server and attempt in glibc's defaults),
and raises `UnicodeError` or `ValueError`, not `OSError`, for names such as
`web-1..example.com` or one with a NUL in it. An audit needs both bounded and
named: `--timeout` covers the whole check of a host, resolving included, and a
bad name in an inventory is one host's `dns_error`, never the run's traceback.

So a name is first checked for syntax (an IP literal, or labels of letters,
digits, `-` and `_` once IDNA-encoded), then resolved in a daemon thread that
the check waits for until its deadline. A lookup that outlives the deadline
keeps its thread until the resolver gives up; it holds nothing but that thread,
and being a daemon it cannot delay the end of the audit.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Sequence

__all__ = ["Address", "ResolveFailed", "check_name", "resolve"]

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_MAX_NAME = 253

# An address family and a socket address for `socket.connect`.
Address = tuple[socket.AddressFamily, tuple[object, ...]]


class ResolveFailed(Exception):
    """The name is not valid, did not resolve, or did not resolve in time (`timed_out`)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


def check_name(name: str) -> str | None:
    """Why `name` cannot be looked up, or None when it is an IP address or a well-formed host name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return None
    if not all(name.removesuffix(".").split(".")):
        return "an empty label: two dots in a row, or a leading dot"
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError:
        return "a label is longer than 63 characters, or not valid in an internationalised name"
    if len(encoded) > _MAX_NAME:
        return f"longer than {_MAX_NAME} characters"
    if not all(_LABEL.fullmatch(label) for label in encoded.removesuffix(".").split(".")):
        return "only letters, digits, '-' and '_' may form a label, and '-' neither starts nor ends one"
    return None


def resolve(name: str, port: int, timeout: float) -> list[Address]:
    """Every TCP address of `name`, in the resolver's order, within `timeout` seconds.

    :raises ResolveFailed: a malformed name, a failed lookup, or no answer in time.
    """
    problem = check_name(name)
    if problem is not None:
        raise ResolveFailed(f"{name!r} is not a valid host name ({problem})")
    lookup = _Lookup(name, port)
    try:  # an IP literal needs no resolver: answered here, with no thread
        return lookup.answer(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST))
    except socket.gaierror:
        pass
    thread = threading.Thread(target=lookup.run, name=f"resolve-{name}", daemon=True)
    thread.start()
    if not lookup.done.wait(timeout):
        raise ResolveFailed(f"resolving host name {name!r} took longer than the check's timeout", timed_out=True)
    if lookup.error is not None:
        raise ResolveFailed(f"cannot resolve host name {name!r} (DNS lookup failed: {lookup.error})")
    return lookup.addresses


class _Lookup:
    """One `getaddrinfo` call and its outcome, handed from the resolving thread to the waiting one."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.done = threading.Event()
        self.addresses: list[Address] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.addresses = self.answer(socket.getaddrinfo(self.name, self.port, type=socket.SOCK_STREAM))
        except socket.gaierror as exc:
            self.error = exc.strerror or str(exc)
        except (UnicodeError, ValueError) as exc:  # what check_name did not foresee, said as the resolver said it
            self.error = str(exc)
        finally:
            self.done.set()

    @staticmethod
    def answer(
        infos: Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]],
    ) -> list[Address]:
        return [(family, sockaddr) for family, _, _, _, sockaddr in infos]
