"""The run report: what an on-call engineer pastes into the incident ticket.

Steps add facts as they go (keys made, lines typed, what changed on the VM, the
proof of login); the runner adds the timeline and the outcome. The same data is
written as JSON for machines and as Markdown for people. Only masked text and
fingerprints ever enter it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from recovery.engine.journal import to_jsonable


@dataclass
class StepRecord:
    id: str
    uses: str
    status: str  # succeeded | failed | skipped | resumed | interrupted (cut off: it may have changed the VM)
    #              | not_possible (a probe of a route found the route not possible; the next route was tried)
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    phase: str = "main"  # main | cleanup | always


@dataclass
class RouteChoice:
    """A `choose:` step: the route that was used (None if none was), and why each route before it was skipped."""

    step: str
    title: str
    route: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: str
    playbook: str
    journal: str = ""  # the run directory: transcript, screenshots, events
    journal_error: str | None = None  # why the journal could not keep this report (a full disk)
    status: str = "running"
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    failed_step: str | None = None
    error: str | None = None
    # X-OpenStack-Request-ID of every cloud call; None when the run made none.
    global_request_id: str | None = None
    timeline: list[StepRecord] = field(default_factory=list)
    choices: list[RouteChoice] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)  # journal files holding what was typed (secrets masked)
    vm_changes: list[str] = field(default_factory=list)
    authorized_keys: dict[str, Any] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    proof: dict[str, Any] | None = None
    screenshots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_jsonable(asdict(self))
        return data

    def to_markdown(self) -> str:
        return render_markdown(self)


def render_markdown(report: RunReport) -> str:
    verdict = {"succeeded": "SUCCEEDED", "failed": "FAILED", "interrupted": "INTERRUPTED"}.get(
        report.status, report.status.upper()
    )
    out = [f"# Recovery {report.run_id}: {verdict}", ""]
    out.append(f"- Playbook: `{report.playbook}`")
    out.append(f"- Started: {report.started_at}, finished: {report.finished_at} ({report.seconds:.1f} s)")
    if report.failed_step:
        out.append(f"- Failed step: `{report.failed_step}`: {report.error}")
    elif report.error:
        out.append(f"- Error: {report.error}")
    if report.global_request_id:
        out.append(f"- Cloud calls: global request ID `{report.global_request_id}` (in Nova, Keystone and Swift logs)")
    out.append("")
    if report.proof:
        proof = report.proof
        out += [
            "## Proof of access",
            "",
            f"Logged in over SSH to {proof.get('host')}:{proof.get('port')} as `{proof.get('remote_user')}` "
            f"with key {proof.get('key_fingerprint')}.",
            f"Host key {proof.get('host_key_fingerprint')} ({proof.get('host_key_trust')}).",
            "",
        ]
    if report.choices:
        out += ["## Route", ""]
        for choice in report.choices:
            used = f"route `{choice.route}` was used" if choice.route else "no route was possible"
            out.append(f"- {choice.step} ({choice.title}): {used}")
            out += [f"  - `{route}` skipped: {reason}" for route, reason in choice.skipped.items()]
        out.append("")
    out += ["## Timeline", "", "| step | type | status | seconds | attempts |", "|---|---|---|---|---|"]
    for record in report.timeline:
        status = record.status + (f": {record.error}" if record.error else "")
        out.append(f"| {record.id} | {record.uses} | {status} | {record.seconds:.2f} | {record.attempts} |")
    out.append("")
    if report.keys:
        out += ["## Keys", ""]
        out += [
            f"- new {k.get('key_type')} key `{k.get('private_key_path')}`: {k.get('sha256')} (MD5 {k.get('md5')})"
            for k in report.keys
        ]
        out.append("")
    _section(out, "Changed on the VM", report.vm_changes)
    if report.authorized_keys:
        out += ["## authorized_keys before and after", ""]
        for moment in ("before", "after"):
            facts = report.authorized_keys.get(moment)
            if facts:
                out.append(f"- {moment}: {facts.get('lines')} lines, sha256 {facts.get('sha256')}")
                out += [f"  - {fp}" for fp in facts.get("keys", [])]
        out.append("")
    _section(out, "Published", report.published)
    _section(out, "Withdrawn", report.withdrawn)
    _section(out, "Rolled back and cleaned up", report.rolled_back)
    _section(out, "Typed into the console (secrets masked), in the journal", report.typed)
    _section(out, "Console screenshots", report.screenshots)
    _section(out, "Notes", report.notes)
    return "\n".join(out)


def _section(out: list[str], title: str, items: list[str]) -> None:
    if items:
        out += [f"## {title}", ""] + [f"- {item}" for item in items] + [""]


def summary_line(report: RunReport) -> str:
    """One line for the terminal: the outcome, and where the report is (to paste into the ticket)."""
    where = f"; report: {report.journal}/report.md" if report.journal else ""
    if report.status == "succeeded":
        proof = report.proof or {}
        who = f" as {proof['remote_user']}@{proof['host']}:{proof['port']}" if proof else ""
        return f"recovery {report.run_id} succeeded{who} in {report.seconds:.1f} s{where}"
    if report.failed_step:
        return f"recovery {report.run_id} {report.status} at step {report.failed_step}: {report.error}{where}"
    return f"recovery {report.run_id} {report.status}: {report.error or ''}".rstrip(": ") + where


def exit_code(report: RunReport) -> int:
    """The CLI's exit code for a finished run (a contract): 0 proven, 130 interrupted, 1 otherwise."""
    from recovery.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_STEP_FAILED

    if report.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if report.status == "succeeded" and not report.journal_error else EXIT_STEP_FAILED
