"""The lab's throwaway Unix user: created, given a console password and keys, removed.

A real account made with the system's own tools (useradd, chpasswd, userdel), so
that login, sshd's StrictModes and file ownership behave as on a real VM.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shutil
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recovery.errors import LabError
from recovery.lab.commands import find_tool, run
from recovery.lab.directory import create_exclusive
from recovery.lab.processes import kill_user_processes
from recovery.safety.redact import register

log = logging.getLogger(__name__)

USER_PATTERN = re.compile(r"rcvlab-[0-9a-f]{6}\Z")
# Lower-case letters and digits only: typed on a VNC console they need no Shift,
# which QEMU's VNC server drops, and no character means anything to a shell.
_PASSWORD_ALPHABET = string.ascii_lowercase + string.digits
_PASSWORD_LENGTH = 24


@dataclass(frozen=True)
class LabUser:
    """An account created by `create_user`."""

    name: str
    uid: int
    gid: int
    home: Path


def new_user_name() -> str:
    """A fresh `rcvlab-<6 hex>` name; the caller records it before creating the account,
    so a half-finished useradd is still cleaned up."""
    return f"rcvlab-{secrets.token_hex(3)}"


def create_user(name: str, homes: Path) -> LabUser:
    """Create `name` with its home under `homes` and /bin/bash as shell.

    Raises:
        LabError: useradd failed (for instance the name exists, a 1 in 16 million chance).
    """
    home = homes / name
    useradd = find_tool("useradd", "passwd")
    run(
        [
            useradd,
            "--create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/bash",
            "--user-group",
            name,
        ],
        purpose=f"create the lab user {name}",
    )
    entry = pwd.getpwnam(name)
    log.info("created lab user %s (uid %d)", name, entry.pw_uid)
    return LabUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)


def set_console_password(user: LabUser, path: Path, password: str | None = None) -> None:
    """Give `user` a password (random unless given) and store it in `path` (0600) only.

    Besides the console login, a password matters to sshd: useradd leaves the
    account locked (`!`) and with `UsePAM no` sshd refuses locked accounts even
    for key logins. The password goes to chpasswd on stdin, never on a command line.
    """
    if password is None:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_PASSWORD_LENGTH))
    if not password or any(c in password for c in ":\r\n"):
        raise LabError("a lab console password must be one line without ':' (chpasswd reads user:password)")
    register(password)
    run(
        [find_tool("chpasswd", "passwd")],
        stdin=f"{user.name}:{password}\n",
        purpose=f"set the console password of {user.name}",
    )
    create_exclusive(path, password + "\n")


def seed_authorized_keys(user: LabUser, lines: Sequence[str], *, trailing_newline: bool, ssh_dir_mode: int) -> None:
    """Write ~/.ssh (with `ssh_dir_mode`) and authorized_keys (0600), owned by `user`.

    The mode is set after creation so the process umask cannot change it, since
    tests rely on exact modes such as a world-writable 0777 ~/.ssh.
    """
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir()
    os.chmod(ssh_dir, ssh_dir_mode)
    os.chown(ssh_dir, user.uid, user.gid)
    keys = ssh_dir / "authorized_keys"
    create_exclusive(keys, "\n".join(lines) + ("\n" if trailing_newline else ""))
    os.chown(keys, user.uid, user.gid, follow_symlinks=False)


def uid_of(name: str) -> int | None:
    """The uid of `name`, or None when no such user exists (any more)."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def require_lab_user_name(name: str) -> None:
    """Refuse any name the lab could not have made, before anything kills or deletes by it.

    Raises:
        LabError: `name` is not of the form rcvlab-<6 hex digits>.
    """
    if not USER_PATTERN.match(name):
        raise LabError(
            f"Refusing to act on the user {name!r}: the lab only ever creates users named "
            "rcvlab-<6 hex digits>, so its lab.json must have been edited or corrupted. "
            "Remove that user by hand if it is really a lab user."
        )


def remove_user(name: str, home: Path) -> None:
    """Kill the user's processes, delete the account, then its home; each only if still there.

    The processes go first: the console's login shell still runs as the user.
    `--force` because a killed process stays a zombie until init reaps it (late,
    on some machines), and userdel would count that as the user being logged in.

    Raises:
        LabError: `name` is not a lab user name, its processes would not die, or userdel failed.
    """
    require_lab_user_name(name)
    uid = uid_of(name)
    if uid is not None:
        kill_user_processes(uid)
        run([find_tool("userdel", "passwd"), "--force", name], purpose=f"delete the user {name}")
        log.info("deleted lab user %s", name)
    shutil.rmtree(home, ignore_errors=True)
