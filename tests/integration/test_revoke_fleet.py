"""`recovery revoke` against real sshd: each host a lab of its own (its own user and authorized_keys).

a and b hold the stolen key, c never did, d rejects the admin key, e is down. The run goes on past d
and e, reports them, and proves the stolen key rejected where it was removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.cli.main import main
from recovery.errors import VerifyError
from recovery.ssh.keys import KeyPair, generate_keypair
from recovery.ssh.verifier import ParamikoVerifier, SSHTarget
from tests.integration.sshd_fixture import SSHServer, running_sshd
from tests.integration.sshd_fleet import closed_port

OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBF9u7Q3vUMKTGjzHVZP1bzUXXOCVHTBTvjXwcoxnP0v other@ops"


@dataclass(frozen=True)
class Fleet:
    labs: dict[str, SSHServer]
    down_port: int
    admin: KeyPair
    stolen: KeyPair
    directory: Path

    def ak(self, name: str) -> Path:
        return self.labs[name].home / ".ssh" / "authorized_keys"

    def seed(self) -> None:
        admin, stolen = self.admin.public_line, self.stolen.public_line
        self.ak("a").write_text(f"{admin}\n{stolen}\n{OTHER}\n")
        self.ak("b").write_text(f'from="127.0.0.1" {stolen}\r\n{admin}\n{stolen}')  # CRLF, no final newline
        self.ak("c").write_text(f"{admin}\n{OTHER}\n")
        self.ak("d").write_text(f"{stolen}\n")  # the admin key does not get in

    def inventory(self, names: tuple[str, ...] = ("a", "b", "c", "d", "e")) -> Path:
        lines = ["defaults:", f"  key: {self.admin.private_path}", "hosts:"]
        for name in names:
            if name == "e":
                lines += [f"  - name: {name}", "    host: 127.0.0.1", f"    port: {self.down_port}",
                          "    user: nobody", "    host_key: SHA256:" + "A" * 43]
                continue
            lab = self.labs[name]
            lines += [f"  - name: {name}", f"    host: {lab.host}", f"    port: {lab.port}", f"    user: {lab.user}",
                      f"    host_key: {lab.host_key_sha256}"]
        path = self.directory / f"inventory-{'-'.join(names)}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def logs_in(self, name: str, key: KeyPair) -> bool:
        lab = self.labs[name]
        try:
            ParamikoVerifier().verify(SSHTarget(lab.host, lab.port, lab.user, lab.host_key_sha256), key, timeout=10)
        except VerifyError:
            return False
        return True


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("revoke")
    with ExitStack() as stack:
        labs = {name: stack.enter_context(running_sshd()) for name in "abcd"}
        down = stack.enter_context(closed_port())
        yield Fleet(labs, down, generate_keypair(directory / "admin", comment="admin"),
                    generate_keypair(directory / "stolen", comment="stolen@laptop"), directory)


def revoke(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], *extra: str, names: tuple[str, ...] = ("a", "b", "c", "d", "e")
) -> tuple[int, dict[str, dict[str, object]]]:
    code = main(["revoke", "--public-key", str(fleet.stolen.public_path), "--inventory", str(fleet.inventory(names)),
                 "--format", "json", "--timeout", "10", *extra])
    document = json.loads(capsys.readouterr().out)
    return code, {host["name"]: host for host in document["hosts"]}


def test_dry_run_lists_the_holders_and_changes_nothing(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.seed()
    before = {name: fleet.ak(name).read_bytes() for name in "abcd"}

    code, hosts = revoke(fleet, capsys, "--dry-run")

    assert code == 1
    assert {name: host["status"] for name, host in hosts.items()} == {
        "a": "holds_key", "b": "holds_key", "c": "clean", "d": "auth_rejected", "e": "refused"}
    assert {name: fleet.ak(name).read_bytes() for name in "abcd"} == before


def test_the_key_is_removed_and_proven_rejected_while_down_hosts_are_reported(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.seed()
    assert fleet.logs_in("a", fleet.stolen)

    code, hosts = revoke(fleet, capsys, "--stolen-key", str(fleet.stolen.private_path))

    assert code == 1  # d and e could not be checked
    assert {name: (host["status"], host["proof"]) for name, host in hosts.items()} == {
        "a": ("removed", "auth_rejected"), "b": ("removed", "auth_rejected"), "c": ("clean", "auth_rejected"),
        "d": ("auth_rejected", None), "e": ("refused", None)}
    assert fleet.ak("a").read_text() == f"{fleet.admin.public_line}\n{OTHER}\n"
    assert fleet.ak("b").read_bytes() == f"{fleet.admin.public_line}\n".encode()
    assert fleet.ak("d").read_text() == f"{fleet.stolen.public_line}\n"  # untouched: it could not be reached
    assert not fleet.logs_in("a", fleet.stolen)
    assert fleet.logs_in("a", fleet.admin)
    files = hosts["a"]["files"]
    assert isinstance(files, list)
    [file_a] = files
    assert file_a["removed"] == [f"{fleet.stolen.sha256} stolen@laptop"]
    assert file_a["backup"]


def test_every_host_clean_exits_0_and_a_second_run_changes_nothing(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.seed()
    assert revoke(fleet, capsys, names=("a", "b", "c"))[0] == 0

    code, hosts = revoke(fleet, capsys, "--stolen-key", str(fleet.stolen.private_path), names=("a", "b", "c"))

    assert code == 0
    assert {host["status"] for host in hosts.values()} == {"clean"}


def test_by_fingerprint_and_max_changes(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.seed()
    code = main(["revoke", "--fingerprint", fleet.stolen.sha256, "--inventory", str(fleet.inventory(("a", "b"))),
                 "--format", "json", "--max-changes", "1", "--concurrency", "1"])
    hosts = {host["name"]: host for host in json.loads(capsys.readouterr().out)["hosts"]}

    assert code == 1
    assert [hosts["a"]["status"], hosts["b"]["status"]] == ["removed", "not_changed"]
    assert fleet.stolen.public_line in fleet.ak("b").read_text()


def test_refuses_to_revoke_the_admin_key(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.seed()
    code = main(["revoke", "--public-key", str(fleet.admin.public_path), "--inventory", str(fleet.inventory(("a",)))])

    assert code == 2
    assert "rotate the admin key first" in capsys.readouterr().err
    assert fleet.admin.public_line in fleet.ak("a").read_text()


def test_junit_names_the_hosts_not_clean(fleet: Fleet, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fleet.seed()
    output = tmp_path / "revoke.xml"
    code = main(["revoke", "--public-key", str(fleet.stolen.public_path), "--inventory",
                 str(fleet.inventory(("c", "e"))), "--format", "junit", "--output", str(output)])

    assert code == 1
    text = output.read_text()
    assert 'tests="2" failures="1"' in text
    assert '<failure type="refused"' in text
