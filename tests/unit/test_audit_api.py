"""`recovery.audit.check` called directly: results for hosts that cannot be reached, a cancel, bad arguments.

No SSH server here (tests/integration/test_audit_api.py has one): hosts with no
address, a closed port on 127.0.0.1 and a listener that never answers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import recovery.audit
from recovery.audit import AuditInterrupted, Host, HostResult, Status, check, load_keys
from recovery.audit.engine import ENGINES, HostTrust, choose_engine
from recovery.engine.cancel import CancelToken
from recovery.errors import UsageError
from recovery.ssh.keys import generate_keypair


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return generate_keypair(tmp_path / "audit_key").private_path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Bound, not listening: a connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Listening, never accepting: the handshake waits until the check's deadline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_the_package_exports_the_api_lazily() -> None:
    assert set(recovery.audit.__all__) >= {"check", "AuditReport", "Host", "HostTrust", "AuditInterrupted"}
    for name in recovery.audit.__all__:
        assert getattr(recovery.audit, name) is not None
    with pytest.raises(AttributeError):
        recovery.audit.no_such_name  # noqa: B018


@pytest.mark.parametrize("engine", ENGINES)
def test_hosts_with_no_address_and_a_closed_port_are_results(key: Path, closed_port: int, engine: str) -> None:
    hosts = [
        Host("pending", None, 22, "ops", (key,)),
        Host("closed", "127.0.0.1", closed_port, "ops", (key,), note="server is SHUTOFF"),
        Host("also-pending", None, 22, "ops", (key,)),
    ]
    seen: list[HostResult] = []

    report = check(hosts, timeout=5, engine=engine, on_result=seen.append)

    assert [(result.host.name, result.status) for result in report.results] == [
        ("pending", Status.NO_ADDRESS), ("closed", Status.REFUSED), ("also-pending", Status.NO_ADDRESS)
    ]
    assert report.engine == engine
    assert report.results[1].message.endswith("refused the connection (is sshd up?) (server is SHUTOFF)")
    assert not report.interrupted
    assert report.not_checked == ()
    assert sorted(result.host.name for result in seen) == ["also-pending", "closed", "pending"]
    assert report.counts()[Status.NO_ADDRESS] == 2


def test_auto_is_libssh2_where_ssh2_python_is_installed(key: Path) -> None:
    assert check([Host("pending", None, 22, "ops", (key,))]).engine == "libssh2"


def test_without_ssh2_python_auto_is_paramiko_and_libssh2_is_a_usage_error(
    key: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A None in sys.modules makes `import ssh2` fail, as on a platform with no wheel."""
    for name in [name for name in sys.modules if name == "ssh2" or name.startswith("ssh2.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "recovery.audit.libssh2_engine", raising=False)
    monkeypatch.setitem(sys.modules, "ssh2", None)

    report = check([Host("closed", "127.0.0.1", closed_port, "ops", (key,))], timeout=5)

    assert report.engine == "paramiko"
    assert report.results[0].status is Status.REFUSED
    with pytest.raises(UsageError, match=r"needs ssh2-python, which cannot be imported .*pip install ssh2-python"):
        check([Host("pending", None, 22, "ops", (key,))], engine="libssh2")


def test_a_cancel_from_another_thread_stops_the_audit_with_a_report(key: Path, silent_port: int) -> None:
    hosts = [Host(f"silent-{n}", "127.0.0.1", silent_port, "ops", (key,)) for n in range(4)]
    token = CancelToken()
    threading.Timer(0.5, token.cancel, ("stop",)).start()
    started = time.monotonic()

    report = check(hosts, concurrency=2, timeout=60, cancel=token)

    assert time.monotonic() - started < 10  # not a 60 s timeout, loosely: a busy 2-core machine
    assert report.interrupted
    assert report.results == ()
    assert [host.name for host in report.not_checked] == [host.name for host in hosts]


def test_ctrl_c_in_the_calling_thread_raises_with_the_partial_report(key: Path, closed_port: int) -> None:
    hosts = [Host("closed", "127.0.0.1", closed_port, "ops", (key,))] * 3

    def interrupt(result: HostResult) -> None:
        raise KeyboardInterrupt

    with pytest.raises(AuditInterrupted) as caught:
        check(hosts, concurrency=1, timeout=5, on_result=interrupt)

    report = caught.value.report
    assert report.interrupted
    assert len(report.results) + len(report.not_checked) == 3
    assert isinstance(caught.value, KeyboardInterrupt)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"concurrency": 0}, "concurrency 0: expected 1 to 1000"),
        ({"timeout": 0}, "timeout 0: expected a positive number of seconds"),
        ({"engine": "libssh3"}, "audit engine 'libssh3': expected auto, libssh2 or paramiko"),
        ({"keys": {}}, "keys named by the hosts but not loaded"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_connection(
    key: Path, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        check([Host("pending", None, 22, "ops", (key,))], **arguments)  # type: ignore[arg-type]


def test_an_unusable_key_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing"):
        check([Host("web-1", "127.0.0.1", 22, "ops", (tmp_path / "missing",))])


def test_keys_loaded_once_may_serve_several_audits(key: Path, closed_port: int) -> None:
    keys = load_keys([key])
    hosts = [Host("closed", "127.0.0.1", closed_port, "ops", (key,))]

    first, second = (check(hosts, keys=keys, trust=HostTrust(), timeout=5) for _ in range(2))

    assert first.results[0].status is second.results[0].status is Status.REFUSED


def test_each_engine_has_the_name_it_is_chosen_by_and_takes_ed25519_and_rsa_keys(key: Path, tmp_path: Path) -> None:
    rsa = generate_keypair(tmp_path / "rsa_key", key_type="rsa", bits=3072).private_path
    for name in ENGINES:
        assert choose_engine(load_keys([key, rsa]), HostTrust(), name).name == name


def test_the_libssh2_engine_does_not_load_paramiko(key: Path) -> None:
    """paramiko takes ~150 ms to import: an audit that has libssh2 must not pay for the fallback."""
    code = (
        "import sys; from pathlib import Path; from recovery.audit import Host, check; "
        f"report = check([Host('pending', None, 22, 'ops', (Path({str(key)!r}),))]); "
        "print(report.engine, 'paramiko' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["libssh2", "False"]
    assert done.stderr == ""
