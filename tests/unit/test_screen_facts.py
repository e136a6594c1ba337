"""The install commands a read VNC screen gets (compact facts, and the terse script): run by real shells,
their few fact lines parsed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Literal

import pytest

from recovery.guest import build_install_script, parse_report
from recovery.steps.authorized_keys import PREVIEW_KEY
from recovery.terse_install import terse_install_script

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


def run_terse(home: Path, shell: list[str], *, key: str = KEY, sha256: str | None = None) -> tuple[int, str]:
    digest = sha256 or hashlib.sha256(f"{key}\n".encode()).hexdigest()
    lines = terse_install_script(key, sha256=digest, nonce="feedf00d", run_tag="run-1")
    assert lines is not None
    done = subprocess.run(shell, input="\n".join(lines) + "\n", text=True, capture_output=True,
                          env={**os.environ, "HOME": str(home)}, cwd="/", timeout=30)
    return done.returncode, done.stdout


@pytest.mark.parametrize("shell", [["dash"], ["busybox", "sh"]], ids=["dash", "busybox"])
def test_the_terse_script_appends_once_keeps_a_backup_and_fixes_the_newline(tmp_path: Path, shell: list[str]) -> None:
    status, output = run_terse(tmp_path, shell)  # no ~/.ssh at all
    assert status == 0, output
    seen = parse_report(output, "feedf00d")
    assert (seen.ssh_dir_created, seen.added, seen.checksum, seen.backup) == (True, True, "verified", None)
    keys = tmp_path / ".ssh" / "authorized_keys"
    assert keys.read_text() == f"{KEY}\n"
    assert (stat.S_IMODE((tmp_path / ".ssh").stat().st_mode), stat.S_IMODE(keys.stat().st_mode)) == (0o700, 0o600)

    keys.write_text("ssh-ed25519 AAAAold old-key")  # no final newline
    keys.chmod(0o644)
    status, output = run_terse(tmp_path, shell)
    assert status == 0, output
    seen = parse_report(output, "feedf00d")
    assert (seen.added, seen.newline_added) == (True, True)
    assert seen.backup == f"{tmp_path}/.ssh/authorized_keys.recovery-run-1"
    assert Path(seen.backup).read_text() == "ssh-ed25519 AAAAold old-key"
    assert keys.read_text() == f"ssh-ed25519 AAAAold old-key\n{KEY}\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600

    status, output = run_terse(tmp_path, shell)  # again, the same run: no second copy, no second line
    assert status == 0, output
    assert parse_report(output, "feedf00d").added is False
    assert keys.read_text() == f"ssh-ed25519 AAAAold old-key\n{KEY}\n"
    assert Path(seen.backup).read_text() == "ssh-ed25519 AAAAold old-key", "the copy from before the run is kept"


def test_a_terse_script_whose_key_was_altered_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAold old-key\n")
    other = hashlib.sha256(b"another key\n").hexdigest()
    with pytest.raises(ValueError, match="not the digest"):
        run_terse(tmp_path, ["dash"], sha256=other)  # refused before anything is typed
    lines = terse_install_script(KEY, sha256=hashlib.sha256(f"{KEY}\n".encode()).hexdigest(), nonce="feedf00d")
    assert lines is not None
    altered = [line.replace("new-key-from", "new-kex-from") if line.startswith("k=") else line for line in lines]
    done = subprocess.run(["dash"], input="\n".join(altered) + "\n", text=True, capture_output=True,
                          env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
    assert done.returncode == 15  # ExitCode.TYPED_KEY_ALTERED
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAAold old-key\n"
    assert sorted(path.name for path in (tmp_path / ".ssh").iterdir()) == ["authorized_keys"]


def test_a_key_the_terse_script_cannot_carry_gets_the_long_one() -> None:
    quoted = KEY + " it's"
    digest = hashlib.sha256(f"{quoted}\n".encode()).hexdigest()
    assert terse_install_script(quoted, sha256=digest, nonce="n0nce") is None
    lines = terse_install_script(KEY, sha256=hashlib.sha256(f"{KEY}\n".encode()).hexdigest(), nonce="n0nce")
    assert lines is not None
    assert sum(len(line) + 1 for line in lines) < 1000  # the long script with compact facts: ~1700
    assert all(len(line) < 999 and "!" not in line and "\t" not in line for line in lines)
