"""Writing a file so that a reader sees the old version or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file is created 0600 (mkstemp), so nothing can read it before `mode` is set.

    Raises:
        OSError: the directory is not writable, or the disk is full; `path` is then unchanged.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode != 0o600:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
