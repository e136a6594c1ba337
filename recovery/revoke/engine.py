"""Revoke one key on every host of a fleet, concurrently, and prove each host clean.

For each host: log in with the admin key (host key checked as the audit checks it: the
inventory's pin, else the known_hosts file, else ``--accept-new``), learn every file sshd reads
the users' keys from (AuthorizedKeysFile, `recovery.ssh.key_files`: ``~/.ssh/authorized_keys2``
and ``/etc/ssh/authorized_keys/%u`` too), read each that exists with the removal script in
dry-run mode (`recovery.guest`), match
the stolen key in Python by its fingerprint (so a busybox VM without ssh-keygen is handled
too: the script lists every key's blob), remove the matching lines by blob, read the file
back, and, given the stolen private key, try to log in with it: only ``auth_rejected``
proves the key no longer opens the host.

A host that cannot be checked (down, rejecting the admin key, an unknown host key) is
reported with the audit's failure name and the run goes on; so is a host where the removal
failed, and one where a file is root's and neither root nor ``sudo -n`` is at hand to read or
change it (``needs_root``). Only ``clean`` and ``removed`` hosts are proven clean, and with an
AuthorizedKeysCommand only once the stolen key is refused: no file edit reaches that command.

Hosts behind jump hosts (`Host.jumps`, from the inventory or ``--jump``) share the run's
logins to them (`recovery.ssh.jump.shared_logins`); a hop with no key of its own logs in with
the admin key, also when the stolen key is tried on the VM behind it.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from recovery.errors import AuthRejected, GuestCommandError, VerifyError
from recovery.guest import (
    KeyFilesReport,
    KeyLine,
    RemoveExitCode,
    RemoveReport,
    RemoveSpec,
    blob_fingerprints,
    build_key_files_script,
    build_remove_script,
    explain_remove_exit,
    key_blob,
    parse_key_files_report,
    parse_remove_report,
)
from recovery.ssh import diagnosis, key_files
from recovery.ssh.jump import PREFIX as JUMP_PREFIX
from recovery.ssh.jump import shared_logins, with_host_keys

if TYPE_CHECKING:
    from recovery.audit.model import Host
    from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender
    from recovery.ssh.keys import KeyPair
    from recovery.ssh.remote import RemoteShell
    from recovery.ssh.verifier import SSHTarget

__all__ = ["FileOutcome", "HostOutcome", "RevokeRequest", "Status", "StolenKey", "revoke_fleet"]

class Status(StrEnum):
    """A host's result; besides these, a host that could not be checked carries the audit's failure name."""

    CLEAN = "clean"  # the key was not there
    REMOVED = "removed"  # it was, and is gone when read back
    HOLDS_KEY = "holds_key"  # --dry-run: it is there
    NOT_CHANGED = "not_changed"  # it is there, but --max-changes was reached
    REMOVE_FAILED = "remove_failed"  # the removal script failed or the key was still there afterwards
    NEEDS_ROOT = "needs_root"  # a file sshd reads could not be read or changed: root's, and no root or sudo -n
    STOLEN_KEY_ACCEPTED = "stolen_key_accepted"  # the stolen key still logs in
    NO_ADDRESS = "no_address"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class StolenKey:
    """The key to revoke: its fingerprints, and its blob when the public key was given."""

    sha256: str
    md5: str
    blob: str | None = None

    @classmethod
    def from_public_line(cls, line: str) -> StolenKey:
        blob = key_blob(line)
        sha256, md5 = blob_fingerprints(blob)
        return cls(sha256, md5, blob)

    @property
    def name(self) -> str:
        return self.sha256 or self.md5

    def matches(self, key: KeyLine) -> bool:
        sha256, md5 = blob_fingerprints(key.blob)
        return key.blob == self.blob or sha256 == self.sha256 or md5 == self.md5


@dataclass(frozen=True)
class RevokeRequest:
    stolen: StolenKey
    admin_keys: dict[str, KeyPair]  # by the path the inventory names
    all_users: bool = False
    dry_run: bool = False
    max_changes: int | None = None
    timeout: float = 10.0
    concurrency: int = 50
    stolen_private: KeyPair | None = None
    known_hosts: KnownHosts | None = None
    accept_new: bool = False
    record: KnownHostsAppender | None = None


@dataclass(frozen=True)
class FileOutcome:
    user: str
    file: str | None
    status: str  # nothing-to-remove, would-remove, removed, unreadable, needs-root
    removed: tuple[str, ...] = ()  # "SHA256:... comment"
    backup: str | None = None


@dataclass
class HostOutcome:
    name: str
    where: str
    status: str
    message: str = ""
    files: list[FileOutcome] = field(default_factory=list)
    proof: str | None = None  # with --stolen-key: auth_rejected, or how else the login ended
    seconds: float = 0.0
    read_from: str | None = None  # how the files were learned: sshd -T, sshd_config, sshd's default
    keys_command: str | None = None  # sshd's AuthorizedKeysCommand, which no file edit reaches
    notes: list[str] = field(default_factory=list)  # what the revoke could not take into account

    @property
    def clean(self) -> bool:
        """Proven clean: the key is gone (or never was) and, when tried, the stolen key is rejected.

        Keys that also come from an AuthorizedKeysCommand are proven gone only by the stolen key's refusal.
        """
        return (self.status in (Status.CLEAN, Status.REMOVED) and self.proof in (None, "auth_rejected")
                and (self.keys_command is None or self.proof == "auth_rejected"))

    @property
    def changed(self) -> bool:
        return any(item.status == "removed" for item in self.files)


class _Budget:
    """--max-changes: how many more hosts may be changed; shared by the workers."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def revoke_fleet(
    hosts: Sequence[Host], request: RevokeRequest, *, on_result: Callable[[HostOutcome], None] = lambda _: None
) -> list[HostOutcome]:
    """Revoke the key on every host, `request.concurrency` at once; results in inventory order.

    The workers are daemon threads: on Ctrl-C the run reports at once rather than wait for hosts
    stuck in a handshake (a change in flight is safe to cut: the guest script is atomic and
    cleans up on hang-up). On KeyboardInterrupt the hosts not finished are reported as
    interrupted, in the list attached to the re-raised exception as ``partial``.
    """
    budget = _Budget(request.max_changes)
    results: dict[int, HostOutcome] = {}
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    stop = threading.Event()
    for index in range(len(hosts)):
        todo.put(index)

    def work() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            results[index] = _one_host(hosts[index], request, budget)
            finished.put(index)

    with contextlib.ExitStack() as stack:
        if any(host.jumps for host in hosts):
            stack.enter_context(shared_logins())
        for number in range(min(request.concurrency, len(hosts))):
            threading.Thread(target=work, name=f"revoke-{number}", daemon=True).start()
        return _collect(hosts, results, finished, stop, on_result)


def _collect(
    hosts: Sequence[Host], results: dict[int, HostOutcome], finished: queue.SimpleQueue[int], stop: threading.Event,
    on_result: Callable[[HostOutcome], None],
) -> list[HostOutcome]:
    """The workers' results as they come; on Ctrl-C, those so far (`revoke_fleet`)."""
    try:
        for _ in range(len(hosts)):
            while True:
                try:
                    index = finished.get(timeout=0.2)  # short waits: Ctrl-C is seen at once
                    break
                except queue.Empty:
                    continue
            on_result(results[index])
    except KeyboardInterrupt as exc:
        stop.set()
        exc.partial = _ordered(hosts, dict(results))  # type: ignore[attr-defined]
        raise
    return _ordered(hosts, results)


def _ordered(hosts: Sequence[Host], results: dict[int, HostOutcome]) -> list[HostOutcome]:
    return [
        results.get(index) or HostOutcome(host.name, host.where, Status.INTERRUPTED, "not finished: interrupted")
        for index, host in enumerate(hosts)
    ]


def _one_host(host: Host, request: RevokeRequest, budget: _Budget) -> HostOutcome:
    started = time.monotonic()
    outcome = HostOutcome(host.name, host.where, Status.CLEAN)
    if host.address is None:
        outcome.status, outcome.message = Status.NO_ADDRESS, host.note or "the inventory gives no address for this host"
        return outcome
    try:
        admin_path = _revoke_on(host, request, budget, outcome)
        if request.stolen_private is not None and not request.dry_run and outcome.status in (
            Status.CLEAN, Status.REMOVED
        ):
            _prove(host, request, outcome, admin_path)
    except VerifyError as exc:
        found = diagnosis.from_error(exc)
        outcome.status, outcome.message = found.failure.value, found.message
    except GuestCommandError as exc:
        outcome.status, outcome.message = Status.REMOVE_FAILED, str(exc)
    outcome.seconds = time.monotonic() - started
    return outcome


def _target(host: Host, request: RevokeRequest, user: str, admin_path: str) -> SSHTarget:
    """The host as `user`; its jump hosts checked as it is, a hop with no key of its own logged in with `admin_path`."""
    from recovery.ssh.verifier import SSHTarget

    def pins_of(address: str, port: int) -> list[str]:
        if request.known_hosts is None:
            return []
        return [key.fingerprint for key in request.known_hosts.lookup(address, port) if not key.revoked]

    pins = [host.host_key] if host.host_key else pins_of(host.address or "", host.port)
    hops = with_host_keys(host.jumps, request.known_hosts, accept_new=request.accept_new, record=request.record)
    hops = tuple(hop if hop.private_key_path else replace(hop, private_key_path=admin_path) for hop in hops)
    return SSHTarget(host.address or "", host.port, user, host_key_fingerprint=",".join(pins) or None,
                     trust_first_use=request.accept_new and not pins, jumps=hops)


def _revoke_on(host: Host, request: RevokeRequest, budget: _Budget, outcome: HostOutcome) -> str:
    """Revoke on the host with the first admin key that logs in; returns that key's path."""
    from recovery.ssh.remote import remote_shell

    last_error: AuthRejected | None = None
    for path in host.keys:
        admin = request.admin_keys[str(path)]
        target = _target(host, request, host.user, str(path))
        try:
            with remote_shell(target, admin, timeout=request.timeout) as shell:
                if target.trust_first_use and request.record is not None:
                    server_key = shell.connection.client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
                    request.record.add(target.host, target.port, f"{server_key.get_name()} {server_key.get_base64()}")
                _revoke_with(shell, host, request, budget, outcome, key_blob(admin.public_line))
                return str(path)
        except AuthRejected as exc:  # the next admin key may get in
            last_error = exc
    if last_error is not None:
        raise last_error
    raise VerifyError(f"{host.name}: no admin key to log in with")


@dataclass
class _Guest:
    """One host's shell, and how to run a script there: as the login user, or as root (root, or ``sudo -n``)."""

    shell: RemoteShell
    timeout: float
    root: bool
    login: str
    sudo_checked: bool | None = None

    def command(self, elevated: bool) -> str:
        return "sudo -n sh -s" if elevated and not self.root else "sh -s"

    def user_arg(self, user: str, elevated: bool) -> str | None:
        """The removal script's `user`: None for the login user's own files, unless it runs as root."""
        return user if self.root or elevated or user != self.login else None

    def can_sudo(self) -> bool:
        """Whether ``sudo -n`` works here (asked once)."""
        if self.root:
            return True
        if self.sudo_checked is None:
            self.sudo_checked = self.shell.run("sudo -n true", timeout=self.timeout).status == 0
        return self.sudo_checked


def _revoke_with(
    shell: RemoteShell, host: Host, request: RevokeRequest, budget: _Budget, outcome: HostOutcome, admin_blob: str
) -> None:
    probe = _probe(shell, request, host)
    root = probe.uid == "0"
    guest = _Guest(shell, request.timeout, root, host.user)
    elevated = request.all_users and not root
    holding: list[tuple[str, str, RemoveReport, list[KeyLine], bool]] = []
    unreadable: list[str] = []
    for user, path, report, as_root in _scan_all(guest, request, _key_files(probe, outcome), elevated):
        if report is None:
            outcome.files.append(FileOutcome(user, path, "unreadable"))
            unreadable.append(path)
            continue
        if report.status == "absent":
            continue
        matching = [key for key in (*report.removed, *report.kept) if request.stolen.matches(key)]
        if not matching:
            outcome.files.append(FileOutcome(user, path, report.status or ""))
        else:
            holding.append((user, path, report, matching, as_root))
    if not holding:
        outcome.status = Status.CLEAN
        _unreadable(outcome, unreadable)
        return
    if request.dry_run or not budget.take():
        for user, path, _, matching, _ in holding:
            outcome.files.append(FileOutcome(user, path, "would-remove", _named(matching)))
        if request.dry_run:
            outcome.status, outcome.message = Status.HOLDS_KEY, _holders(holding)
        else:
            outcome.status = Status.NOT_CHANGED
            outcome.message = f"--max-changes reached: not changed; {_holders(holding)}"
        _unreadable(outcome, unreadable)
        return
    stuck: list[str] = []
    for user, path, _, matching, as_root in holding:
        removed, as_root = _remove(guest, request, user, path, matching, admin_blob, as_root)
        if removed is None:
            outcome.files.append(FileOutcome(user, path, "needs-root", _named(matching)))
            stuck.append(path)
            continue
        outcome.files.append(FileOutcome(user, removed.file, removed.status or "", _named(removed.removed),
                                         removed.backup))
        after, _ = _scan(guest, request, user, path, as_root)
        if after is None or any(request.stolen.matches(key) for key in (*after.removed, *after.kept)):
            outcome.status = Status.REMOVE_FAILED
            outcome.message = f"{path} still holds the key when read back"
            return
    if stuck:
        outcome.status = Status.NEEDS_ROOT
        outcome.message = (
            f"{', '.join(stuck)} still hold(s) the key and could not be changed: root's file(s); log in as root "
            "or as a user with sudo -n"
        )
    else:
        outcome.status = Status.REMOVED
        outcome.message = f"removed from {_holders(holding)}"
    _unreadable(outcome, unreadable)


def _probe(shell: RemoteShell, request: RevokeRequest, host: Host) -> KeyFilesReport:
    """Who the login is, and where sshd reads keys: for the login user, or with --all-users every user with a home.

    Run as the login user: it reads the passwd database and sshd's configuration (``sshd -T``
    through ``sudo -n`` by itself when that is needed and allowed).
    """
    nonce = secrets.token_hex(4)
    script = build_key_files_script(None if request.all_users else [host.user], nonce=nonce)
    probe = parse_key_files_report(shell.run("sh -s", script.raw(), timeout=request.timeout).output, nonce)
    if host.user not in probe.users and not request.all_users:
        raise GuestCommandError(f"user {host.user!r} is not in the passwd database of {host.name}")
    return probe


def _key_files(probe: KeyFilesReport, outcome: HostOutcome) -> list[tuple[str, str]]:
    """(user, file) for every file sshd reads the users' keys from, existing or not.

    What cannot be taken into account (an AuthorizedKeysCommand, a Match block not applied) goes
    into the outcome's notes.
    """
    wanted: list[tuple[str, str]] = []
    notes: list[str] = []
    for user in sorted(probe.users):
        sources = key_files.for_user(probe, user)
        outcome.read_from = sources.read_from
        notes += sources.notes
        if sources.command is not None:
            notes.append(f"keys also come from AuthorizedKeysCommand {sources.command}: revoke the key there")
            outcome.keys_command = sources.command
        wanted += [(user, path) for path in sources.files]
    outcome.notes = list(dict.fromkeys(notes))
    return wanted


def _unreadable(outcome: HostOutcome, paths: Sequence[str]) -> None:
    """Files that could not be read leave the host unchecked: not clean, and said why."""
    if not paths:
        return
    outcome.status = Status.NEEDS_ROOT
    outcome.message = "; ".join(filter(None, [
        outcome.message, f"{', '.join(paths)} could not be read: log in as root or as a user with sudo -n"]))


def _scan_spec(guest: _Guest, request: RevokeRequest, user: str, path: str, elevated: bool) -> RemoveSpec:
    stolen = request.stolen
    return RemoveSpec(blobs=(stolen.blob,) if stolen.blob else (), fingerprints=() if stolen.blob else (stolen.name,),
                      user=guest.user_arg(user, elevated), dry_run=True, file=path)


def _scan_all(
    guest: _Guest, request: RevokeRequest, files: Sequence[tuple[str, str]], elevated: bool
) -> list[tuple[str, str, RemoveReport | None, bool]]:
    """Read every file (dry run) in one round trip, each script in a subshell of its own; (user, file, report, as root).

    A file that cannot be read so is read again through ``sudo -n`` where that works; None where not.
    """
    if not files:
        return []
    nonces = [secrets.token_hex(4) for _ in files]
    scripts = [build_remove_script(_scan_spec(guest, request, user, path, elevated), nonce=nonce).raw()
               for (user, path), nonce in zip(files, nonces, strict=True)]
    result = guest.shell.run(guest.command(elevated), "".join(f"(\n{script})\n" for script in scripts),
                             timeout=request.timeout)
    scanned: list[tuple[str, str, RemoveReport | None, bool]] = []
    for (user, path), nonce in zip(files, nonces, strict=True):
        try:
            parsed = parse_remove_report(result.output, nonce)
        except GuestCommandError:
            tail = result.output.strip().splitlines()[-1:]
            raise GuestCommandError(
                f"the removal script did not run{' as root (sudo -n)' if elevated and not guest.root else ''} "
                f"(exit {result.status})" + (f": {tail[0][:200]}" if tail else "")) from None
        report = _checked(parsed, result.output, allow=(RemoveExitCode.UNREADABLE,))
        if report.exit_code != RemoveExitCode.UNREADABLE:
            scanned.append((user, path, report, elevated))
        elif not elevated and not guest.root and guest.can_sudo():
            scanned.append((user, path, *_scan(guest, request, user, path, True)))
        else:
            scanned.append((user, path, None, elevated))
    return scanned


def _scan(
    guest: _Guest, request: RevokeRequest, user: str, path: str, elevated: bool
) -> tuple[RemoveReport | None, bool]:
    """Read `path` (dry run). None: it cannot be read."""
    spec = _scan_spec(guest, request, user, path, elevated)
    report = _run(guest.shell, guest.command(elevated), spec, request.timeout, allow=(RemoveExitCode.UNREADABLE,))
    return (None if report.exit_code == RemoveExitCode.UNREADABLE else report), elevated


def _remove(
    guest: _Guest, request: RevokeRequest, user: str, path: str, matching: list[KeyLine], admin_blob: str,
    elevated: bool,
) -> tuple[RemoveReport | None, bool]:
    """Remove the matching lines from `path`; through ``sudo -n`` when only root can. None: it needs root."""
    spec = RemoveSpec(blobs=tuple(dict.fromkeys(key.blob for key in matching)), user=guest.user_arg(user, elevated),
                      protect=(admin_blob,) if user == guest.login else (), file=path)
    report = _run(guest.shell, guest.command(elevated), spec, request.timeout, allow=(RemoveExitCode.NEEDS_ROOT,))
    if report.exit_code != RemoveExitCode.NEEDS_ROOT:
        return report, elevated
    if elevated or guest.root or not guest.can_sudo():
        return None, elevated
    return _remove(guest, request, user, path, matching, admin_blob, True)


def _run(
    shell: RemoteShell, command: str, spec: RemoveSpec, timeout: float, *, allow: Sequence[int] = ()
) -> RemoveReport:
    """The removal script's report; a failure other than an exit status in `allow` raises."""
    nonce = secrets.token_hex(4)
    result = shell.run(command, build_remove_script(spec, nonce=nonce).raw(), timeout=timeout)
    try:
        report = parse_remove_report(result.output, nonce)
    except GuestCommandError:
        tail = result.output.strip().splitlines()[-1:]
        raise GuestCommandError(
            f"the removal script failed (exit {result.status}): {explain_remove_exit(result.status)}"
            + (f"; it said: {tail[0][:200]}" if tail else "")
        ) from None
    return _checked(report, result.output, allow=allow)


def _checked(report: RemoveReport, output: str, *, allow: Sequence[int] = ()) -> RemoveReport:
    """`report` if the script ended well or with a status in `allow`; else the failure, explained."""
    if report.exit_code == 0 or (report.exit_code is not None and report.exit_code in allow):
        return report
    status = report.exit_code
    tail = output.strip().splitlines()[-1:] if not report.error else []
    raise GuestCommandError(
        f"the removal script failed (exit {status if status is not None else 'unknown'}"
        + (f", {report.error}" if report.error else "") + "): "
        + (explain_remove_exit(status) if status is not None else report.explanation)
        + (f"; it said: {tail[0][:200]}" if tail else "")
    )


def _prove(host: Host, request: RevokeRequest, outcome: HostOutcome, admin_path: str) -> None:
    """Log in with the stolen key as every user whose file held it (and the login user): each must be rejected.

    Only the VM's refusal proves anything: the jump hosts are logged in with the admin key, and
    a failure at one of them (named after it) leaves the host not proven.
    """
    from recovery.ssh.verifier import ParamikoVerifier

    assert request.stolen_private is not None
    users = dict.fromkeys([host.user, *(item.user for item in outcome.files if item.status == "removed")])
    for user in users:
        target = _target(host, request, user, admin_path)
        try:
            ParamikoVerifier().verify(target, request.stolen_private, timeout=request.timeout)
        except VerifyError as exc:
            failure = diagnosis.from_error(exc).failure.value
            outcome.proof = "error" if str(exc).startswith(JUMP_PREFIX) else failure
            if outcome.proof != "auth_rejected":
                outcome.message = f"{outcome.message}; not proven: the login with the stolen key as {user} ended " \
                                  f"{outcome.proof}: {exc}".lstrip("; ")
                return
            continue
        outcome.status, outcome.proof = Status.STOLEN_KEY_ACCEPTED, "logged_in"
        outcome.message = (
            f"the stolen key still logs in as {user}: sshd finds it elsewhere than the files read "
            f"({', '.join(item.file or '?' for item in outcome.files) or 'none'}): an AuthorizedKeysCommand, a "
            "certificate authority, a Match block not applied"
        )
        return


def _named(keys: Sequence[KeyLine]) -> tuple[str, ...]:
    return tuple(f"{key.sha256} {key.comment}".rstrip() for key in keys)


def _holders(holding: Sequence[tuple[str, str, RemoveReport, list[KeyLine], bool]]) -> str:
    return ", ".join(f"{path} ({len(matching)} line(s))" for _, path, _, matching, _ in holding)

