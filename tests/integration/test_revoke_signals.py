"""`recovery revoke` interrupted: exit 130 at once, with the partial report written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.ssh.keys import generate_keypair
from tests.integration.sshd_fleet import closed_port, tarpit

PIN = "SHA256:" + "A" * 43


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_the_partial_report_and_exits_130(tmp_path: Path, signum: int) -> None:
    admin = generate_keypair(tmp_path / "admin", comment="admin")
    stolen = generate_keypair(tmp_path / "stolen", comment="stolen")
    output = tmp_path / "revoke.json"
    with tarpit() as pit, closed_port() as closed:
        inventory = tmp_path / "hosts.yaml"
        inventory.write_text(
            f"defaults: {{user: ops, key: {admin.private_path}, host_key: {PIN}, host: 127.0.0.1}}\n"
            f"hosts:\n  - {{name: down, port: {closed}}}\n  - {{name: stuck, port: {pit.port}}}\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "recovery", "revoke", "--public-key", str(stolen.public_path), "--inventory",
             str(inventory), "--timeout", "60", "--format", "json", "--output", str(output)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert pit.accept_one(30), "revoke never connected to the stuck host"
        time.sleep(0.5)  # the refused host has its result by now
        process.send_signal(signum)
        started = time.monotonic()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 10  # not after the 60 s handshake timeout
    hosts = {host["name"]: host["status"] for host in json.loads(output.read_text())["hosts"]}
    assert hosts == {"down": "refused", "stuck": "interrupted"}
    assert "interrupted: partial report" in err
