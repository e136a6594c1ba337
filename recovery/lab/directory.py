"""The lab directory: one that nobody but root (or the running user) can change, or none.

The lab runs as root. It writes a console password, private keys, sshd's
configuration and its daemons' logs into its directory, and hands paths there to
sshd, ssh-keygen and useradd. A user who can write into that directory, or into
any directory above it, can plant a symlink that makes root overwrite a file of
their choosing, or swap sshd_config between `sshd -t` and sshd's start. So, as
OpenSSH checks a key file's path: the lab directory and every directory above it
must belong to root or to the running user and be writable by nobody else. Above
the lab's own directory, a sticky directory such as /tmp is fine: there nobody may
rename or delete what another user made. The lab directory itself must not be a
symlink; when missing, it is created here. Inside it, files are created with
O_EXCL|O_NOFOLLOW, so even a file root left there earlier is never written through.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from recovery.errors import LabError, UnsafeLabDirectory

__all__ = ["DIRECTORY_MODE", "claim", "create_exclusive", "move_exclusive", "trusted"]

# Searchable, not listable: the lab user must pass through to its home (sshd's
# StrictModes and login need that), while the keys and password here stay root's.
DIRECTORY_MODE = 0o711
_PARENT_MODE = 0o755
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def claim(path: Path) -> Path:
    """The lab directory for `lab up`: absolute, proven safe, created (0711) if missing.

    Missing directories above it are created 0755. An existing lab directory is
    accepted only when it belongs to root (or the running user), is not a symlink
    and is writable by nobody else; its mode is then set to 0711.

    Raises:
        UnsafeLabDirectory: the directory or one above it could be changed by another
            user; nothing was written.
    """
    consequence = "nothing was written"
    directory = _absolute(path, consequence)
    for ancestor in _ancestors(directory):
        _create_missing(ancestor, _PARENT_MODE)
        _require_safe(ancestor, directory, consequence)
    _create_missing(directory, DIRECTORY_MODE)
    _require_safe(directory, directory, consequence)
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(descriptor, DIRECTORY_MODE)
    finally:
        os.close(descriptor)
    return directory


def trusted(path: Path) -> Path:
    """The lab directory for `lab status` and `lab down`: the checks of `claim`, creating nothing.

    A lab.json in a directory another user controls could name any user for
    `down` to delete and any PID to kill, so it is not read at all. A directory
    that does not exist is returned as it is: there is no lab in it.

    Raises:
        UnsafeLabDirectory: the directory or one above it could be changed by another user.
    """
    consequence = "nothing was read or stopped"
    directory = _absolute(path, consequence)
    for candidate in (*_ancestors(directory), directory):
        if not os.path.lexists(candidate):
            break
        _require_safe(candidate, directory, consequence)
    return directory


def create_exclusive(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Create `path` with `data`; fail if anything (a file, a planted symlink) is already there.

    The mode is set explicitly, so the umask cannot widen or narrow it.

    Raises:
        LabError: `path` exists.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError as exc:
        raise _in_the_way(path) from exc
    with os.fdopen(descriptor, "wb") as out:
        os.fchmod(descriptor, mode)
        out.write(raw)


def move_exclusive(source: Path, target: Path) -> None:
    """Move `source` to `target` on the same file system, never replacing what is at `target`.

    A hard link, unlike a rename, fails when the target exists, and does not follow
    a symlink planted there.

    Raises:
        LabError: `target` exists.
    """
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError as exc:
        raise _in_the_way(target) from exc
    source.unlink()


def _in_the_way(path: Path) -> LabError:
    return LabError(
        f"{path} appeared while the lab was starting, although `up` had just cleared it: another process "
        f"is writing in {path.parent}. The lab does not write through or over it; stop that process, or "
        "use another directory with --dir."
    )


def _absolute(path: Path, consequence: str) -> Path:
    """`path` made absolute with the directories above it resolved, its own name kept as given.

    The last name is never resolved: a symlink there is refused, not followed.
    """
    absolute = Path(os.path.abspath(path))
    if absolute == absolute.parent:
        raise UnsafeLabDirectory(f"The lab directory cannot be {absolute}: choose one of its own; {consequence}.")
    return absolute.parent.resolve() / absolute.name


def _ancestors(directory: Path) -> list[Path]:
    """Every directory above `directory`, from / down."""
    return list(reversed(directory.parents))


def _create_missing(path: Path, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    os.chmod(path, mode)  # mkdir's mode went through the umask


def _require_safe(path: Path, directory: Path, consequence: str) -> None:
    """Refuse `path` (the lab `directory` or one above it) if anyone but root or us could change it."""
    info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = f"{path} is a symbolic link (to {os.readlink(path)}), which the lab does not follow"
    elif not stat.S_ISDIR(info.st_mode):
        problem = f"{path} is not a directory"
    elif info.st_uid not in {0, os.geteuid()}:
        problem = f"{path} belongs to {_user_name(info.st_uid)}, not to root"
        if os.geteuid() != 0:
            problem += " or to you"
    elif info.st_mode & _WRITABLE_BY_OTHERS and (path == directory or not info.st_mode & stat.S_ISVTX):
        who = "everyone" if info.st_mode & stat.S_IWOTH else "its group"
        problem = f"{path} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem is None:
        return
    raise UnsafeLabDirectory(
        f"Refusing {directory} as the lab directory: {problem}. The lab directory and every directory "
        "above it must belong to root and be writable by nobody else (above it, a sticky directory such "
        "as /tmp is fine): the lab runs as root, and another user able to change them could plant symlinks "
        "that make it overwrite any file, or swap sshd's configuration after it was checked. Choose another "
        f"directory with --dir (a missing one is created safely), or remove {path} after looking at what is "
        f"in it; {consequence}."
    )


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
