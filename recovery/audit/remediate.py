"""`--remediate PLAYBOOK`: run a recovery for failed hosts, one at a time, within a blast-radius limit.

A recovery types into a VM's console as root, so this is deliberately slow and
narrow:

- only `auth_rejected` hosts are remediated: the host answered SSH, proved its
  identity, and refused the key, which is what a recovery playbook repairs.
  Every other failure is listed as skipped with the reason (a changed host key
  above all: that is for a person to look at, not a robot to "fix");
- one host at a time, each after a yes from the operator (or `--yes`);
- at most `--max-remediations` runs (default 1); the rest are listed as skipped;
- each run is an ordinary recovery (`recovery.run`, as `recovery run` makes it) with its own
  journal and report, which the audit report links; a run that fails is
  reported and the audit goes on to the next host.

What the audit knows of a host (address, port, user, the host key it saw)
becomes the run's inputs; what it cannot know (a console URL, a server in a
cloud) comes from the inventory's `inputs:`, and the console password from its
`secrets:` files, so a file inventory can drive a recovery too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from recovery.audit.model import Host, HostResult, Remediation, Status
from recovery.audit.render import printable
from recovery.errors import EXIT_INTERRUPTED, EXIT_OK, RecoveryError, UsageError

if TYPE_CHECKING:
    from recovery.engine.config import Config
    from recovery.engine.playbook import Playbook
    from recovery.safety.redact import Secret

__all__ = ["REMEDIABLE", "InProcessPlaybookRunner", "PlaybookRunner", "confirm_on_terminal", "remediate"]

REMEDIABLE = frozenset({Status.AUTH_REJECTED})


class PlaybookRunner(Protocol):
    """Runs the recovery playbook for one failed host; never raises but for Ctrl-C."""

    def run(self, result: HostResult) -> Remediation: ...


def remediate(
    failed: Sequence[HostResult],
    runner: PlaybookRunner,
    *,
    limit: int,
    confirm: Callable[[HostResult], bool],
) -> Iterator[Remediation]:
    """One `Remediation` per failed host, in order: run, declined or skipped (with the reason).

    A generator, so that the caller keeps what was done if Ctrl-C arrives
    during a run or a prompt. It stops after a run that was interrupted.
    """
    started = 0
    for result in failed:
        name = result.host.name
        if result.status not in REMEDIABLE:
            yield Remediation(name, "skipped", f"a recovery playbook does not fix {result.status}")
        elif started >= limit:
            yield Remediation(name, "skipped", f"--max-remediations {limit} reached")
        elif not confirm(result):
            yield Remediation(name, "declined", "the operator said no")
        else:
            started += 1
            outcome = runner.run(result)
            yield outcome
            if outcome.outcome == "interrupted":
                return


def confirm_on_terminal(playbook: Path) -> Callable[[HostResult], bool]:
    """Ask on the terminal before each run; anything but y or yes (end of input too) is a no."""

    def confirm(result: HostResult) -> bool:
        # The question goes to stderr, as input() would put it on stdout, which carries the report.
        name = printable(result.host.name)
        sys.stderr.write(
            f"\n{name} ({printable(result.host.where)}): {result.status}: {printable(result.message)}\n"
            f"Run {playbook.name} to recover {name}? [y/N] "
        )
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return confirm


class InProcessPlaybookRunner:
    """Runs the playbook the way `recovery run` does, with inputs taken from the audited host.

    The playbook is read and validated when this is built, so a broken playbook
    is a usage error before the audit starts, and `check_hosts` matches the
    inventory's `inputs:` and `secrets:` against it before the first check.
    Secrets (the console password) are read at the run that needs them: from the
    host's `secrets:` files, else the environment or a prompt (asked once).

    :param network: passed on to the playbook's `network` input, for cloud hosts.
    """

    def __init__(self, playbook: Path, *, config: Config, journal_root: Path, network: str | None = None) -> None:
        from recovery.engine.playbook import load_playbook

        self.playbook: Playbook = load_playbook(playbook)
        self.config = config
        self.journal_root = journal_root
        self.network = network
        self._secrets: dict[str, Secret] | None = None

    def check_hosts(self, hosts: Iterable[Host]) -> None:
        """Every `inputs:` and `secrets:` name the inventory gives must be one the playbook declares.

        :raises UsageError: listing each host's unknown names, before anything connects.
        """
        playbook = self.playbook
        problems = []
        for host in hosts:
            for kind, names, declared in (
                ("inputs", [name for name, _ in host.inputs], playbook.inputs),
                ("secrets", [name for name, _ in host.secrets], playbook.secrets),
            ):
                problems += [
                    f"host {host.name!r}: {kind}.{name}: {playbook.path.name} declares no {kind[:-1]} {name!r} "
                    f"({kind}: {', '.join(declared) or 'none'})"
                    for name in names
                    if name not in declared
                ]
        if problems:
            head = f"the inventory does not fit --remediate {playbook.path.name}"
            raise UsageError(head + ":\n" + "\n".join(f"  {problem}" for problem in problems))

    def inputs_for(self, result: HostResult) -> dict[str, str]:
        """The playbook inputs for this host: what the audit knows of it, then the inventory's `inputs:`.

        What the audit knows is limited to the inputs the playbook declares. The
        host key fingerprint is the one the audit accepted before the key was
        rejected, so the recovery's final login is pinned to the same host.
        """
        host = result.host
        known = {
            "server": host.server_id,
            "network": self.network if host.server_id else None,
            "ssh_host": host.address,
            "ssh_port": str(host.port),
            "user": host.user,
            "host_key_fingerprint": result.host_key_fingerprint,
        }
        inputs = {name: value for name, value in known.items() if value and name in self.playbook.inputs}
        return inputs | dict(host.inputs)

    def _secrets_for(self, host: Host) -> dict[str, Secret]:
        """The host's `secrets:` files, and for the rest the environment or a prompt (read once per audit)."""
        import getpass

        from recovery.engine.sources import secret_values

        prompt = getpass.getpass if sys.stdin.isatty() else None
        if not host.secrets:
            if self._secrets is None:
                self._secrets = secret_values(self.playbook, {}, os.environ, prompt=prompt)
            return self._secrets
        given = {name: f"@{path}" for name, path in host.secrets}
        return secret_values(self.playbook, given, os.environ, prompt=prompt)

    def run(self, result: HostResult) -> Remediation:
        import recovery.api
        from recovery.engine.report import exit_code, summary_line

        name = result.host.name
        try:
            secrets = self._secrets_for(result.host)
            report = recovery.api.run(
                self.playbook, self.inputs_for(result), secrets, config=self.config, journal_root=self.journal_root
            )
        except UsageError as exc:
            hint = (
                ""
                if result.host.server_id
                else "; from a file inventory the audit gives ssh_host, ssh_port and user: give the others "
                "under the host's (or defaults') inputs:"
            )
            return Remediation(name, "failed", f"{exc}{hint}", exit_code=exc.exit_code)
        except recovery.api.RunInterrupted as interrupted:
            report = interrupted.report  # cleaned up; its outcome, "interrupted", stops the remediations
        except RecoveryError as exc:
            return Remediation(name, "failed", str(exc), exit_code=exc.exit_code)
        code = exit_code(report)
        outcome = {EXIT_OK: "succeeded", EXIT_INTERRUPTED: "interrupted"}.get(code, "failed")
        message = f"{self.playbook.path.name}: {summary_line(report)}; its report is in the journal"
        return Remediation(name, outcome, message, report.run_id, Path(report.journal), code)
