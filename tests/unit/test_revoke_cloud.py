"""`recovery revoke --cloud`: which Nova key pairs hold the key, and when they are deleted.

The cloud is a fake at the boundary `recovery.revoke.command` opens (the real Nova is in
tests/integration/test_revoke_cloud.py); its servers have no address, so no SSH is attempted.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import pytest

from recovery.cli.main import main
from recovery.cloud import KeyPairInfo, Server
from recovery.errors import CloudError
from recovery.revoke.engine import StolenKey
from recovery.revoke.keypairs import (
    KeyPairStatus,
    ask_on_terminal,
    keypair_matches,
    matching_keypairs,
    settle_keypairs,
)
from recovery.revoke.render import RevokeReport, render
from recovery.ssh.keys import KeyPair, generate_keypair

CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: generate_keypair(directory / name, comment=f"{name}@host") for name in ("stolen", "other", "admin")}


def nova_keypair(name: str, key: KeyPair, *, listed_public_key: bool = True) -> KeyPairInfo:
    """As Nova lists it: the MD5 fingerprint, and the public key unless the answer lacked it."""
    return KeyPairInfo(name, key.md5, key.public_line.split()[0], key.public_line if listed_public_key else "")


class FakeCloud:
    def __init__(self, keypairs: Sequence[KeyPairInfo] = (), servers: Sequence[Server] = (),
                 fail: dict[str, CloudError] | None = None) -> None:
        self.name = "fake"
        self.keypairs = list(keypairs)
        self.servers = list(servers)
        self.fail = fail or {}
        self.deleted: list[str] = []
        self.closed = False

    def list_servers(self) -> list[Server]:
        if "list_servers" in self.fail:
            raise self.fail["list_servers"]
        return self.servers

    def ssh_address(self, server: Server, network: str | None = None) -> str:
        raise CloudError(f"server {server.name!r} ({server.id}) has no IP address; give ssh_host explicitly")

    def list_keypairs(self) -> list[KeyPairInfo]:
        return self.keypairs

    def delete_keypair(self, name: str, *, missing_ok: bool = False) -> None:
        if name in self.fail:
            raise self.fail[name]
        self.deleted.append(name)
        self.keypairs = [item for item in self.keypairs if item.name != name]

    def close(self) -> None:
        self.closed = True


# -- matching -------------------------------------------------------------------------


@pytest.mark.parametrize("listed_public_key", [True, False])
def test_the_stolen_public_key_matches_novas_md5(keys: dict[str, KeyPair], listed_public_key: bool) -> None:
    stolen = StolenKey.from_public_line(keys["stolen"].public_line)
    assert keypair_matches(nova_keypair("a", keys["stolen"], listed_public_key=listed_public_key), stolen)
    assert not keypair_matches(nova_keypair("b", keys["other"], listed_public_key=listed_public_key), stolen)


def test_a_sha256_fingerprint_matches_through_the_listed_public_key(keys: dict[str, KeyPair]) -> None:
    stolen = StolenKey(sha256=keys["stolen"].sha256, md5="")
    assert keypair_matches(nova_keypair("a", keys["stolen"]), stolen)
    # Without the public key Nova's MD5 is all there is, and a SHA256 cannot be compared with it.
    assert not keypair_matches(nova_keypair("a", keys["stolen"], listed_public_key=False), stolen)


def test_an_md5_fingerprint_in_any_spelling_matches(keys: dict[str, KeyPair]) -> None:
    stolen = StolenKey(sha256="", md5=f"MD5:{keys['stolen'].md5}")
    upper = KeyPairInfo("a", keys["stolen"].md5.upper(), "ssh-ed25519")
    assert keypair_matches(upper, stolen)


def test_an_x509_key_pair_never_matches(keys: dict[str, KeyPair]) -> None:
    stolen = StolenKey.from_public_line(keys["stolen"].public_line)
    sha1 = ":".join(["ab"] * 20)
    assert not keypair_matches(KeyPairInfo("cert", sha1, "-----BEGIN", CERTIFICATE), stolen)


def test_a_public_key_that_is_not_base64_falls_back_to_novas_md5(keys: dict[str, KeyPair]) -> None:
    stolen = StolenKey.from_public_line(keys["stolen"].public_line)
    assert keypair_matches(KeyPairInfo("a", keys["stolen"].md5, "ssh-ed25519", "ssh-ed25519 AAAAC3NzaC1 x"), stolen)


def test_matching_key_pairs_are_sorted_by_name(keys: dict[str, KeyPair]) -> None:
    stolen = StolenKey.from_public_line(keys["stolen"].public_line)
    listed = [nova_keypair("z", keys["stolen"]), nova_keypair("ops", keys["other"]), nova_keypair("a", keys["stolen"])]
    assert [item.name for item in matching_keypairs(listed, stolen)] == ["a", "z"]


# -- confirmation ---------------------------------------------------------------------


def test_dry_run_deletes_nothing_even_with_yes(keys: dict[str, KeyPair]) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"])])
    outcomes = settle_keypairs(cloud, cloud.keypairs, dry_run=True, yes=True, ask=lambda _: True)
    assert [item.status for item in outcomes] == [KeyPairStatus.WOULD_DELETE]
    assert cloud.deleted == []


def test_without_yes_and_without_a_terminal_nothing_is_deleted(keys: dict[str, KeyPair]) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"])])
    [outcome] = settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=False, ask=None)
    assert (outcome.status, outcome.deleted) == (KeyPairStatus.NOT_CONFIRMED, False)
    assert "pass --yes" in outcome.message
    assert cloud.deleted == []


def test_yes_deletes_without_asking(keys: dict[str, KeyPair]) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"]), nova_keypair("b", keys["stolen"])])

    def ask(_: Sequence[KeyPairInfo]) -> bool:
        raise AssertionError("asked despite --yes")

    outcomes = settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=True, ask=ask)
    assert [(item.name, item.status) for item in outcomes] == [("a", "deleted"), ("b", "deleted")]
    assert cloud.deleted == ["a", "b"]


@pytest.mark.parametrize(("answer", "status"), [(True, KeyPairStatus.DELETED), (False, KeyPairStatus.DECLINED)])
def test_the_question_is_asked_once_with_every_key_pair(
    keys: dict[str, KeyPair], answer: bool, status: KeyPairStatus
) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"]), nova_keypair("b", keys["stolen"])])
    asked: list[list[str]] = []

    def ask(matching: Sequence[KeyPairInfo]) -> bool:
        asked.append([item.name for item in matching])
        return answer

    outcomes = settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=False, ask=ask)
    assert asked == [["a", "b"]]
    assert {item.status for item in outcomes} == {status}
    assert cloud.deleted == (["a", "b"] if answer else [])


def test_a_failed_deletion_is_reported_and_the_others_still_deleted(keys: dict[str, KeyPair]) -> None:
    refused = CloudError("cloud 'fake': delete key pair 'a': forbidden", status_code=403)
    cloud = FakeCloud([nova_keypair("a", keys["stolen"]), nova_keypair("b", keys["stolen"])], fail={"a": refused})
    outcomes = settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=True, ask=None)
    assert [(item.name, item.status) for item in outcomes] == [("a", "delete_failed"), ("b", "deleted")]
    assert "forbidden (HTTP 403)" in outcomes[0].message


def test_ctrl_c_at_the_prompt_keeps_every_key_pair(keys: dict[str, KeyPair]) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"])])

    def ask(_: Sequence[KeyPairInfo]) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=False, ask=ask)
    assert [item.status for item in caught.value.partial] == [KeyPairStatus.INTERRUPTED]  # type: ignore[attr-defined]
    assert cloud.deleted == []


@pytest.mark.parametrize(("typed", "expected"), [("y\n", True), ("YES\n", True), ("\n", False), ("", False)])
def test_the_terminal_question_names_each_key_pair(
    keys: dict[str, KeyPair], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    typed: str, expected: bool,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    ask = ask_on_terminal("prod", keys["stolen"].sha256)
    assert ask([nova_keypair("alice\x1b[2J", keys["stolen"])]) is expected
    prompt = capsys.readouterr().err
    assert "alice\\x1b[2J" in prompt
    assert keys["stolen"].md5 in prompt
    assert prompt.endswith("[y/N] ")


# -- the command ----------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch, keys: dict[str, KeyPair]) -> FakeCloud:
    fake = FakeCloud([nova_keypair("alice-laptop", keys["stolen"]), nova_keypair("ops", keys["other"])])
    monkeypatch.setattr("recovery.revoke.command._open_cloud", lambda name: fake)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return fake


def revoke(keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, object]]:
    code = main(["revoke", "--public-key", str(keys["stolen"].public_path), "--cloud", "fake", "--user", "ops",
                 "--key", str(keys["admin"].private_path), "--format", "json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


def test_no_terminal_no_yes_keeps_the_key_pair_and_exits_1(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = revoke(keys, capsys)
    assert code == 1
    assert report["keypairs"] == [{"name": "alice-laptop", "fingerprint": keys["stolen"].md5, "status": "not_confirmed",
                                   "deleted": False, "message": "not deleted: no terminal to confirm on; pass --yes "
                                   "to delete it"}]
    assert report["hosts"] == []  # a project without servers still has key pairs to delete
    assert cloud.deleted == []
    assert cloud.closed


def test_yes_deletes_only_the_matching_key_pair_and_exits_0(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = revoke(keys, capsys, "--yes")
    assert code == 0
    assert cloud.deleted == ["alice-laptop"]
    assert report["summary"] == {"hosts": 0, "clean": 0, "not_clean": 0, "changed": 0, "keypairs_deleted": 1,
                                 "keypairs_kept": 0}


@pytest.mark.parametrize(("typed", "code", "deleted"), [("y\n", 0, ["alice-laptop"]), ("n\n", 1, [])])
def test_on_a_terminal_the_answer_decides(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    typed: str, code: int, deleted: list[str],
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(typed))
    assert main(["revoke", "--public-key", str(keys["stolen"].public_path), "--cloud", "fake", "--user", "ops",
                 "--key", str(keys["admin"].private_path)]) == code
    captured = capsys.readouterr()
    assert "  alice-laptop  (" in captured.err
    assert "  ops  (" not in captured.err
    assert cloud.deleted == deleted
    assert ("deleted" if deleted else "declined") in captured.out


def test_ctrl_c_at_the_question_writes_the_report_and_exits_130(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted(Terminal):
        def readline(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    cloud.servers = [Server("srv-1", "web-1", "ACTIVE", {})]
    monkeypatch.setattr("sys.stdin", Interrupted())
    code, report = revoke(keys, capsys)
    assert code == 130
    assert report["interrupted"] is True
    assert report["keypairs"][0]["status"] == "interrupted"  # type: ignore[index]
    assert [(host["name"], host["status"]) for host in report["hosts"]] == [  # type: ignore[attr-defined]
        ("web-1", "interrupted")]
    assert cloud.deleted == []


def test_a_server_without_address_is_reported_with_the_clouds_reason(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.servers = [Server("srv-1", "web-1", "SHUTOFF", {})]
    code, report = revoke(keys, capsys, "--yes")
    assert code == 1
    [host] = report["hosts"]  # type: ignore[misc]
    assert (host["name"], host["status"]) == ("web-1", "no_address")
    assert "has no IP address" in host["message"]


def test_credentials_refused_is_one_paragraph_exit_1_and_nothing_changed(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.fail["list_servers"] = CloudError(
        "cloud 'fake': list servers: the cloud refused the credentials (The request you have made requires "
        "authentication.); check clouds.yaml/secure.yaml and the user's roles in this project",
        status_code=401, request_id="req-1",
    )
    assert main(["revoke", "--public-key", str(keys["stolen"].public_path), "--cloud", "fake", "--user", "ops",
                 "--key", str(keys["admin"].private_path), "--yes"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert "refused the credentials" in line
    assert "(HTTP 401, request req-1)" in line
    assert line.endswith("Nothing was changed: no host was contacted and no key pair deleted")
    assert cloud.deleted == []
    assert cloud.closed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cloud", "fake", "--key", "k"], "--cloud needs --user and --key"),
        (["--cloud", "fake", "--user", "ops"], "--cloud needs --user and --key"),
        (["--inventory", "hosts.yaml", "--server-filter", "web"], "--server-filter chooses cloud servers"),
        (["--inventory", "hosts.yaml", "--network", "private"], "--network chooses cloud servers"),
        (["--inventory", "hosts.yaml", "--yes"], "--yes only confirms deleting Nova key pairs"),
    ],
)
def test_usage_errors_before_the_cloud_is_opened(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["revoke", "--public-key", str(keys["stolen"].public_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not cloud.closed  # never opened


def test_the_admin_key_is_refused_before_the_cloud_is_opened(
    cloud: FakeCloud, keys: dict[str, KeyPair], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "--public-key", str(keys["admin"].public_path), "--cloud", "fake", "--user", "ops",
                 "--key", str(keys["admin"].private_path), "--yes"]) == 2
    assert "rotate the admin key first" in capsys.readouterr().err
    assert not cloud.closed


# -- the report -----------------------------------------------------------------------


def test_every_format_says_which_key_pairs_were_kept_and_why(keys: dict[str, KeyPair]) -> None:
    cloud = FakeCloud([nova_keypair("a", keys["stolen"]), nova_keypair("b", keys["stolen"])],
                      fail={"b": CloudError("cloud 'fake': delete key pair 'b': busy")})
    outcomes = settle_keypairs(cloud, cloud.keypairs, dry_run=False, yes=True, ask=None)
    report = RevokeReport(keys["stolen"].sha256, False, [], 0.5, cloud="fake", keypairs=outcomes)

    table = render(report, "table").splitlines()
    junit = render(report, "junit")
    summary = json.loads(render(report, "json"))["summary"]

    assert table[2].split()[:3] == ["KEY", "PAIR", "FINGERPRINT"]
    assert table[3].split()[:3] == ["a", keys["stolen"].md5, "deleted"]
    assert table[4].split()[2] == "delete_failed"
    assert "busy" in table[4]
    assert "Nova key pairs holding it: 1 deleted, 1 kept" in table[-1]
    assert 'tests="2" failures="1"' in junit
    assert 'classname="recovery.revoke.keypair" name="b"' in junit
    assert (summary["keypairs_deleted"], summary["keypairs_kept"]) == (1, 1)
    assert not report.proven_clean


def test_a_cloud_without_matching_key_pairs_says_so(keys: dict[str, KeyPair]) -> None:
    report = RevokeReport(keys["stolen"].sha256, False, [], 0.5, cloud="prod")
    text = render(report, "table")
    assert "Nova key pairs: none of those visible to these credentials in 'prod' holds the key" in text
    assert text.splitlines()[-1].endswith("; no Nova key pair holds it")
    assert report.proven_clean
    assert "keypairs" not in json.loads(render(RevokeReport("x", False, [], 0.1), "json"))  # --inventory: unchanged

