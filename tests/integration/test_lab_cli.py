"""`recovery lab` as a user runs it: a real `python -m recovery lab ...` process against the real lab.

Signals are real signals sent to that process while it starts; the refusals use
directories really owned by another user, really symlinked, really world-writable.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery import lab
from recovery.errors import UnsafeLabDirectory
from recovery.lab.processes import alive, children, command_line, poll_until
from tests.processes import stop_child

pytestmark = pytest.mark.lab

NOBODY = 65534
_START_TIMEOUT = 60.0
# No virtualenv and no `recovery` on it: what root's shell has after `make venv`, or under sudo.
_PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cli(*args: str, path: str = _PLAIN_PATH, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recovery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PATH": path},
        check=False,
    )


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A fresh root-owned 0755 directory under /tmp that the lab user can pass through;
    every lab left anywhere inside it is taken down."""
    directory = Path(tempfile.mkdtemp(prefix="rcvlab-cli-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        records = [*directory.rglob("lab.json"), *directory.rglob("started.json")]
        for lab_dir in {record.parent for record in records}:
            with contextlib.suppress(UnsafeLabDirectory):  # a test made it unsafe on purpose
                lab.down(lab_dir)
        shutil.rmtree(directory, ignore_errors=True)


def has_password(user: str) -> bool:
    """True when /etc/shadow gives `user` a usable password (not locked, not empty)."""
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            hashed = rest.split(":", 1)[0]
            return bool(hashed) and hashed[0] not in "!*"
    return False


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def core_file_limit(pid: int) -> list[str]:
    """The soft and hard RLIMIT_CORE of `pid`, as /proc/PID/limits shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError(f"no core file limit for pid {pid}")


def processes_mentioning(directory: Path) -> list[int]:
    """Live processes whose command line names a path inside `directory`: the lab's daemons."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and f"{directory}/" in command_line(int(entry.name)) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def tree(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `directory` with its mode, owner and size: to prove nothing was written."""
    found = {}
    for path in [directory, *directory.rglob("*")]:
        info = path.lstat()
        found[str(path)] = (info.st_mode, info.st_uid, info.st_size)
    return found


# --- up --json, status, and hints that work from the venv ----------------------------------


def test_up_json_is_one_object_and_status_gives_a_recovery_command_that_works(
    public_tmp: Path, tmp_path: Path
) -> None:
    directory = public_tmp / "lab"
    done = cli("lab", "up", "--json", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert isinstance(shown, dict)
    assert shown["schema"] == 1
    recorded = json.loads((directory / "lab.json").read_text())
    assert {key: shown[key] for key in recorded} == recorded
    info = lab.LabInfo.load(directory)

    done = cli("lab", "status", "--json", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["schema"], status["healthy"], status["next_step"]) == (1, True, None)
    command = status["recovery_commands"]["serial"]
    assert command.startswith(f"{sys.executable} -m recovery run ")
    assert info.console_token not in command, "the token would be in the process list"

    text = cli("lab", "status", "--dir", str(directory))
    assert text.returncode == 0, text.stderr
    for fact in (
        info.console_url,
        f"{info.user}@127.0.0.1 port {info.ssh_port}",
        info.host_key_fingerprint,
        str(info.console_password_file),
        command,
    ):
        assert fact in text.stdout

    # Pasted into a shell where `recovery` is not on PATH, the command recovers the lab.
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=180,
        env={"HOME": str(home), "PATH": _PLAIN_PATH},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "process list" not in run.stderr
    assert f"succeeded as {info.user}@127.0.0.1:{info.ssh_port}" in run.stderr


def test_hint_says_recovery_when_this_installations_script_is_on_path(public_tmp: Path) -> None:
    script = Path(sys.executable).parent / "recovery"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project with `make venv` (pip install -e .)")
    directory = public_tmp / "lab"
    lab.up(directory)
    done = cli("lab", "status", "--json", "--dir", str(directory), path=f"{script.parent}:{_PLAIN_PATH}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recovery_commands"]["serial"].startswith("recovery run ")


def test_status_of_a_broken_lab_names_what_broke_and_the_next_step(public_tmp: Path) -> None:
    directory = public_tmp / "lab"
    info = lab.up(directory)
    lab.stop_process(info, "sshd")

    text = cli("lab", "status", "--dir", str(directory))
    assert text.returncode == 1, text.stderr
    assert "NOT healthy" in text.stdout
    assert "next step:" in text.stdout
    assert f"sshd is down (its log: {info.sshd_log})" in text.stdout
    assert f"-m recovery lab down --dir {directory} && " in text.stdout
    assert "recover it through" not in text.stdout

    done = cli("lab", "status", "--json", "--dir", str(directory))
    assert done.returncode == 1
    status = json.loads(done.stdout)
    assert status["healthy"] is False
    assert status["processes"]["sshd"] is False
    assert "lab up --dir" in status["next_step"]


# --- signals while `lab up` starts ----------------------------------------------------------


@contextlib.contextmanager
def starting_lab(directory: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """`lab up` held at its most dangerous moment: the user has a password, every daemon runs,
    and it waits for sshd to answer. Yields the process and what started.json records.

    An `sshd` ahead of the real one on PATH sleeps before it becomes the real sshd,
    so the signal lands there every time rather than by luck of timing.
    """
    real = shutil.which("sshd", path=_PLAIN_PATH)
    assert real is not None, "sshd is not installed"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    slow = bin_dir / "sshd"
    slow.write_text(f'#!/bin/sh\nif [ "$1" = -D ]; then sleep 300; fi\nexec {real} "$@"\n')
    slow.chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, "-m", "recovery", "lab", "up", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{_PLAIN_PATH}"},
        # As from a terminal, whatever this test runner inherited (nohup ignores SIGHUP).
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        record = directory / "started.json"

        def sshd_recorded() -> bool:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return "sshd" in json.loads(record.read_text())["pids"]
            return process.poll() is not None

        assert poll_until(sshd_recorded, _START_TIMEOUT), "lab up recorded no sshd"
        assert process.poll() is None, process.communicate()
        yield process, json.loads(record.read_text())
    finally:
        stop_child(process)
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_up_stops_everything_and_removes_the_user(
    public_tmp: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    directory = public_tmp / "lab"
    with starting_lab(directory, tmp_path) as (process, started):
        user, pids = started["user"], started["pids"]
        assert set(pids) == {"serial_port", "websockify", "sshd"}
        assert has_password(user), "the signal should come while the lab user has a password"
        assert core_file_limit(process.pid) == ["0", "0"], "a core dump could hold the console password"
        assert all(alive(pid) for pid in pids.values())
        started_processes = [*pids.values(), *(pid for pid, _ in children(pids["serial_port"]))]

        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not user_exists(user)
    assert not has_password(user)
    assert not [pid for pid in started_processes if alive(pid)]
    assert not processes_mentioning(directory)
    assert sorted(path.name for path in directory.iterdir()) == ["serial_port.log", "sshd.log", "websockify.log"]


def test_down_finds_what_a_killed_up_started(public_tmp: Path, tmp_path: Path) -> None:
    directory = public_tmp / "lab"
    with starting_lab(directory, tmp_path) as (process, started):
        process.kill()  # no cleanup at all: only the record on disk is left
        process.wait(timeout=30)
    user, pids = started["user"], started["pids"]
    assert user_exists(user)
    assert all(alive(pid) for pid in pids.values())

    status = cli("lab", "status", "--dir", str(directory))
    assert status.returncode == 1
    assert "was interrupted" in status.stderr
    assert f"lab down --dir {directory}" in status.stderr
    refused = cli("lab", "up", "--dir", str(directory))
    assert refused.returncode == 1
    assert "interrupted" in refused.stderr

    down = cli("lab", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not user_exists(user)
    assert poll_until(lambda: not [pid for pid in pids.values() if alive(pid)], 10)
    assert not processes_mentioning(directory)
    assert not (directory / "started.json").exists()


def test_of_two_ups_in_one_directory_one_starts_the_lab_and_the_other_touches_nothing(public_tmp: Path) -> None:
    directory = public_tmp / "lab"
    command = [sys.executable, "-m", "recovery", "lab", "up", "--dir", str(directory)]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in both]
    assert sorted(process.returncode for process in both) == [0, 1], outputs
    assert lab.status(directory).healthy
    users = [entry.pw_name for entry in pwd.getpwall() if entry.pw_dir.startswith(f"{directory}/")]
    assert users == [lab.LabInfo.load(directory).user]


# --- directories another user could change ---------------------------------------------------


def _refused(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Refusing" in done.stderr
    assert what in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_up_refuses_a_directory_another_user_owns(public_tmp: Path) -> None:
    directory = public_tmp / "lab"
    directory.mkdir(mode=0o755)
    os.chown(directory, NOBODY, NOBODY)
    before = tree(public_tmp)
    _refused(cli("lab", "up", "--dir", str(directory)), "belongs to nobody (uid 65534)")
    assert tree(public_tmp) == before


def test_up_refuses_a_directory_inside_one_another_user_owns(public_tmp: Path) -> None:
    theirs = public_tmp / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    before = tree(public_tmp)
    _refused(cli("lab", "up", "--dir", str(theirs / "lab")), f"{theirs} belongs to nobody")
    assert tree(public_tmp) == before


def test_up_refuses_a_symlinked_directory(public_tmp: Path) -> None:
    target = public_tmp / "target"
    target.mkdir(mode=0o755)
    (public_tmp / "lab").symlink_to(target)
    before = tree(public_tmp)
    _refused(cli("lab", "up", "--dir", str(public_tmp / "lab")), "is a symbolic link")
    assert tree(public_tmp) == before


@pytest.mark.parametrize(("mode", "who"), [(0o777, "everyone"), (0o1777, "everyone"), (0o775, "its group")])
def test_up_refuses_a_directory_others_can_write(public_tmp: Path, mode: int, who: str) -> None:
    directory = public_tmp / "lab"
    directory.mkdir()
    directory.chmod(mode)
    before = tree(public_tmp)
    _refused(cli("lab", "up", "--dir", str(directory)), f"writable by {who}")
    assert tree(public_tmp) == before


@pytest.mark.parametrize("command", ["down", "status"])
def test_down_and_status_do_not_read_a_lab_record_another_user_planted(public_tmp: Path, command: str) -> None:
    directory = public_tmp / "lab"
    directory.mkdir(mode=0o755)
    (directory / "lab.json").write_text('{"user": "rcvlab-000000", "pids": {"sshd": 1}}')
    os.chown(directory, NOBODY, NOBODY)
    before = tree(public_tmp)
    _refused(cli("lab", command, "--dir", str(directory)), "belongs to nobody")
    assert tree(public_tmp) == before


def test_up_creates_a_missing_directory_root_only(public_tmp: Path) -> None:
    directory = public_tmp / "new" / "lab"
    info = lab.up(directory)
    assert info.directory == directory
    for path, mode in ((directory, 0o711), (directory.parent, 0o755)):
        assert (path.stat().st_mode & 0o7777, path.stat().st_uid) == (mode, 0), path


def test_up_writes_through_no_symlink_left_in_its_own_directory(public_tmp: Path) -> None:
    """Even in a directory only root can write, a stale symlink is replaced, never followed."""
    directory = public_tmp / "lab"
    directory.mkdir(mode=0o700)
    victim = public_tmp / "victim"
    victim.write_text("untouched\n")
    names = ("console_password", "old_key", "ssh_host_ed25519_key.pub", "sshd_config", "tokens", "sshd.log")
    for name in names:
        (directory / name).symlink_to(victim)
    info = lab.up(directory)
    assert victim.read_text() == "untouched\n"
    assert not [name for name in names if (directory / name).is_symlink()]
    assert info.console_password().reveal()
    assert lab.status(directory).healthy
