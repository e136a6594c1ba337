"""The pre-flight against the real lab: a run that cannot succeed exits 2 and leaves the VM as it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery import lab
from tests.e2e.conftest import Result

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    ("extra", "console_url", "expected"),
    [
        (["-e", "ssh_port=70000"], None, "70000 is not a TCP port"),
        (["-e", "host_key_fingerprint="], None, "no host key to check the VM against"),
        (["-e", "ssh_host="], None, "no SSH address to verify"),
        ([], "http://127.0.0.1:9/vnc_auto.html?path=%3Ftoken%3Dabc", "is a vnc console URL"),
    ],
)
def test_a_run_that_cannot_succeed_changes_nothing(
    start_lab: Callable[..., lab.LabInfo],
    recover: Callable[..., Result],
    workdir: Path,
    extra: list[str],
    console_url: str | None,
    expected: str,
) -> None:
    info = start_lab()
    before = lab.read_authorized_keys(info)
    started = time.monotonic()
    result = recover(info, *extra, console_url=console_url)
    assert result.code == 2, result.stderr
    assert expected in result.stderr
    assert "nothing was changed" in result.stderr
    assert time.monotonic() - started < 30, "refused up front, not after a console timeout"
    assert lab.read_authorized_keys(info) == before
    assert not (workdir / "keys").exists(), "no key may be written for a run that was refused"
    assert not list((workdir / "runs").glob("*/transcript.log")), "the console must not have been opened"
