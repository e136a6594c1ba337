"""`recovery -q demo`: errors and the outcome still reach the user, the lab's chatter does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from recovery import lab
from recovery.cli import demo
from recovery.errors import LabError


def _lab_that_cannot_start(lab_dir: Path, **_: object) -> lab.LabInfo:
    raise LabError("sshd could not bind 127.0.0.1: address in use")


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_keeps_the_error_and_drops_the_chatter(
    quiet: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "missing_prerequisites", lambda: [])
    monkeypatch.setattr(lab, "up", _lab_that_cannot_start)
    monkeypatch.setattr(lab, "down", lambda lab_dir: None)

    code = demo.run_demo(tmp_path, quiet=quiet)

    err = capsys.readouterr().err
    assert code != 0
    assert "error: sshd could not bind 127.0.0.1: address in use" in err
    assert ("starting the lab" in err) is not quiet
    assert ("lab stopped" in err) is not quiet
