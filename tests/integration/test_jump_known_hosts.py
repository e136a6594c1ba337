"""`--accept-new` records a jump host's key as it records a VM's, with real bastion sshd.

ssh's ``StrictHostKeyChecking=accept-new``: an unknown key is accepted and appended to the
known_hosts file in use, a changed one refused. Before, audit and revoke accepted an unpinned
bastion's key with `--accept-new` and wrote nothing, so the next run without it failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
from recovery.ssh.keys import generate_keypair
from tests.integration.test_jump_sshd import Bastion, two_bastions
from tests.integration.test_jump_sshd import Site as JumpSite

# Another host's key, already in the file: it must stay as it is.
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@dataclass(frozen=True)
class Site(JumpSite):
    directory: Path

    def public(self, name: str) -> str:
        """`type base64` of bastion `name`'s host key, as known_hosts holds it."""
        return " ".join((self.directory / f"{name}_host_key.pub").read_text().split()[:2])

    def jump(self, *bastions: Bastion) -> str:
        return ",".join(f"{self.vm.user}@127.0.0.1:{hop.port}" for hop in bastions)

    def inventory(self, path: Path, jump: str, pins: str = "") -> Path:
        """The VM pinned, behind `jump`; without `pins` only known_hosts or --accept-new vouch for the bastions."""
        path.write_text(f"hosts:\n  - {{name: vm, host: 127.0.0.1, port: {self.vm.port}, "
                        f"host_key: '{self.vm.host_key_sha256}', user: {self.vm.user}, "
                        f"key: {self.vm_key.private_path}, jump: '{jump}', jump_keys: {self.jump_key.private_path}, "
                        f"jump_host_keys: '{pins}'}}\n")
        return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("jump-known")
    with two_bastions(directory) as bed:
        yield Site(bed.vm, bed.first, bed.second, bed.vm_key, bed.jump_key, directory)


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["audit", "--format", "json", "--timeout", "60", *args])
    return code, json.loads(capsys.readouterr().out)


def test_accept_new_appends_each_unpinned_bastion_and_the_next_audit_checks_against_it(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = site.inventory(tmp_path / "two-hops.yaml", site.jump(site.first, site.second))
    known = tmp_path / "known_hosts"
    known.write_text(f"other.example {OTHER}")  # no final newline: the next line must not be glued to it

    accepted, report = audit(capsys, "--inventory", str(inventory), "--accept-new", "--known-hosts", str(known))
    checked, again = audit(capsys, "--inventory", str(inventory), "--known-hosts", str(known))

    assert accepted == 0, report
    assert known.read_text() == (f"other.example {OTHER}\n[127.0.0.1]:{site.first.port} {site.public('b1')}\n"
                                 f"[127.0.0.1]:{site.second.port} {site.public('b2')}\n")
    assert report["summary"]["known_hosts_added"] == [  # type: ignore[index]
        {"name": f"[127.0.0.1]:{hop.port}", "key_type": "ssh-ed25519", "fingerprint": hop.host_key}
        for hop in (site.first, site.second)
    ]
    assert checked == 0, again
    assert again["summary"]["known_hosts_added"] == []  # type: ignore[index]


def test_the_json_report_names_the_hosts_jump_hosts_by_host_and_port(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pins = f"{site.first.host_key},{site.second.host_key}"
    inventory = site.inventory(tmp_path / "two-hops.yaml", site.jump(site.first, site.second), pins)

    code, report = audit(capsys, "--inventory", str(inventory))

    [host] = report["hosts"]  # type: ignore[misc]
    assert code == 0, host
    assert host["jumps"] == [{"host": "127.0.0.1", "port": hop.port} for hop in (site.first, site.second)]


def test_a_hashed_file_gets_hashed_lines_and_keeps_its_own(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = site.inventory(tmp_path / "one-hop.yaml", site.jump(site.first))
    known = tmp_path / "known_hosts"
    other = KnownHostsAppender(known, hashed=True)
    other.add("other.example", 22, OTHER)
    other.close()
    before = known.read_text()

    code, report = audit(capsys, "--inventory", str(inventory), "--accept-new", "--known-hosts", str(known))

    assert code == 0, report
    text = known.read_text()
    assert text.startswith(before)
    added = text[len(before):]
    assert added.startswith("|1|")
    assert "127.0.0.1" not in added
    assert added.count("\n") == 1
    [found] = KnownHosts.load(known).lookup("127.0.0.1", site.first.port)
    assert found.fingerprint == site.first.host_key


def test_a_bastion_key_that_changed_is_refused_and_nothing_is_written(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = site.inventory(tmp_path / "one-hop.yaml", site.jump(site.first))
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{site.first.port} {site.public('b2')}\n")  # another key on file for b1

    code, report = audit(capsys, "--inventory", str(inventory), "--accept-new", "--known-hosts", str(known))

    [host] = report["hosts"]  # type: ignore[misc]
    assert (code, host["status"]) == (1, "host_key_changed")
    assert host["message"].startswith(f"jump host {site.jump(site.first)}: ")
    assert known.read_text() == f"[127.0.0.1]:{site.first.port} {site.public('b2')}\n"
    assert report["summary"]["known_hosts_added"] == []  # type: ignore[index]


def test_revoke_accept_new_records_the_bastion_in_the_users_known_hosts(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # revoke's --accept-new records in ~/.ssh/known_hosts, as ssh
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen")
    inventory = site.inventory(tmp_path / "one-hop.yaml", site.jump(site.first))

    code = main(["revoke", "--public-key", str(stolen.public_path), "--inventory", str(inventory), "--dry-run",
                 "--accept-new", "--format", "json", "--timeout", "60"])

    out, err = capsys.readouterr()
    [host] = json.loads(out)["hosts"]
    assert code == 0, host
    assert (tmp_path / ".ssh" / "known_hosts").read_text() == f"[127.0.0.1]:{site.first.port} {site.public('b1')}\n"
    assert f"permanently added 1 new host key(s) to {tmp_path}/.ssh/known_hosts (--accept-new): " \
           f"[127.0.0.1]:{site.first.port} ssh-ed25519 {site.first.host_key}" in err


def test_a_bastion_key_marked_revoked_is_refused_even_with_accept_new(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a VM's: `@revoked` is checked first, so --accept-new neither accepts nor records that key."""
    inventory = site.inventory(tmp_path / "one-hop.yaml", site.jump(site.first))
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked [127.0.0.1]:{site.first.port} {site.public('b1')}\n")

    code, report = audit(capsys, "--inventory", str(inventory), "--accept-new", "--known-hosts", str(known))

    [host] = report["hosts"]  # type: ignore[misc]
    assert (code, host["status"]) == (1, "host_key_changed")
    assert host["message"].startswith(f"jump host {site.jump(site.first)}: ")
    assert "@revoked" in host["message"]
    assert known.read_text() == f"@revoked [127.0.0.1]:{site.first.port} {site.public('b1')}\n"
