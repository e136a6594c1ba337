"""The revoke report: a table for people, JSON (schema 1) for programs, JUnit for CI.

Per host, every file sshd reads keys from that was read (``~/.ssh/authorized_keys2`` and
``/etc/ssh/authorized_keys/%u`` included), what was removed from each, how those files were
learned (``sshd -T``, the sshd_config files, or sshd's default), and what could not be taken into
account (an AuthorizedKeysCommand). With `--cloud` it also says what became of each Nova key
pair holding the key (a section of the table, `cloud` and `keypairs` in the JSON, one test case
each in JUnit): a key pair kept is as much "not clean" as a host that still holds the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from recovery.audit.render import printable
from recovery.revoke.engine import HostOutcome
from recovery.revoke.keypairs import KeyPairOutcome

__all__ = ["RevokeReport", "render", "summary_line"]


@dataclass(frozen=True)
class RevokeReport:
    fingerprint: str
    dry_run: bool
    hosts: Sequence[HostOutcome]
    seconds: float
    interrupted: bool = False
    cloud: str | None = None  # --cloud: the key pairs below were looked for in it
    keypairs: Sequence[KeyPairOutcome] = ()  # those holding the key

    @property
    def clean(self) -> list[HostOutcome]:
        return [host for host in self.hosts if host.clean]

    @property
    def not_clean(self) -> list[HostOutcome]:
        return [host for host in self.hosts if not host.clean]

    @property
    def keypairs_kept(self) -> list[KeyPairOutcome]:
        return [item for item in self.keypairs if not item.deleted]

    @property
    def proven_clean(self) -> bool:
        """Exit 0: every host clean and no key pair left holding the key."""
        return not self.not_clean and not self.keypairs_kept


def summary_line(report: RevokeReport) -> str:
    changed = sum(1 for host in report.hosts if host.changed)
    verb = "would change" if report.dry_run else "changed"
    text = (
        f"revoke {report.fingerprint}: {len(report.clean)} of {len(report.hosts)} hosts proven clean, "
        f"{len(report.not_clean)} not ({verb} {changed}) in {report.seconds:.1f} s"
    )
    if report.cloud is not None:
        deleted = len(report.keypairs) - len(report.keypairs_kept)
        text += (
            f"; Nova key pairs holding it: {deleted} deleted, {len(report.keypairs_kept)} kept" if report.keypairs
            else "; no Nova key pair holds it"
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
    lines = _columns(rows)
    files = [(host.name, item.user, printable(item.file or "-"), item.status, ", ".join(item.removed) or "-")
             for host in report.hosts for item in host.files]
    if files:
        lines += ["", *_columns([("HOST", "USER", "FILE READ", "STATUS", "REMOVED"), *files])]
    notes = [f"{host.name} ({host.read_from}): {printable(note)}" for host in report.hosts for note in host.notes]
    if notes:
        lines += ["", *notes]
    if report.keypairs:
        lines += ["", *_columns([("KEY PAIR", "FINGERPRINT", "STATUS", "DETAIL")] + [
            (printable(item.name), item.fingerprint or "-", str(item.status), printable(item.message))
            for item in report.keypairs
        ])]
    elif report.cloud is not None:
        lines += ["", f"Nova key pairs: none of those visible to these credentials in {printable(report.cloud)!r} "
                  "holds the key"]
    return "\n".join(lines) + "\n" + summary_line(report) + "\n"


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Every column padded to its widest cell but the last, which is free text."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows]


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
                "read_from": host.read_from,
                "keys_command": host.keys_command,
                "notes": host.notes,
                "files": [
                    {"user": item.user, "file": item.file, "status": item.status, "removed": list(item.removed),
                     "backup": item.backup}
                    for item in host.files
                ],
            }
            for host in report.hosts
        ],
    }
    if report.cloud is not None:
        document["cloud"] = report.cloud
        summary = document["summary"]
        assert isinstance(summary, dict)
        summary["keypairs_deleted"] = len(report.keypairs) - len(report.keypairs_kept)
        summary["keypairs_kept"] = len(report.keypairs_kept)
        document["keypairs"] = [
            {"name": item.name, "fingerprint": item.fingerprint, "status": str(item.status),
             "deleted": item.deleted, "message": item.message}
            for item in report.keypairs
        ]
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
    for item in report.keypairs:
        message = printable(item.message)  # the cloud's words: no control character may reach the XML
        body = "" if item.deleted else (
            f"<failure type={quoteattr(str(item.status))} message={quoteattr(message)}>{escape(message)}</failure>"
        )
        cases.append(f'  <testcase classname="recovery.revoke.keypair" name={quoteattr(printable(item.name))} '
                     f'time="0.000">{body}</testcase>')
    failures = len(report.not_clean) + len(report.keypairs_kept)
    head = (
        f'<testsuite name={quoteattr("recovery revoke " + report.fingerprint)} '
        f'tests="{len(report.hosts) + len(report.keypairs)}" failures="{failures}" time="{report.seconds:.3f}">'
    )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n" + "\n".join(cases) + "\n</testsuite>\n"
