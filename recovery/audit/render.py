"""The audit report as text: a table for people, JSON for programs, JUnit XML for CI, Prometheus for alerts.

Each renderer is a pure function of the `AuditReport` (no clock, no terminal),
so the tests pin their exact output. Hosts appear in inventory order in all four.

- table: one row per host, then remediations, then hosts not checked, then the engine;
- json: `{"schema": 1, "hosts": [...], "summary": {...}}`, one object per host;
- junit: one testcase per host, so a CI dashboard shows each VM's access
  history as a test's: an `error` for a host that could not be checked, a
  `failure` for one that was checked and refused (`JUNIT_OUTCOMES`);
- prometheus: the textfile-collector format node_exporter reads:
  `recovery_ssh_access_ok{server="web-1"} 1`, the check's duration, its status,
  and the audit's timestamp, so an alert can fire both on a failed host and on
  an audit that stopped running. The audit-wide series carry a `shard` label
  (`0/1` when not sharded): the shards' files share one textfile directory, and
  node_exporter refuses two files with the same series.

A cloud audit with `--check-console` adds, per server, the consoles the cloud
would open and whether the guest agent is enabled (yes, no, or unknown with the
reason): the table's CONSOLE and AGENT columns, the JSON's `console` and
`guest_agent`, and Prometheus's `recovery_console_available` and
`recovery_guest_agent_enabled` (no sample when unknown). JUnit has no per-host
properties to carry them.

A host reached through jump hosts lists them, first hop first, as `host:port` (never a user,
key or pin): the table's VIA column (shown when some host has one), the JSON's `jumps` (a list
of `{"host", "port"}`, empty for a host reached directly).

The host keys `--accept-new` appended to known_hosts (VMs and jump hosts alike) are listed
under the table and in the JSON summary's `known_hosts_added`.

Each format names the SSH library that made the checks (`AuditReport.engine`:
libssh2, or paramiko where ssh2-python cannot be imported), so a report that
is slower or differs can be traced to it: the table's last line, the JSON
summary's `engine`, a JUnit suite property, a Prometheus info series.

Names come from inventories and clouds, so they are escaped for each format:
the table shows control characters as `\x1b`-style escapes (never raw on a
terminal), JUnit XML the same (XML 1.0 cannot carry them at all), JSON and
Prometheus by their own rules.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from recovery.audit.model import CONSOLE_KINDS, AuditReport, GuestAgent, HostResult, Remediation, Status

if TYPE_CHECKING:
    from recovery.ssh.jump import JumpHop

__all__ = [
    "FORMATS",
    "JUNIT_OUTCOMES",
    "printable",
    "render",
    "render_json",
    "render_junit",
    "render_prometheus",
    "render_table",
    "summary_line",
]

# Control and format characters (ANSI escapes, BiDi overrides), line separators, lone surrogates.
_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def printable(text: str) -> str:
    """`text` with every character a terminal or an XML parser must not see raw written as an escape.

    `web\x1b[2J` stays readable as that, and cannot clear the operator's screen.
    """
    if text.isprintable():  # the usual case, and a fast one
        return text
    return "".join(
        char.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(char) in _UNPRINTABLE
        else char
        for char in text
    )


def summary_line(report: AuditReport) -> str:
    """`200 hosts in 2.3 s: 197 ok, 2 auth_rejected, 1 timeout` (and what was not checked)."""
    counts = ", ".join(f"{count} {status}" for status, count in report.counts().items() if count)
    line = f"{len(report.results)} hosts in {report.seconds:.1f} s: {counts or 'none checked'}"
    if report.interrupted:
        line += f"; interrupted, {len(report.not_checked)} not checked"
    return line


# --- table ---------------------------------------------------------------------------------


def render_table(report: AuditReport) -> str:
    """Aligned columns, failures explained in the last one; remediations and unchecked hosts below."""
    with_console = any(result.console is not None for result in report.results)
    with_jumps = any(result.host.jumps for result in report.results)
    header = ["NAME", "ADDRESS", *(["VIA"] if with_jumps else []), "STATUS", "SECONDS",
              *(["CONSOLE", "AGENT"] if with_console else []), "DETAIL"]
    rows = [header]
    for result in report.results:
        row = [result.host.name, result.host.where]
        if with_jumps:
            row.append(",".join(_hop_where(hop) for hop in result.host.jumps) or "-")
        row += [str(result.status), f"{result.seconds:.3f}"]
        if with_console:
            row.append((",".join(result.console.available) or "none") if result.console else "-")
            row.append(_agent_cell(result.console.guest_agent if result.console else None))
        row.append(_detail(result))
        rows.append([printable(cell) for cell in row])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = [
        ("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]).rstrip()
        for row in rows
    ]
    if report.remediations:
        lines += ["", "remediations:"]
        lines += [printable(f"  {item.host}: {_remediation_text(item)}") for item in report.remediations]
    if report.not_checked:
        names = ", ".join(printable(host.name) for host in report.not_checked)
        lines += ["", f"not checked (interrupted): {names}"]
    if report.known_hosts_added:
        lines += ["", "host keys added to known_hosts (--accept-new):"]
        lines += [printable(f"  {key}") for key in report.known_hosts_added]
    if report.engine:
        lines += ["", f"engine: {report.engine}"]
    return "\n".join(lines) + "\n"


def _hop_where(hop: JumpHop) -> str:
    """`host:port`, an IPv6 address in brackets, as `jump` is written: no user, key or pin."""
    return f"[{hop.host}]:{hop.port}" if ":" in hop.host else f"{hop.host}:{hop.port}"


def _detail(result: HostResult) -> str:
    if result.ok:
        first_use = ", host key accepted on first use" if result.host_key_trusted_on_first_use else ""
        detail = f"key {result.key_fingerprint} ({result.key_path}){first_use}"
    else:
        detail = result.message
    agent = result.console.guest_agent if result.console else None
    if agent is not None and agent.enabled is None:
        detail += f"{'; ' if detail else ''}guest agent unknown: {agent.reason}"
    return detail


def _agent_cell(agent: GuestAgent | None) -> str:
    """`yes (ubuntu)` (the image's os_admin_user), `yes`, `no`, `unknown` (the reason is in DETAIL), `-`."""
    if agent is None:
        return "-"
    if agent.enabled is None:
        return "unknown"
    if not agent.enabled:
        return "no"
    return f"yes ({agent.admin_user})" if agent.admin_user else "yes"


def _remediation_text(item: Remediation) -> str:
    text = f"{item.outcome}: {item.message}" if item.message else item.outcome
    if item.run_id:
        text += f" (run {item.run_id}, journal {item.journal})"
    return text


# --- json ----------------------------------------------------------------------------------

JSON_SCHEMA = 1
"""Version of the JSON report (its `schema` key), as in every JSON document the CLI prints."""


def render_json(report: AuditReport) -> str:
    """One object per host and a summary; stable key order, indented, newline-terminated."""
    document = {
        "schema": JSON_SCHEMA,
        "hosts": [_host_json(result, report.remediation_for(result.host.name)) for result in report.results],
        "summary": {
            "hosts": len(report.results),
            "ok": sum(1 for result in report.results if result.ok),
            "failed": len(report.failed),
            "statuses": {str(status): count for status, count in report.counts().items()},
            "started_at": report.started_at.isoformat().replace("+00:00", "Z"),
            "seconds": round(report.seconds, 3),
            "shard": report.shard,
            "interrupted": report.interrupted,
            "not_checked": [host.name for host in report.not_checked],
            "engine": report.engine,
            "known_hosts_added": [
                {"name": key.name, "key_type": key.key_type, "fingerprint": key.fingerprint}
                for key in report.known_hosts_added
            ],
        },
    }
    return json.dumps(document, indent=2) + "\n"


def _host_json(result: HostResult, remediation: Remediation | None) -> dict[str, Any]:
    host = result.host
    return {
        "name": host.name,
        "host": host.address,
        "port": host.port,
        "user": host.user,
        "status": str(result.status),
        "seconds": round(result.seconds, 3),
        "key": result.key_fingerprint,
        "key_path": str(result.key_path) if result.key_path else None,
        "host_key": result.host_key_fingerprint,
        "host_key_trusted_on_first_use": result.host_key_trusted_on_first_use,
        "jumps": [{"host": hop.host, "port": hop.port} for hop in host.jumps],
        "message": result.message,
        "console": (
            {"available": list(result.console.available), "problems": list(result.console.problems)}
            if result.console
            else None
        ),
        "guest_agent": _agent_json(result.console.guest_agent) if result.console else None,
        "remediation": (
            {
                "outcome": remediation.outcome,
                "message": remediation.message,
                "run_id": remediation.run_id,
                "journal": str(remediation.journal) if remediation.journal else None,
                "exit_code": remediation.exit_code,
            }
            if remediation
            else None
        ),
    }


def _agent_json(agent: GuestAgent | None) -> dict[str, Any] | None:
    """`enabled` is true, false or null (unknown, and `reason` says why); `admin_user` is os_admin_user."""
    if agent is None:
        return None
    return {
        "enabled": agent.enabled,
        "admin_user": agent.admin_user,
        "source": agent.source or None,
        "reason": agent.reason or None,
    }


# --- junit ---------------------------------------------------------------------------------

_SUITE = "recovery-audit"

# Every status's JUnit element: None passes; a `failure` is a host that was checked and
# refused (the assertion failed); an `error` is a host that could not be checked at all.
JUNIT_OUTCOMES: dict[Status, str | None] = {
    Status.OK: None,
    Status.AUTH_REJECTED: "failure",
    Status.HOST_KEY_CHANGED: "failure",
    Status.HOST_KEY_UNKNOWN: "failure",
    Status.REFUSED: "error",
    Status.PROTOCOL_ERROR: "error",
    Status.TIMEOUT: "error",
    Status.DNS_ERROR: "error",
    Status.NO_ADDRESS: "error",
    Status.ERROR: "error",
}


def render_junit(report: AuditReport) -> str:
    """A `testsuites` document with one `testsuite`; hosts not checked are `skipped`."""
    outcomes = [JUNIT_OUTCOMES[result.status] for result in report.results]
    attributes = {
        "name": _SUITE,
        "tests": str(len(report.results) + len(report.not_checked)),
        "failures": str(outcomes.count("failure")),
        "errors": str(outcomes.count("error")),
        "skipped": str(len(report.not_checked)),
        "time": f"{report.seconds:.3f}",
    }
    root = ElementTree.Element("testsuites", attributes)
    suite = ElementTree.SubElement(
        root, "testsuite", {**attributes, "timestamp": report.started_at.strftime("%Y-%m-%dT%H:%M:%S")}
    )
    if report.engine:
        properties = ElementTree.SubElement(suite, "properties")
        ElementTree.SubElement(properties, "property", {"name": "engine", "value": report.engine})
    for result, outcome in zip(report.results, outcomes, strict=True):
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {"classname": _SUITE, "name": _xml(result.host.name), "time": f"{result.seconds:.3f}"},
        )
        if outcome is not None:
            message = _xml(result.message)
            element = ElementTree.SubElement(case, outcome, {"type": str(result.status), "message": message})
            element.text = f"{result.status}: {message}"
        remediation = report.remediation_for(result.host.name)
        if remediation is not None:
            ElementTree.SubElement(case, "system-out").text = _xml("remediation " + _remediation_text(remediation))
    for host in report.not_checked:
        attributes = {"classname": _SUITE, "name": _xml(host.name), "time": "0.000"}
        case = ElementTree.SubElement(suite, "testcase", attributes)
        ElementTree.SubElement(case, "skipped", {"message": "not checked: the audit was interrupted"})
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


# What XML 1.0 cannot carry, even as a character reference: ElementTree writes it raw,
# and the document is then not well-formed.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """Text for an XML attribute or element: as the table shows it, so XML 1.0 can hold it."""
    return printable(text) if _NOT_XML.search(text) else text


# --- prometheus ----------------------------------------------------------------------------


def render_prometheus(report: AuditReport) -> str:
    """node_exporter textfile-collector format; write it atomically (`--output` does)."""
    out: list[str] = []

    def metric(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

    results = report.results
    metric(
        "recovery_ssh_access_ok",
        "1 if the expected key logged in to the server at the last audit, else 0.",
        [({"server": r.host.name}, 1 if r.ok else 0) for r in results],
    )
    metric(
        "recovery_ssh_access_status",
        "The last audit's result for the server, as the status label (always 1).",
        [({"server": r.host.name, "status": str(r.status)}, 1) for r in results],
    )
    metric(
        "recovery_ssh_check_duration_seconds",
        "How long the server's SSH check took.",
        [({"server": r.host.name}, r.seconds) for r in results],
    )
    consoles = [(r.host.name, r.console) for r in results if r.console is not None]
    if consoles:
        metric(
            "recovery_console_available",
            "1 if the cloud opens a console of this kind for the server (it could be recovered), else 0.",
            [
                ({"server": name, "kind": kind}, 1 if kind in console.available else 0)
                for name, console in consoles
                for kind in CONSOLE_KINDS
            ],
        )
    agents = [(name, console.guest_agent) for name, console in consoles if console.guest_agent is not None]
    if agents:
        metric(
            "recovery_guest_agent_enabled",
            "1 if the server's image enables the QEMU guest agent (hw_qemu_guest_agent), else 0; "
            "no sample when the image could not be read.",
            [({"server": name}, 1 if agent.enabled else 0) for name, agent in agents if agent.enabled is not None],
        )
    if report.remediations:
        metric(
            "recovery_remediation_succeeded",
            "1 if the recovery playbook run for the server succeeded, else 0.",
            [({"server": item.host}, 1 if item.outcome == "succeeded" else 0) for item in report.remediations],
        )
    shard = {"shard": report.shard or "0/1"}
    metric(
        "recovery_audit_hosts",
        "Servers in the last audit by status.",
        [({**shard, "status": str(status)}, count) for status, count in report.counts().items()],
    )
    metric(
        "recovery_audit_complete",
        "1 if the last audit checked every server, 0 if it was interrupted.",
        [(shard, 0 if report.interrupted else 1)],
    )
    metric("recovery_audit_duration_seconds", "How long the last audit took.", [(shard, report.seconds)])
    metric(
        "recovery_audit_timestamp_seconds",
        "When the last audit started, in seconds since the Unix epoch.",
        [(shard, report.started_at.timestamp())],
    )
    if report.engine:
        metric(
            "recovery_audit_engine_info",
            "The SSH library that made the last audit's checks, as the engine label (always 1).",
            [({**shard, "engine": report.engine}, 1)],
        )
    return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _escape(value: str) -> str:
    """The exposition format escapes backslash, double quote and line feed in label values.

    It knows no other escape; a lone surrogate (a cloud's JSON can carry one) is
    not UTF-8 at all, so it becomes U+FFFD rather than fail the whole file.
    """
    value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


FORMATS: dict[str, Callable[[AuditReport], str]] = {
    "table": render_table,
    "json": render_json,
    "junit": render_junit,
    "prometheus": render_prometheus,
}


def render(report: AuditReport, fmt: str) -> str:
    """The report in `fmt`, one of `FORMATS`."""
    return FORMATS[fmt](report)

