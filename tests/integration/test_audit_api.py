"""`recovery.audit.check` against a real sshd, with each engine; and the audit with ssh2-python missing.

The fallback test runs `recovery audit` in a child Python whose import system
refuses `ssh2` (a meta-path finder, as on a platform with no wheel), so what
runs is the code path a musl machine takes, from the first import on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recovery.audit import ENGINES, Host, HostTrust, Status, check
from recovery.engine.cancel import CancelToken
from recovery.ssh.keys import KeyPair, generate_keypair
from tests.integration.sshd_fixture import HOST, SSHServer
from tests.integration.sshd_fleet import tarpit

ROOT = Path(__file__).resolve().parents[2]

# A child Python in which `import ssh2` fails as it does where ssh2-python is not installed.
WITHOUT_SSH2 = """
import importlib.abc, sys

class NoSsh2(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssh2" or name.startswith("ssh2."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoSsh2())
from recovery.cli.main import main
code = main(sys.argv[1:])
assert "ssh2" not in sys.modules, "ssh2 was imported after all"
sys.exit(code)
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_check_logs_in_to_a_real_sshd_and_names_what_failed(
    tmp_path: Path, sshd: SSHServer, audit_key: KeyPair, closed: int, engine: str
) -> None:
    stranger = generate_keypair(tmp_path / "stranger")
    rsa = generate_keypair(tmp_path / "rsa", key_type="rsa", bits=3072)
    sshd.authorize(rsa.public_line)
    hosts = [
        Host("good", HOST, sshd.port, sshd.user, (audit_key.private_path,), host_key=sshd.host_key_sha256),
        Host("rsa", HOST, sshd.port, sshd.user, (rsa.private_path,), host_key=sshd.host_key_sha256),
        Host("rejected", HOST, sshd.port, sshd.user, (stranger.private_path,), host_key=sshd.host_key_sha256),
        Host("unknown", HOST, sshd.port, sshd.user, (audit_key.private_path,)),
        Host("closed", HOST, closed, sshd.user, (audit_key.private_path,)),
    ]

    report = check(hosts, trust=HostTrust(), concurrency=4, timeout=10, engine=engine)

    assert report.engine == engine
    assert [(result.host.name, result.status) for result in report.results] == [
        ("good", Status.OK), ("rsa", Status.OK), ("rejected", Status.AUTH_REJECTED),
        ("unknown", Status.HOST_KEY_UNKNOWN), ("closed", Status.REFUSED),
    ]
    good = report.results[0]
    assert good.key_fingerprint == audit_key.sha256
    assert good.host_key_fingerprint == sshd.host_key_sha256
    assert f"Accepted publickey for {sshd.user}" in sshd.log_text()


def test_a_cancel_lets_go_of_a_host_stuck_in_a_tarpit(sshd: SSHServer, audit_key: KeyPair) -> None:
    token = CancelToken()
    with tarpit() as pit:
        hosts = [
            Host("good", HOST, sshd.port, sshd.user, (audit_key.private_path,), host_key=sshd.host_key_sha256),
            Host("stuck", HOST, pit.port, sshd.user, (audit_key.private_path,)),
            Host("after", HOST, sshd.port, sshd.user, (audit_key.private_path,), host_key=sshd.host_key_sha256),
        ]
        # The cancel comes once the check is stuck in the tarpit, from another thread.
        threading.Thread(target=lambda: pit.accept_one(30) and token.cancel("test"), daemon=True).start()

        report = check(hosts, concurrency=1, timeout=60, cancel=token)

    assert report.interrupted
    assert [(result.host.name, result.status) for result in report.results] == [("good", Status.OK)]
    assert [host.name for host in report.not_checked] == ["stuck", "after"]


def test_without_ssh2_python_the_audit_runs_through_paramiko_and_says_so(
    tmp_path: Path, sshd: SSHServer, audit_key: KeyPair, closed: int
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        f"defaults: {{host: {HOST}, port: {sshd.port}, user: {sshd.user}, key: {audit_key.private_path}, "
        f"host_key: '{sshd.host_key_sha256}'}}\nhosts:\n  - name: good\n  - {{name: closed, port: {closed}}}\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SSH2, "audit", "--inventory", str(inventory), "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["engine"] == "paramiko"
    assert {host["name"]: host["status"] for host in report["hosts"]} == {"good": "ok", "closed": "refused"}
    assert "Traceback" not in done.stderr
