"""A VM found by name whose only console is VNC: typed through Nova's real noVNC proxy.

Nova's fake driver points the VNC console at the lab's x11vnc; Nova returns its
noVNC URL (vnc_lite.html?token=...), and the channel turns it into the proxy's
websocket. Nothing can be read back from VNC: the SSH login is the proof.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from recovery import lab
from tests.cloud.nova_fixture import NovaServerSpec, running_nova
from tests.e2e.conftest import VNC_PLAYBOOK, host_key_fingerprints, recovery
from tests.e2e.test_recovery import key_lines, report_of

pytestmark = pytest.mark.lab


def test_recovery_through_novas_novnc_proxy(start_lab: Callable[..., lab.LabInfo], workdir: Path) -> None:
    info = start_lab(console="vnc")
    vnc = urlsplit(info.vnc_console_url)
    assert vnc.hostname is not None
    assert vnc.port is not None
    log = workdir / "console.log"
    log.write_text(host_key_fingerprints(info))
    servers = [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")]
    with running_nova(None, log, servers, vnc_target=(vnc.hostname, vnc.port)) as nova:
        nova.clouds_yaml(workdir / "clouds.yaml", "novnc-cloud")
        result = recovery(
            "run", str(VNC_PLAYBOOK), "--cloud", "novnc-cloud",
            "-e", "server=web-1", "-e", f"user={info.user}", "-e", f"ssh_port={info.ssh_port}",
            "--journal", str(workdir / "runs"),
            env={
                "OS_CLIENT_CONFIG_FILE": str(workdir / "clouds.yaml"),
                "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(),
                "RECOVERY_KEYS_DIR": str(workdir / "keys"),
            },
        )
    assert result.code == 0, result.stderr
    report = report_of(workdir, result)
    assert report["proof"]["host_key_trust"] == "pinned"
    new_key = report["keys"][0]["public_key"]
    lines = key_lines(info)
    assert lines.count(new_key) == 1
    assert lines[0] == info.old_public_key
