"""Each report format, byte for byte: the files in tests/cases/audit/report are the contract.

Two reports: a finished, sharded audit with a remediation; and an interrupted
cloud audit with console checks and a label value that needs escaping.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from recovery.audit.model import AuditReport, ConsoleAccess, GuestAgent, Host, HostResult, Remediation, Status
from recovery.audit.render import FORMATS, JUNIT_OUTCOMES, render, summary_line
from recovery.ssh.hostkeys import RecordedKey
from recovery.ssh.jump import JumpHop

CASES = Path(__file__).resolve().parents[1] / "cases" / "audit" / "report"
SUFFIXES = {"table": "txt", "json": "json", "junit": "xml", "prometheus": "prom"}
KEY = Path("/home/ops/.ssh/audit")
HOST_KEY = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"
AUDIT_KEY = "SHA256:DEZg4zDJlmYELhDCZQGMBswXNdJ466GxwwsWqD+8XwU"


def host(name: str, address: str | None, port: int = 22, **extra: str) -> Host:
    return Host(name, address, port, "ops", (KEY,), **extra)


# Behind two bastions: the report names each hop's host and port, never its user, key or pin.
JUMPS = (JumpHop("bastion.example.com", 2222, "jumper", "/secret/jump_key", HOST_KEY), JumpHop("fd00::7", 22, "jumper"))

FINISHED = AuditReport(
    results=(
        HostResult(dataclasses.replace(host("web-1", "203.0.113.10"), jumps=JUMPS), Status.OK, 0.0421,
                   key_fingerprint=AUDIT_KEY, key_path=KEY, host_key_fingerprint=HOST_KEY),
        HostResult(host("web-2", "203.0.113.11", 2222), Status.AUTH_REJECTED, 0.0533,
                   "203.0.113.11:2222 rejected the key for user 'ops' (offered SHA256:x)",
                   host_key_fingerprint=HOST_KEY),
        HostResult(host("db-1", "db-1.example.com"), Status.TIMEOUT, 5.0004,
                   "db-1.example.com:22 did not answer in time"),
        HostResult(host("pending", None), Status.NO_ADDRESS, 0.0, "no address to connect to"),
        HostResult(host("web-3", "web-3..example.com"), Status.DNS_ERROR, 0.0002,
                   "'web-3..example.com' is not a valid host name (an empty label)"),
    ),
    started_at=datetime(2026, 11, 28, 3, 15, 0, tzinfo=UTC),
    seconds=5.0217,
    shard="1/4",
    engine="libssh2",
    remediations=(
        Remediation("web-2", "succeeded", "restore-access-serial.yaml exited 0; its report is in the journal",
                    run_id="20261128T031505Z-a1b2c3", journal=Path("/var/lib/recovery/runs/20261128T031505Z-a1b2c3"),
                    exit_code=0),
        Remediation("db-1", "skipped", "a recovery playbook does not fix timeout"),
    ),
    known_hosts_added=(RecordedKey("[bastion.example.com]:2222", "ssh-ed25519", HOST_KEY),),
)

INTERRUPTED = AuditReport(
    results=(
        HostResult(host('odd "name"\\x', "10.0.0.5", server_id="c0ffee"), Status.OK, 0.0312, key_fingerprint=AUDIT_KEY,
                   key_path=KEY, host_key_fingerprint=HOST_KEY, host_key_trusted_on_first_use=True,
                   console=ConsoleAccess(("serial", "novnc"), guest_agent=GuestAgent(True, "ubuntu", "image 7f3e"))),
        HostResult(host("stopped", "10.0.0.6", server_id="decade", note="server is SHUTOFF"), Status.REFUSED, 0.0011,
                   "10.0.0.6:22 refused the connection (is sshd up?) (server is SHUTOFF)",
                   console=ConsoleAccess((), ("serial: the cloud offers no serial console", "novnc: HTTP 409"),
                                         GuestAgent(None, None, "image 9a0b", "image 9a0b is gone (deleted, or no "
                                                    "longer shared with this project)"))),
        HostResult(host("evil\x1b[2J\x07\u202e", "10.0.0.9", server_id="bad"), Status.PROTOCOL_ERROR, 0.0042,
                   "10.0.0.9:22 answered, but not as an SSH server: it sent 'HTTP/1.1 400 Bad Request\\r\\n'"),
    ),
    started_at=datetime(2026, 11, 28, 4, 0, 0, tzinfo=UTC),
    seconds=1.5,
    interrupted=True,
    not_checked=(host("late-1", "10.0.0.7"), host("late-2", "10.0.0.8")),
    engine="paramiko",
)

REPORTS = {"finished": FINISHED, "interrupted": INTERRUPTED}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("case", sorted(REPORTS))
def test_each_format_matches_its_expected_file_exactly(case: str, fmt: str) -> None:
    expected = (CASES / f"{case}.{SUFFIXES[fmt]}").read_text(encoding="utf-8")

    assert render(REPORTS[case], fmt) == expected


def test_json_and_junit_parse_and_agree_with_the_report() -> None:
    document = json.loads(render(FINISHED, "json"))
    suite = ElementTree.fromstring(render(FINISHED, "junit")).find("testsuite")

    statuses = ["ok", "auth_rejected", "timeout", "no_address", "dns_error"]
    assert [item["status"] for item in document["hosts"]] == statuses
    assert document["summary"]["failed"] == 4
    assert document["hosts"][1]["remediation"]["journal"] == "/var/lib/recovery/runs/20261128T031505Z-a1b2c3"
    assert suite is not None
    assert (suite.get("failures"), suite.get("errors")) == ("1", "3")
    assert [case.get("name") for case in suite.iter("testcase")] == ["web-1", "web-2", "db-1", "pending", "web-3"]


def test_every_status_has_its_junit_outcome() -> None:
    """Checked and refused is a failure; not checked at all (the host or the network's fault) is an error."""
    assert set(JUNIT_OUTCOMES) == set(Status)
    failures = {status for status, outcome in JUNIT_OUTCOMES.items() if outcome == "failure"}
    assert failures == {Status.AUTH_REJECTED, Status.HOST_KEY_CHANGED, Status.HOST_KEY_UNKNOWN}
    assert JUNIT_OUTCOMES[Status.OK] is None


def test_control_characters_in_names_never_reach_the_terminal_or_break_the_xml() -> None:
    name = "evil\x1b[2J\x07\u202e"
    table = render(INTERRUPTED, "table")
    suite = ElementTree.fromstring(render(INTERRUPTED, "junit")).find("testsuite")  # well-formed

    assert not any(char in table for char in "\x1b\x07\u202e")
    assert "evil\\x1b[2J\\x07\\u202e" in table
    assert suite is not None
    assert "evil\\x1b[2J\\x07\\u202e" in [case.get("name") for case in suite.iter("testcase")]
    assert json.loads(render(INTERRUPTED, "json"))["hosts"][2]["name"] == name  # JSON escapes it, exactly
    assert f'recovery_ssh_access_ok{{server="{name}"}} 0' in render(INTERRUPTED, "prometheus")


def test_a_lone_surrogate_from_a_cloud_name_is_still_a_report_in_every_format() -> None:
    odd = AuditReport(
        results=(HostResult(host("web-\ud800", "10.0.0.1"), Status.REFUSED, 0.1, "refused"),),
        started_at=datetime(2026, 11, 28, 4, 0, 0, tzinfo=UTC),
        seconds=0.1,
    )

    for fmt in FORMATS:
        render(odd, fmt).encode("utf-8")  # what writing the report does; a surrogate would raise here


def test_audit_wide_prometheus_series_say_which_shard_they_are() -> None:
    """Two shards' files in one textfile directory must not define the same series."""
    unsharded = [line for line in render(INTERRUPTED, "prometheus").splitlines() if line.startswith("recovery_audit_")]

    assert len(unsharded) == 14  # hosts by status (10), complete, duration, timestamp, engine
    assert all('shard="0/1"' in line for line in unsharded)


def test_summary_line() -> None:
    assert summary_line(FINISHED) == "5 hosts in 5.0 s: 1 ok, 1 auth_rejected, 1 timeout, 1 dns_error, 1 no_address"
    assert summary_line(INTERRUPTED).endswith("1 ok, 1 refused, 1 protocol_error; interrupted, 2 not checked")


@pytest.mark.parametrize("engine", ["libssh2", "paramiko"])
def test_every_format_names_the_engine(engine: str) -> None:
    """A report made where ssh2-python is missing says it ran through paramiko, in each format."""
    report = dataclasses.replace(FINISHED, engine=engine)

    assert render(report, "table").endswith(f"\n\nengine: {engine}\n")
    assert json.loads(render(report, "json"))["summary"]["engine"] == engine
    suite = ElementTree.fromstring(render(report, "junit")).find("testsuite")
    assert suite is not None
    assert [(item.get("name"), item.get("value")) for item in suite.iter("property")] == [("engine", engine)]
    assert f'recovery_audit_engine_info{{shard="1/4",engine="{engine}"}} 1\n' in render(report, "prometheus")


def test_a_host_behind_jump_hosts_lists_them_by_host_and_port_and_nothing_secret() -> None:
    web1, *direct = json.loads(render(FINISHED, "json"))["hosts"]

    assert web1["jumps"] == [{"host": "bastion.example.com", "port": 2222}, {"host": "fd00::7", "port": 22}]
    assert [host["jumps"] for host in direct] == [[]] * 4
    table = render(FINISHED, "table")
    assert "bastion.example.com:2222,[fd00::7]:22" in table.splitlines()[1]
    for fmt in FORMATS:
        assert "jumper" not in render(FINISHED, fmt)
        assert "/secret/jump_key" not in render(FINISHED, fmt)
