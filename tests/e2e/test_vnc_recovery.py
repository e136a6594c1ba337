"""A whole recovery through the lab's VNC console (x11vnc showing an xterm running login), via the CLI."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recovery import lab
from tests.e2e.conftest import VNC_PLAYBOOK, Result, assert_screenshots
from tests.e2e.faults import CuttingProxy
from tests.e2e.test_recovery import assert_recovered, key_lines, new_key_line, report_of

pytestmark = pytest.mark.lab

RecoverVnc = Callable[..., Result]


@pytest.fixture
def vnc_lab(start_lab: Callable[..., lab.LabInfo]) -> lab.LabInfo:
    return start_lab(console="vnc")


@pytest.fixture
def recover_vnc(recover: Callable[..., Result]) -> RecoverVnc:
    """`recover` with the VNC playbook, through `console_url`."""

    def run(info: lab.LabInfo, console_url: str, *extra: str) -> Result:
        return recover(info, *extra, console_url=console_url, playbook=VNC_PLAYBOOK)

    return run


def test_recovery_through_the_vnc_console(vnc_lab: lab.LabInfo, recover_vnc: RecoverVnc, workdir: Path) -> None:
    info = vnc_lab
    assert info.vnc_console_url.startswith("vnc://127.0.0.1:")
    started = time.monotonic()
    result = recover_vnc(info, info.vnc_console_url)
    elapsed = time.monotonic() - started
    assert_recovered(info, workdir, result)
    report = report_of(workdir, result)
    install = next(record for record in report["timeline"] if record["id"] == "install")
    print(f"VNC recovery: {elapsed:.1f} s in all, install step (typing ~1.5 KB) {install['seconds']:.1f} s")
    assert any("not read back (VNC): proven by the SSH login" in change for change in report["vm_changes"])
    for png in assert_screenshots(report):
        assert struct.unpack(">II", png[16:24]) == (1024, 768)
    assert info.console_password().reveal() not in (workdir / "runs" / result.run_id / "report.md").read_text()


# On plain TCP the client's bytes are RFB KeyEvents (8 bytes each: type 4, down flag, 2 padding, keysym).
# The first `<` pressed is the heredoc's `sh <<'RECOVERY_SCRIPT_...'`: the user name (rcvlab-hex), the
# password (lowercase and digits) and the blind login's Ctrl-C/exit never type one.
HEREDOC_OPENS = struct.pack(">BBxxI", 4, 1, ord("<"))
INTO_THE_SCRIPT = 6000  # bytes after it: ~2.5 KeyEvents a character, so ~300 characters into the ~3 KB script


def test_a_vnc_connection_cut_mid_install_then_resume_adds_the_key_once(
    vnc_lab: lab.LabInfo, recover_vnc: RecoverVnc, workdir: Path
) -> None:
    info = vnc_lab
    before = lab.read_authorized_keys(info)
    vnc_port = int(info.vnc_console_url.rsplit(":", 1)[1])
    with CuttingProxy(vnc_port, trigger=HEREDOC_OPENS, extra=INTO_THE_SCRIPT) as proxy:
        failed = recover_vnc(info, f"vnc://127.0.0.1:{proxy.port}")
        assert proxy.cut_done.is_set()
    assert failed.code == 1, failed.stderr
    assert report_of(workdir, failed)["failed_step"] == "install"
    assert "closed the connection mid-conversation" in failed.stderr
    assert lab.read_authorized_keys(info) == before, "a half-typed heredoc must not run"
    resumed = recover_vnc(info, info.vnc_console_url, "--resume", failed.run_id)
    new_key = assert_recovered(info, workdir, resumed)
    assert new_key == new_key_line(workdir, failed)
    assert key_lines(info).count(new_key) == 1
