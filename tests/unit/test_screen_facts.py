"""The install command a read VNC screen gets: the terse one-line command, typed exactly as the dialogue frames
it (`sh -c '...'`), run by real shells (dash, busybox), its one fact line and its marker parsed."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from recovery.channels.dialogue import heredoc_command
from recovery.guest import TERSE_DIGEST, ExitCode, build_install_script, heredoc_delimiter, parse_report
from recovery.steps.authorized_keys import PREVIEW_KEY

KEY = PREVIEW_KEY
NONCE = "feedf00d"
OLD = "ssh-ed25519 AAAAold old-key"
BUSYBOX = next((Path(d) / "busybox" for d in os.environ.get("PATH", "").split(":") if (Path(d) / "busybox").exists()),
               None)


def typed(key: str = KEY, *, sha256: str | None = None) -> str:
    """The one line typed at the shell prompt for the compact (read screen) install."""
    digest = sha256 or hashlib.sha256(f"{key}\n".encode()).hexdigest()
    script = build_install_script(key, sha256=digest, nonce=NONCE, facts="compact", run_tag="run-1")
    (line,) = heredoc_command(list(script.lines), delimiter=heredoc_delimiter(NONCE), nonce=NONCE)
    assert isinstance(line, str)
    return line


@pytest.fixture(params=["dash", "busybox"])
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The user's shell, and the `sh` it starts: dash and dash, or busybox ash and busybox sh."""
    if request.param == "dash":
        return ["dash", "-c"], {}
    if BUSYBOX is None:
        pytest.fail("busybox is missing: apt-get install busybox")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "sha256sum", "grep", "cp", "chmod", "mkdir", "tail", "echo", "cat"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    return [str(BUSYBOX), "sh", "-c"], {"PATH": str(bin_dir)}


def run(shell: tuple[list[str], dict[str, str]], home: Path, line: str | None = None) -> tuple[int, str]:
    """Run the typed line; the status the marker reports, and everything printed."""
    argv, env = shell
    done = subprocess.run([*argv, line or typed()], text=True, capture_output=True, timeout=30,
                          env={**os.environ, "HOME": str(home), **env}, cwd="/")
    markers = re.findall(rf"^RCV-{NONCE}-(\d+)$", done.stdout, re.MULTILINE)
    assert len(markers) == 1, done.stdout + done.stderr
    return int(markers[0]), done.stdout


def modes(home: Path) -> tuple[int, int]:
    keys = home / ".ssh" / "authorized_keys"
    return stat.S_IMODE((home / ".ssh").stat().st_mode), stat.S_IMODE(keys.stat().st_mode)


def test_a_missing_ssh_directory_is_created_and_the_key_added(shell: tuple[list[str], dict[str, str]],
                                                              tmp_path: Path) -> None:
    status, output = run(shell, tmp_path)
    assert status == 0, output
    seen = parse_report(output, NONCE)
    assert (seen.ssh_dir_created, seen.checksum, seen.backup, seen.added, seen.exit_code) == (
        True, "verified", None, True, 0)
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == f"{KEY}\n"
    assert modes(tmp_path) == (0o700, 0o600)


def test_a_file_without_a_final_newline_and_odd_modes_is_backed_up_fixed_and_appended_to_once(
    shell: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    (tmp_path / ".ssh").mkdir(mode=0o775)
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.write_text(OLD)  # no final newline
    keys.chmod(0o664)
    (tmp_path / ".ssh").chmod(0o775)
    status, output = run(shell, tmp_path)
    assert status == 0, output
    seen = parse_report(output, NONCE)
    assert (seen.ssh_dir_created, seen.newline_added, seen.added) == (False, True, True)
    backup = tmp_path / ".ssh" / "authorized_keys.recovery-run-1"
    assert seen.backup == str(backup)
    assert backup.read_text() == OLD
    assert stat.S_IMODE(backup.stat().st_mode) == 0o664  # cp -p: as it was
    assert keys.read_text() == f"{OLD}\n{KEY}\n"
    assert modes(tmp_path) == (0o700, 0o600)

    status, output = run(shell, tmp_path)  # the same run again (a resume): no second line, the first backup kept
    assert status == 0, output
    seen = parse_report(output, NONCE)
    assert (seen.added, seen.newline_added) == (False, False)
    assert keys.read_text() == f"{OLD}\n{KEY}\n"
    assert backup.read_text() == OLD


def test_a_key_already_there_twice_is_left_as_it_is(shell: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    keys = tmp_path / ".ssh" / "authorized_keys"
    content = f"{KEY}\n{OLD}\n{KEY}\n"
    keys.write_text(content)
    status, output = run(shell, tmp_path)
    assert status == 0, output
    assert parse_report(output, NONCE).added is False
    assert keys.read_text() == content


def test_an_altered_key_changes_nothing(shell: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.write_text(f"{OLD}\n")
    altered = typed().replace("new-key-from", "new-kex-from")  # one character changed on the way
    status, output = run(shell, tmp_path, altered)
    assert status == ExitCode.TYPED_KEY_ALTERED, output
    assert "facts=" not in output
    assert keys.read_text() == f"{OLD}\n"
    assert sorted(path.name for path in (tmp_path / ".ssh").iterdir()) == ["authorized_keys"], "no backup either"


def test_an_altered_key_does_not_even_create_ssh(shell: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    status, _ = run(shell, tmp_path, typed().replace("new-key-from", "new-kex-from"))
    assert status == ExitCode.TYPED_KEY_ALTERED
    assert not (tmp_path / ".ssh").exists()


def test_a_missing_home_changes_nothing(shell: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    status, _ = run(shell, tmp_path / "gone")
    assert status == ExitCode.NO_SSH_DIR
    assert not (tmp_path / "gone").exists()


def test_a_checksum_the_command_was_not_built_for_is_refused_before_anything_is_typed() -> None:
    with pytest.raises(ValueError, match="not the digest"):
        typed(sha256=hashlib.sha256(b"another key\n").hexdigest())


def test_the_terse_command_is_one_short_line_that_never_shows_its_marker() -> None:
    line = typed()
    long_form = build_install_script(KEY, sha256=hashlib.sha256(f"{KEY}\n".encode()).hexdigest(), nonce=NONCE,
                                     facts=False, run_tag="run-1")
    assert len(line) < 700 < sum(len(str(part)) + 1 for part in long_form.lines)
    assert f"RCV-{NONCE}" not in line
    assert "!" not in line
    assert "\t" not in line
    assert hashlib.sha256(f"{KEY}\n".encode()).hexdigest()[:TERSE_DIGEST] in line
    assert line.startswith(" ")  # out of history
    assert line.endswith("'")  # an Enter before its end runs nothing


@pytest.mark.parametrize("comment", ["it's", 'say "hi"', "$HOME", "a\\b", "back`tick`"])
def test_a_key_the_terse_command_cannot_carry_gets_the_long_script(comment: str) -> None:
    key = f"{KEY} {comment}"
    script = build_install_script(key, sha256=hashlib.sha256(f"{key}\n".encode()).hexdigest(), nonce=NONCE,
                                  facts="compact")
    assert len(script.lines) > 1
    assert len(heredoc_command(list(script.lines), delimiter=heredoc_delimiter(NONCE), nonce=NONCE)) > 2


def test_a_key_too_long_for_one_line_gets_the_long_script() -> None:
    rsa = "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + bytes(530)).decode() + " rsa-key"
    script = build_install_script(rsa, sha256=hashlib.sha256(f"{rsa}\n".encode()).hexdigest(), nonce=NONCE,
                                  facts="compact")
    assert len(script.lines) > 1
    assert max(len(str(line)) for line in script.lines) < 1000


def test_the_terse_command_reports_its_facts_inside_a_here_document_too(tmp_path: Path) -> None:
    """run_as (the password-set route) and the boot route's root shell type the terse line inside a
    here-document, not the one-line framing: its facts must still carry the nonce."""
    script = build_install_script(KEY, sha256=hashlib.sha256(f"{KEY}\n".encode()).hexdigest(), nonce=NONCE,
                                  facts="compact", run_tag="run-1")
    delimiter = heredoc_delimiter(NONCE)
    done = subprocess.run(["dash"], input=f"sh <<'{delimiter}'\n{script.raw()}{delimiter}\n", text=True,
                          capture_output=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)}, cwd="/")
    assert parse_report(done.stdout, NONCE).added is True, done.stdout + done.stderr
