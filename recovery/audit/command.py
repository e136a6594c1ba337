"""`recovery audit`: wire the inventory, the checker, the remediation and the report together.

Exit codes (a contract): 0 every host is ok; 1 any host failed (remediated
or not); 2 a usage error (bad flags, an invalid inventory or
playbook, an unusable key), found before any connection is made; 130 Ctrl-C
or SIGTERM, after the partial report has been written.

Everything is checked before the first connection: the inventory, the keys,
the known_hosts file (and with `--accept-new` that it can be written), the
remediation playbook and what the inventory gives it, and the engine
(`RECOVERY_AUDIT_ENGINE`, for comparing the two or testing the fallback). The audit then either
finishes or is interrupted, and in both cases writes its report.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from recovery.audit.api import MAX_CONCURRENCY, AuditInterrupted, check
from recovery.audit.cloud_inventory import ConsoleProbe, FleetCloud, cloud_hosts, compile_filter
from recovery.audit.engine import ENGINES, HostTrust, load_keys
from recovery.audit.inventory import HostDefaults, load_inventory
from recovery.audit.model import Host, Remediation
from recovery.audit.progress import ProgressLine
from recovery.audit.remediate import InProcessPlaybookRunner, confirm_on_terminal, remediate
from recovery.audit.render import render, summary_line
from recovery.audit.shard import parse_shard
from recovery.cli.output import write_output
from recovery.engine.signals import interrupt_on_signals
from recovery.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_STEP_FAILED, UsageError
from recovery.safety.files import make_dirs
from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
from recovery.ssh.jump import hops_from_flags

__all__ = ["ENGINE_VARIABLE", "MAX_CONCURRENCY", "run_audit"]

# Names the audit's engine (auto, libssh2, paramiko); unset is auto: libssh2 when it can be imported.
ENGINE_VARIABLE = "RECOVERY_AUDIT_ENGINE"


def run_audit(args: argparse.Namespace) -> int:
    """Run `recovery audit` as parsed by `recovery.cli.main`; returns the exit code.

    The checks are `recovery.audit.check`; this adds the flags, the inventory or
    cloud, the remediation, the report's file and the exit code.

    :raises UsageError: the command line, inventory, keys or playbook are unusable.
    :raises CloudError: the cloud could not list its servers.
    """
    _check_flags(args)
    engine = _engine_choice()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    shard = parse_shard(args.shard) if args.shard else None
    with contextlib.ExitStack() as stack:
        trust = _trust(args, stack)
        hosts, probe = _hosts(args, stack)
        if shard is not None:
            hosts = shard.select(hosts)
        keys = load_keys(path for host in hosts for path in host.keys)
        runner = _runner(args) if args.remediate else None
        if runner is not None:
            runner.check_hosts(hosts)
        interactive = sys.stderr.isatty() and not args.quiet  # -q: no progress line, no summary line
        progress = ProgressLine(len(hosts), sys.stderr, enabled=interactive)
        with interrupt_on_signals():
            try:
                checked = check(
                    hosts,
                    keys=keys,
                    trust=trust,
                    concurrency=args.concurrency,
                    timeout=args.timeout,
                    engine=engine,
                    console=probe.probe if probe is not None else None,
                    on_result=progress.update,
                )
            except AuditInterrupted as exc:
                checked = exc.report
            progress.clear()
            remediations: list[Remediation] = []
            interrupted = checked.interrupted
            if runner is not None and not interrupted:
                confirm = (lambda result: True) if args.yes else confirm_on_terminal(args.remediate)
                try:
                    for item in remediate(
                        list(checked.failed), runner, limit=args.max_remediations, confirm=confirm
                    ):
                        remediations.append(item)
                        interrupted = interrupted or item.outcome == "interrupted"
                except KeyboardInterrupt:
                    interrupted = True
    report = dataclasses.replace(
        checked,
        started_at=started_at,
        seconds=time.monotonic() - started,
        shard=str(shard) if shard else None,
        interrupted=interrupted,
        remediations=tuple(remediations),
    )
    write_output(render(report, args.format), args.output)
    if interactive or interrupted:
        print(summary_line(report), file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    # Only failed hosts are remediated, and a recovery adds a new key, not the audit's:
    # a run that failed, like one that succeeded, leaves the exit code at 1.
    return EXIT_STEP_FAILED if report.failed else EXIT_OK


def _engine_choice() -> str:
    """The engine `ENGINE_VARIABLE` asks for (auto when unset): to compare the two, or to test the fallback."""
    name = os.environ.get(ENGINE_VARIABLE, "").strip() or "auto"
    if name not in ("auto", *ENGINES):
        raise UsageError(f"{ENGINE_VARIABLE}={name}: expected auto, {' or '.join(ENGINES)}")
    return name


def _check_flags(args: argparse.Namespace) -> None:
    """What argparse cannot say: ranges, and flags that only make sense together."""
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {args.concurrency}: expected 1 to {MAX_CONCURRENCY}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    if args.max_remediations < 0:
        raise UsageError(f"--max-remediations {args.max_remediations}: expected 0 or more")
    if args.inventory is not None:
        for flag, value in (("--server-filter", args.server_filter), ("--network", args.network)):
            if value is not None:
                raise UsageError(f"{flag} chooses cloud servers: use it with --cloud, not --inventory")
        if args.check_console:
            raise UsageError("--check-console asks the cloud for consoles: use it with --cloud, not --inventory")
    elif not args.user or not args.key:
        raise UsageError("--cloud needs --user and --key: the cloud knows neither")
    if args.limit is not None and args.inventory is None:
        raise UsageError("--limit chooses hosts of an --inventory: with --cloud, use --server-filter REGEX")
    if args.accept_new and args.known_hosts is None:
        # As ssh's StrictHostKeyChecking=accept-new: what is accepted goes to the user's own file,
        # so the next audit checks it (`--accept-new` alone keeps working as it did, and now records).
        args.known_hosts = default_known_hosts()
    if args.remediate and not args.yes and not sys.stdin.isatty():
        raise UsageError("--remediate asks before each run: pass --yes when there is no terminal to answer on")


def default_known_hosts() -> Path:
    """~/.ssh/known_hosts, with ~/.ssh made 0700 if it is missing (as ssh makes it).

    Raises:
        UsageError: ~/.ssh cannot be made.
    """
    ssh_dir = Path(os.path.expanduser("~")) / ".ssh"
    try:
        make_dirs(ssh_dir)
    except OSError as exc:
        raise UsageError(
            f"--accept-new records the host keys it accepts in {ssh_dir}/known_hosts, but {ssh_dir} cannot be "
            f"made ({exc.strerror or exc}): name another file with --known-hosts FILE"
        ) from exc
    return ssh_dir / "known_hosts"


def _trust(args: argparse.Namespace, stack: contextlib.ExitStack) -> HostTrust:
    """The host key policy; with `--accept-new` the known_hosts file is opened for appending now, or exit 2."""
    if args.known_hosts is None:
        return HostTrust()
    known = KnownHosts.load(args.known_hosts, missing_ok=args.accept_new)
    if not args.accept_new:
        return HostTrust(known)
    record = KnownHostsAppender(args.known_hosts, hashed=known.hashes_names)
    stack.callback(record.close)
    return HostTrust(known, accept_new=True, record=record)


def _hosts(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[list[Host], ConsoleProbe | None]:
    """The hosts to audit, from the inventory file or the cloud, and the console probe if asked for."""
    keys = tuple(Path(os.path.expanduser(path)) for path in args.key)
    jumps = hops_from_flags(args.jump, args.jump_keys, args.jump_host_keys)
    if args.inventory is not None:
        return load_inventory(args.inventory, HostDefaults(user=args.user, keys=keys, jumps=jumps), args.limit), None
    cloud = _open_cloud(args.cloud)
    stack.callback(cloud.close)
    hosts, servers = cloud_hosts(
        cloud, user=args.user, keys=keys, server_filter=compile_filter(args.server_filter), network=args.network
    )
    hosts = [dataclasses.replace(host, jumps=jumps) for host in hosts]
    return hosts, ConsoleProbe(cloud, servers) if args.check_console else None


def _open_cloud(name: str) -> FleetCloud:
    from recovery.cloud import connect

    return connect(name)


def _runner(args: argparse.Namespace) -> InProcessPlaybookRunner:
    from recovery.engine.config import load_config

    config = load_config(args.config)
    if args.cloud:
        config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name=args.cloud))
    return InProcessPlaybookRunner(
        args.remediate, config=config, journal_root=args.journal or config.journal.dir, network=args.network
    )

