"""The removal script on a file other than ~/.ssh/authorized_keys (`RemoveSpec.file`), run in each shell.

sshd may read a stolen key from ``~/.ssh/authorized_keys2`` or a root-owned
``/etc/ssh/authorized_keys/%u``: the same backup, atomic rewrite and read-back apply there, and a
user who may read but not rewrite such a file is told so with nothing changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.guest import RemoveExitCode, RemoveSpec, build_remove_script, key_blob, parse_remove_report
from tests.unit import test_guest_script as install
from tests.unit.test_guest_remove import ADMIN, OTHER, STOLEN
from tests.unit.test_guest_script import NONCE, Box, new_box

busybox_bin = install.busybox_bin


@pytest.fixture(params=sorted(install.SHELLS))
def box(request: pytest.FixtureRequest, busybox_bin: Path) -> Iterator[Box]:
    with new_box(request.param, busybox_bin) as fresh:
        yield fresh


def spec(path: Path, **kwargs: object) -> RemoveSpec:
    return RemoveSpec(blobs=(key_blob(STOLEN),), file=str(path), **kwargs)  # type: ignore[arg-type]


def test_the_named_file_is_rewritten_and_authorized_keys_left_alone(box: Box) -> None:
    box.seed(f"{ADMIN}\n{STOLEN}\n")
    second = box.ssh / "authorized_keys2"
    second.write_text(f"{OTHER}\n{STOLEN}")
    second.chmod(0o640)

    run = box.run(build_remove_script(spec(second), nonce=NONCE))

    assert run.code == 0, run.out + run.err
    report = parse_remove_report(run.out, NONCE)
    assert (report.status, report.file) == ("removed", str(second))
    assert second.read_text() == f"{OTHER}\n"
    assert second.stat().st_mode & 0o777 == 0o640
    assert box.ak.read_text() == f"{ADMIN}\n{STOLEN}\n"
    [backup] = box.ssh.glob("authorized_keys2.recovery-*")
    assert backup.read_text() == f"{OTHER}\n{STOLEN}"
    assert report.backup == str(backup)
    assert not list(box.ssh.glob(".recovery-*"))


def root_owned_keys(box: Box) -> Path:
    """/etc/ssh/authorized_keys/nobody's stand-in: root's file in root's directory, readable by all."""
    directory = box.root / "authorized_keys.d"
    directory.mkdir(mode=0o755)
    path = directory / "nobody"
    path.write_text(f"{OTHER}\n{STOLEN}\n")
    path.chmod(0o644)
    return path


def test_as_a_user_a_root_owned_file_is_read_but_not_rewritten(box: Box) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: this one runs the script as nobody on a file of root's")
    path = root_owned_keys(box)

    dry = box.run(build_remove_script(spec(path, dry_run=True), nonce=NONCE), as_nobody=True)
    run = box.run(build_remove_script(spec(path), nonce=NONCE), as_nobody=True)

    assert dry.code == 0, dry.out + dry.err
    assert parse_remove_report(dry.out, NONCE).status == "would-remove"
    assert run.code == RemoveExitCode.NEEDS_ROOT
    assert parse_remove_report(run.out, NONCE).error == "needs-root"
    assert path.read_text() == f"{OTHER}\n{STOLEN}\n"
    assert sorted(item.name for item in path.parent.iterdir()) == ["nobody"]


def test_as_root_a_root_owned_file_keeps_its_owner_and_mode(box: Box) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the unit tests as root: this one changes a file of root's for another user")
    path = root_owned_keys(box)

    run = box.run(build_remove_script(spec(path, user="nobody"), nonce=NONCE))

    assert run.code == 0, run.out + run.err
    assert path.read_text() == f"{OTHER}\n"
    stat = path.stat()
    assert (stat.st_uid, stat.st_mode & 0o777) == (0, 0o644)


def test_the_file_must_be_an_absolute_path() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        RemoveSpec(blobs=(key_blob(STOLEN),), file=".ssh/authorized_keys2")
