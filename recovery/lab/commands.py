"""The short-lived system commands the lab runs (useradd, chpasswd, ssh-keygen, sshd -t).

Each failure becomes a `LabError` that quotes the command's own words, since
those (for example sshd's "Bad configuration option") are what tells the
operator what to fix. Output is scrubbed of registered secrets first.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from recovery.errors import LabError
from recovery.lab.directory import move_exclusive
from recovery.safety.redact import scrub

# Root's PATH in a container or CI job often lacks the sbin directories where
# useradd, sshd and agetty live.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TIMEOUT = 30.0


def find_tool(name: str, package: str) -> str:
    """The absolute path of `name`; sshd in particular refuses to run from a relative one.

    Raises:
        LabError: the tool is not installed; the message names the Debian package.
    """
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SYSTEM_PATH)
    if found is None:
        raise LabError(
            f"The lab needs the `{name}` command, which is not installed on this machine. "
            f"Install the Debian package that provides it (apt-get install -y "
            f"--no-install-recommends {package}) and start the lab again; nothing was started."
        )
    return found


def run(argv: Sequence[str], *, purpose: str, stdin: str | None = None) -> str:
    """Run a command to completion and return its stdout.

    Args:
        argv: the command; it must never contain a secret (pass those on `stdin`).
        purpose: what we were trying to do, worded to follow "Could not".
        stdin: text fed to the command's standard input.

    Raises:
        LabError: the command could not start, timed out or exited non-zero.
    """
    shown = " ".join(argv)
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(
            f"Could not {purpose}: `{shown}` did not finish within {_TIMEOUT:.0f} s. "
            "The machine may be overloaded or the command waiting for input; try again."
        ) from exc
    except OSError as exc:
        raise LabError(f"Could not {purpose}: `{shown}` failed to start: {exc}.") from exc
    if done.returncode != 0:
        said = scrub((done.stderr or done.stdout).strip()) or "(no output)"
        raise LabError(f"Could not {purpose}: `{shown}` exited with status {done.returncode} and said: {said}")
    return done.stdout


def generate_key(path: Path, comment: str, key_type: str = "ed25519") -> str:
    """Make a key pair (`ssh-keygen -t key_type`) at `path` (0600) and `path`.pub; returns the public key line.

    ssh-keygen rather than our own code: the lab's keys should be exactly what
    an administrator's tools produce. It writes into a fresh private directory,
    where nothing can be in the way (it would ask before overwriting, and follow a
    symlink), and the files are then moved into place without replacing anything.

    Raises:
        LabError: ssh-keygen failed, or `path` or `path`.pub already exists.
    """
    keygen = find_tool("ssh-keygen", "openssh-client")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".keygen-") as scratch:
        fresh = Path(scratch) / "key"
        run(
            [keygen, "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(fresh)],
            purpose=f"generate an {key_type} key for {path}",
        )
        public = _public(path)
        move_exclusive(fresh, path)
        move_exclusive(_public(fresh), public)
    return public.read_text().strip()


def _public(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def fingerprint(public_line: str) -> str:
    """The OpenSSH `SHA256:...` fingerprint of a public key line, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"
