"""`recovery revoke`: the CLI contract around `recovery.revoke.engine`.

Exit codes (a contract): 0 every host is proven clean; 1 any host still holds the key, or
could not be checked, or accepts the stolen key; 2 a usage error (flags, inventory, keys, the
admin key being the stolen one), found before any connection; 130 Ctrl-C or SIGTERM, after the
partial report has been written.

Removing a stolen key is the safe direction, so there is no prompt: ``--dry-run`` looks first.
With ``--cloud`` the hosts are the cloud's servers (addressed as `recovery audit --cloud` addresses
them), and the Nova key pairs holding the key are deleted too, first: that alone cannot be undone,
so it is asked on a terminal or confirmed with ``--yes``; with neither they are kept, and the run
exits 1. A cloud that cannot be read (credentials refused, unreachable) is exit 1 before anything
changed; a cloud that is not configured is exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.cli.flags import add_jump_flags
from recovery.cli.output import write_output
from recovery.engine.signals import interrupt_on_signals
from recovery.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_STEP_FAILED, CloudError, KeyGenerationError, UsageError

if TYPE_CHECKING:
    from recovery.audit.model import Host
    from recovery.cloud import KeyPairInfo, OpenStackCloud
    from recovery.revoke.engine import StolenKey
    from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
    from recovery.ssh.jump import JumpHop
    from recovery.ssh.keys import KeyPair

__all__ = ["MAX_CONCURRENCY", "add_arguments", "run_revoke"]

MAX_CONCURRENCY = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `recovery revoke` (the parser itself is made by `recovery.cli.main`)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--fingerprint", metavar="SHA256:...", help="the stolen key's fingerprint (SHA256 or MD5)")
    what.add_argument("--public-key", type=Path, metavar="FILE", help="the stolen key's public key (.pub)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--inventory", type=Path, metavar="FILE",
                       help="inventory: the audit's YAML format, or an Ansible one (YAML or INI)")
    where.add_argument("--cloud", "--os-cloud", metavar="NAME", nargs="?", const="",
                       help="every server of this clouds.yaml entry (no NAME: OS_CLOUD, or a sourced openrc); "
                       "also deletes the Nova key pairs holding the key (asked first, or --yes)")
    parser.add_argument("--server-filter", metavar="REGEX", help="with --cloud: only servers whose name matches")
    parser.add_argument("--network", help="with --cloud: network whose fixed address to use, lacking a floating one")
    parser.add_argument("-l", "--limit", metavar="PATTERN",
                        help="only these inventory hosts: names, groups, '*' globs, joined by ':' or ','")
    parser.add_argument("--key", action="append", default=[], metavar="ADMIN_KEY",
                        help="private key that logs in to make the change (repeatable; never the stolen one)")
    parser.add_argument("--user", help="login user for hosts whose inventory names none; the key is removed from "
                        "every file sshd reads the login user's keys from (every user's with --all-users)")
    parser.add_argument("--all-users", action="store_true",
                        help="every user's key files (needs root or passwordless sudo on the hosts)")
    parser.add_argument("--stolen-key", type=Path, metavar="PATH",
                        help="the stolen private key: prove afterwards that it is rejected everywhere")
    parser.add_argument("--concurrency", type=int, default=50, metavar="N", help="hosts at once (default 50)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="for each connection and command (default 10)")
    parser.add_argument("--max-changes", type=int, metavar="N", help="change at most N hosts (default: no limit)")
    parser.add_argument("--dry-run", action="store_true", help="list the hosts that hold the key; change nothing")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--known-hosts", type=Path, metavar="FILE", help="OpenSSH known_hosts file vouching for hosts")
    trust.add_argument("--accept-new", action="store_true",
                       help="accept the key of hosts not otherwise pinned, and add it to ~/.ssh/known_hosts")
    add_jump_flags(parser, key_default="the admin key")
    parser.add_argument("--format", choices=("table", "json", "junit"), default="table", help="report format")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the report here (atomically), not stdout")
    parser.add_argument("--yes", action="store_true",
                        help="with --cloud: delete the Nova key pairs holding the key without asking (without a "
                        "terminal and without --yes they are kept, and the run exits 1)")


def run_revoke(args: argparse.Namespace) -> int:
    """Run `recovery revoke` as parsed by `recovery.cli.main`; returns the exit code.

    Raises:
        UsageError: flags, inventory or keys are unusable, or the stolen key is an admin key; the cloud
            is not configured (ConfigError).
        CloudError: the cloud's servers or key pairs could not be listed (nothing was changed).
    """
    from recovery.audit.inventory import HostDefaults, load_inventory
    from recovery.revoke.engine import HostOutcome, RevokeRequest, Status, revoke_fleet
    from recovery.revoke.keypairs import KeyPairOutcome, ask_on_terminal, settle_keypairs
    from recovery.revoke.render import RevokeReport, render, summary_line

    _check_flags(args)
    stolen = _stolen(args)
    admin_paths = tuple(Path(os.path.expanduser(path)) for path in args.key)
    jumps = _jumps(args)
    hosts = [] if args.cloud is not None else load_inventory(
        args.inventory, HostDefaults(user=args.user, keys=admin_paths, jumps=jumps), args.limit)
    admin_keys = _admin_keys({str(path) for path in admin_paths} if args.cloud is not None else
                             {str(path) for host in hosts for path in host.keys})
    for path, key in admin_keys.items():
        if stolen.sha256 == key.sha256 or stolen.md5 == f"MD5:{key.md5}":
            raise UsageError(
                f"the stolen key {stolen.name} is the admin key {path} this run would log in with: rotate the "
                "admin key first (add a new one everywhere), then revoke this one with the new key"
            )
    stolen_private = _stolen_private(args.stolen_key, stolen) if args.stolen_key else None
    started = time.monotonic()
    keypairs: list[KeyPairOutcome] = []
    with contextlib.ExitStack() as stack:
        known, record = _trust(args, stack)
        cloud: OpenStackCloud | None = None
        matching: list[KeyPairInfo] = []
        if args.cloud is not None:
            cloud = _open_cloud(args.cloud or None)
            stack.callback(cloud.close)
            hosts, matching = _from_cloud(args, cloud, stolen, admin_paths)
            hosts = [dataclasses.replace(host, jumps=jumps) for host in hosts]
        request = RevokeRequest(
            stolen=stolen, admin_keys=admin_keys, all_users=args.all_users, dry_run=args.dry_run,
            max_changes=args.max_changes, timeout=args.timeout, concurrency=args.concurrency,
            stolen_private=stolen_private, known_hosts=known, accept_new=args.accept_new, record=record,
        )
        interrupted = False
        with interrupt_on_signals():
            settled = cloud is None
            try:
                if cloud is not None:  # first: no new server gets the key while the hosts are done
                    ask = ask_on_terminal(cloud.name, stolen.name) if sys.stdin.isatty() else None
                    keypairs = settle_keypairs(cloud, matching, dry_run=args.dry_run, yes=args.yes, ask=ask)
                    settled = True
                outcomes = revoke_fleet(hosts, request)
            except KeyboardInterrupt as exc:
                interrupted = True
                if settled:
                    outcomes = getattr(exc, "partial", [])
                else:  # cut short at the prompt or between deletions: no host was started
                    keypairs = getattr(exc, "partial", [])
                    outcomes = [HostOutcome(host.name, host.where, Status.INTERRUPTED, "not started: interrupted")
                                for host in hosts]
    report = RevokeReport(stolen.name, args.dry_run, outcomes, time.monotonic() - started, interrupted,
                          cloud=cloud.name if cloud is not None else None, keypairs=keypairs)
    write_output(render(report, args.format), args.output)
    if not args.quiet and (args.output is not None or sys.stderr.isatty() or interrupted):
        print(summary_line(report), file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.proven_clean else EXIT_STEP_FAILED


def _check_flags(args: argparse.Namespace) -> None:
    if args.cloud is None:
        for flag, value in (("--server-filter", args.server_filter), ("--network", args.network)):
            if value is not None:
                raise UsageError(f"{flag} chooses cloud servers: use it with --cloud, not --inventory")
        if args.yes:
            raise UsageError("--yes only confirms deleting Nova key pairs, with --cloud; revoke itself never asks")
    elif not args.user or not args.key:
        raise UsageError("--cloud needs --user and --key: the cloud knows neither the login user nor the admin key")
    if args.cloud is not None and args.limit is not None:
        raise UsageError("--limit chooses hosts of an --inventory: with --cloud, use --server-filter REGEX")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {args.concurrency}: expected 1 to {MAX_CONCURRENCY}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    if args.max_changes is not None and args.max_changes < 1:
        raise UsageError(f"--max-changes {args.max_changes}: expected 1 or more")


def _open_cloud(name: str | None) -> OpenStackCloud:
    from recovery.cloud import connect

    return connect(name)


def _from_cloud(
    args: argparse.Namespace, cloud: OpenStackCloud, stolen: StolenKey, admin_paths: tuple[Path, ...]
) -> tuple[list[Host], list[KeyPairInfo]]:
    """The cloud's servers as hosts (addressed as the audit addresses them), and its key pairs holding the key.

    Raises:
        CloudError: the cloud could not be read; the message adds that nothing was changed.
        UsageError: --server-filter matches no server.
    """
    from recovery.audit.cloud_inventory import cloud_hosts, compile_filter
    from recovery.revoke.keypairs import matching_keypairs

    server_filter = compile_filter(args.server_filter)
    try:
        hosts, _ = cloud_hosts(cloud, user=args.user, keys=admin_paths, server_filter=server_filter,
                               network=args.network, empty_ok=True)
        return hosts, matching_keypairs(cloud.list_keypairs(), stolen)
    except CloudError as exc:
        raise type(exc)(f"{exc}. Nothing was changed: no host was contacted and no key pair deleted") from exc


def _stolen(args: argparse.Namespace) -> StolenKey:
    from recovery.guest import normalize_fingerprint
    from recovery.revoke.engine import StolenKey
    from recovery.safety import readers

    if args.public_key is not None:
        text = readers.read_text(args.public_key, what="public key", limit=64 * 1024)
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if len(lines) != 1:
            raise UsageError(f"--public-key {args.public_key}: expected one public key line, found {len(lines)}")
        try:
            return StolenKey.from_public_line(lines[0])
        except KeyGenerationError as exc:
            raise UsageError(f"--public-key {args.public_key}: {exc}") from exc
    try:
        value = normalize_fingerprint(args.fingerprint)
    except ValueError as exc:
        raise UsageError(f"--fingerprint: {exc}") from exc
    if value.startswith("MD5:"):
        return StolenKey(sha256="", md5=value)
    return StolenKey(sha256=value, md5="")


def _jumps(args: argparse.Namespace) -> tuple[JumpHop, ...]:
    """The --jump hops (for hosts whose inventory names none), each naming its user (user@host)."""
    from recovery.ssh.jump import hops_from_flags

    return hops_from_flags(args.jump, args.jump_keys, args.jump_host_keys)


def _admin_keys(paths: set[str]) -> dict[str, KeyPair]:
    from recovery.ssh.keys import load_keypair

    keys = {}
    for path in sorted(paths):
        try:
            keys[path] = load_keypair(Path(path), None)
        except KeyGenerationError as exc:
            raise UsageError(f"admin key {path}: {exc}") from exc
    if not keys:
        raise UsageError("no admin key: pass --key ADMIN_KEY, or set key: in the inventory")
    return keys


def _stolen_private(path: Path, stolen: StolenKey) -> KeyPair:
    from recovery.ssh.keys import load_keypair

    try:
        key = load_keypair(path, None)
    except KeyGenerationError as exc:
        raise UsageError(f"--stolen-key {path}: {exc}") from exc
    if key.sha256 != stolen.sha256 and f"MD5:{key.md5}" != stolen.md5:
        raise UsageError(f"--stolen-key {path} is {key.sha256}, not the key being revoked ({stolen.name})")
    return key


def _trust(
    args: argparse.Namespace, stack: contextlib.ExitStack
) -> tuple[KnownHosts | None, KnownHostsAppender | None]:
    from recovery.safety.files import make_dirs
    from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender

    if args.accept_new:
        ssh_dir = Path(os.path.expanduser("~")) / ".ssh"
        try:
            make_dirs(ssh_dir)
        except OSError as exc:
            raise UsageError(f"--accept-new records host keys in {ssh_dir}/known_hosts, which cannot be made: "
                             f"{exc.strerror or exc}") from exc
        known = KnownHosts.load(ssh_dir / "known_hosts", missing_ok=True)
        record = KnownHostsAppender(ssh_dir / "known_hosts", hashed=known.hashes_names)
        stack.callback(record.close)
        return known, record
    if args.known_hosts is not None:
        return KnownHosts.load(args.known_hosts), None
    return None, None

