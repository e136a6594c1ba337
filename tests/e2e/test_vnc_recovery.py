"""A whole recovery through the lab's VNC console (x11vnc showing an xterm running login), via the CLI.

The screen is read (recovery.channels.screen): login waits for its prompts, a wrong password ends the run at
login, and the install command's facts come back. The tests check it was read, not fallen back on.
"""

from __future__ import annotations

import re
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
    print(f"VNC recovery: {elapsed:.1f} s in all, install step (typing ~650 characters) {install['seconds']:.1f} s")
    assert "appended the new key to ~/.ssh/authorized_keys" in report["vm_changes"], "the facts were read"
    assert any(change.startswith("backed up authorized_keys to ") for change in report["vm_changes"])
    assert "key checksum on the VM: verified" in report["vm_changes"]
    for png in assert_screenshots(report):
        assert struct.unpack(">II", png[16:24]) == (1024, 768)
    run = workdir / "runs" / result.run_id
    screens = sorted(run.glob("screen-*.txt"))
    assert [path.name.split("-", 2)[2] for path in screens] == ["before-login.txt", "after-login.txt",
                                                                "after-install.txt"]
    assert re.search(r"^RCV-[0-9a-f]{8}-0$", screens[-1].read_text(), re.MULTILINE), "the marker is on the screen"
    password = info.console_password().reveal()
    for written in run.rglob("*"):
        if written.is_file() and written.suffix != ".png":
            assert password not in written.read_text(errors="replace"), written


def test_a_wrong_password_on_the_vnc_console_ends_the_run_at_login(
    vnc_lab: lab.LabInfo, recover: Callable[..., Result], workdir: Path
) -> None:
    info = vnc_lab
    before = lab.read_authorized_keys(info)
    started = time.monotonic()
    result = recover(info, console_url=info.vnc_console_url, playbook=VNC_PLAYBOOK, password="not-the-password")
    elapsed = time.monotonic() - started
    assert result.code == 1, result.stderr
    assert "the console refused the password" in result.stderr
    assert report_of(workdir, result)["failed_step"] == "login"
    assert lab.read_authorized_keys(info) == before, "byte-identical"
    transcript = (workdir / "runs" / result.run_id / "transcript.log").read_text()
    typed = re.findall(r"^>>> (.*)$", transcript, re.MULTILINE)
    assert typed[-1] == "<password>", typed  # nothing typed after it
    assert "Login incorrect" in transcript
    assert "not-the-password" not in transcript + result.stdout + result.stderr
    print(f"VNC wrong password: the run ended {elapsed:.1f} s after it started")


# On plain TCP the client's bytes are RFB KeyEvents (8 bytes each: type 4, down flag, 2 padding, keysym).
# The first `;` pressed is the install command's `sh -c 'n=NONCE;...'` (the terse one-line command a read
# screen gets): the user name (rcvlab-hex), the password (lowercase and digits) and the identity check never
# type one.
SCRIPT_STARTS = struct.pack(">BBxxI", 4, 1, ord(";"))
INTO_THE_SCRIPT = 6000  # bytes after it: ~2.5 KeyEvents a character, so ~300 characters into the ~650 of it


def test_a_vnc_connection_cut_mid_install_then_resume_adds_the_key_once(
    vnc_lab: lab.LabInfo, recover_vnc: RecoverVnc, workdir: Path
) -> None:
    info = vnc_lab
    before = lab.read_authorized_keys(info)
    vnc_port = int(info.vnc_console_url.rsplit(":", 1)[1])
    with CuttingProxy(vnc_port, trigger=SCRIPT_STARTS, extra=INTO_THE_SCRIPT) as proxy:
        failed = recover_vnc(info, f"vnc://127.0.0.1:{proxy.port}")
        assert proxy.cut_done.is_set()
    assert failed.code == 1, failed.stderr
    assert report_of(workdir, failed)["failed_step"] == "install"
    assert "closed the connection mid-conversation" in failed.stderr
    assert lab.read_authorized_keys(info) == before, "a half-typed command must not run"
    resumed = recover_vnc(info, info.vnc_console_url, "--resume", failed.run_id)  # once hung: a marker missed
    new_key = assert_recovered(info, workdir, resumed)
    assert new_key == new_key_line(workdir, failed)
    assert key_lines(info).count(new_key) == 1
