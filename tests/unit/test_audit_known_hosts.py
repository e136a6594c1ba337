"""The audit's host key policy over known_hosts: @revoked over pins, hashed lookups, accept-new's appending."""

from __future__ import annotations

import base64
import hashlib
import hmac
import multiprocessing
import threading
from pathlib import Path

import pytest

from recovery.audit.engine import HostTrust
from recovery.audit.model import Host
from recovery.errors import HostKeyMismatch, VerifyError
from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender, _Sha1Pads
from recovery.ssh.keys import fingerprint_sha256

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINtVjkJUVDUd+Fbp0qgMhRtJ8ZPi8GIvzL+uYs4XT/Ur"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFr4v3rQoxC4W+qt1kYByHdWZOT5LOBteAVke3TU2ez0"
SHA_A, SHA_B = fingerprint_sha256(KEY_A), fingerprint_sha256(KEY_B)


def hashed(name: str, salt: bytes) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def known(tmp_path: Path, text: str) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return KnownHosts.load(path)


def host(address: str = "web-1", port: int = 22, pin: str | None = None) -> Host:
    return Host("h", address, port, "ops", (Path("/k"),), host_key=pin)


def test_revoked_beats_an_inventory_pin(tmp_path: Path) -> None:
    """Before, a `host_key` pin skipped known_hosts altogether, @revoked lines included."""
    trust = HostTrust(known(tmp_path, f"@revoked * {KEY_A}\n"))

    decision = trust.for_host(host(pin=SHA_A))

    with pytest.raises(HostKeyMismatch, match="@revoked"):
        decision.decide("ssh-ed25519", KEY_A)


def test_revoked_beats_accept_new(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"@revoked web-1 {KEY_A}\n")
    record = KnownHostsAppender(path)
    decision = HostTrust(KnownHosts.load(path), accept_new=True, record=record).for_host(host())

    with pytest.raises(HostKeyMismatch, match="@revoked"):
        decision.decide("ssh-ed25519", KEY_A)
    assert path.read_text() == f"@revoked web-1 {KEY_A}\n"  # nothing recorded


def test_hashed_lines_sharing_a_salt_cost_one_hmac_and_random_salts_are_prepared_up_front(tmp_path: Path) -> None:
    shared = b"s" * 20
    lines = [f"{hashed(f'other-{n}', shared)} {KEY_B}" for n in range(50)]
    lines += [f"{hashed('web-1', shared)} {KEY_A}", f"{hashed('[web-2]:2222', bytes(range(20)))} {KEY_B}"]
    known_hosts = known(tmp_path, "\n".join(lines) + "\n")
    trust = HostTrust(known_hosts)

    trust.prepare([host("web-1"), host("WEB-2", 2222)])

    assert [key.fingerprint for key in known_hosts.lookup("web-1", 22)] == [SHA_A]
    assert len(known_hosts._by_salt) == 2  # 52 hashed lines, 2 salts: a lookup is 2 HMACs
    assert trust._prepared == {
        ("web-1", 22): known_hosts.lookup("web-1", 22),
        ("web-2", 2222): known_hosts.lookup("web-2", 2222),
    }
    assert trust.for_host(host("web-2", 2222)).check.pins == [SHA_B]


def test_accept_new_records_the_key_and_the_next_audit_checks_it(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# mine\nweb-9 {KEY_B}")  # no newline at the end: the new line must not be glued on
    record = KnownHostsAppender(path)
    trust = HostTrust(KnownHosts.load(path), accept_new=True, record=record)

    trust.for_host(host("Web-1", 2222)).decide("ssh-ed25519", KEY_A + " comment")
    trust.for_host(host("web-1", 2222)).decide("ssh-ed25519", KEY_A)  # the same host twice in one run: one line
    record.close()

    assert path.read_text() == f"# mine\nweb-9 {KEY_B}\n[web-1]:2222 {KEY_A}\n"
    after = HostTrust(KnownHosts.load(path), accept_new=True).for_host(host("web-1", 2222))
    with pytest.raises(HostKeyMismatch):  # a known key that differs is a mismatch, never replaced
        after.decide("ssh-ed25519", KEY_B)


def test_a_hashed_file_gets_hashed_lines(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"{hashed('web-9', b'x' * 20)} {KEY_B}\n")
    record = KnownHostsAppender(path, hashed=KnownHosts.load(path).hashes_names)

    record.add("web-1", 22, KEY_A)
    record.close()

    assert "web-1" not in path.read_text()
    assert [key.fingerprint for key in KnownHosts.load(path).lookup("web-1", 22)] == [SHA_A]


def _append_many(path: str, worker: int) -> None:
    record = KnownHostsAppender(Path(path))
    for n in range(200):
        record.add(f"p{worker}-h{n}", 22, KEY_A)
    record.close()


def test_concurrent_audits_and_workers_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    record = KnownHostsAppender(path)
    threads = [
        threading.Thread(target=lambda t=t: [record.add(f"t{t}-h{n}", 22, KEY_B) for n in range(200)]) for t in range(4)
    ]
    processes = [
        multiprocessing.get_context("spawn").Process(target=_append_many, args=(str(path), w)) for w in range(3)
    ]
    for worker in [*threads, *processes]:
        worker.start()
    for worker in [*threads, *processes]:
        worker.join(60)
    record.close()

    lines = path.read_text().splitlines()
    assert len(lines) == 4 * 200 + 3 * 200
    assert all(line.split(" ", 1)[1] in (KEY_A, KEY_B) for line in lines)


def test_a_write_that_fails_is_the_hosts_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    record = KnownHostsAppender(path)
    record.close()  # every later write fails, as on a full disk

    with pytest.raises(VerifyError, match=f"could not add it to {path}"):
        record.add("web-1", 22, KEY_A)


@pytest.mark.parametrize("length", [0, 1, 20, 64, 65, 200])
def test_the_prehashed_pads_compute_the_same_hmac_as_the_standard_library(length: int) -> None:
    """Salts longer than SHA-1's block are hashed first, as RFC 2104 says; ssh's are 20 bytes."""
    salt = bytes(n % 256 for n in range(length))

    assert _Sha1Pads(salt).hmac(b"[web-1]:2222") == hmac.digest(salt, b"[web-1]:2222", "sha1")
