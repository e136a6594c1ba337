"""The revoke report: a table for people, JSON (schema 1) for programs, JUnit for CI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from recovery.revoke.engine import HostOutcome

__all__ = ["RevokeReport", "render", "summary_line"]


@dataclass(frozen=True)
class RevokeReport:
    fingerprint: str
    dry_run: bool
    hosts: Sequence[HostOutcome]
    seconds: float
    interrupted: bool = False

    @property
    def clean(self) -> list[HostOutcome]:
        return [host for host in self.hosts if host.clean]

    @property
    def not_clean(self) -> list[HostOutcome]:
        return [host for host in self.hosts if not host.clean]


def summary_line(report: RevokeReport) -> str:
    changed = sum(1 for host in report.hosts if host.changed)
    verb = "would change" if report.dry_run else "changed"
    text = (
        f"revoke {report.fingerprint}: {len(report.clean)} of {len(report.hosts)} hosts proven clean, "
        f"{len(report.not_clean)} not ({verb} {changed}) in {report.seconds:.1f} s"
    )
    return text + (" (interrupted: partial report)" if report.interrupted else "")


def render(report: RevokeReport, form: str) -> str:
    if form == "json":
        return _json(report)
    if form == "junit":
        return _junit(report)
    return _table(report)


def _removed(host: HostOutcome) -> list[str]:
    return [f"{item.user}: {name}" for item in host.files for name in item.removed]


def _table(report: RevokeReport) -> str:
    rows = [("HOST", "ADDRESS", "STATUS", "PROOF", "DETAIL")]
    for host in report.hosts:
        rows.append((host.name, host.where, str(host.status), host.proof or "-", host.message or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    return "\n".join(lines) + "\n" + summary_line(report) + "\n"


def _json(report: RevokeReport) -> str:
    document = {
        "schema": 1,
        "command": "revoke",
        "fingerprint": report.fingerprint,
        "dry_run": report.dry_run,
        "interrupted": report.interrupted,
        "seconds": round(report.seconds, 3),
        "summary": {
            "hosts": len(report.hosts),
            "clean": len(report.clean),
            "not_clean": len(report.not_clean),
            "changed": sum(1 for host in report.hosts if host.changed),
        },
        "hosts": [
            {
                "name": host.name,
                "address": host.where,
                "status": str(host.status),
                "clean": host.clean,
                "proof": host.proof,
                "message": host.message,
                "seconds": round(host.seconds, 3),
                "files": [
                    {"user": item.user, "file": item.file, "status": item.status, "removed": list(item.removed),
                     "backup": item.backup}
                    for item in host.files
                ],
            }
            for host in report.hosts
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _junit(report: RevokeReport) -> str:
    cases = []
    for host in report.hosts:
        name = quoteattr(host.name)
        body = "" if host.clean else (
            f'<failure type={quoteattr(str(host.status))} message={quoteattr(host.message or str(host.status))}>'
            f"{escape(host.message)}</failure>"
        )
        cases.append(f'  <testcase classname="recovery.revoke" name={name} time="{host.seconds:.3f}">{body}</testcase>')
    head = (
        f'<testsuite name={quoteattr("recovery revoke " + report.fingerprint)} tests="{len(report.hosts)}" '
        f'failures="{len(report.not_clean)}" time="{report.seconds:.3f}">'
    )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n" + "\n".join(cases) + "\n</testsuite>\n"
