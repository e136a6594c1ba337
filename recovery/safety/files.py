"""Files and directories the tool creates: atomic, never through a planted symlink, modes set explicitly.

Modes never depend on the umask: a `umask 000` shell (common in containers) must not
leave `~/.ssh`, a key directory or a run journal open to every local user, and a
restrictive umask must not leave a `.pub` file unreadable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["make_dirs", "write_atomic"]


def write_atomic(path: Path, text: str | bytes, *, mode: int = 0o600) -> None:
    """Write `text` (or bytes) to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file is created 0600 (mkstemp) and set to exactly `mode` before the
    rename. The rename replaces a symlink at `path` rather than writing through it, so
    a link planted there cannot redirect the write.

    Raises:
        OSError: the directory is not writable, or the disk is full; `path` is then unchanged.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """Create `path` and any missing parents, each new one with exactly `mode`.

    Directories that already exist keep their mode: `~/.ssh` belongs to the user.

    Raises:
        OSError: a component cannot be created, or exists and is not a directory.
    """
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs, not ours to chmod
        os.chmod(directory, mode)
