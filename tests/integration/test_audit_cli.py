"""`python -m recovery audit` against real sshd servers: exit codes, every --format, --output, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from recovery.audit.engine import ENGINES
from recovery.ssh.keys import KeyPair
from tests.integration.sshd_fixture import HOST, SSHServer
from tests.integration.sshd_fleet import Tarpit, known_hosts_line, tarpit
from tests.processes import stop_child

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def known_hosts(tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer) -> Path:
    path = tmp_path_factory.mktemp("cli-known") / "known_hosts"
    path.write_text(known_hosts_line(sshd.port, sshd.host_public_key) + "\n")
    return path


def write_inventory(path: Path, sshd: SSHServer, key: KeyPair, hosts: list[str]) -> Path:
    header = f"defaults:\n  host: {HOST}\n  port: {sshd.port}\n  user: {sshd.user}\n  key: {key.private_path}\nhosts:\n"
    path.write_text(header + "".join(f"  - {host}\n" for host in hosts))
    return path


def audit_argv(*args: str) -> list[str]:
    """The command line of `python -m recovery audit ARGS`."""
    return [sys.executable, "-m", "recovery", "audit", *args]


def audit(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        audit_argv(*args),
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer, audit_key: KeyPair, closed: int) -> Path:
    return write_inventory(
        tmp_path_factory.mktemp("cli-inventory") / "mixed.yaml",
        sshd,
        audit_key,
        ["{name: good-1}", "{name: good-2}", "{name: wrong-user, user: nobody}", f"{{name: closed, port: {closed}}}",
         "{name: dns, host: no-such-host.invalid}", "{name: pending, host: ''}"],
    )


def test_all_good_is_exit_zero(tmp_path: Path, sshd: SSHServer, audit_key: KeyPair, known_hosts: Path) -> None:
    inventory = write_inventory(tmp_path / "good.yaml", sshd, audit_key, ["{name: a}", "{name: b}"])

    done = audit("--inventory", str(inventory), "--known-hosts", str(known_hosts))

    assert done.returncode == 0, done.stderr
    rows = [line.split()[:3] for line in done.stdout.splitlines()[1:3]]
    assert rows == [["a", f"{HOST}:{sshd.port}", "ok"], ["b", f"{HOST}:{sshd.port}", "ok"]]
    assert done.stdout.endswith("\n\nengine: libssh2\n")
    assert done.stderr == ""  # not a terminal: nothing but the report


def test_json_reports_each_host_and_a_summary(mixed: Path, known_hosts: Path) -> None:
    done = audit("--inventory", str(mixed), "--known-hosts", str(known_hosts), "--format", "json")

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert {host["name"]: host["status"] for host in report["hosts"]} == {
        "good-1": "ok", "good-2": "ok", "wrong-user": "auth_rejected", "closed": "refused",
        "dns": "dns_error", "pending": "no_address",
    }
    assert report["summary"]["ok"] == 2
    assert report["summary"]["failed"] == 4


def test_both_engines_report_alike_and_each_report_names_its_engine(mixed: Path, known_hosts: Path) -> None:
    """RECOVERY_AUDIT_ENGINE=paramiko is what a machine without ssh2-python runs (it chooses it by itself)."""
    reports = {}
    for engine in ENGINES:
        done = audit("--inventory", str(mixed), "--known-hosts", str(known_hosts), "--format", "json",
                     env={"RECOVERY_AUDIT_ENGINE": engine})
        assert done.returncode == 1, done.stderr
        reports[engine] = json.loads(done.stdout)

    assert [report["summary"]["engine"] for report in reports.values()] == list(ENGINES)
    libssh2, paramiko = ([(host["name"], host["status"], host["key"], host["host_key"]) for host in report["hosts"]]
                         for report in reports.values())
    assert paramiko == libssh2
    prometheus = audit("--inventory", str(mixed), "--known-hosts", str(known_hosts), "--format", "prometheus",
                       env={"RECOVERY_AUDIT_ENGINE": "paramiko"})
    assert 'recovery_audit_engine_info{shard="0/1",engine="paramiko"} 1\n' in prometheus.stdout


def test_junit_has_one_testcase_per_host(mixed: Path, known_hosts: Path) -> None:
    done = audit("--inventory", str(mixed), "--known-hosts", str(known_hosts), "--format", "junit")

    assert done.returncode == 1, done.stderr
    suite = ElementTree.fromstring(done.stdout).find("testsuite")
    assert suite is not None
    cases = {case.get("name"): [(item.tag, item.get("type")) for item in case] for case in suite.iter("testcase")}
    assert cases == {  # checked and refused: a failure; not checked at all: an error
        "good-1": [], "good-2": [], "wrong-user": [("failure", "auth_rejected")], "closed": [("error", "refused")],
        "dns": [("error", "dns_error")], "pending": [("error", "no_address")],
    }
    assert (suite.get("failures"), suite.get("errors")) == ("1", "3")


def test_prometheus_textfile_is_written_atomically_and_world_readable(
    tmp_path: Path, mixed: Path, known_hosts: Path
) -> None:
    output = tmp_path / "textfile" / "recovery_audit.prom"
    output.parent.mkdir()

    done = audit("--inventory", str(mixed), "--known-hosts", str(known_hosts), "--format", "prometheus",
                 "--output", str(output))

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    text = output.read_text()
    assert 'recovery_ssh_access_ok{server="good-1"} 1\n' in text
    assert 'recovery_ssh_access_ok{server="wrong-user"} 0\n' in text
    assert 'recovery_ssh_access_status{server="dns",status="dns_error"} 1\n' in text
    assert 'recovery_audit_timestamp_seconds{shard="0/1"} ' in text
    assert stat.S_IMODE(output.stat().st_mode) & 0o044 == 0o044  # node_exporter runs as another user
    assert [path.name for path in output.parent.iterdir()] == [output.name]  # no temporary file left


def test_host_key_unknown_without_known_hosts_and_accept_new_records_it_for_the_next_audit(
    tmp_path: Path, sshd: SSHServer, audit_key: KeyPair
) -> None:
    """As ssh's accept-new: the first audit adds the key, the next checks against it (before: nothing was kept)."""
    inventory = write_inventory(tmp_path / "one.yaml", sshd, audit_key, ["{name: a}", "{name: b}"])
    learned = tmp_path / "known_hosts"

    unknown = audit("--inventory", str(inventory), "--format", "json")
    accepted = audit("--inventory", str(inventory), "--format", "json", "--accept-new", "--known-hosts", str(learned))
    checked = audit("--inventory", str(inventory), "--format", "json", "--known-hosts", str(learned))

    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["hosts"][0]["status"] == "host_key_unknown"
    assert accepted.returncode == 0, accepted.stderr
    assert [host["host_key_trusted_on_first_use"] for host in json.loads(accepted.stdout)["hosts"]] == [True, True]
    assert learned.read_text() == known_hosts_line(sshd.port, sshd.host_public_key) + "\n"  # once for two names
    assert checked.returncode == 0, checked.stderr
    assert [host["host_key_trusted_on_first_use"] for host in json.loads(checked.stdout)["hosts"]] == [False, False]


@pytest.fixture
def pit() -> Iterator[Tarpit]:
    with tarpit() as server:
        yield server


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_writes_a_partial_report_and_exits_130(
    tmp_path: Path, sshd: SSHServer, audit_key: KeyPair, known_hosts: Path, pit: Tarpit, signum: signal.Signals
) -> None:
    """One check at a time: the good hosts finish, then the audit is stuck in the tarpit when the signal comes.

    SIGTERM is how systemd stops the unit, Kubernetes ends the pod and CI cancels a job.
    """
    inventory = write_inventory(
        tmp_path / "stuck.yaml", sshd, audit_key,
        ["{name: good-1}", "{name: good-2}", f"{{name: stuck, port: {pit.port}}}", "{name: never}"],
    )
    output = tmp_path / "report.json"
    process = subprocess.Popen(
        audit_argv("--inventory", str(inventory), "--known-hosts", str(known_hosts),
                   "--concurrency", "1", "--timeout", "60", "--format", "json", "--output", str(output)),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert pit.accept_one(timeout=30), "the audit never reached the tarpit"
        process.send_signal(signum)
        _, err = process.communicate(timeout=10)
    finally:
        stop_child(process)

    assert process.returncode == 130, err
    report = json.loads(output.read_text())
    assert [host["name"] for host in report["hosts"]] == ["good-1", "good-2"]
    assert report["summary"]["interrupted"] is True
    assert report["summary"]["not_checked"] == ["stuck", "never"]
    assert "interrupted, 2 not checked" in err
