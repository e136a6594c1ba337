"""The `recovery` command line. `main(argv)` returns the exit code instead of exiting.

Exit codes (a contract): 0 success; 1 a step failed; 2 invalid playbook, config or
arguments; 130 interrupted. Expected errors print one paragraph and no traceback;
an unexpected one writes its traceback to the run's debug.log and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery import PLAYBOOKS_DIR
from recovery.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STEP_FAILED,
    EXIT_USAGE,
    RecoveryError,
    UsageError,
)

if TYPE_CHECKING:
    from recovery.cancel import CancelToken
    from recovery.redact import Secret
    from recovery.report import RunReport

DEFAULT_LAB_DIR = Path("/tmp/recovery-lab")  # noqa: S108  (world-traversable on purpose: sshd reads the lab home)


_LAB_COMMANDS = (
    (
        "up",
        "start the lab",
        "Start the built-in lab VM on 127.0.0.1, as root: a throwaway user with a console password, sshd, a serial "
        "console behind websockify (and a VNC one with --console vnc); print how to recover it. Exit 0 up; 1 a part "
        "failed to start; 2 bad arguments or a --dir another user could change; 130 interrupted (Ctrl-C, SIGTERM, "
        "SIGHUP). After 1 or 130 nothing the lab started is left running.",
    ),
    (
        "status",
        "show the lab and how to recover it",
        "Show the lab in --dir: console URLs, SSH port, user, host key, where the console password is, the recovery "
        "command, each part's health and, when unhealthy, the next step. Exit 0 healthy; 1 not healthy or no lab; "
        "2 a --dir another user could change.",
    ),
    (
        "down",
        "stop the lab",
        "Stop what the lab in --dir started (also after an interrupted up) and delete its user; its logs stay. "
        "Exit 0 stopped or nothing to stop; 1 something would not stop (run it again); 2 a --dir another user "
        "could change.",
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments, which matches our contract; keep its message short."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recovery", description="Get SSH access back to a VM through its console.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v steps, -vv console I/O, -vvv paramiko")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a playbook")
    run.add_argument("playbook", type=Path)
    run.add_argument("-e", dest="inputs", action="append", default=[], metavar="NAME=VALUE", help="a playbook input")
    run.add_argument("--secret", action="append", default=[], metavar="NAME=@FILE", help="read a secret from a file")
    run.add_argument("--config", type=Path, help="config file (default: ~/.config/recovery/config.yaml)")
    run.add_argument(
        "--cloud",
        "--os-cloud",
        metavar="NAME",
        help="clouds.yaml entry for cloud steps (default: OS_CLOUD, cloud.name in config, or a sourced openrc)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan and what would be typed; change nothing")
    run.add_argument("--journal", type=Path, help="root directory of run journals")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a failed or interrupted run")
    run.add_argument("--json", action="store_true", help="print the report as JSON")

    validate = commands.add_parser("validate", help="check playbooks without running them")
    validate.add_argument("playbooks", type=Path, nargs="+")

    commands.add_parser("steps", help="list every step type with its inputs and outputs")

    lab = commands.add_parser("lab", help="the built-in local lab VM (loopback only)")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, parser_class=_Parser)
    for name, text, description in _LAB_COMMANDS:
        sub = lab_commands.add_parser(name, help=text, description=description)
        sub.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_LAB_DIR,
            help=f"lab directory (default {DEFAULT_LAB_DIR}); refused if another user could change it"
            + ("; created if missing" if name == "up" else ""),
        )
        if name in ("up", "status"):
            sub.add_argument("--json", action="store_true", help="print the lab as one JSON object (with a schema)")
        if name == "up":
            sub.add_argument("--console", choices=("serial", "vnc"), default="serial",
                             help="vnc adds a VNC console (x11vnc showing an xterm running login)")

    demo = commands.add_parser("demo", help="start the lab, recover access to it, show the report, stop the lab")
    demo.add_argument("--console", choices=("serial", "vnc"), default="serial", help="the console to recover through")
    _add_audit_parser(commands)
    return parser


def _add_audit_parser(commands: Any) -> None:
    """`recovery audit`; its defaults and limits live in recovery.audit, imported only when it runs."""
    audit = commands.add_parser(
        "audit",
        help="check that the expected key still logs in to every VM of a fleet",
        description="Check, concurrently, that the expected key still logs in to every host of an inventory or "
        "cloud. Exit 0 when all are ok, 1 when any failed, 2 for usage errors, 130 when interrupted.",
    )
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument("--inventory", type=Path, metavar="FILE", help="YAML inventory (hosts: and defaults:)")
    source.add_argument(
        "--cloud",
        "--os-cloud",
        metavar="NAME",
        nargs="?",
        const="",
        help="audit every server of this clouds.yaml entry (no NAME: OS_CLOUD, or a sourced openrc)",
    )
    audit.add_argument("--server-filter", metavar="REGEX", help="with --cloud: only servers whose name matches")
    audit.add_argument("--network", help="with --cloud: network whose fixed address to use, lacking a floating one")
    audit.add_argument("--check-console", action="store_true", help="with --cloud: also check a console can be opened")
    audit.add_argument("--key", action="append", default=[], metavar="PATH", help="private key to try (repeatable)")
    audit.add_argument("--user", help="login user for hosts whose inventory names none")
    audit.add_argument("--concurrency", type=int, default=50, metavar="N", help="checks at once (default 50)")
    audit.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="for each host's whole check (default 5)"
    )
    audit.add_argument("--known-hosts", type=Path, metavar="FILE", help="OpenSSH known_hosts file vouching for hosts")
    audit.add_argument(
        "--accept-new",
        action="store_true",
        help="accept and add to --known-hosts (default ~/.ssh/known_hosts) the key of hosts it does not list, "
        "as ssh's accept-new",
    )
    audit.add_argument(
        "--format", choices=("table", "json", "junit", "prometheus"), default="table", help="report format"
    )
    audit.add_argument("--output", type=Path, metavar="FILE", help="write the report here (atomically), not stdout")
    audit.add_argument("--shard", metavar="I/N", help="audit only shard I (from 0) of N")
    audit.add_argument("--remediate", type=Path, metavar="PLAYBOOK", help="run this recovery playbook for failed hosts")
    audit.add_argument("--max-remediations", type=int, default=1, metavar="N", help="remediate at most N hosts (1)")
    audit.add_argument("--yes", action="store_true", help="remediate without asking")
    audit.add_argument("--config", type=Path, help="config file for remediation runs")
    audit.add_argument("--journal", type=Path, help="root directory of remediation run journals")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for the console script and `python -m recovery`."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from recovery.log import setup_logging

    setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `recovery steps | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except RecoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return command_run(args)
    if args.command == "audit":
        from recovery.audit.command import run_audit

        return run_audit(args)
    if args.command == "validate":
        return command_validate(args.playbooks)
    if args.command == "steps":
        return command_steps()
    if args.command == "lab":
        return command_lab(args)
    return command_demo(args.console)


# --- validate and steps --------------------------------------------------------------------


def command_validate(paths: Sequence[Path]) -> int:
    from recovery.errors import PlaybookError
    from recovery.playbook import load_playbook

    status = EXIT_OK
    for path in paths:
        try:
            playbook = load_playbook(path)
        except PlaybookError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
            continue
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        print(f"{path}: ok ({len(playbook.steps)} steps)")
    return status


def command_steps() -> int:
    from recovery.catalog import step_types

    for step_type in step_types().values():
        flags = ", ".join(
            flag for flag, on in (("repeatable", step_type.repeatable), ("retryable", step_type.retryable)) if on
        )
        print(f"{step_type.name}: {step_type.summary}" + (f" [{flags}]" if flags else ""))
        print("  inputs:")
        for spec in step_type.inputs():
            need = "required" if spec.required else f"default {spec.default!r}"
            print(f"    {spec.name} ({spec.type_name}, {need}): {spec.description}")
        print("  outputs:")
        for name, text in step_type.outputs.items():
            print(f"    {name}: {text}")
        print()
    return EXIT_OK


# --- run -----------------------------------------------------------------------------------


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    result = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUE")
        result[name] = value
    return result


def command_run(args: argparse.Namespace) -> int:
    """`recovery run`. SIGTERM and SIGHUP cancel the run (the Ctrl-C path); no core dump while secrets are held."""
    from recovery.cancel import CancelToken
    from recovery.signals import interrupt_on_signals

    disable_core_dumps()
    cancel = CancelToken()
    with interrupt_on_signals(on_signal=cancel.cancel):
        return _run(args, cancel)


def _run(args: argparse.Namespace, cancel: CancelToken) -> int:
    import getpass

    import recovery.api
    from recovery.config import load_config
    from recovery.journal import STATUS_INTERRUPTED, STATUS_SUCCEEDED
    from recovery.playbook import load_playbook
    from recovery.report import exit_code, summary_line
    from recovery.sources import input_values, secret_values

    config = load_config(args.config)
    if args.cloud:
        config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name=args.cloud))
    playbook = load_playbook(args.playbook)
    given, notes = input_values(playbook, _pairs(args.inputs, "-e"), os.environ)
    for note in notes:
        print(note, file=sys.stderr)
    journal_root = args.journal or config.journal.dir
    if args.dry_run:
        print(recovery.api.dry_run(playbook, given, config=config, journal_root=journal_root, resume=args.resume))
        return EXIT_OK
    if args.resume:
        from recovery.journal import Journal

        Journal.open(journal_root, args.resume)  # an unknown run is exit 2 before any password prompt
    prompt = getpass.getpass if sys.stdin.isatty() else None
    secrets = secret_values(playbook, _pairs(args.secret, "--secret"), os.environ, prompt=prompt)
    _quiet_if_unmaskable(secrets.values())
    try:
        report = recovery.api.run(
            playbook, given, secrets, config=config, journal_root=journal_root, resume=args.resume,
            cancel=cancel, progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except recovery.api.RunInterrupted as interrupted:
        report = interrupted.report
    _print_report(report, args.json)
    if report.status == STATUS_INTERRUPTED:
        _print_interrupted(report)
    elif report.journal_error:
        print(f"error: {report.journal_error}", file=sys.stderr)
    else:
        print(summary_line(report), file=sys.stderr)
        if report.status != STATUS_SUCCEEDED:
            print(f"journal and report: {report.journal}; resume with --resume {report.run_id}", file=sys.stderr)
    return exit_code(report)


def _quiet_if_unmaskable(secrets: Iterable[Secret]) -> None:
    """A secret of 1-3 characters cannot be scrubbed: no debug output for this run (the report says so)."""
    from recovery.redact import too_short_to_mask

    if any(too_short_to_mask(value) for value in secrets):
        from recovery.log import without_debug_output

        without_debug_output("a secret shorter than 4 characters is held and could not be masked")


def _print_interrupted(report: RunReport) -> None:
    """What an interrupted operator needs at once: what the cleanup did, where the report is, how to go on."""
    lines = [f"interrupted{f' during step {report.failed_step}' if report.failed_step else ''}."]
    lines += [f"  {change}" for change in report.vm_changes if "cut off mid-way" in change]
    done = report.rolled_back
    lines.append("cleanup done (newest first): " + ("; ".join(done) if done else "nothing was left to clean up"))
    lines += [f"  {note}" for note in report.notes if note.startswith("cleanup")]
    lines.append(f"report: {Path(report.journal) / 'report.md'}; resume with: --resume {report.run_id}")
    print("\n".join(lines), file=sys.stderr)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_markdown())


def disable_core_dumps() -> None:
    """No core file may hold the console password, a token or a private key.

    RLIMIT_CORE 0 stops the kernel writing one; PR_SET_DUMPABLE 0 (Linux) also keeps
    other processes of the same user from attaching (ptrace) or reading /proc/PID/mem,
    and stops a core_pattern pipe (systemd-coredump, apport) that ignores the limit.
    """
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_dumpable = 4
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
            import logging

            logging.getLogger(__name__).warning(
                "could not mark the process non-dumpable (prctl: %s); core dumps are still off",
                os.strerror(ctypes.get_errno()),
            )


# --- lab and demo --------------------------------------------------------------------------


def command_lab(args: argparse.Namespace) -> int:
    """`recovery lab up|status|down`. SIGTERM and SIGHUP take the Ctrl-C path: what `up` started is stopped."""
    from recovery import lab
    from recovery.lab import summary
    from recovery.signals import interrupt_on_signals

    with interrupt_on_signals():
        if args.lab_command == "up":
            disable_core_dumps()  # the lab user's console password passes through this process
            try:
                info = lab.up(args.dir, console=args.console)
            except KeyboardInterrupt:
                print(
                    "interrupted: what the lab had started was stopped and its user removed; "
                    f"if an error above says otherwise, `{summary.program()} lab down --dir {args.dir}` "
                    "removes what is left",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
            if args.json:
                print(json.dumps(summary.document(info, PLAYBOOKS_DIR), indent=2))
            else:
                print(summary.render_up(info, args.console, PLAYBOOKS_DIR))
            return EXIT_OK
        if args.lab_command == "status":
            status = lab.status(args.dir)
            if args.json:
                print(json.dumps(summary.document(status.info, PLAYBOOKS_DIR, status), indent=2))
            else:
                print(summary.render_status(status.info, status, PLAYBOOKS_DIR))
            return EXIT_OK if status.healthy else EXIT_STEP_FAILED
        lab.down(args.dir)
        print(f"lab in {args.dir} is down")
        return EXIT_OK


def command_demo(console: str) -> int:
    """`recovery demo`: SIGTERM and SIGHUP take the Ctrl-C path (the lab is stopped), no core dumps."""
    from recovery.demo import run_demo
    from recovery.signals import interrupt_on_signals

    disable_core_dumps()
    with interrupt_on_signals():
        return run_demo(console=console)
