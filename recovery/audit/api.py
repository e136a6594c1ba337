"""`recovery.audit.check`: audit a fleet from Python and get the report; `recovery audit` stands on it.

    from pathlib import Path
    from recovery.audit import Host, HostTrust, KnownHosts, check

    key = Path("~/.ssh/audit_ed25519").expanduser()
    hosts = [Host("web-1", "203.0.113.10", 22, "ubuntu", (key,)),
             Host("db-1", "db-1.example.com", 2222, "ops", (key,), host_key="SHA256:nThbg6kX...")]
    report = check(hosts, trust=HostTrust(KnownHosts.load(Path("~/.ssh/known_hosts").expanduser())))
    for result in report.failed:
        print(result.host.name, result.status, result.message)

Nothing here prints, exits or installs a signal handler (handlers work only on the
main thread). To stop an audit from another thread, pass a `CancelToken` and cancel
it: the hosts being checked are let go, and the report lists what was checked and,
in `not_checked`, what was not, with `interrupted` set. A Ctrl-C in the calling
thread propagates as `AuditInterrupted`, a KeyboardInterrupt carrying that report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from recovery.audit.engine import AuditKey, HostTrust, choose_engine, load_keys, with_timeout
from recovery.audit.model import AuditReport, ConsoleAccess, Host, HostResult
from recovery.audit.scheduler import run_checks
from recovery.engine.cancel import CancelToken
from recovery.errors import UsageError

__all__ = ["MAX_CONCURRENCY", "AuditInterrupted", "check"]

MAX_CONCURRENCY = 1000


class AuditInterrupted(KeyboardInterrupt):
    """Ctrl-C reached the audit; `report` holds the hosts checked so far and lists the others as not checked."""

    def __init__(self, report: AuditReport) -> None:
        super().__init__(f"audit interrupted after {len(report.results)} hosts")
        self.report = report


def check(
    hosts: Sequence[Host],
    *,
    keys: Mapping[Path, AuditKey] | None = None,
    trust: HostTrust | None = None,
    concurrency: int = 50,
    timeout: float = 5.0,
    cancel: CancelToken | None = None,
    engine: str = "auto",
    console: Callable[[Host], ConsoleAccess] | None = None,
    on_result: Callable[[HostResult], None] | None = None,
) -> AuditReport:
    """Check that each host's key still logs in, `concurrency` hosts at a time; return the report.

    Every host ends with a result (`ok` or why not: `recovery.audit.Status`), in the
    order given; a host that fails is data, never an exception.

    Args:
        hosts: what to check; each `Host` names its address, port, user and key paths (tried in order).
        keys: the hosts' keys, loaded by `load_keys`; by default loaded here from the hosts' key paths.
        trust: the host key policy (known_hosts, `accept_new`); by default only pinned host keys
            (`Host.host_key`) are accepted, and any other host is `host_key_unknown`.
        concurrency: hosts checked at once, 1 to `MAX_CONCURRENCY`.
        timeout: seconds for each host's whole check, resolving its name included.
        cancel: cancel it from any thread to stop the audit; the report is then `interrupted`.
        engine: "auto" (libssh2 when ssh2-python can be imported, else paramiko), "libssh2" or
            "paramiko"; the report's `engine` names the one used.
        console: called for each host in the checking thread, its answer kept in the result's
            `console` (the CLI's `--check-console` passes `ConsoleProbe.probe`).
        on_result: called in the calling thread as each result arrives (a progress line).

    Returns:
        The report: results in the hosts' order; `interrupted` and `not_checked` after a cancel.

    Raises:
        UsageError: a bad argument, a key that is missing, unreadable, encrypted or too open, a
            host whose key is not in `keys`, or engine "libssh2" without ssh2-python. Raised before
            anything connects.
        AuditInterrupted: KeyboardInterrupt in the calling thread, carrying the partial report.
    """
    started_at = datetime.now(UTC)
    started = time.monotonic()
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency {concurrency}: expected 1 to {MAX_CONCURRENCY}")
    if not timeout > 0:
        raise UsageError(f"timeout {timeout:g}: expected a positive number of seconds")
    if keys is None:
        keys = load_keys(path for host in hosts for path in host.keys)
    missing = sorted({str(path) for host in hosts for path in host.keys if path not in keys})
    if missing:
        raise UsageError(f"keys named by the hosts but not loaded: {', '.join(missing)}")
    trust = trust or HostTrust()
    chosen = choose_engine(keys, trust, engine)
    trust.prepare(hosts)
    each = with_timeout(chosen, timeout)
    if console is not None:
        each = _with_console(each, console)
    outcome = run_checks(
        hosts, each, concurrency=concurrency, on_result=on_result or (lambda result: None), cancel=cancel
    )
    report = AuditReport(
        results=outcome.results,
        started_at=started_at,
        seconds=time.monotonic() - started,
        interrupted=outcome.interrupted,
        not_checked=outcome.not_checked,
        engine=chosen.name,
        known_hosts_added=trust.record.added if trust.record is not None else (),
    )
    if outcome.interrupted and not (cancel is not None and cancel.cancelled):
        raise AuditInterrupted(report)
    return report


def _with_console(
    check_one: Callable[[Host], HostResult], probe: Callable[[Host], ConsoleAccess]
) -> Callable[[Host], HostResult]:
    def both(host: Host) -> HostResult:
        return dataclasses.replace(check_one(host), console=probe(host))

    return both
