"""The install script, run for real under bash, dash and busybox ash in a throwaway HOME.

Each run pipes the script into the shell through a quoted here-document, as the console
step types it. busybox runs with a PATH of busybox applets only (wget, sha256sum, grep...
all busybox, no ssh-keygen), like a minimal or Alpine VM; bash and dash get Debian's tools.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from recovery.errors import GuestCommandError, KeyGenerationError
from recovery.guest import (
    MAX_LINE,
    ExitCode,
    GuestScript,
    InstallReport,
    build_install_script,
    explain_exit,
    heredoc_delimiter,
    parse_report,
)
from recovery.publishers.local_http import LocalHTTPPublisher
from recovery.safety.redact import Secret
from recovery.ssh import diagnosis

NONCE = "t3stN0nce"
NOBODY = 65534
# Everything a key comment can hold that a careless script would interpret.
NASTY_COMMENT = "o'b \"q\" $HOME `id` \\ !x ${n} $(id) ; & | > *"


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")  # keeps a leading 0 byte
    return _string(raw)


def ed25519_line(comment: str, seed: bytes) -> str:
    blob = _string(b"ssh-ed25519") + _string(hashlib.sha256(seed).digest())
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def rsa_line(comment: str, bits: int = 4096) -> str:
    """A well-formed 4096-bit RSA public key (ssh-keygen -l does not test primality)."""
    modulus = int.from_bytes(hashlib.shake_256(b"rsa").digest(bits // 8), "big")
    modulus |= (1 << (bits - 1)) | 1
    blob = _string(b"ssh-rsa") + _mpint(65537) + _mpint(modulus)
    return f"ssh-rsa {base64.b64encode(blob).decode()} {comment}"


def fingerprint(line: str) -> str:
    blob = base64.b64decode(line.split(" ")[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


NEW = ed25519_line(NASTY_COMMENT, b"new")
OLD = ed25519_line("old@host", b"old")
OTHER = ed25519_line("other@host", b"other")


def typed_script(line: str = NEW, nonce: str = NONCE, *, facts: bool = True) -> GuestScript:
    return build_install_script(line, sha256=sha(line + "\n"), nonce=nonce, facts=facts)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def report(self) -> InstallReport:
        return parse_report(self.out, NONCE)


SHELLS: Mapping[str, tuple[str, ...]] = {
    "bash": ("/usr/bin/bash",),
    "dash": ("/usr/bin/dash",),
    "busybox": ("/usr/bin/busybox", "sh"),
}


# What the script runs besides shell builtins; the optional tools come on top.
SCRIPT_TOOLS = ("awk", "cat", "chmod", "cp", "date", "find", "grep", "id", "ls", "mkdir", "mktemp", "rm",
                "tail", "tr")
BUSYBOX_EXTRAS = ("busybox", "sha256sum", "wget")
DEBIAN_EXTRAS = ("sha256sum", "shasum", "perl", "openssl", "busybox", "wget", "curl", "ssh-keygen")


@functools.cache
def _busybox_finds_applets_without_path() -> bool:
    probe = subprocess.run(
        ["/usr/bin/busybox", "sh", "-c", "PATH=/nonexistent; sha256sum </dev/null"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def busybox_bin() -> Iterator[Path]:
    """A directory of busybox applet links: the whole PATH of the busybox runs."""
    if not Path("/usr/bin/busybox").exists():
        pytest.fail("busybox is missing: apt-get install busybox")
    directory = Path(tempfile.mkdtemp(prefix="recovery-bb-"))
    directory.chmod(0o755)
    applets = subprocess.run(
        ["/usr/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in sorted({*applets, "busybox"}):  # busybox-static lists itself among its applets
        (directory / name).symlink_to("/usr/bin/busybox")
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def publisher() -> Iterator[LocalHTTPPublisher]:
    with LocalHTTPPublisher() as server:
        yield server


class Box:
    """One shell and one throwaway HOME (world-traversable, so `nobody` can use it too)."""

    def __init__(self, name: str, root: Path, busybox_bin: Path) -> None:
        self.name = name
        self.argv = SHELLS[name]
        self.root = root
        self.busybox_bin = busybox_bin
        self.home = root / "home"
        self.home.mkdir(mode=0o755)
        self.ssh = self.home / ".ssh"
        self.ak = self.ssh / "authorized_keys"
        self.path = str(busybox_bin) if name == "busybox" else "/usr/bin"

    def seed(self, content: str, mode: int = 0o600) -> None:
        self.ssh.mkdir(mode=0o700, exist_ok=True)
        self.ak.write_text(content)
        self.ak.chmod(mode)

    def toolbox(
        self, exclude: Sequence[str] = (), extra: Mapping[str, str] | None = None
    ) -> str:
        """A PATH of only the tools the script may use, without `exclude`, plus `extra`
        (name -> target). A missing tool the script needs shows up as a failing test."""
        if exclude and self.name == "busybox" and _busybox_finds_applets_without_path():
            pytest.fail(
                "/usr/bin/busybox is a standalone shell (busybox-static): its sh runs its own applets "
                "whatever PATH says, so a missing tool cannot be simulated. Install Debian's busybox: "
                "apt-get install -y --no-install-recommends busybox"
            )
        directory = Path(tempfile.mkdtemp(prefix="tools-", dir=self.root))
        directory.chmod(0o755)
        if self.name == "busybox":
            links = {name: "/usr/bin/busybox" for name in (*SCRIPT_TOOLS, *BUSYBOX_EXTRAS)}
        else:
            links = {name: f"/usr/bin/{name}" for name in (*SCRIPT_TOOLS, *DEBIAN_EXTRAS)}
        links.update(extra or {})
        for name, target in links.items():
            if name not in exclude:
                (directory / name).symlink_to(target)
        return str(directory)

    def run(
        self,
        script: GuestScript | str,
        *,
        path: str | None = None,
        home: Path | None = None,
        as_nobody: bool = False,
        interactive: bool = False,
        etc_ssh: Path | None = None,
    ) -> Run:
        """Type the script as the console step does: ``<shell> <<'DELIM'`` ... ``DELIM``.

        `etc_ssh` is mounted on /etc/ssh for this run only (a private mount namespace), so the
        script reads that sshd configuration instead of the host's.
        """
        raw = script.raw() if isinstance(script, GuestScript) else script
        delimiter = heredoc_delimiter(NONCE)
        typed = f"{' '.join(self.argv)} <<'{delimiter}'\n{raw}{delimiter}\n"
        argv = [*self.argv, "-i" if interactive else "-s"]
        if as_nobody:
            if os.geteuid() != 0:
                pytest.fail("run the unit tests as root: this one runs the script as nobody")
            user = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            argv = ["/usr/bin/setpriv", *user, *argv]
        if etc_ssh is not None:
            if os.geteuid() != 0:
                pytest.fail("run the unit tests as root: this one mounts a test sshd configuration on /etc/ssh")
            argv = ["/usr/bin/unshare", "--mount", "/bin/sh", "-c", '/usr/bin/mount --bind "$0" /etc/ssh && exec "$@"',
                    str(etc_ssh), *argv]
        env = {"HOME": str(home or self.home), "PATH": path or self.path, "HISTFILE": "/dev/null"}
        proc = subprocess.run(
            argv, input=typed, capture_output=True, text=True, env=env, cwd=self.root, timeout=60
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def backups(self) -> list[Path]:
        return sorted(self.ssh.glob("authorized_keys.recovery-*"))


@contextmanager
def new_box(name: str, busybox_bin: Path) -> Iterator[Box]:
    if not Path(SHELLS[name][0]).exists():
        pytest.fail(f"{name} is missing: apt-get install {name}")
    root = Path(tempfile.mkdtemp(prefix=f"recovery-{name}-"))
    root.chmod(0o755)
    try:
        yield Box(name, root, busybox_bin)
    finally:
        shutil.rmtree(root)


@pytest.fixture(params=sorted(SHELLS))
def box(request: pytest.FixtureRequest, busybox_bin: Path) -> Iterator[Box]:
    with new_box(request.param, busybox_bin) as fresh:
        yield fresh


def assert_exit_zero(run: Run) -> None:
    assert run.code == 0, f"exit {run.code}: {explain_exit(run.code)}\n{run.out}\n{run.err}"


def assert_ok(run: Run) -> InstallReport:
    assert_exit_zero(run)
    report = run.report
    assert report.ok
    return report


def test_creates_missing_ssh_dir_and_file(box: Box) -> None:
    report = assert_ok(box.run(typed_script()))

    assert box.ak.read_text() == NEW + "\n"
    assert box.ssh.stat().st_mode & 0o777 == 0o700
    assert box.ak.stat().st_mode & 0o777 == 0o600
    assert report.ssh_dir_created is True
    assert (report.before_sha256, report.before_lines) == ("absent", 0)
    assert (report.after_sha256, report.after_lines) == (sha(NEW + "\n"), 1)
    assert report.backup is None
    assert report.added is True
    assert report.checksum == "verified"
    assert report.source == "typed"
    assert report.newline_added is False
    assert report.home_writable_by_others is False
    assert report.selinux == "no-restorecon"
    assert list(box.ssh.iterdir()) == [box.ak]  # the temp file is gone


def test_adds_the_missing_final_newline_before_appending(box: Box) -> None:
    box.seed(OLD)

    report = assert_ok(box.run(typed_script()))

    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    assert report.newline_added is True
    assert (report.before_lines, report.after_lines) == (1, 2)
    [backup] = box.backups()
    assert backup.read_text() == OLD
    assert report.backup == str(backup)


def test_fixes_group_and_world_writable_modes(box: Box) -> None:
    box.seed(OLD + "\n", mode=0o666)
    box.ssh.chmod(0o777)

    report = assert_ok(box.run(typed_script()))

    assert box.ssh.stat().st_mode & 0o777 == 0o700
    assert box.ak.stat().st_mode & 0o777 == 0o600
    assert (report.before_mode, report.after_mode) == ("-rw-rw-rw-", "-rw-------")
    assert (report.before_dir_mode, report.after_dir_mode) == ("drwxrwxrwx", "drwx------")
    assert report.ssh_dir_created is False


def test_reports_a_home_others_can_write(box: Box) -> None:
    box.home.chmod(0o775)

    report = assert_ok(box.run(typed_script()))

    assert report.home_writable_by_others is True
    assert box.home.stat().st_mode & 0o777 == 0o775  # reported, not changed


def grep_count(content: bytes) -> int:
    """What `grep -c ''` says: newlines, plus one for a last line without its newline."""
    return content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"\n\n\n", b"a", b"a\n", b"a\n\n", b"   ", b"a\n \t", b"a\r\nb\r\n", b"a\\\nb\n",
     b"x\0y\nz", (OLD + "\n").encode() * 700, b"k" * 70_000],
    ids=["empty", "newline", "blank-lines", "unterminated", "one", "blank-last", "spaces-only", "blank-tail", "crlf",
         "backslash", "nul", "over-64KiB", "one-long-line"],
)
def test_lines_are_counted_as_grep_counts_them(box: Box, content: bytes) -> None:
    """The shell counts a small file's lines itself (no process), grep a large one's: the same count."""
    box.seed("")
    box.ak.write_bytes(content)

    report = assert_ok(box.run(typed_script()))

    assert (report.before_lines, report.after_lines) == (grep_count(content), grep_count(content) + 1)


def test_a_linked_file_is_counted_by_its_targets_lines(box: Box) -> None:
    box.seed("")
    box.ak.unlink()
    target = box.ssh / "keys"
    target.write_text(f"{OLD}\n{OTHER}\n")
    box.ak.symlink_to(target)

    report = assert_ok(box.run(typed_script()))

    assert (report.before_mode or "")[:1] == "l"
    assert report.before_lines == 2


def test_a_home_whose_name_holds_a_newline_gets_the_key_and_no_mode_facts(box: Box) -> None:
    home = box.root / "odd\nhome"
    home.mkdir(mode=0o755)

    report = assert_ok(box.run(typed_script(), home=home))

    assert (home / ".ssh" / "authorized_keys").read_text() == NEW + "\n"
    assert (report.before_dir_mode, report.after_mode, report.home_writable_by_others) == (None, None, None)
    assert report.after_lines == 1


def test_key_already_present_is_not_added_again(box: Box) -> None:
    content = f"{OLD}\n{NEW}\n{OTHER}\n"
    box.seed(content)

    report = assert_ok(box.run(typed_script()))

    assert box.ak.read_text() == content
    assert report.added is False
    assert report.before_sha256 == report.after_sha256 == sha(content)


def test_key_present_as_unterminated_last_line_only_gains_the_newline(box: Box) -> None:
    box.seed(f"{OLD}\n{NEW}")

    report = assert_ok(box.run(typed_script()))

    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    assert (report.newline_added, report.added) == (True, False)


def test_running_twice_leaves_one_copy_and_keeps_the_first_backup(box: Box) -> None:
    box.seed(OLD + "\n")
    script = typed_script()

    first = assert_ok(box.run(script))
    second = assert_ok(box.run(script))

    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    assert (first.added, second.added) == (True, False)
    # One backup per run, whatever the attempts: the file as it was before the run, never the changed one.
    [backup] = box.backups()
    assert backup.read_text() == OLD + "\n"
    assert first.backup == second.backup == str(backup)


def test_every_attempt_of_one_run_shares_its_backup_and_other_runs_get_their_own(box: Box) -> None:
    box.seed(OLD + "\n")
    attempt = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, run_tag="20261206T000000Z-abc")
    retry = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, run_tag="20261206T000000Z-abc")
    other_run = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, run_tag="20261206T000100Z-def")
    for script in (attempt, retry, other_run):
        assert_ok(box.run(script))
    assert [b.name for b in box.backups()] == [
        "authorized_keys.recovery-20261206T000000Z-abc",
        "authorized_keys.recovery-20261206T000100Z-def",
    ]
    assert (box.ssh / "authorized_keys.recovery-20261206T000000Z-abc").read_text() == OLD + "\n"


def test_other_lines_and_their_duplicates_are_left_alone(box: Box) -> None:
    content = (
        "# managed by hand\n"
        f"{OLD}\n"
        f"{OLD}\n"
        "\n"
        f'from="10.0.0.0/8",no-pty {OTHER}\n'
        f"{OTHER}\n"
    )
    box.seed(content, mode=0o644)
    before = box.ak.stat()

    report = assert_ok(box.run(typed_script()))

    assert box.ak.read_text() == content + NEW + "\n"
    [backup] = box.backups()
    assert backup.read_bytes() == content.encode()
    copy = backup.stat()
    # cp -p keeps mode and mtime (busybox's to the second)
    assert (copy.st_mode, int(copy.st_mtime)) == (before.st_mode, int(before.st_mtime))
    assert report.after_lines == 7


def test_long_rsa_key_typed_over_several_lines(box: Box) -> None:
    line = rsa_line(NASTY_COMMENT)
    script = typed_script(line)
    assert sum(str(s).startswith('k="$k"') for s in script.lines) >= 3

    report = assert_ok(box.run(script))

    assert box.ak.read_text() == line + "\n"
    assert report.checksum == "verified"


def test_fingerprints_before_and_after_where_ssh_keygen_exists(box: Box) -> None:
    box.seed(f"{OLD}\n{OTHER}\n")

    report = assert_ok(box.run(typed_script()))

    if box.name == "busybox":  # busybox has no ssh-keygen
        assert report.fingerprints_listed is False
        assert (report.before_keys, report.after_keys) == ((), ())
        return
    assert report.fingerprints_listed is True
    assert [k.split()[1] for k in report.before_keys] == [fingerprint(OLD), fingerprint(OTHER)]
    assert [k.split()[1] for k in report.after_keys] == [
        fingerprint(OLD), fingerprint(OTHER), fingerprint(NEW)
    ]
    assert not any(name == "new_key" for name, _ in report.facts)  # the after list has it: one ssh-keygen less
    assert report.before_summary()["keys"] == list(report.before_keys)
    assert report.after_summary()["lines"] == 3


def test_checksum_of_the_key_without_final_newline(box: Box) -> None:
    script = build_install_script(NEW, sha256=sha(NEW), nonce=NONCE)

    report = assert_ok(box.run(script))

    assert box.ak.read_text() == NEW + "\n"
    assert report.checksum == "verified"


def test_typed_key_altered_by_the_console_is_refused(box: Box) -> None:
    box.seed(OLD + "\n")
    raw = typed_script().raw()
    key_line = next(line for line in raw.splitlines() if line.startswith("k='ssh-ed25519 "))
    dropped = key_line[:30] + key_line[31:]  # one character lost in typing

    run = box.run(raw.replace(key_line, dropped))

    assert run.code == ExitCode.TYPED_KEY_ALTERED
    assert run.report.error == "typed-key-altered"
    assert box.ak.read_text() == OLD + "\n"
    assert box.backups() == []


def test_typed_key_without_any_checksum_tool_is_added_and_says_so(box: Box) -> None:
    tools = box.toolbox(exclude=("sha256sum", "shasum", "openssl", "busybox"))

    report = assert_ok(box.run(typed_script(), path=tools))

    assert report.checksum == "unavailable"
    assert box.ak.read_text() == NEW + "\n"


def test_url_serving_the_right_key_is_installed(box: Box, publisher: LocalHTTPPublisher) -> None:
    box.seed(OLD)
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    report = assert_ok(box.run(script))

    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    assert report.source == "wget"
    assert report.checksum == "verified"
    assert report.received_sha256 == item.sha256
    assert sorted(p.name for p in box.ssh.iterdir()) == sorted(
        ["authorized_keys", box.backups()[0].name]
    )


def test_url_serving_the_key_without_newline(box: Box, publisher: LocalHTTPPublisher) -> None:
    item = publisher.publish("key.pub", NEW.encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    assert_ok(box.run(script))

    assert box.ak.read_text() == NEW + "\n"


def test_url_serving_other_content_leaves_the_file_untouched(
    box: Box, publisher: LocalHTTPPublisher
) -> None:
    box.seed(OLD, mode=0o644)
    item = publisher.publish("key.pub", (OTHER + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, url=item.url)

    run = box.run(script)

    assert run.code == ExitCode.CHECKSUM_MISMATCH
    assert run.report.received_sha256 == item.sha256
    assert box.ak.read_text() == OLD
    assert box.ak.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in box.ssh.iterdir()] == ["authorized_keys"]  # no backup, no temp


def test_url_answering_404_is_a_download_failure(box: Box, publisher: LocalHTTPPublisher) -> None:
    box.seed(OLD + "\n")
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    publisher.withdraw(item)
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    run = box.run(script)

    assert run.code == ExitCode.DOWNLOAD_FAILED
    assert run.report.error == "download-failed"
    assert box.ak.read_text() == OLD + "\n"
    assert [p.name for p in box.ssh.iterdir()] == ["authorized_keys"]


def test_curl_is_used_when_there_is_no_wget(box: Box, publisher: LocalHTTPPublisher) -> None:
    if not Path("/usr/bin/curl").exists():
        pytest.fail("curl is missing: apt-get install curl")
    tools = box.toolbox(exclude=("wget",), extra={"curl": "/usr/bin/curl"})
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    report = assert_ok(box.run(script, path=tools))

    assert report.source == "curl"
    assert box.ak.read_text() == NEW + "\n"


def test_no_wget_and_no_curl(box: Box, publisher: LocalHTTPPublisher) -> None:
    tools = box.toolbox(exclude=("wget", "curl"))
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    run = box.run(script, path=tools)

    assert run.code == ExitCode.NO_DOWNLOADER
    assert not box.ak.exists()


def test_download_without_any_checksum_tool_is_not_installed(
    box: Box, publisher: LocalHTTPPublisher
) -> None:
    tools = box.toolbox(exclude=("sha256sum", "shasum", "openssl", "busybox"))
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url)

    run = box.run(script, path=tools)

    assert run.code == ExitCode.NO_CHECKSUM_TOOL
    assert not box.ak.exists()
    assert list(box.ssh.iterdir()) == []
    assert box.ssh.stat().st_mode & 0o777 == 0o700  # umask 077: private from the start


def test_missing_home(box: Box) -> None:
    run = box.run(typed_script(), home=box.root / "no-such-home")

    assert run.code == ExitCode.NO_SSH_DIR
    assert run.report.error == "no-ssh-dir"


def test_ssh_path_is_a_file(box: Box) -> None:
    box.ssh.write_text("not a directory\n")

    run = box.run(typed_script())

    assert run.code == ExitCode.NO_SSH_DIR
    assert box.ssh.read_text() == "not a directory\n"


def test_restorecon_runs_on_the_ssh_dir_when_present(box: Box) -> None:
    log = box.root / "restorecon.log"
    fake = box.root / "restorecon"
    fake.write_text(f'#!/bin/sh\necho "$@" >>{log}\n')
    fake.chmod(0o755)

    report = assert_ok(box.run(typed_script(), path=box.toolbox(extra={"restorecon": str(fake)})))

    assert report.selinux == "restored"
    assert log.read_text() == f"-R {box.ssh}\n"


def test_failing_restorecon_is_reported_not_fatal(box: Box) -> None:
    tools = box.toolbox(extra={"restorecon": "/bin/false"})

    report = assert_ok(box.run(typed_script(), path=tools))

    assert report.selinux == "restorecon-failed"
    assert box.ak.read_text() == NEW + "\n"


def test_unwritable_file_fails_without_change(box: Box) -> None:
    """As the user (nobody), with an authorized_keys that root owns and only root may write."""
    box.seed(OLD + "\n", mode=0o644)
    os.chown(box.home, NOBODY, NOBODY)
    os.chown(box.ssh, NOBODY, NOBODY)

    run = box.run(typed_script(), as_nobody=True)

    assert run.code == ExitCode.WRITE_FAILED, run.err
    assert box.ak.read_text() == OLD + "\n"
    [backup] = box.backups()
    assert backup.read_text() == OLD + "\n"


def test_chmod_refused_on_a_file_of_another_owner(box: Box) -> None:
    box.seed(OLD + "\n", mode=0o666)
    os.chown(box.home, NOBODY, NOBODY)
    os.chown(box.ssh, NOBODY, NOBODY)

    run = box.run(typed_script(), as_nobody=True)

    assert run.code == ExitCode.CHMOD_FAILED, run.err
    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    assert box.ak.stat().st_uid == 0  # never chowned


def test_home_the_user_cannot_write(box: Box) -> None:
    run = box.run(typed_script(), as_nobody=True)  # home belongs to root, 0755

    assert run.code == ExitCode.NO_SSH_DIR
    assert not box.ssh.exists()


@pytest.mark.parametrize("tool", ["sha256sum", "busybox", "shasum", "openssl"])
def test_each_checksum_tool_is_enough(busybox_bin: Path, tool: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="recovery-sum-"))
    try:
        box = Box("dash", root, busybox_bin)
        others = {"sha256sum", "busybox", "shasum", "openssl"} - {tool}
        tools = box.toolbox(exclude=sorted(others))

        report = assert_ok(box.run(typed_script(), path=tools))

        assert report.checksum == "verified"
    finally:
        shutil.rmtree(root)


def test_a_checksum_tool_printing_other_than_64_hex_digits_is_passed_over(box: Box) -> None:
    """The shell checks the digits itself (no `tr`): a tool printing 64 other characters is not believed."""
    fake = box.root / "sha256sum"
    fake.write_text("#!/bin/sh\necho " + "0123456789abcdeF" * 4 + "\n")
    fake.chmod(0o755)
    tools = box.toolbox(exclude=("sha256sum", "busybox", "shasum", "openssl"), extra={"sha256sum": str(fake)})

    report = assert_ok(box.run(typed_script(), path=tools))

    assert report.checksum == "unavailable"


def test_interactive_bash_reading_the_heredoc(busybox_bin: Path) -> None:
    """An interactive shell (history, prompts, job control) is what a console really runs."""
    root = Path(tempfile.mkdtemp(prefix="recovery-interactive-"))
    try:
        box = Box("bash", root, busybox_bin)
        box.seed(OLD)

        run = box.run(typed_script(), interactive=True)

        assert run.code == 0, run.err
        assert box.ak.read_text() == f"{OLD}\n{NEW}\n"
    finally:
        shutil.rmtree(root)


LONG_URL = "https://objects.example:8443/v1/AUTH_x/c/o?temp_url_sig=" + "ab" * 400 + "&a='b'!c"


# -- without facts (a console nobody can read, like VNC) --------------------------------------


def _loose_modes(box: Box) -> None:
    box.seed(OLD + "\n", mode=0o666)
    box.ssh.chmod(0o777)


SEEDS: Mapping[str, Callable[[Box], None]] = {
    "no ~/.ssh": lambda box: None,
    "no final newline": lambda box: box.seed(OLD),
    "loose modes": _loose_modes,
    "key already there": lambda box: box.seed(f"{OLD}\n{NEW}\n"),
    "key as unterminated last line": lambda box: box.seed(f"{OLD}\n{NEW}"),
    "other keys twice": lambda box: box.seed(f"{OLD}\n{OTHER}\n{OLD}\n"),
}


def files(box: Box) -> tuple[object, ...]:
    """What the script leaves in ~/.ssh: contents, modes, backups (by content; names hold the time)."""
    backups = box.backups()
    others = sorted(p.name for p in box.ssh.iterdir() if p != box.ak and p not in backups)
    return (box.ak.read_text(), oct(box.ak.stat().st_mode), oct(box.ssh.stat().st_mode),
            sorted(b.read_text() for b in backups), others)


@pytest.mark.parametrize("seed", SEEDS)
def test_without_facts_the_script_changes_the_files_exactly_as_with_them(
    box: Box, busybox_bin: Path, seed: str
) -> None:
    with new_box(box.name, busybox_bin) as twin:
        for target in (box, twin):
            SEEDS[seed](target)
        assert_exit_zero(box.run(typed_script()))
        blind = twin.run(typed_script(facts=False))
        assert_exit_zero(blind)
        assert files(twin) == files(box)
        assert "RCV-" not in blind.out


def test_without_facts_a_typed_key_altered_by_the_console_is_still_refused(box: Box) -> None:
    box.seed(OLD + "\n")
    raw = typed_script(facts=False).raw()
    key_line = next(line for line in raw.splitlines() if line.startswith("k='ssh-ed25519 "))

    run = box.run(raw.replace(key_line, key_line[:30] + key_line[31:]))

    assert run.code == ExitCode.TYPED_KEY_ALTERED
    assert box.ak.read_text() == OLD + "\n"
    assert box.backups() == []


def test_without_facts_a_url_serving_other_content_leaves_the_file_untouched(
    box: Box, publisher: LocalHTTPPublisher
) -> None:
    box.seed(OLD, mode=0o644)
    item = publisher.publish("key.pub", (OTHER + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, url=item.url, facts=False)

    run = box.run(script)

    assert run.code == ExitCode.CHECKSUM_MISMATCH
    assert box.ak.read_text() == OLD
    assert [p.name for p in box.ssh.iterdir()] == ["authorized_keys"]


def test_without_facts_a_url_serving_the_key_installs_it(box: Box, publisher: LocalHTTPPublisher) -> None:
    box.seed(OLD)
    item = publisher.publish("key.pub", (NEW + "\n").encode(), timedelta(minutes=1))
    script = build_install_script(NEW, sha256=item.sha256, nonce=NONCE, url=item.url, facts=False)

    run = box.run(script)

    assert run.code == 0
    assert box.ak.read_text() == f"{OLD}\n{NEW}\n"


def test_without_facts_the_script_is_much_shorter() -> None:
    assert len(typed_script(facts=False).raw()) < 0.6 * len(typed_script().raw())


@pytest.mark.parametrize("facts", [True, False], ids=["facts", "no-facts"])
@pytest.mark.parametrize(
    "url", [None, Secret("http://127.0.0.1:8080/tok?x=1&y=2"), Secret(LONG_URL)],
    ids=["typed", "url", "long-url"],
)
@pytest.mark.parametrize("line", [NEW, rsa_line(NASTY_COMMENT)], ids=["ed25519", "rsa"])
def test_script_text_is_safe_to_type(url: Secret | None, line: str, facts: bool) -> None:
    script = build_install_script(line, sha256=sha(line + "\n"), nonce=NONCE, url=url, facts=facts)
    raw = script.raw()

    assert "!" not in raw
    assert all(" " <= c <= "~" for c in raw.replace("\n", ""))
    lines = raw.splitlines()
    assert max(len(line) for line in lines) <= MAX_LINE
    assert heredoc_delimiter(NONCE) not in lines
    assert f"RCV-{NONCE}" not in raw
    assert lines[0] == "{"
    assert lines[-1] == "} </dev/null"


def test_masked_form_hides_the_url() -> None:
    url = Secret(LONG_URL, "https://objects.example:8443/***")
    script = build_install_script(NEW, sha256=sha(NEW + "\n"), nonce=NONCE, url=url)

    masked, raw = script.masked(), script.raw()

    assert "temp_url_sig" not in masked
    assert "abab" not in masked
    assert "u='***'" in masked.splitlines()
    assert "temp_url_sig" in raw
    url_lines = [line for line in script.lines if isinstance(line, Secret)]
    assert len(url_lines) >= 4  # 800+ characters, split
    assert all(str(line).endswith("'***'") for line in url_lines)
    assert len(masked.splitlines()) == len(raw.splitlines())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "printable ASCII"),
        (NEW + "\n" + OLD, "printable ASCII"),
        (NEW + "\n", "printable ASCII"),
        (NEW.replace("o'b", "\u00f6b"), "printable ASCII"),
        (NEW.replace(" ", "\t", 1), "printable ASCII"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "key type"),
        ('from="x" ' + NEW, "key type"),
        ("ssh-ed25519", "does not encode"),
        ("ssh-ed25519 not*base64 c", "not base64"),
        ("ssh-rsa " + NEW.split(" ")[1], "does not encode a ssh-rsa"),
    ],
)
def test_rejects_what_is_not_one_public_key_line(line: str, message: str) -> None:
    with pytest.raises(KeyGenerationError, match=message):
        build_install_script(line, sha256=sha(line + "\n"), nonce=NONCE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nonce": "ab"}, "nonce"),
        ({"nonce": "a b c d"}, "nonce"),
        ({"nonce": "abc'; rm"}, "nonce"),
        ({"sha256": "xyz"}, "64 hex"),
        ({"sha256": sha(OLD + "\n")}, "not the digest"),
        ({"url": Secret("ftp://host/key")}, "http"),
        ({"url": Secret("http://host/a b")}, "http"),
        ({"url": Secret("http://host/\u00e9")}, "http"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"sha256": sha(NEW + "\n"), "nonce": NONCE, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_install_script(NEW, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("echo hi!", "'!'"),
        ("echo \u00e9", "printable ASCII"),
        ("echo\ttab", "printable ASCII"),
        ("x" * (MAX_LINE + 1), "longer than"),
        ("~.", "starts with '~'"),
        (heredoc_delimiter(NONCE), "delimiter"),
        (f"echo RCV-{NONCE} exit=0", f"RCV-{NONCE}"),
        (Secret("echo secret!", "echo ***"), "'!'"),
    ],
)
def test_unsafe_lines_are_refused(line: str | Secret, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        GuestScript(lines=("{", line, "}"), nonce=NONCE)
    assert "secret" not in str(caught.value)  # a refused Secret line is shown masked


def test_parse_report_ignores_terminal_noise() -> None:
    output = (
        "\x1b[?2004hroot@vm:~# sh <<'RECOVERY_SCRIPT_t3stN0nce'\r\n"
        "> fact() { printf 'RCV-%s %s=%s\\n' \"$n\" \"$1\" \"$2\"; }\r\n"
        "\x1b[?2004l\r"
        f"RCV-{NONCE} ssh_dir_created=no\r\n"
        f"RCV-{NONCE} before_sha256=absent\r\n"
        f"\x1b[0mRCV-{NONCE} before_lines=0\x1b[K\r\n"
        "RCV-otherNonce exit=3\r\n"
        f"RCV-{NONCE} after_key=256 SHA256:abc a b=c (ED25519)\r\n"
        f"RCV-{NONCE} after_key=256 SHA256:def d (ED25519)\r\n"
        f"RCV-{NONCE} added=yes  \r\n"
        f"RCV-{NONCE} backup=none\r\n"
        f"RCV-{NONCE} exit=0\r\n"
        "RCV-t3stN0nce-0\r\n"
        "\x1b]0;user@vm: ~\x07root@vm:~# "
    )

    report = parse_report(output, NONCE)

    assert report.exit_code == 0
    assert report.ok
    assert report.ssh_dir_created is False
    assert (report.before_sha256, report.before_lines) == ("absent", 0)
    assert report.after_keys == ("256 SHA256:abc a b=c (ED25519)", "256 SHA256:def d (ED25519)")
    assert report.added is True
    assert report.backup is None
    assert report.after_sha256 is None  # never reported
    assert report.explanation == explain_exit(0)
    assert ("before_lines", "0") in report.facts


def test_parse_report_without_any_fact_says_the_script_did_not_run() -> None:
    with pytest.raises(GuestCommandError, match="no report line"):
        parse_report("sh: syntax error\r\nRCV-%s %s=%s\r\n", NONCE)


def test_a_report_that_stops_early_explains_itself() -> None:
    report = parse_report(f"RCV-{NONCE} ssh_dir_created=yes\n", NONCE)

    assert report.exit_code is None
    assert not report.ok
    assert "without reporting" in report.explanation


def test_every_exit_code_has_its_own_explanation() -> None:
    texts = [explain_exit(code) for code in ExitCode]
    assert len(set(texts)) == len(texts)
    unchanged = {
        ExitCode.NO_SSH_DIR, ExitCode.NO_TEMP_FILE, ExitCode.DOWNLOAD_FAILED,
        ExitCode.NO_DOWNLOADER, ExitCode.CHECKSUM_MISMATCH, ExitCode.TYPED_KEY_ALTERED,
        ExitCode.NO_CHECKSUM_TOOL, ExitCode.BACKUP_FAILED,
    }
    for code in unchanged:
        assert "authorized_keys was not changed" in explain_exit(code)
    assert "did not match" in explain_exit(ExitCode.CHECKSUM_MISMATCH)
    assert "signal 2" in explain_exit(130)
    assert "syntax error" in explain_exit(2)
    assert "unexpected exit status 42" in explain_exit(42)


def test_authorized_keys_linked_to_dev_null_is_a_write_failure(box: Box) -> None:
    """Some hardened images disable key logins this way: appending "works" and keeps nothing."""
    box.ssh.mkdir(mode=0o700)
    box.ak.symlink_to("/dev/null")

    run = box.run(typed_script())

    assert run.code == ExitCode.WRITE_FAILED, run.out + run.err
    assert run.report.error == "write-failed"
    assert box.ak.is_symlink()
    assert "/dev/null" in explain_exit(run.code)


# -- where sshd looks for keys ------------------------------------------------------------------

FAKE_SSHD_T = """#!/bin/sh
# sshd -T as root sees it: the effective settings for the user given with -C, keywords in lower case
echo "$@" >>{log}
[ "$1" = -T ] || exit 1
printf '%s\\n' 'port 22' 'authorizedkeysfile /etc/ssh/keys/%u' \\
  'authorizedkeyscommand /usr/bin/sss_ssh_authorizedkeys' 'authorizedkeyscommanduser nobody'
"""


def etc_ssh(root: Path, files: Mapping[str, str]) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="etc-ssh-", dir=root))
    (directory / "sshd_config.d").mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_reports_sshds_effective_key_lookup_where_sshd_t_runs(box: Box) -> None:
    fake = box.root / "sshd"
    fake.write_text(FAKE_SSHD_T.format(log=box.root / "sshd.args"))
    fake.chmod(0o755)
    report = assert_ok(box.run(typed_script(), path=box.toolbox(extra={"sshd": str(fake)})))
    assert report.sshd_summary() == {
        "read_from": "sshd-T",
        "authorized_keys_file": "/etc/ssh/keys/%u",
        "authorized_keys_command": "/usr/bin/sss_ssh_authorizedkeys",
    }
    assert (box.root / "sshd.args").read_text().startswith("-T -C user=")


def test_reads_the_config_files_in_sshds_order_where_sshd_t_cannot_run(box: Box) -> None:
    """No sshd on PATH (a user's PATH has no /usr/sbin; sshd -T needs root): the files, as sshd reads them."""
    config = etc_ssh(box.root, {
        "sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\nAuthorizedKeysFile .ssh/authorized_keys\n"
                       "Match User backup\n  AuthorizedKeysFile /srv/backup/keys\n",
        "sshd_config.d/50-cloud.conf": "  authorizedkeysfile=/etc/ssh/keys/%u  \n",
        "sshd_config.d/60-sssd.conf": "# AuthorizedKeysFile /nowhere\nMatch Group admins\n"
                                      "AuthorizedKeysCommand /bin/false\n",
        "sshd_config.d/70-sssd.conf": "AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys\n"
                                      "AuthorizedKeysCommandUser nobody\n",
    })
    report = assert_ok(box.run(typed_script(), path=box.toolbox(), etc_ssh=config))
    assert report.sshd_summary() == {
        "read_from": "files",
        "authorized_keys_file": "/etc/ssh/keys/%u",
        "authorized_keys_command": "/usr/bin/sss_ssh_authorizedkeys",
    }
    rejected = diagnosis.auth_rejected("vm:22", "ops", "publickey").error()
    named = diagnosis.rejected_by_key_lookup(rejected, report.sshd_summary())
    assert named is not None
    assert "sshd reads keys from /etc/ssh/keys/%u, not from ~/.ssh/authorized_keys" in str(named)
    assert "sss_ssh_authorizedkeys" in str(named)
    assert "modes" not in str(named)


def test_a_default_key_lookup_names_no_cause(box: Box) -> None:
    config = etc_ssh(box.root, {"sshd_config": "#AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2\n"
                                               "UsePAM yes\n"})
    report = assert_ok(box.run(typed_script(), path=box.toolbox(), etc_ssh=config))
    assert report.sshd_summary() == {
        "read_from": "files", "authorized_keys_file": "default", "authorized_keys_command": "default",
    }
    assert diagnosis.key_lookup(report.sshd_summary()) is None


def test_an_unreadable_sshd_config_is_said_and_changes_nothing(box: Box) -> None:
    config = etc_ssh(box.root, {"sshd_config": "AuthorizedKeysFile none\n"})
    (config / "sshd_config").chmod(0o600)  # RHEL's mode: only root reads it
    os.chown(box.home, NOBODY, NOBODY)
    report = assert_ok(box.run(typed_script(), path=box.toolbox(), etc_ssh=config, as_nobody=True))
    assert report.sshd_config == "unreadable"
    assert report.sshd_summary() is None


@pytest.mark.parametrize(
    ("sshd", "cause"),
    [
        (None, None),
        ({"read_from": "files", "authorized_keys_file": "default", "authorized_keys_command": "default"}, None),
        ({"read_from": "sshd-T", "authorized_keys_file": ".ssh/authorized_keys .ssh/authorized_keys2",
          "authorized_keys_command": "none"}, None),
        ({"read_from": "files", "authorized_keys_file": "%h/.ssh/authorized_keys",
          "authorized_keys_command": "/usr/bin/sss_ssh_authorizedkeys"}, None),
        ({"read_from": "sshd-T", "authorized_keys_file": "none",
          "authorized_keys_command": "/usr/bin/sss_ssh_authorizedkeys"},
         "sshd reads no authorized_keys file at all (AuthorizedKeysFile none, says sshd -T on the VM); it also "
         "asks AuthorizedKeysCommand /usr/bin/sss_ssh_authorizedkeys"),
        ({"read_from": "files", "authorized_keys_file": ".ssh/authorized_keys2",
          "authorized_keys_command": "default"},
         "sshd reads keys from .ssh/authorized_keys2, not from ~/.ssh/authorized_keys where the key was "
         "installed (AuthorizedKeysFile, says the VM's sshd_config)"),
    ],
)
def test_key_lookup_names_a_file_sshd_never_reads(sshd: dict[str, str] | None, cause: str | None) -> None:
    found = diagnosis.key_lookup(sshd)
    if cause is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(cause)


def test_without_awk_nothing_is_claimed_about_sshd(box: Box) -> None:
    config = etc_ssh(box.root, {"sshd_config": "AuthorizedKeysFile /etc/ssh/keys/%u\n"})
    report = assert_ok(box.run(typed_script(), path=box.toolbox(exclude=("awk",)), etc_ssh=config))
    assert report.sshd_config == "files"
    assert report.sshd_summary() is None


def test_without_facts_the_script_does_not_look_at_sshd() -> None:
    assert "sshd" not in typed_script(facts=False).raw()
