"""Each report format, byte for byte: the files in tests/cases/audit/report are the contract.

Two reports: a finished, sharded audit with a remediation; and an interrupted
cloud audit with console checks and a label value that needs escaping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from recovery.audit.model import AuditReport, ConsoleAccess, Host, HostResult, Remediation, Status
from recovery.audit.render import FORMATS, render, summary_line

CASES = Path(__file__).resolve().parents[1] / "cases" / "audit" / "report"
SUFFIXES = {"table": "txt", "json": "json", "junit": "xml", "prometheus": "prom"}
KEY = Path("/home/ops/.ssh/audit")
HOST_KEY = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"
AUDIT_KEY = "SHA256:DEZg4zDJlmYELhDCZQGMBswXNdJ466GxwwsWqD+8XwU"


def host(name: str, address: str | None, port: int = 22, **extra: str) -> Host:
    return Host(name, address, port, "ops", (KEY,), **extra)


FINISHED = AuditReport(
    results=(
        HostResult(host("web-1", "203.0.113.10"), Status.OK, 0.0421, key_fingerprint=AUDIT_KEY, key_path=KEY,
                   host_key_fingerprint=HOST_KEY),
        HostResult(host("web-2", "203.0.113.11", 2222), Status.AUTH_REJECTED, 0.0533,
                   "203.0.113.11:2222 rejected the key for user 'ops' (offered SHA256:x)",
                   host_key_fingerprint=HOST_KEY),
        HostResult(host("db-1", "db-1.example.com"), Status.TIMEOUT, 5.0004,
                   "db-1.example.com:22 did not answer in time"),
        HostResult(host("pending", None), Status.NO_ADDRESS, 0.0, "no address to connect to"),
    ),
    started_at=datetime(2026, 11, 28, 3, 15, 0, tzinfo=UTC),
    seconds=5.0217,
    shard="1/4",
    remediations=(
        Remediation("web-2", "succeeded", "restore-access-serial.yaml exited 0; its report is in the journal",
                    run_id="20261128T031505Z-a1b2c3", journal=Path("/var/lib/recovery/runs/20261128T031505Z-a1b2c3"),
                    exit_code=0),
        Remediation("db-1", "skipped", "a recovery playbook does not fix timeout"),
    ),
)

INTERRUPTED = AuditReport(
    results=(
        HostResult(host('odd "name"\\x', "10.0.0.5", server_id="c0ffee"), Status.OK, 0.0312, key_fingerprint=AUDIT_KEY,
                   key_path=KEY, host_key_fingerprint=HOST_KEY, host_key_trusted_on_first_use=True,
                   console=ConsoleAccess(("serial", "novnc"))),
        HostResult(host("stopped", "10.0.0.6", server_id="decade", note="server is SHUTOFF"), Status.REFUSED, 0.0011,
                   "10.0.0.6:22 refused the connection (is sshd up?) (server is SHUTOFF)",
                   console=ConsoleAccess((), ("serial: the cloud offers no serial console", "novnc: HTTP 409"))),
    ),
    started_at=datetime(2026, 11, 28, 4, 0, 0, tzinfo=UTC),
    seconds=1.5,
    interrupted=True,
    not_checked=(host("late-1", "10.0.0.7"), host("late-2", "10.0.0.8")),
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

    assert [item["status"] for item in document["hosts"]] == ["ok", "auth_rejected", "timeout", "no_address"]
    assert document["summary"]["failed"] == 3
    assert document["hosts"][1]["remediation"]["journal"] == "/var/lib/recovery/runs/20261128T031505Z-a1b2c3"
    assert suite is not None
    assert suite.get("failures") == "3"
    assert [case.get("name") for case in suite.iter("testcase")] == ["web-1", "web-2", "db-1", "pending"]


def test_summary_line() -> None:
    assert summary_line(FINISHED) == "4 hosts in 5.0 s: 1 ok, 1 auth_rejected, 1 timeout, 1 no_address"
    assert summary_line(INTERRUPTED).endswith("1 ok, 1 refused; interrupted, 2 not checked")
