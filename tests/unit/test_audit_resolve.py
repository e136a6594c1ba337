"""A host's name is resolved within its check's timeout, and a name that cannot be one is that host's result."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.audit.engine import ENGINES, Engine, HostTrust, choose_engine
from recovery.audit.model import Host, Status
from recovery.audit.resolve import ResolveFailed, check_name, resolve


@pytest.mark.parametrize(
    "name",
    ["web-1..example.com", ".example.com", "web\x00-1", "web\x1b[2J", "web 1", "-web", "a" * 64 + ".example.com"],
)
def test_a_malformed_name_is_refused_before_any_lookup(name: str) -> None:
    assert check_name(name) is not None
    with pytest.raises(ResolveFailed) as caught:
        resolve(name, 22, 1.0)
    assert not caught.value.timed_out
    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("name", ["127.0.0.1", "::1", "localhost", "web-1.example.com.", "bücher.example", "_ssh.x"])
def test_addresses_and_well_formed_names_pass(name: str) -> None:
    assert check_name(name) is None


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """getaddrinfo as glibc's with an unreachable DNS server: 5 s per attempt and server (here up to 30 s)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hung(host: str, *args: object, **kwargs: object) -> object:
        if kwargs.get("flags") == socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    yield
    release.set()


@pytest.mark.usefixtures("hung_resolver")
def test_a_hung_resolver_costs_the_timeout_and_no_more() -> None:
    started = time.monotonic()

    with pytest.raises(ResolveFailed) as caught:
        resolve("slow.example.com", 22, 0.5)

    assert caught.value.timed_out
    assert time.monotonic() - started < 3  # 0.5 s, loosely: a busy 2-core machine
    assert "took longer than the check's timeout" in str(caught.value)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    return choose_engine({}, HostTrust(), request.param)


@pytest.mark.usefixtures("hung_resolver")
def test_the_checks_timeout_covers_dns(engine: Engine) -> None:
    """Before, one host took 6 s at --timeout 1: create_connection's lookup had no bound."""
    started = time.monotonic()

    result = engine.check(Host("web-1", "slow.example.com", 22, "ops", (Path("/k"),)), started + 0.5)

    assert result.status is Status.TIMEOUT
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("address", "status"),
    [("web-1..example.com", Status.DNS_ERROR), ("web\x1b]0;owned\x07", Status.DNS_ERROR)],
)
def test_a_bad_host_name_is_that_hosts_result_not_the_runs_crash(address: str, status: Status, engine: Engine) -> None:
    """Before, `socket.create_connection` raised UnicodeError (not OSError) and the whole audit died."""
    result = engine.check(Host("web-1", address, 22, "ops", (Path("/k"),)), time.monotonic() + 2.0)

    assert result.status is status
    assert "is not a valid host name" in result.message
