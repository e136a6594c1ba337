"""The audit's engines against real sshd servers on 127.0.0.1: one host of every result kind.

Every test runs with each engine (libssh2, and paramiko, the fallback where
ssh2-python cannot be imported), chosen by name: both must judge a host alike.

The fleet: the lab's sshd (the good host, and with a stranger's key the rejected
one), a second sshd with ECDSA and Ed25519 host keys of its own (a host whose
key changed, or is unknown), a closed port, a tarpit that accepts TCP and never
speaks, services that are not SSH (a real HTTP server, a peer that says
something else), a `.invalid` name, a malformed name and a host with no address.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recovery.audit.engine import ENGINES, HostTrust, choose_engine, load_keys, with_timeout
from recovery.audit.model import Host, HostResult, Status
from recovery.audit.scheduler import run_checks
from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
from recovery.ssh.keys import KeyPair, generate_keypair
from tests.integration.sshd_fixture import HOST, SSHServer
from tests.integration.sshd_fleet import (
    ExtraSSHD,
    Tarpit,
    extra_sshd,
    http_server,
    known_hosts_line,
    speaker,
    tarpit,
)

# Long enough for a real login on a busy 2-core machine (1 s once timed a healthy sshd out);
# the tests that measure a timeout use their own.
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, audit_key: KeyPair) -> dict[str, KeyPair]:
    """"good" is in the lab user's authorized_keys; "stranger" is not."""
    stranger = generate_keypair(tmp_path_factory.mktemp("stranger-keys") / "stranger", comment="audit-stranger")
    return {"good": audit_key, "stranger": stranger}


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer) -> Iterator[ExtraSSHD]:
    """Another sshd for the same user, with host keys the lab's sshd does not have."""
    with extra_sshd(tmp_path_factory.mktemp("other-sshd"), sshd.user, ports=2, key_types=("ecdsa", "ed25519")) as srv:
        yield srv


@pytest.fixture(scope="module")
def pit() -> Iterator[Tarpit]:
    with tarpit() as server:
        yield server


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: SSHServer, other: ExtraSSHD) -> KnownHosts:
    """Vouches for the lab's sshd, and claims the lab's key for the other sshd's first port (a changed key)."""
    path = tmp_path / "known_hosts"
    lines = (known_hosts_line(port, sshd.host_public_key) for port in (sshd.port, other.ports[0]))
    path.write_text("".join(line + "\n" for line in lines))
    return KnownHosts.load(path)


def host(name: str, port: int, key: KeyPair, user: str, *, address: str | None = HOST, pin: str | None = None) -> Host:
    return Host(name, address, port, user, (key.private_path,), host_key=pin)


Checker = Callable[[Host], HostResult]
MakeChecker = Callable[..., Checker]


@pytest.fixture(params=ENGINES)
def checker(request: pytest.FixtureRequest, keys: dict[str, KeyPair]) -> MakeChecker:
    """Makes each test's check with each engine in turn: the paramiko fallback is held to the same results."""

    def make(trust: HostTrust, timeout: float = TIMEOUT) -> Checker:
        engine = choose_engine(load_keys(pair.private_path for pair in keys.values()), trust, request.param)
        assert engine.name == request.param
        return with_timeout(engine, timeout)

    return make


def test_every_result_kind_from_real_servers(
    sshd: SSHServer,
    other: ExtraSSHD,
    keys: dict[str, KeyPair],
    pit: Tarpit,
    closed: int,
    known_hosts: KnownHosts,
    checker: MakeChecker,
) -> None:
    good, stranger, user = keys["good"], keys["stranger"], sshd.user
    fleet = [
        host("good", sshd.port, good, user),
        host("rejected", sshd.port, stranger, user),
        host("closed", closed, good, user),
        host("tarpit", pit.port, good, user),
        host("changed", other.ports[0], good, user),
        host("unknown", other.ports[1], good, user),
        host("dns", 22, good, user, address="no-such-host.invalid"),
        host("malformed", 22, good, user, address="web-1..example.com"),
        host("no-address", 22, good, user, address=None),
    ]

    outcome = run_checks(fleet, checker(HostTrust(known_hosts)), concurrency=8)

    statuses = {result.host.name: result.status for result in outcome.results}
    assert statuses == {
        "good": Status.OK,
        "rejected": Status.AUTH_REJECTED,
        "closed": Status.REFUSED,
        "tarpit": Status.TIMEOUT,
        "changed": Status.HOST_KEY_CHANGED,
        "unknown": Status.HOST_KEY_UNKNOWN,
        "dns": Status.DNS_ERROR,
        "malformed": Status.DNS_ERROR,
        "no-address": Status.NO_ADDRESS,
    }
    by_name = {result.host.name: result for result in outcome.results}
    assert by_name["good"].key_fingerprint == good.sha256
    assert by_name["good"].host_key_fingerprint == sshd.host_key_sha256
    # sshd names the key that logged in: proof the audit's key got in, and nothing else.
    log = sshd.log_text()
    assert f"Accepted publickey for {user} from 127.0.0.1" in log
    assert f"ED25519 {good.sha256}" in log
    assert stranger.sha256 in by_name["rejected"].message
    # One timeout, loosely: a busy 2-core machine; the clock read before the connect may trail the timer by µs.
    assert TIMEOUT - 0.05 <= by_name["tarpit"].seconds < TIMEOUT + 3
    changed = by_name["changed"].message
    assert sshd.host_key_sha256 in changed
    assert other.fingerprint("ed25519") in changed
    assert f"host_key: {other.fingerprint('ed25519')}" in by_name["unknown"].message
    assert "no-such-host.invalid" in by_name["dns"].message


def test_a_pin_of_another_key_type_is_asked_for_not_called_a_change(
    sshd: SSHServer, other: ExtraSSHD, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    """cloud-init prints the ECDSA fingerprint first; the server prefers to offer Ed25519."""
    pinned = host("ecdsa-pin", other.ports[0], keys["good"], sshd.user, pin=other.fingerprint("ecdsa"))
    wrong = host("wrong-pin", other.ports[0], keys["good"], sshd.user, pin="SHA256:" + "A" * 43)

    ok, changed = (checker(HostTrust())(item) for item in (pinned, wrong))

    assert ok.status is Status.OK
    assert ok.host_key_fingerprint == other.fingerprint("ecdsa")
    assert changed.status is Status.HOST_KEY_CHANGED
    assert "the inventory's host_key" in changed.message


def test_known_hosts_types_are_asked_for_first(
    tmp_path: Path, sshd: SSHServer, other: ExtraSSHD, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(other.known_hosts_lines("ecdsa")) + "\n")

    result = checker(HostTrust(KnownHosts.load(path)))(host("h", other.ports[1], keys["good"], sshd.user))

    assert result.status is Status.OK
    assert result.host_key_fingerprint == other.fingerprint("ecdsa")


def test_a_revoked_key_is_never_accepted(
    tmp_path: Path, sshd: SSHServer, other: ExtraSSHD, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    path = tmp_path / "known_hosts"
    lines = other.known_hosts_lines("ed25519")
    path.write_text(lines[0] + "\n@revoked * " + lines[0].split(" ", 1)[1] + "\n")

    result = checker(HostTrust(KnownHosts.load(path)))(host("h", other.ports[0], keys["good"], sshd.user))

    assert result.status is Status.HOST_KEY_CHANGED
    assert "@revoked" in result.message


def test_the_second_key_logs_in_when_the_first_is_refused(
    sshd: SSHServer, keys: dict[str, KeyPair], checker: MakeChecker
) -> None:
    both = Host("h", HOST, sshd.port, sshd.user, (keys["stranger"].private_path, keys["good"].private_path))

    result = checker(HostTrust(accept_new=True))(both)

    assert result.status is Status.OK
    assert result.key_path == keys["good"].private_path
    assert result.host_key_trusted_on_first_use is True


def test_accept_new_still_enforces_a_pin(
    sshd: SSHServer, keys: dict[str, KeyPair], checker: MakeChecker
) -> None:
    pinned = host("h", sshd.port, keys["good"], sshd.user, pin="SHA256:" + "B" * 43)

    assert checker(HostTrust(accept_new=True))(pinned).status is Status.HOST_KEY_CHANGED


def test_tarpits_do_not_serialise_the_run(
    sshd: SSHServer, keys: dict[str, KeyPair], pit: Tarpit, checker: MakeChecker
) -> None:
    """Six silent hosts and twelve good ones at concurrency 8: about one timeout in all, not six.

    4 s per host: eight logins at once into one sshd on a busy 2-core machine have taken more than
    1 s, and a good host was then counted as a timeout. Six timeouts in a row would take 24 s;
    the bound is loose for a busy 2-core machine.
    """
    timeout = 4.0
    fleet = [host(f"pit-{n}", pit.port, keys["good"], sshd.user) for n in range(6)]
    fleet += [host(f"good-{n}", sshd.port, keys["good"], sshd.user, pin=sshd.host_key_sha256) for n in range(12)]
    started = time.monotonic()

    outcome = run_checks(fleet, checker(HostTrust(), timeout), concurrency=8)

    assert time.monotonic() - started < 3 * timeout
    statuses = [result.status for result in outcome.results]
    assert statuses.count(Status.TIMEOUT) == 6
    assert statuses.count(Status.OK) == 12


def test_a_listener_that_does_not_speak_ssh_is_a_protocol_error_not_refused(
    sshd: SSHServer, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    """Before, libssh2's "failed getting banner" made a web server on the port look like a refused connection."""
    timeout = 3.0
    with (
        http_server() as web,
        speaker(b"220 mail.example.com ESMTP ready\r\n") as smtp,
        speaker(b"\x15\x03\x01\x00\x02\x02\x46", hang_up=True) as garbage,
    ):
        fleet = [
            host(name, port, keys["good"], sshd.user)
            for name, port in (("web", web), ("smtp", smtp.port), ("garbage", garbage.port))
        ]
        results = run_checks(fleet, checker(HostTrust(), timeout), concurrency=3).results

    assert [(result.host.name, result.status) for result in results] == [
        ("web", Status.PROTOCOL_ERROR), ("smtp", Status.PROTOCOL_ERROR), ("garbage", Status.PROTOCOL_ERROR)
    ]
    web_result, smtp_result, _ = results
    assert "answered, but not as an SSH server" in web_result.message
    assert "waits for its client to speak first, such as HTTP" in web_result.message
    assert "220 mail.example.com ESMTP ready" in smtp_result.message
    assert all(result.seconds < timeout + 3 for result in results)


def test_a_banner_then_silence_is_a_timeout_within_the_timeout(
    sshd: SSHServer, keys: dict[str, KeyPair], checker: MakeChecker
) -> None:
    """An sshd that hangs after its banner (a stuck PAM module, a full process table) costs one timeout."""
    timeout = 2.0
    with speaker(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n") as stalled:
        started = time.monotonic()
        result = checker(HostTrust(), timeout)(host("stalled", stalled.port, keys["good"], sshd.user))
        elapsed = time.monotonic() - started

    assert result.status is Status.TIMEOUT
    assert "did not complete the SSH handshake in time" in result.message
    assert timeout <= elapsed < timeout + 3


def test_a_pin_does_not_override_revoked(
    tmp_path: Path, sshd: SSHServer, other: ExtraSSHD, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"@revoked * {other.host_keys[kind]}\n" for kind in ("ed25519", "ecdsa")))
    pinned = host("h", other.ports[0], keys["good"], sshd.user, pin=other.fingerprint("ed25519"))

    result = checker(HostTrust(KnownHosts.load(path)))(pinned)

    assert result.status is Status.HOST_KEY_CHANGED
    assert "@revoked" in result.message


def test_accept_new_adds_the_key_of_a_real_server_and_a_hashed_file_stays_hashed(
    tmp_path: Path, sshd: SSHServer, other: ExtraSSHD, keys: dict[str, KeyPair], checker: MakeChecker,
) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line(sshd.port, sshd.host_public_key) + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    record = KnownHostsAppender(path, hashed=KnownHosts.load(path).hashes_names)
    trust = HostTrust(KnownHosts.load(path), accept_new=True, record=record)
    fleet = [host("old", sshd.port, keys["good"], sshd.user), host("new", other.ports[1], keys["good"], sshd.user)]
    trust.prepare(fleet)

    results = run_checks(fleet, checker(trust), concurrency=2).results
    record.close()

    assert [(result.status, result.host_key_trusted_on_first_use) for result in results] == [
        (Status.OK, False), (Status.OK, True)
    ]
    assert str(other.ports[1]) not in path.read_text()  # hashed, as ssh-keygen -H left the file
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[{HOST}]:{other.ports[1]}", "-f", str(path)],
        check=True, capture_output=True, text=True,
    )
    assert other.host_keys["ed25519"].split()[1] in found.stdout  # OpenSSH itself finds the line we wrote
