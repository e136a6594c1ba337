"""The revoke report in its three forms: what a tired on-call engineer and a CI job read."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from recovery.revoke.engine import FileOutcome, HostOutcome, Status
from recovery.revoke.render import RevokeReport, render, summary_line

FINGERPRINT = "SHA256:" + "s" * 43


def report(*, interrupted: bool = False) -> RevokeReport:
    hosts = [
        HostOutcome("web-1", "ops@10.0.0.1:22", Status.REMOVED, "removed from ~ops/.ssh/authorized_keys (1 line(s))",
                    [FileOutcome("ops", "/home/ops/.ssh/authorized_keys", "removed", (f"{FINGERPRINT} alice@laptop",),
                                 "/home/ops/.ssh/authorized_keys.recovery-x")], proof="auth_rejected", seconds=0.5),
        HostOutcome("web-2", "ops@10.0.0.2:22", Status.CLEAN, proof="auth_rejected"),
        HostOutcome("db-1", "ops@10.0.0.3:22", "refused", "10.0.0.3:22 refused the connection <nothing listens>"),
    ]
    return RevokeReport(FINGERPRINT, False, hosts, 1.25, interrupted)


def test_table_names_each_host_its_status_and_why() -> None:
    text = render(report(), "table")
    lines = text.splitlines()
    assert lines[0].split() == ["HOST", "ADDRESS", "STATUS", "PROOF", "DETAIL"]
    assert lines[3].split()[:4] == ["db-1", "ops@10.0.0.3:22", "refused", "-"]
    assert lines[-1] == summary_line(report())
    assert "2 of 3 hosts proven clean, 1 not (changed 1)" in lines[-1]


def test_json_has_a_schema_and_every_file() -> None:
    document = json.loads(render(report(), "json"))
    assert document["schema"] == 1
    assert document["summary"] == {"hosts": 3, "clean": 2, "not_clean": 1, "changed": 1}
    assert document["hosts"][0]["files"][0]["removed"] == [f"{FINGERPRINT} alice@laptop"]
    assert [host["clean"] for host in document["hosts"]] == [True, True, False]


def test_junit_is_well_formed_with_one_failure() -> None:
    root = ET.fromstring(render(report(), "junit"))
    assert (root.get("tests"), root.get("failures")) == ("3", "1")
    [failure] = root.iter("failure")
    assert failure.get("type") == "refused"
    assert "<nothing listens>" in (failure.text or "")


def test_an_interrupted_run_says_so() -> None:
    assert summary_line(report(interrupted=True)).endswith("(interrupted: partial report)")
