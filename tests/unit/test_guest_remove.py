"""The key removal script, run for real under bash, dash and busybox ash in a throwaway HOME.

The same boxes as the install script's tests (`tests.unit.test_guest_script`): busybox runs with
busybox applets only (no ssh-keygen, no getent, no --reference options), like a minimal VM.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.channels.dialogue import ConsoleSession
from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import GuestCommandError
from recovery.guest import (
    GuestScript,
    RemoveExitCode,
    RemoveReport,
    RemoveSpec,
    blob_fingerprints,
    build_remove_script,
    explain_remove_exit,
    heredoc_delimiter,
    key_blob,
    normalize_fingerprint,
    parse_remove_report,
)
from recovery.safety.redact import Text, reveal
from recovery.ssh.key_files import KeySources
from recovery.steps.authorized_keys import RemoveParams, _remove_check
from recovery.steps.authorized_keys import remove as remove_step
from tests.unit import test_guest_script as install
from tests.unit.fake_console import FakeConsole
from tests.unit.test_guest_script import NOBODY, NONCE, Box, ed25519_line, fingerprint, new_box, rsa_line

busybox_bin = install.busybox_bin  # the module-scoped directory of busybox applets

STOLEN = ed25519_line("stolen@laptop", b"stolen")
ADMIN = ed25519_line("admin@bastion", b"admin")
OTHER = ed25519_line("other key with spaces", b"other")
LONG = rsa_line("big@rsa")
OPTIONS = f'from="10.0.0.0/8",command="echo hi there" {OTHER}'


def spec(**kwargs: object) -> RemoveSpec:
    return RemoveSpec(**kwargs)  # type: ignore[arg-type]


def script(value: RemoveSpec, *, facts: bool = True) -> GuestScript:
    return build_remove_script(value, nonce=NONCE, facts=facts)


def blob(line: str) -> str:
    return key_blob(line)


@pytest.fixture(params=sorted(install.SHELLS))
def box(request: pytest.FixtureRequest, busybox_bin: Path) -> Iterator[Box]:
    with new_box(request.param, busybox_bin) as fresh:
        yield fresh


def removed(box: Box, value: RemoveSpec, **kwargs: object) -> RemoveReport:
    run = box.run(script(value), **kwargs)  # type: ignore[arg-type]
    assert run.code == 0, f"exit {run.code}: {explain_remove_exit(run.code)}\n{run.out}\n{run.err}"
    report = parse_remove_report(run.out, NONCE)
    assert report.ok
    assert not list(box.ssh.glob(".recovery-*")), "the temporary file is left behind"
    return report


def test_removes_by_blob_and_keeps_everything_else_byte_for_byte(box: Box) -> None:
    content = (
        "# managed by hand\n"
        f"{OPTIONS}\n"
        f"{STOLEN}\n"
        "\n"
        f"{ADMIN}\r\n"
        f"{STOLEN}\n"  # a duplicate goes too
        f"{LONG}"  # no final newline
    )
    box.seed(content, mode=0o644)

    report = removed(box, spec(blobs=(blob(STOLEN),)))

    assert box.ak.read_bytes().decode() == f"# managed by hand\n{OPTIONS}\n\n{ADMIN}\r\n{LONG}\n"
    assert box.ak.stat().st_mode & 0o777 == 0o644
    assert report.status == "removed"
    assert [(key.line, key.sha256, key.comment) for key in report.removed] == [
        (3, fingerprint(STOLEN), "stolen@laptop"), (6, fingerprint(STOLEN), "stolen@laptop")
    ]
    assert [key.sha256 for key in report.kept] == [fingerprint(OTHER), fingerprint(ADMIN), fingerprint(LONG)]
    assert report.kept[0].comment == "other key with spaces"
    [backup] = box.backups()
    assert backup.read_bytes().decode() == content
    assert report.backup == str(backup)
    assert report.summary()["removed"] == [f"{fingerprint(STOLEN)} stolen@laptop"] * 2


def test_nothing_to_remove_leaves_the_file_alone(box: Box) -> None:
    box.seed(f"{ADMIN}\n")
    before = box.ak.stat().st_mtime_ns

    report = removed(box, spec(blobs=(blob(STOLEN),)))

    assert report.status == "nothing-to-remove"
    assert box.ak.stat().st_mtime_ns == before
    assert box.backups() == []
    assert [key.sha256 for key in report.kept] == [fingerprint(ADMIN)]


def test_a_missing_file_is_reported_absent(box: Box) -> None:
    report = removed(box, spec(blobs=(blob(STOLEN),)))

    assert report.status == "absent"
    assert not box.ak.exists()


@pytest.mark.parametrize("form", ["sha256", "md5"])
def test_removes_by_fingerprint_where_ssh_keygen_exists(box: Box, form: str) -> None:
    box.seed(f"{ADMIN}\n{STOLEN}\n")
    sha, md5 = blob_fingerprints(blob(STOLEN))
    value = spec(fingerprints=(sha if form == "sha256" else md5.removeprefix("MD5:"),))

    run = box.run(script(value))

    report = parse_remove_report(run.out, NONCE)
    if box.name == "busybox":  # no ssh-keygen: a fingerprint cannot be matched, nothing changes
        assert run.code == RemoveExitCode.NO_FINGERPRINT_TOOL
        assert report.error == "no-fingerprint-tool"
        assert box.ak.read_bytes().decode() == f"{ADMIN}\n{STOLEN}\n"
        return
    assert run.code == 0, run.out + run.err
    assert box.ak.read_bytes().decode() == f"{ADMIN}\n"
    assert [key.sha256 for key in report.removed] == [fingerprint(STOLEN)]


def test_removes_by_exact_line_only(box: Box) -> None:
    box.seed(f"{OPTIONS}\n{OTHER}\n{STOLEN} x\n")

    report = removed(box, spec(lines=(OTHER, STOLEN)))

    assert box.ak.read_bytes().decode() == f"{OPTIONS}\n{STOLEN} x\n"  # same key, other line: kept
    assert [key.line for key in report.removed] == [2]


def test_removes_by_comment_with_awkward_characters(box: Box) -> None:
    nasty = "o'b \"q\" $HOME `id` \\ !x ${n} $(id)"
    victim = ed25519_line(nasty, b"nasty")
    box.seed(f"{ADMIN}\n{victim}\n{OTHER}\n")

    report = removed(box, spec(comments=(nasty, "other key with spaces")))

    assert box.ak.read_bytes().decode() == f"{ADMIN}\n"
    assert [key.comment for key in report.removed] == [nasty, "other key with spaces"]


def test_exclusive_keeps_only_the_listed_keys_and_the_comments(box: Box) -> None:
    box.seed(f"# keep me\n{STOLEN}\n{OPTIONS}\n{ADMIN}\n{LONG}\n")

    report = removed(box, spec(blobs=(blob(ADMIN), blob(OTHER)), exclusive=True))

    assert box.ak.read_bytes().decode() == f"# keep me\n{OPTIONS}\n{ADMIN}\n"
    assert {key.sha256 for key in report.removed} == {fingerprint(STOLEN), fingerprint(LONG)}


def test_refuses_to_remove_the_last_proven_key(box: Box) -> None:
    box.seed(f"{ADMIN}\n{STOLEN}\n")

    run = box.run(script(spec(blobs=(blob(ADMIN),), protect=(blob(ADMIN),))))

    assert run.code == RemoveExitCode.LAST_PROVEN_KEY
    assert parse_remove_report(run.out, NONCE).error == "last-proven-key"
    assert box.ak.read_bytes().decode() == f"{ADMIN}\n{STOLEN}\n"
    assert box.backups() == []


def test_removing_a_proven_key_is_fine_while_another_proven_key_stays(box: Box) -> None:
    box.seed(f"{ADMIN}\n{OTHER}\n")

    removed(box, spec(blobs=(blob(ADMIN),), protect=(blob(ADMIN), blob(OTHER))))

    assert box.ak.read_bytes().decode() == f"{OTHER}\n"


def test_force_removes_the_last_proven_key(box: Box) -> None:
    box.seed(f"{ADMIN}\n")

    removed(box, spec(blobs=(blob(ADMIN),), protect=(blob(ADMIN),), force=True))

    assert box.ak.read_bytes().decode() == ""


def test_without_facts_the_keys_are_still_removed(box: Box) -> None:
    box.seed(f"{ADMIN}\n{STOLEN}\n")

    run = box.run(script(spec(blobs=(blob(STOLEN),)), facts=False))

    assert run.code == 0, run.err
    assert "RCV-" not in run.out
    assert box.ak.read_bytes().decode() == f"{ADMIN}\n"


def test_restorecon_runs_on_the_new_file(box: Box) -> None:
    box.seed(f"{STOLEN}\n")
    log = box.root / "restorecon.log"
    tools = box.root / "extra"
    tools.mkdir()
    (tools / "restorecon").write_text(f'#!/bin/sh\necho "$@" >>{log}\n')
    (tools / "restorecon").chmod(0o755)
    path = f"{tools}:{box.path}"

    report = removed(box, spec(blobs=(blob(STOLEN),)), path=path)

    assert report.selinux == "restored"
    assert log.read_text() == f"{box.ak}\n"


def test_as_the_user_another_users_file_is_refused(box: Box) -> None:
    box.seed(f"{STOLEN}\n")
    os.chown(box.home, NOBODY, NOBODY)
    os.chown(box.ssh, NOBODY, NOBODY)

    run = box.run(script(spec(blobs=(blob(STOLEN),), user="root")), as_nobody=True)

    assert run.code == RemoveExitCode.NOT_THAT_USER
    assert box.ak.read_bytes().decode() == f"{STOLEN}\n"


def test_as_the_user_no_chown_is_needed(box: Box) -> None:
    box.seed(f"{ADMIN}\n{STOLEN}\n")
    for path in (box.home, box.ssh, box.ak):
        os.chown(path, NOBODY, NOBODY)

    report = removed(box, spec(blobs=(blob(STOLEN),)), as_nobody=True)

    assert report.status == "removed"
    assert box.ak.read_bytes().decode() == f"{ADMIN}\n"
    assert (box.ak.stat().st_uid, box.ak.stat().st_mode & 0o777) == (NOBODY, 0o600)


def _run_as_root_with_passwd(box: Box, value: RemoveSpec, passwd: str) -> tuple[int, str, str]:
    """Run as root with another /etc/passwd, for this process only (a private mount namespace)."""
    upper, work = box.root / "etc-upper", box.root / "etc-work"
    upper.mkdir()
    work.mkdir()
    (upper / "passwd").write_text(passwd)
    delimiter = heredoc_delimiter(NONCE)
    typed = f"sh <<'{delimiter}'\n{script(value).raw()}{delimiter}\n"
    # /etc overlaid rather than /etc/passwd bound: a useradd elsewhere renames over /etc/passwd, which
    # detaches a bind mount on it (Linux >= 3.18).
    overlay = '/usr/bin/mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0,workdir=$1" /etc && shift && exec "$@"'
    argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", overlay, str(upper), str(work), *box.argv, "-s"]
    proc = subprocess.run(argv, input=typed, capture_output=True, text=True, timeout=60,
                          env={"HOME": "/nonexistent", "PATH": box.path}, cwd=box.root)
    return proc.returncode, proc.stdout, proc.stderr


def test_as_root_the_home_and_owner_come_from_passwd(box: Box) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: this one mounts a test /etc/passwd")
    box.seed(f"{ADMIN}\n{STOLEN}\n", mode=0o640)
    for path in (box.home, box.ssh, box.ak):
        os.chown(path, NOBODY, NOBODY)

    code, out, err = _run_as_root_with_passwd(
        box, spec(blobs=(blob(STOLEN),), user="alice"),
        f"root:x:0:0:root:/root:/bin/sh\nalice:x:{NOBODY}:{NOBODY}:Alice:{box.home}:/bin/sh\n",
    )

    assert code == 0, out + err
    report = parse_remove_report(out, NONCE)
    assert report.file == str(box.ak)
    assert box.ak.read_bytes().decode() == f"{ADMIN}\n"
    stat = box.ak.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (NOBODY, NOBODY, 0o640)


def test_as_root_an_unknown_user_changes_nothing(box: Box) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: this one mounts a test /etc/passwd")
    code, out, _ = _run_as_root_with_passwd(box, spec(blobs=(blob(STOLEN),), user="mallory"),
                                            "root:x:0:0:root:/root:/bin/sh\n")

    assert code == RemoveExitCode.NO_SUCH_USER
    assert parse_remove_report(out, NONCE).error == "no-such-user"


def test_every_script_line_is_safe_to_type() -> None:
    value = spec(blobs=(blob(LONG),), lines=(f"{OTHER} !bang",), comments=("~tilde",),
                 fingerprints=("SHA256:" + "A" * 43,))
    text = script(value).raw()
    assert "!" not in text
    assert max(len(line) for line in text.splitlines()) < 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SHA256:" + "a" * 43, "SHA256:" + "a" * 43),
        ("MD5:" + ":".join(["AB"] * 16), "MD5:" + ":".join(["ab"] * 16)),
        (":".join(["0f"] * 16), "MD5:" + ":".join(["0f"] * 16)),
    ],
)
def test_fingerprint_forms(value: str, expected: str) -> None:
    assert normalize_fingerprint(value) == expected


@pytest.mark.parametrize("bad", ["SHA256:short", "md5", "", "SHA256:" + "!" * 43])
def test_malformed_fingerprints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        normalize_fingerprint(bad)


def test_a_spec_must_match_something() -> None:
    with pytest.raises(ValueError, match="nothing to match"):
        RemoveSpec()


def test_key_blob_skips_options() -> None:
    assert key_blob(OPTIONS) == blob(OTHER)
    assert blob_fingerprints(blob(OTHER))[0] == fingerprint(OTHER)


def test_no_fact_line_means_the_script_did_not_run() -> None:
    with pytest.raises(GuestCommandError, match="printed no report line"):
        parse_remove_report("$ sh\nsh: syntax error\n", NONCE)


class ShellConsole(FakeConsole):
    """A fake console whose shell really runs the typed here-document, in a throwaway HOME."""

    def __init__(self, home: Path) -> None:
        super().__init__(state="shell")
        self.home = home
        self.body: list[str] = []

    def send(self, data: Text) -> None:
        text = reveal(data)
        if self.state == "heredoc" and not text.strip().startswith("RECOVERY_SCRIPT_"):
            self.body.append(text.rstrip("\r"))
        elif self.state == "heredoc":
            proc = subprocess.run(["/usr/bin/dash", "-s"], input="\n".join(self.body) + "\n", capture_output=True,
                                  text=True, env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"}, timeout=60)
            self.script_output = proc.stdout.replace("\n", "\r\n")
            self.script_status = proc.returncode
            self.body = []
        super().send(data)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway HOME with a ~/.ssh, and sshd said to read keys from its authorized_keys only.

    The fake console's shell runs as this machine's user: the typed report of where sshd reads keys
    would name that user's real files. tests/e2e/test_console_removal.py types it into a real console.
    """
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    sources = KeySources((str(tmp_path / "home" / ".ssh" / "authorized_keys"),), None, "sshd's default")
    monkeypatch.setattr("recovery.steps.authorized_keys._sshd_key_sources", lambda run, user: sources)
    return tmp_path / "home"


def console_context(tmp_path: Path, console: FakeConsole) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
                       report=RunReport(journal.run_id, "test"), shared=SharedState(console=ConsoleSession(console)),
                       deadline=time.monotonic() + 30)


def test_the_step_types_the_removal_into_the_console(tmp_path: Path, home: Path) -> None:
    (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n{STOLEN}\n")
    ctx = console_context(tmp_path, ShellConsole(home))

    outputs = remove_step(ctx, RemoveParams(keys=STOLEN))

    assert outputs["status"] == "removed"
    assert outputs["removed"] == fingerprint(STOLEN)
    assert (home / ".ssh" / "authorized_keys").read_text() == f"{ADMIN}\n"
    assert any("removed 1 key line(s)" in change for change in ctx.report.vm_changes)
    assert ctx.report.typed  # what was typed is kept in the journal


def test_the_step_refuses_to_remove_the_key_the_run_proved(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n")
    ctx = console_context(tmp_path, ShellConsole(home))
    ctx.report.proof = {"key_fingerprint": fingerprint(ADMIN)}

    with pytest.raises(GuestCommandError, match="proved to log in"):
        remove_step(ctx, RemoveParams(keys=ADMIN))

    assert (home / ".ssh" / "authorized_keys").read_text() == f"{ADMIN}\n"


def test_the_step_reports_a_failing_removal_with_its_explanation(tmp_path: Path, home: Path) -> None:
    (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n")
    ctx = console_context(tmp_path, ShellConsole(home))

    with pytest.raises(GuestCommandError, match="proven to log in"):
        remove_step(ctx, RemoveParams(keys=ADMIN, protect=ADMIN))


def test_preflight_of_the_step_names_what_is_missing() -> None:
    problems = _remove_check({"via": "ssh", "keys": None}, Config())
    assert "nothing to remove: give keys, fingerprints, lines or comments" in problems
    assert "via ssh needs host" in problems
    assert _remove_check({"keys": STOLEN, "via": "console"}, Config()) == []


def test_a_dry_run_lists_what_it_would_remove_and_changes_nothing(box: Box) -> None:
    content = f"{ADMIN}\n{STOLEN}\n"
    box.seed(content)
    sha, _ = blob_fingerprints(blob(STOLEN))

    report = removed(box, spec(fingerprints=(sha,), dry_run=True))

    assert box.ak.read_bytes().decode() == content
    assert box.backups() == []
    # without ssh-keygen (busybox) nothing matches a fingerprint, but every key is listed for the controller
    seen = {key.sha256 for key in (*report.removed, *report.kept)}
    assert seen == {fingerprint(ADMIN), fingerprint(STOLEN)}
    if box.name == "busybox":
        assert report.status == "nothing-to-remove"
    else:
        assert report.status == "would-remove"
        assert [key.sha256 for key in report.removed] == [fingerprint(STOLEN)]


def test_a_commented_out_key_is_a_comment_even_in_exclusive_mode(box: Box) -> None:
    content = f"#{STOLEN}\n  # {OTHER}\n{ADMIN}\n{STOLEN}\n"
    box.seed(content)

    report = removed(box, spec(blobs=(blob(ADMIN),), exclusive=True))

    assert box.ak.read_bytes().decode() == f"#{STOLEN}\n  # {OTHER}\n{ADMIN}\n"
    assert [key.line for key in report.removed] == [4]


def test_the_step_protects_the_proven_key_whatever_matches_it(tmp_path: Path, home: Path) -> None:
    """ssh.verify proved ADMIN (known by its fingerprint only): a removal by comment that would take it
    out is refused on the VM, after a dry run found the proven key's line."""
    (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n{STOLEN}\n")
    ctx = console_context(tmp_path, ShellConsole(home))
    ctx.report.proof = {"key_fingerprint": fingerprint(ADMIN)}

    with pytest.raises(GuestCommandError, match="every key this run has proven to log in"):
        remove_step(ctx, RemoveParams(comments="admin@bastion\nstolen@laptop"))
    assert (home / ".ssh" / "authorized_keys").read_text() == f"{ADMIN}\n{STOLEN}\n"

    outputs = remove_step(ctx, RemoveParams(comments="stolen@laptop"))  # the proven key stays: fine
    assert outputs["removed"] == fingerprint(STOLEN)
    assert (home / ".ssh" / "authorized_keys").read_text() == f"{ADMIN}\n"


class BlindShellConsole(ShellConsole):
    """A console that shows no text (VNC read blind): the script runs, nothing comes back."""

    has_output = False


def test_on_a_blind_console_the_removal_is_typed_without_facts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text(f"{ADMIN}\n{STOLEN}\n")
    console = BlindShellConsole(home)
    ctx = console_context(tmp_path, console)

    outputs = remove_step(ctx, RemoveParams(keys=STOLEN))

    assert outputs == {"status": None, "removed": None, "kept": None, "backup": None}
    assert (home / ".ssh" / "authorized_keys").read_text() == f"{ADMIN}\n"
    assert "fact() { :; }" in "\n".join(console.sent)
    assert any("not read back" in change for change in ctx.report.vm_changes)
