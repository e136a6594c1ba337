"""Commands printed for the operator to run next: complete, and runnable as printed.

A hint is only useful at 3 a.m. if it can be pasted: the right program (the venv's,
not whatever `recovery` is on PATH), absolute paths, and every argument the next
command needs, secrets excepted (those are named by where they come from).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recovery.engine.playbook import Playbook

__all__ = ["program", "resume_command"]


def program() -> str:
    """The shell words that run this recovery: `recovery` if the one on PATH is this installation's, else
    this interpreter with `-m recovery`.

    After `make venv` the `recovery` script sits in .venv/bin, which is not on PATH
    (and sudo resets PATH), so a bare `recovery` in a hint would fail or run
    another installation; the interpreter's own path always runs this one.
    """
    found = shutil.which("recovery")
    own = Path(sys.executable).parent / "recovery"
    if found is not None and own.exists() and Path(found).samefile(own):
        return "recovery"
    return f"{shlex.quote(sys.executable)} -m recovery"


def resume_command(
    playbook: Playbook,
    run_id: str,
    *,
    journal_root: Path | None,
    cloud: str | None,
    config: Path | None,
    given: Mapping[str, str],
    secret_files: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> str:
    """The `recovery run ... --resume RUN_ID` that continues this run.

    Inputs the run saved come back by themselves; a sensitive one was not saved, so
    it is asked for again as `-e NAME=@FILE` unless its environment variable is set.

    Args:
        journal_root: given only when the run used a non-default journal root.
        given: the inputs as given on this command line (values are not printed).
        secret_files: the `--secret NAME=@FILE` arguments given (file paths, not secrets).
    """
    env = os.environ if environ is None else environ
    words = [program(), "run", shlex.quote(str(playbook.path.absolute())), "--resume", run_id]
    if journal_root is not None:
        words += ["--journal", shlex.quote(str(journal_root.expanduser().absolute()))]
    if cloud:
        words += ["--cloud", shlex.quote(cloud)]
    if config is not None:
        words += ["--config", shlex.quote(str(config.expanduser().absolute()))]
    for name, value in given.items():
        decl = playbook.inputs.get(name)
        if decl is not None and decl.sensitive and value and not (decl.env and env.get(decl.env)):
            words += ["-e", f"{name}=@FILE"]
    for secret in secret_files:
        name, _, source = secret.partition("=@")
        words += ["--secret", shlex.quote(f"{name}=@{Path(source).expanduser().absolute()}")]
    return " ".join(words)
