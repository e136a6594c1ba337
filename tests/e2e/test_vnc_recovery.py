"""A whole recovery through the lab's VNC console (x11vnc showing an xterm running login), via the CLI."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery import lab
from tests.e2e.conftest import ROOT, recovery
from tests.e2e.test_recovery import assert_recovered

pytestmark = pytest.mark.lab

PLAYBOOK = ROOT / "playbooks" / "restore-access-vnc.yaml"


@pytest.fixture
def vnc_lab(workdir: Path) -> Iterator[lab.LabInfo]:
    directory = workdir / "lab"
    info = lab.up(directory, console="vnc")
    yield info
    lab.down(directory)


def test_recovery_through_the_vnc_console(vnc_lab: lab.LabInfo, workdir: Path) -> None:
    info = vnc_lab
    assert info.vnc_console_url.startswith("vnc://127.0.0.1:")
    started = time.monotonic()
    result = recovery(
        "run", str(PLAYBOOK),
        "-e", f"console_url={info.vnc_console_url}",
        "-e", f"ssh_host={info.ssh_host}",
        "-e", f"ssh_port={info.ssh_port}",
        "-e", f"user={info.user}",
        "-e", f"host_key_fingerprint={info.host_key_fingerprint}",
        "--journal", str(workdir / "runs"),
        env={"RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(), "RECOVERY_KEYS_DIR": str(workdir / "keys")},
    )
    elapsed = time.monotonic() - started
    assert_recovered(info, workdir, result)
    report = json.loads((workdir / "runs" / result.run_id / "report.json").read_text())
    install = next(record for record in report["timeline"] if record["id"] == "install")
    print(f"VNC recovery: {elapsed:.1f} s in all, install step (typing ~3 KB) {install['seconds']:.1f} s")
    assert any("not read back (VNC): proven by the SSH login" in change for change in report["vm_changes"])
    moments = [entry.split(":", 1)[0] for entry in report["screenshots"]]
    assert moments == ["before-login", "after-login", "after-install"]
    for entry in report["screenshots"]:
        png = Path(entry.split(": ", 1)[1]).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert struct.unpack(">II", png[16:24]) == (1024, 768)
    assert info.console_password().reveal() not in (workdir / "runs" / result.run_id / "report.md").read_text()
