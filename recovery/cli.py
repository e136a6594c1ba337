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
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STEP_FAILED,
    EXIT_USAGE,
    RecoveryError,
    UsageError,
)

if TYPE_CHECKING:
    from recovery.config import Config
    from recovery.journal import Journal
    from recovery.playbook import Playbook
    from recovery.redact import Secret
    from recovery.report import RunReport

DEFAULT_LAB_DIR = Path("/tmp/recovery-lab")  # noqa: S108  (world-traversable on purpose: sshd reads the lab home)
# In a source tree a symlink to the top-level playbooks/; in an installed wheel, real files.
PLAYBOOKS_DIR = (Path(__file__).parent / "playbooks").resolve()


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
    from recovery.registry import step_types

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


def read_secrets(
    playbook: Playbook, given: Mapping[str, str], env: Mapping[str, str], *, interactive: bool
) -> dict[str, Secret]:
    """Each declared secret from --secret NAME=@FILE, else its environment variable, else a prompt.

    Raises:
        UsageError: a required secret has no source, or a --secret is not NAME=@FILE.
    """
    from recovery.redact import Secret

    values: dict[str, Secret] = {}
    for name in given:
        if name not in playbook.secrets:
            raise UsageError(f"--secret {name}: {playbook.path.name} declares no secret {name!r}")
    for name, decl in playbook.secrets.items():
        source = given.get(name)
        if source is not None:
            if not source.startswith("@"):
                raise UsageError(
                    f"--secret {name}=...: give a file as {name}=@FILE; a secret on the command line "
                    "would be visible to every user in the process list"
                )
            from recovery.readers import SECRET_LIMIT, read_text

            text = read_text(Path(source[1:]).expanduser(), what=f"--secret {name} file", limit=SECRET_LIMIT)
            values[name] = Secret(text.rstrip("\r\n"), f"<{name}>")
        elif decl.env and env.get(decl.env):
            values[name] = Secret(env[decl.env], f"<{name}>")
        elif interactive and decl.prompt is not None:
            import getpass

            values[name] = Secret(getpass.getpass(f"{decl.prompt}: "), f"<{name}>")
        elif decl.required:
            hint = f"set {decl.env}, " if decl.env else ""
            raise UsageError(f"secret {name!r} is missing: {hint}or pass --secret {name}=@FILE")
    return values


def command_run(args: argparse.Namespace) -> int:
    """`recovery run`. SIGTERM and SIGHUP take the Ctrl-C path; no core dump while secrets are held."""
    from recovery.signals import interrupt_on_signals

    disable_core_dumps()
    with interrupt_on_signals():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from recovery.config import load_config
    from recovery.playbook import load_playbook, resolve_inputs

    config = load_config(args.config)
    if args.cloud:
        config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name=args.cloud))
    playbook = load_playbook(args.playbook)
    given = inputs_given(playbook, _pairs(args.inputs, "-e"), os.environ)
    journal_root = args.journal or config.journal.dir
    previous: dict[str, dict[str, Any]] = {}
    journal = None
    if args.resume:
        journal, given, previous = _resume(journal_root, args.resume, playbook, given)
    inputs = resolve_inputs(playbook, given)
    if args.dry_run:
        from recovery.plan import render_plan

        print(render_plan(playbook, inputs, config))
        return EXIT_OK
    secrets = read_secrets(playbook, _pairs(args.secret, "--secret"), os.environ, interactive=sys.stdin.isatty())
    return execute(
        playbook, inputs, secrets, config, journal_root, journal=journal, previous=previous, as_json=args.json
    )


def inputs_given(playbook: Playbook, given: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """`-e` values, with a sensitive input's `@FILE` read, and inputs missing from `-e` taken from their `env:`.

    A sensitive value on the command line is visible to every local user in `ps`; it still
    works (scripts use it), with a note saying how to keep it out.

    Raises:
        UsageError: an `@FILE` cannot be read.
    """
    from recovery.readers import SECRET_LIMIT, read_text

    values = dict(given)
    for name, value in given.items():
        decl = playbook.inputs.get(name)
        if decl is None or not decl.sensitive:
            continue
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            values[name] = read_text(path, what=f"-e {name}=@FILE", limit=SECRET_LIMIT).rstrip("\r\n")
        elif value:
            where = f"-e {name}=@FILE" + (f" or {decl.env}" if decl.env else "")
            print(f"note: -e {name}=... is visible to every local user in the process list; use {where}",
                  file=sys.stderr)
    for name, decl in playbook.inputs.items():
        if name not in values and decl.env and env.get(decl.env):
            values[name] = env[decl.env]
            print(f"input {name}: from {decl.env}", file=sys.stderr)  # a stale export must not act unseen
    return values


def _resume(
    root: Path, run_id: str, playbook: Playbook, given: dict[str, str]
) -> tuple[Journal, dict[str, str], dict[str, dict[str, Any]]]:
    """Reopen a run's journal; its inputs are reused unless given again on the command line."""
    from recovery.journal import STATUS_SUCCEEDED, Journal

    journal = Journal.open(root, run_id)
    journal.lock_run()  # before reading: another process may be running it right now
    run = journal.read_json("run.json")
    if Path(run["playbook"]) != playbook.path.resolve():
        raise UsageError(f"run {run_id} was made with {run['playbook']}, not {playbook.path.resolve()}")
    if run.get("status") == STATUS_SUCCEEDED:
        raise UsageError(f"run {run_id} already succeeded; there is nothing to resume")
    merged = {}
    for name, value in (run.get("inputs") or {}).items():
        decl = playbook.inputs.get(name)
        if name in given or decl is None or value is None:
            continue
        if decl.sensitive and value:
            env = f", or set {decl.env}" if decl.env else ""
            raise UsageError(
                f"run {run_id}: input {name!r} is sensitive and was not saved; give it again with "
                f"-e {name}=@FILE{env}"
            )
        merged[name] = str(value).lower() if isinstance(value, bool) else str(value)
    merged.update(given)
    return journal, merged, journal.load_steps()


def execute(
    playbook: Playbook,
    inputs: Mapping[str, object],
    secrets: Mapping[str, Secret],
    config: Config,
    journal_root: Path,
    *,
    journal: Journal | None = None,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    as_json: bool = False,
) -> int:
    """Run a playbook, print its report and return the exit code.

    The run and the VM it recovers are locked for this process (see `Journal.lock_run`
    and `Journal.lock_target`); a second process is refused with exit 2.
    """
    from recovery.journal import Journal

    fresh = journal is None
    journal = journal or Journal.create(journal_root)
    try:
        journal.lock_run()
        target = _target(inputs, config.cloud.name)
        if target:
            journal.lock_target(journal_root, *target)
    except RecoveryError:
        journal.unlock()
        if fresh:  # nothing ran: leave no empty run behind
            import shutil

            shutil.rmtree(journal.directory, ignore_errors=True)
        raise
    try:
        return _execute_locked(playbook, inputs, secrets, config, journal, previous, as_json)
    finally:
        journal.unlock()


def _target(inputs: Mapping[str, object], cloud: str | None) -> tuple[str, str] | None:
    """What identifies the VM, for the lock: the server in its cloud, else user@host (a console URL changes
    with every token)."""
    server = inputs.get("server")
    if server:
        return f"server:{cloud or ''}:{server}", f"server {server}" + (f" in cloud {cloud}" if cloud else "")
    host, user = inputs.get("ssh_host"), inputs.get("user")
    if host and user:
        return f"ssh:{user}@{host}", f"{user}@{host}"
    return None


def _execute_locked(
    playbook: Playbook,
    inputs: Mapping[str, object],
    secrets: Mapping[str, Secret],
    config: Config,
    journal: Journal,
    previous: Mapping[str, Mapping[str, Any]] | None,
    as_json: bool,
) -> int:
    from recovery.errors import JournalError
    from recovery.redact import Secret, too_short_to_mask
    from recovery.report import summary_line
    from recovery.runner import Runner, RunRequest

    held = [*secrets.values(), *(v for v in inputs.values() if isinstance(v, Secret))]
    keep_debug = not any(too_short_to_mask(value) for value in held)
    if not keep_debug:
        from recovery.log import without_debug_output

        without_debug_output("a secret shorter than 4 characters is held and could not be masked")
    print(f"run {journal.run_id}: journal {journal.directory}", file=sys.stderr)
    runner = Runner(
        RunRequest(playbook, inputs, secrets, config),
        journal,
        previous=previous,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    try:
        report = runner.run()
    except KeyboardInterrupt:
        _print_report(runner.report, as_json)
        _print_interrupted(runner.report, journal)
        return EXIT_INTERRUPTED
    except JournalError:
        # The disk under the journal failed: what the run did (and undid) is only here now.
        _print_report(runner.report, as_json)
        raise
    except RecoveryError:
        raise
    except Exception:
        _debug_log(journal, keep=keep_debug)
        return EXIT_STEP_FAILED
    _print_report(report, as_json)
    print(summary_line(report), file=sys.stderr)
    if report.status != "succeeded":
        print(f"journal and report: {journal.directory}; resume with --resume {journal.run_id}", file=sys.stderr)
        return EXIT_STEP_FAILED
    return EXIT_OK


def _print_interrupted(report: RunReport, journal: Journal) -> None:
    """What an interrupted operator needs at once: what the cleanup did, where the report is, how to go on."""
    lines = [f"interrupted{f' during step {report.failed_step}' if report.failed_step else ''}."]
    lines += [f"  {change}" for change in report.vm_changes if "cut off mid-way" in change]
    done = report.rolled_back
    lines.append("cleanup done (newest first): " + ("; ".join(done) if done else "nothing was left to clean up"))
    lines += [f"  {note}" for note in report.notes if note.startswith("cleanup")]
    lines.append(f"report: {journal.path('report.md')}; resume with: --resume {journal.run_id}")
    print("\n".join(lines), file=sys.stderr)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_markdown())


def _debug_log(journal: Journal, *, keep: bool = True) -> None:
    if not keep:
        print("internal error: this is a bug in recovery. No traceback was kept: a secret too short to mask "
              "is held, and the traceback could show it.", file=sys.stderr)
        return
    journal.write_text("debug.log", traceback.format_exc())
    print(
        f"internal error: this is a bug in recovery. The traceback is in {journal.path('debug.log')}; "
        "please attach it to a bug report.",
        file=sys.stderr,
    )


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
