"""The compact install script a read VNC screen gets: run by a real sh, its few fact lines parsed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Literal

from recovery.guest import build_install_script, parse_report
from recovery.steps.authorized_keys import PREVIEW_KEY

KEY = PREVIEW_KEY


def run(home: Path, *, facts: bool | Literal["compact"]) -> tuple[int, str]:
    digest = hashlib.sha256(f"{KEY}\n".encode()).hexdigest()
    script = build_install_script(KEY, sha256=digest, nonce="feedf00d", facts=facts, run_tag="run-1")
    done = subprocess.run(["sh"], input="\n".join(str(line) for line in script.lines) + "\n", text=True,
                          capture_output=True, env={**os.environ, "HOME": str(home)}, timeout=30)
    return done.returncode, done.stdout


def test_compact_facts_say_what_changed_in_a_few_lines(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAold old-key")  # no final newline
    status, output = run(tmp_path, facts="compact")
    assert status == 0
    assert len(output.splitlines()) <= 5, output  # fits on a 25-row screen with room to spare
    seen = parse_report(output, "feedf00d")
    assert (seen.added, seen.checksum, seen.newline_added) == (True, "verified", True)
    assert seen.backup == f"{tmp_path}/.ssh/authorized_keys.recovery-run-1"
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == f"ssh-ed25519 AAAAold old-key\n{KEY}\n"
    status, output = run(tmp_path, facts="compact")
    assert status == 0
    assert parse_report(output, "feedf00d").added is False  # already present


def test_the_compact_script_is_the_short_one_plus_a_few_lines() -> None:
    digest = hashlib.sha256(f"{KEY}\n".encode()).hexdigest()
    variants: tuple[bool | Literal["compact"], ...] = (True, "compact", False)
    length = {facts: sum(len(str(line)) + 1
                         for line in build_install_script(KEY, sha256=digest, nonce="n0nce", facts=facts).lines)
              for facts in variants}
    assert length[False] < length["compact"] < length[False] + 300 < length[True]
