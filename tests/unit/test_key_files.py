"""Which files sshd reads a user's keys from: the guest's report (run for real in each shell) and its reading.

The script is given a test sshd_config; one with an unloadable HostKey makes `sshd -T` fail, as it
does for a user who cannot read the host keys, so the configuration files are followed instead.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.errors import GuestCommandError
from recovery.guest import KeyFilesReport, build_key_files_script, parse_key_files_report
from recovery.ssh.key_files import expand, for_user, from_config
from tests.unit import test_guest_script as install
from tests.unit.test_guest_script import NONCE, Box, new_box

busybox_bin = install.busybox_bin
NO_SSHD_T = "HostKey /nonexistent/rcv_host_key\n"  # sshd -T cannot load it: the files are read


@pytest.fixture(params=sorted(install.SHELLS))
def box(request: pytest.FixtureRequest, busybox_bin: Path) -> Iterator[Box]:
    with new_box(request.param, busybox_bin) as fresh:
        yield fresh


def probe(box: Box, config: Path, users: list[str] | None) -> KeyFilesReport:
    run = box.run(build_key_files_script(users, nonce=NONCE, config=str(config)))
    assert run.code == 0, f"{run.out}\n{run.err}"
    return parse_key_files_report(run.out, NONCE, config=str(config))


def me() -> str:
    return getpass.getuser()


# --- token expansion ---------------------------------------------------------------------------------------------

def test_tokens_are_expanded_as_sshd_does_and_relative_paths_start_at_home() -> None:
    assert expand(".ssh/authorized_keys .ssh/authorized_keys2", "alice", "1001", "/home/alice") == (
        "/home/alice/.ssh/authorized_keys", "/home/alice/.ssh/authorized_keys2")
    assert expand("/etc/ssh/authorized_keys/%u %h/keys/%U /srv/100%%/%u", "alice", "1001", "/home/alice/") == (
        "/etc/ssh/authorized_keys/alice", "/home/alice//keys/1001", "/srv/100%/alice")


def test_none_means_no_file_and_an_unknown_token_is_refused() -> None:
    assert expand("none", "alice", "1", "/home/alice") == ()
    assert expand("NONE", "alice", "1", "/home/alice") == ()
    with pytest.raises(ValueError, match="unknown token %d"):
        expand("/keys/%d", "alice", "1", "/home/alice")


def test_a_quoted_path_with_a_space_is_one_file() -> None:
    assert expand('".ssh/my keys" /k/%u', "bob", "2", "/home/bob") == ("/home/bob/.ssh/my keys", "/k/bob")


# --- the configuration files, followed where sshd -T cannot run --------------------------------------------------

def test_includes_are_read_in_place_and_the_first_value_wins(box: Box) -> None:
    etc = box.root / "etc-ssh"
    (etc / "sshd_config.d").mkdir(parents=True)
    (etc / "sshd_config").write_text(
        f"{NO_SSHD_T}Include sshd_config.d/*.conf\nAuthorizedKeysFile .ssh/authorized_keys\n"
        "AuthorizedKeysCommand /usr/bin/not-this-one\n")
    (etc / "sshd_config.d" / "20-keys.conf").write_text("  authorizedkeysfile=.ssh/authorized_keys /etc/keys/%u\n")
    (etc / "sshd_config.d" / "10-cmd.conf").write_text("AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys %u\n")
    (etc / "sshd_config.d" / "30-ignored.txt").write_text("AuthorizedKeysFile /not/a/conf\n")

    report = probe(box, etc / "sshd_config", [me()])

    assert report.read_from == "files"
    assert from_config(report) == (".ssh/authorized_keys /etc/keys/%u", "/usr/bin/sss_ssh_authorizedkeys %u", [])
    sources = for_user(report, me())
    home = report.users[me()][1]
    assert sources.files == (f"{home.rstrip('/')}/.ssh/authorized_keys", f"/etc/keys/{me()}")
    assert (sources.read_from, sources.command) == ("sshd_config", "/usr/bin/sss_ssh_authorizedkeys %u")


def test_a_match_block_is_not_applied_and_said_so(box: Box) -> None:
    etc = box.root / "etc-ssh"
    etc.mkdir()
    (etc / "sshd_config").write_text(
        f"{NO_SSHD_T}PasswordAuthentication no\nMatch User {me()}\n    AuthorizedKeysFile /etc/keys/%u\n")

    sources = for_user(probe(box, etc / "sshd_config", [me()]), me())

    assert sources.files[0].endswith("/.ssh/authorized_keys")
    assert sources.files[1].endswith("/.ssh/authorized_keys2")  # sshd's default: nothing outside Match sets it
    assert sources.notes == ("a Match block sets AuthorizedKeysFile, not applied: sshd -T could not run "
                             "(needs root or sudo -n)",)


def test_without_a_readable_configuration_sshds_default_is_assumed_and_said_so(box: Box) -> None:
    report = probe(box, box.root / "no-such-dir" / "sshd_config", [me()])

    sources = for_user(report, me())

    assert sources.read_from == "sshd's default"
    assert [Path(path).name for path in sources.files] == ["authorized_keys", "authorized_keys2"]
    assert "sshd's default AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 assumed" in sources.notes[0]


def test_an_include_loop_ends(box: Box) -> None:
    etc = box.root / "etc-ssh"
    etc.mkdir()
    (etc / "sshd_config").write_text(f"{NO_SSHD_T}Include sshd_config\nAuthorizedKeysFile /k/%u\n")

    assert from_config(probe(box, etc / "sshd_config", [me()]))[0] == "/k/%u"


def test_every_user_with_a_home_is_listed_when_no_user_is_named(box: Box) -> None:
    report = probe(box, box.root / "sshd_config", None)

    assert report.users["root"][0] == "0"
    assert me() in report.users


def test_no_exit_line_means_the_script_did_not_finish() -> None:
    with pytest.raises(GuestCommandError, match="did not finish"):
        parse_key_files_report(f"RCV-{NONCE} pw=root:0:/root\n", NONCE)


# --- sshd -T, where it runs: Match blocks applied -----------------------------------------------------------------

def test_sshd_t_answers_for_the_user_with_match_blocks_applied(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: sshd -T is run as root (no user may read host keys)")
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\nAuthorizedKeysFile .ssh/authorized_keys\nMatch User {me()}\n"
                      "    AuthorizedKeysFile /etc/keys/%u\n    AuthorizedKeysCommand /usr/bin/keys-for %u\n"
                      "    AuthorizedKeysCommandUser nobody\n")
    script = build_key_files_script([me()], nonce=NONCE, config=str(config))
    run = subprocess.run(["/bin/sh", "-s"], input=script.raw(), capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_CLIENT": "127.0.0.9 5000 22"})

    sources = for_user(parse_key_files_report(run.stdout, NONCE, config=str(config)), me())

    assert (sources.read_from, sources.files, sources.command, sources.notes) == (
        "sshd -T", (f"/etc/keys/{me()}",), "/usr/bin/keys-for %u", ())
