"""What a benchmark needs from the machine, checked before it starts.

A benchmark is run by hand, often on a machine set up for something else: a missing
program or comparison library must be one sentence naming what to install, not a
traceback from the middle of a run.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

# The programs the benchmarks start, and the Debian package that brings each.
PACKAGES = {
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "agetty": "util-linux",
    "websockify": "websockify (pip: .venv/bin/pip install -e '.[lab]')",
    "Xvfb": "xvfb",
    "x11vnc": "x11vnc",
    "xterm": "xterm",
    "Xtigervnc": "tigervnc-standalone-server",
    "qemu-system-x86_64": "qemu-system-x86",
    "cpio": "cpio",
}


def _found(program: str) -> bool:
    venv_bin = Path(sys.executable).parent
    return bool(shutil.which(program) or shutil.which(program, path=f"/usr/sbin:/sbin:{venv_bin}"))


def require_programs(*programs: str) -> None:
    """Exit 2 with the install line when any of `programs` is missing."""
    missing = [program for program in programs if not _found(program)]
    if missing:
        packages = sorted({PACKAGES.get(program, program) for program in missing})
        sys.exit(
            f"{Path(sys.argv[0]).name}: missing {', '.join(missing)}. Install (as root): "
            f"apt-get install -y --no-install-recommends {' '.join(packages)}   (or run `make test` once, "
            "which installs every peer the tests use)"
        )


def optional_module(name: str, install: str, *, role: str) -> bool:
    """Whether `name` can be imported; if not, say which rows will be missing and how to get them."""
    if importlib.util.find_spec(name) is not None:
        return True
    print(f"{name} is not installed: {role} is missing ({install}; not a dependency of recovery)")
    return False

