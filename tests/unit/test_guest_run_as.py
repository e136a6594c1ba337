"""recovery.guest's password-set route parts: the install run as another user, and the password lock.

Typed into a real sh on this machine as the console step types them (`sh <<'DELIM'`): `run_as`
switches with runuser from root (the tests run as root) and refuses from a shell that can neither be
the user nor switch; the lock script runs against stand-in passwd/usermod/getent/sudo on PATH, since
locking a password of this machine is not a test's to do.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.guest import (
    ExitCode,
    GuestScript,
    LockExitCode,
    build_lock_script,
    explain_exit,
    explain_lock_exit,
    heredoc_delimiter,
    parse_lock_status,
    run_as,
)

NONCE = "t3st0001"
WHO = GuestScript(lines=("{", "printf 'who=%s home=%s\\n' \"$(id -un)\" \"$HOME\"", "} </dev/null"), nonce=NONCE)

pytestmark = pytest.mark.root("runuser needs root")


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory `nobody` can reach (pytest's tmp_path is under a 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-run-as-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def typed(script: GuestScript, *, as_user: str | None = None,
          path: str | None = None) -> subprocess.CompletedProcess[str]:
    delimiter = heredoc_delimiter(NONCE)
    text = f"sh <<'{delimiter}'\n{script.raw()}{delimiter}\n"
    argv = ["/bin/sh"] if as_user is None else ["/usr/sbin/runuser", "-u", as_user, "--", "/bin/sh"]
    env = {"PATH": path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    return subprocess.run(argv, input=text, capture_output=True, text=True, env=env, cwd="/", timeout=30,
                          check=False)


def test_root_runs_the_script_as_the_user_with_the_users_home() -> None:
    done = typed(run_as(WHO, "nobody"))
    assert done.returncode == 0, done.stderr
    home = Path(subprocess.run(["getent", "passwd", "nobody"], capture_output=True, text=True,
                               check=True).stdout.split(":")[5])
    assert done.stdout.strip() == f"who=nobody home={home}"


def test_the_users_own_shell_runs_it_as_it_is() -> None:
    done = typed(run_as(WHO, "nobody"), as_user="nobody")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("who=nobody ")


def test_a_missing_user_is_refused_and_nothing_runs() -> None:
    done = typed(run_as(WHO, "no-such-user-rcv"))
    assert done.returncode == ExitCode.NO_SUCH_USER
    assert f"RCV-{NONCE} error=no-such-user" in done.stdout
    assert "who=" not in done.stdout
    assert explain_exit(done.returncode).startswith("the VM has no such user")


def test_a_shell_that_cannot_switch_is_refused(public: Path) -> None:
    """nobody's shell, for root, where sudo asks for a password: no su, no prompting sudo, nothing run."""
    sudo = public / "sudo"
    sudo.write_text("#!/bin/sh\necho sudo \"$@\" >>" + str(public / "calls.log") + "\nexit 1\n")
    sudo.chmod(0o755)
    (public / "calls.log").touch()
    (public / "calls.log").chmod(0o666)
    done = typed(run_as(WHO, "root"), as_user="nobody", path=f"{public}:/usr/bin:/bin")
    assert done.returncode == ExitCode.CANNOT_SWITCH_USER
    assert f"RCV-{NONCE} error=cannot-switch-user" in done.stdout
    assert "who=" not in done.stdout
    assert (public / "calls.log").read_text() == "sudo -n true\n"  # asked, never prompting


def test_run_as_refuses_a_user_name_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="login name"):
        run_as(WHO, "x; rm -rf /")


def stand_ins(directory: Path, shadow_field: str, *, passwd_ok: bool = True) -> str:
    """passwd, usermod, getent and sudo that log their arguments; getent shows `shadow_field`."""
    directory.mkdir(mode=0o755, exist_ok=True)
    log = directory / "calls.log"
    scripts = {
        "passwd": f"echo passwd \"$@\" >>{log}\nexit {0 if passwd_ok else 1}",
        "usermod": f"echo usermod \"$@\" >>{log}\nexit 0",
        "getent": f"echo \"$2:{shadow_field}:19000:0:99999:7:::\"",
        "sudo": f"echo sudo \"$@\" >>{log}\n[ \"$1\" = -n ] && shift\nexec \"$@\"",
    }
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return f"{directory}:/usr/bin:/bin"


def test_root_locks_the_password_and_reads_it_back(tmp_path: Path) -> None:
    done = typed(build_lock_script("debian", nonce=NONCE), path=stand_ins(tmp_path, "!$y$j9T$locked"))
    assert done.returncode == LockExitCode.OK, done.stderr
    assert (tmp_path / "calls.log").read_text() == "passwd -l debian\n"


def test_usermod_when_passwd_cannot_and_a_hash_left_unlocked_is_a_failure(tmp_path: Path) -> None:
    done = typed(build_lock_script("debian", nonce=NONCE), path=stand_ins(tmp_path, "$y$j9T$open", passwd_ok=False))
    assert done.returncode == LockExitCode.LOCK_FAILED
    assert (tmp_path / "calls.log").read_text() == "passwd -l debian\nusermod -L debian\n"
    assert "passwd -l and usermod -L failed" in explain_lock_exit(done.returncode)


def test_a_sudoer_locks_through_sudo_and_a_plain_user_changes_nothing(public: Path) -> None:
    tmp_path = public
    path = stand_ins(tmp_path / "bin", "!*")
    (tmp_path / "bin" / "calls.log").touch(mode=0o666)
    (tmp_path / "bin" / "calls.log").chmod(0o666)
    done = typed(build_lock_script("ubuntu", nonce=NONCE), as_user="nobody", path=path)
    assert done.returncode == LockExitCode.OK, done.stderr
    assert (tmp_path / "bin" / "calls.log").read_text().splitlines() == [
        "sudo -n true", "sudo -n passwd -l ubuntu", "passwd -l ubuntu", "sudo -n getent shadow ubuntu"]
    (tmp_path / "bin" / "sudo").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "calls.log").write_text("")
    done = typed(build_lock_script("ubuntu", nonce=NONCE), as_user="nobody", path=path)
    assert done.returncode == LockExitCode.NOT_PRIVILEGED
    assert (tmp_path / "bin" / "calls.log").read_text() == ""


# --- the install and the lock in one command (run_as(..., lock=USER)) -------------------------------


def test_the_lock_follows_the_install_in_the_same_command(tmp_path: Path) -> None:
    path = stand_ins(tmp_path, "!$y$j9T$locked") + ":/usr/sbin:/sbin"
    done = typed(run_as(WHO, "nobody", lock="debian"), path=path)
    assert done.returncode == 0, done.stderr
    assert "who=nobody " in done.stdout
    assert parse_lock_status(done.stdout, NONCE) == LockExitCode.OK
    assert (tmp_path / "calls.log").read_text() == "passwd -l debian\n"


FAILING = GuestScript(lines=("{", "exit 15", "} </dev/null"), nonce=NONCE)


@pytest.mark.parametrize(("script", "user", "status"), [
    (FAILING, "nobody", 15),  # the install ran and failed
    (WHO, "no-such-user-rcv", ExitCode.NO_SUCH_USER),  # it could not start
])
def test_the_lock_happens_even_when_the_install_fails(tmp_path: Path, script: GuestScript, user: str,
                                                      status: int) -> None:
    path = stand_ins(tmp_path, "!$y$j9T$locked") + ":/usr/sbin:/sbin"
    done = typed(run_as(script, user, lock="debian"), path=path)
    assert done.returncode == status  # the command's status stays the install's
    assert "who=" not in done.stdout
    assert parse_lock_status(done.stdout, NONCE) == LockExitCode.OK
    assert (tmp_path / "calls.log").read_text() == "passwd -l debian\n"


def test_a_shell_that_can_neither_switch_nor_lock_says_both(public: Path) -> None:
    path = stand_ins(public / "bin", "$y$j9T$open")
    (public / "bin" / "sudo").write_text("#!/bin/sh\nexit 1\n")
    done = typed(run_as(WHO, "root", lock="ubuntu"), as_user="nobody", path=path)
    assert done.returncode == ExitCode.CANNOT_SWITCH_USER
    assert parse_lock_status(done.stdout, NONCE) == LockExitCode.NOT_PRIVILEGED


def test_the_lock_status_is_read_from_its_own_line_only() -> None:
    echoed = "printf 'RCV-%s password_lock=%s\\n' \"$n\" \"$?\"\r\n"
    assert parse_lock_status(echoed + f"RCV-{NONCE} exit=0\r\n", NONCE) is None
    assert parse_lock_status(echoed + f"RCV-{NONCE} password_lock=11\r\n", NONCE) == LockExitCode.LOCK_FAILED
    assert parse_lock_status("RCV-0ther000 password_lock=0\n", NONCE) is None


def test_another_user_gets_a_users_path_and_root_keeps_its_own() -> None:
    """runuser keeps root's PATH, and a user's `sshd -T` only fails (0.4-0.6 s on an emulated guest)."""
    path = GuestScript(lines=("{", "printf 'path=%s\\n' \"$PATH\"", "} </dev/null"), nonce=NONCE)
    done = typed(run_as(path, "nobody"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "path=/usr/local/bin:/usr/bin:/bin"
    done = typed(run_as(path, "root"))
    assert done.stdout.strip() == "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_the_lock_reads_a_known_uid_from_a_variable_name_only() -> None:
    assert "if [ \"$mu\" = 0 ]; then s=" in build_lock_script("debian", nonce=NONCE, uid_var="mu").lines
    with pytest.raises(ValueError, match="variable name"):
        build_lock_script("debian", nonce=NONCE, uid_var="mu; rm -rf /")
