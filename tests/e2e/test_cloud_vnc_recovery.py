"""A VM found by name whose only console is VNC: typed through Nova's real noVNC proxy.

Nova's fake driver points the VNC console at the lab's x11vnc; Nova returns its
noVNC URL (vnc_lite.html?token=...), and the channel turns it into the proxy's
websocket. Nothing can be read back from VNC: the SSH login is the proof.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from recovery import lab
from tests.cloud.nova_fixture import NovaServerSpec, running_nova
from tests.e2e.conftest import ROOT, recovery

pytestmark = pytest.mark.lab


def test_recovery_through_novas_novnc_proxy() -> None:
    directory = Path(tempfile.mkdtemp(prefix="rcv-novnc-e2e-"))
    directory.chmod(0o755)
    info = lab.up(directory / "lab", console="vnc")
    try:
        vnc = urlsplit(info.vnc_console_url)
        assert vnc.hostname is not None
        assert vnc.port is not None
        log = directory / "console.log"
        log.write_text(
            "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            f"256 {info.host_key_fingerprint} root@web-1 (ED25519)\n"
            "-----END SSH HOST KEY FINGERPRINTS-----\n"
        )
        servers = [NovaServerSpec("web-1", fixed_ip="10.0.0.5", floating_ip="127.0.0.1")]
        with running_nova(None, log, servers, vnc_target=(vnc.hostname, vnc.port)) as nova:
            nova.clouds_yaml(directory / "clouds.yaml", "novnc-cloud")
            result = recovery(
                "run", str(ROOT / "playbooks" / "restore-access-vnc.yaml"), "--cloud", "novnc-cloud",
                "-e", "server=web-1", "-e", f"user={info.user}", "-e", f"ssh_port={info.ssh_port}",
                "--journal", str(directory / "runs"),
                env={
                    "OS_CLIENT_CONFIG_FILE": str(directory / "clouds.yaml"),
                    "RECOVERY_CONSOLE_PASSWORD": info.console_password().reveal(),
                    "RECOVERY_KEYS_DIR": str(directory / "keys"),
                },
            )
        assert result.code == 0, result.stderr
        report = json.loads((directory / "runs" / result.run_id / "report.json").read_text())
        assert report["proof"]["host_key_trust"] == "pinned"
        new_key = report["keys"][0]["public_key"]
        lines = (lab.read_authorized_keys(info) or b"").decode().splitlines()
        assert lines.count(new_key) == 1
        assert lines[0] == info.old_public_key
    finally:
        lab.down(directory / "lab")
        shutil.rmtree(directory, ignore_errors=True)
