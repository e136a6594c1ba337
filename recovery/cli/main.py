"""The `recovery` command line. `main(argv)` returns the exit code instead of exiting.

Exit codes (a contract): 0 success; 1 a step failed; 2 invalid playbook, config or
arguments; 130 interrupted. Expected errors print one paragraph and no traceback;
an unexpected one writes its traceback to the run's debug.log and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery import PLAYBOOKS_DIR, __version__
from recovery.cli.flags import add_jump_flags
from recovery.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STEP_FAILED,
    EXIT_USAGE,
    RecoveryError,
    UsageError,
)

if TYPE_CHECKING:
    from recovery.engine.cancel import CancelToken
    from recovery.engine.config import Config
    from recovery.engine.playbook import InputDecl, Playbook, SecretDecl
    from recovery.engine.registry import StepType
    from recovery.engine.report import RunReport
    from recovery.safety.redact import Secret

DEFAULT_LAB_DIR = Path("/tmp/recovery-lab")  # noqa: S108  (world-traversable on purpose: sshd reads the lab home)

SCHEMA = 1
"""Version of every JSON document the CLI prints (the `schema` key); raised when a key changes meaning."""

_INTERRUPTED = "130  interrupted (Ctrl-C, SIGTERM, SIGHUP)"
_LAB_COMMANDS = (
    (
        "up",
        "start the lab",
        "Start the built-in lab VM on 127.0.0.1, as root: a throwaway user with a console password, sshd, a serial "
        "console behind websockify (and a VNC one with --console vnc); print how to recover it. After exit 1 or 130 "
        "nothing the lab started is left running.",
        "sudo recovery lab up\nsudo recovery lab up --console vnc --dir /srv/lab --json",
        "0    the lab is up\n1    a part failed to start\n2    bad arguments, or a --dir another user could change\n"
        + _INTERRUPTED,
    ),
    (
        "status",
        "show the lab and how to recover it",
        "Show the lab in --dir: console URLs, SSH port, user, host key, where the console password is, the recovery "
        "command, each part's health and, when unhealthy, the next step.",
        "recovery lab status\nrecovery lab status --dir /srv/lab --json",
        "0    the lab is healthy\n1    not healthy, or no lab\n2    a --dir another user could change",
    ),
    (
        "down",
        "stop the lab",
        "Stop what the lab in --dir started (also after an interrupted up) and delete its user; its logs stay.",
        "sudo recovery lab down",
        "0    stopped, or nothing to stop\n1    something would not stop (run it again)\n"
        "2    a --dir another user could change",
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments, which matches our contract; keep its message short, add a suggestion."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}{_choice_hint(message)}")


def _choice_hint(message: str) -> str:
    """`recovery rn`: argparse lists the commands; say which one was probably meant."""
    found = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
    if not found:
        return ""
    close = difflib.get_close_matches(found.group(1), re.findall(r"[\w-]+", found.group(2)), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _output_flags() -> argparse.ArgumentParser:
    """-v and -q after the command too: their own destinations, added to the top-level ones by `parse_arguments`.

    SUPPRESS keeps a command's parser from writing 0 over a `-v` given before the command.
    """
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("-v", "--verbose", dest="more_verbose", action="count", default=argparse.SUPPRESS,
                       help=_VERBOSE_HELP)
    flags.add_argument("-q", "--quiet", dest="more_quiet", action="store_true", default=argparse.SUPPRESS,
                       help=_QUIET_HELP)
    return flags


_VERBOSE_HELP = (
    "-v what each part does; -vv also the console I/O, secrets masked; -vvv also the libraries' debug logs "
    "(paramiko, openstacksdk, keystoneauth, botocore, urllib3); before or after the command"
)
_QUIET_HELP = "errors only: no progress lines or notes on stderr (run, audit); the report still goes to stdout"


def _wrap(text: str) -> str:
    return "\n\n".join(textwrap.fill(paragraph, width=88) for paragraph in text.split("\n\n"))


def _epilog(examples: str, exits: str, more: str = "") -> str:
    middle = f"{_wrap(more)}\n\n" if more else ""
    return f"examples:\n{textwrap.indent(examples, '  ')}\n\n{middle}exit codes:\n{textwrap.indent(exits, '  ')}"


def _command(commands: Any, name: str, summary: str, description: str, examples: str, exits: str) -> _Parser:
    parser: _Parser = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description),
        epilog=_epilog(examples, exits),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_output_flags()],
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recovery",
        description="Get SSH access back to a VM through its console, safely and with proof.",
        epilog=_epilog(
            "recovery inputs playbooks/restore-access-serial.yaml\n"
            "recovery run playbooks/restore-access-serial.yaml --cloud mycloud -e server=web-1 -e user=ubuntu "
            "--dry-run\n"
            "recovery run -v playbooks/restore-access-serial.yaml --cloud mycloud -e server=web-1 -e user=ubuntu\n"
            "recovery audit --inventory hosts.yaml --format junit --output audit.xml\n"
            "source <(recovery completion bash)",
            "0    success\n1    a step, a lab part or an audited host failed\n"
            "2    invalid playbook, config or arguments; nothing was changed\n"
            f"{_INTERRUPTED}; cleanup has run",
            "`recovery COMMAND --help` describes each command, with examples and its exit codes.",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"recovery {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help=_QUIET_HELP)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _add_run_parser(commands)
    _add_inspection_parsers(commands)
    _add_lab_parsers(commands)
    demo = _command(
        commands, "demo", "start the lab, recover access to it, show the report, stop the lab",
        "Start the built-in lab (as root), recover SSH access to it through its console with the shipped "
        "playbook, print the report and stop the lab, also after a failure or Ctrl-C.",
        "sudo recovery demo\nsudo recovery demo --console vnc",
        "0    access to the lab was recovered and proven\n1    a step or a lab part failed\n"
        f"2    the demo cannot start (missing packages, bad arguments)\n{_INTERRUPTED}; the lab was stopped",
    )
    demo.add_argument("--console", choices=("serial", "vnc"), default="serial", help="the console to recover through")
    _add_audit_parser(commands)
    _add_revoke_parser(commands)
    completion = _command(
        commands, "completion", "print a shell completion script",
        "Print a completion script for bash, zsh or fish: commands, flags, their choices, and file names "
        "where a playbook or a file is expected.",
        "source <(recovery completion bash)          # in ~/.bashrc\n"
        "source <(recovery completion zsh)           # in ~/.zshrc, after compinit\n"
        "recovery completion fish > ~/.config/fish/completions/recovery.fish",
        "0    printed\n2    an unknown shell",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def _add_run_parser(commands: Any) -> None:
    run = _command(
        commands, "run", "run a playbook",
        "Run a playbook: its steps in order, then its cleanup steps newest first (also after a failure), then its "
        "`always` steps. Inputs come from -e NAME=VALUE (a sensitive one also from -e NAME=@FILE or its environment "
        "variable), secrets from --secret NAME=@FILE, their environment variable or a prompt: `recovery inputs "
        "PLAYBOOK` lists them. Nothing changes before a pre-flight has checked all that can be known.\n\n"
        "Every run keeps a journal (events, console transcript, report); --resume RUN_ID continues a failed or "
        "interrupted run. The report goes to stdout (Markdown, or JSON with --json); progress lines and notes go "
        "to stderr.",
        "recovery run playbooks/restore-access-serial.yaml --dry-run \\\n"
        "    -e console_url=@url.txt -e ssh_host=203.0.113.10 -e user=ubuntu -e trust_first_use=true\n"
        "RECOVERY_CONSOLE_PASSWORD=... recovery run playbooks/restore-access-serial.yaml \\\n"
        "    -e console_url=@url.txt -e ssh_host=203.0.113.10 -e user=ubuntu -e host_key_fingerprint=SHA256:...\n"
        "recovery run playbooks/restore-access-serial.yaml --cloud mycloud -e server=web-1 -e user=ubuntu -vv\n"
        "recovery run playbooks/restore-access-serial.yaml --resume RUN_ID -e user=ubuntu --json",
        "0    access recovered and proven (with --dry-run: the plan passed the pre-flight)\n"
        "1    a step failed; the report says which, what changed on the VM and what was rolled back\n"
        "2    invalid playbook, config, inputs or arguments, or a pre-flight problem; nothing was changed\n"
        f"{_INTERRUPTED}; cleanup has run; continue with --resume RUN_ID",
    )
    run.add_argument("playbook", type=Path, metavar="PLAYBOOK")
    run.add_argument("-e", dest="inputs", action="append", default=[], metavar="NAME=VALUE",
                     help="a playbook input (NAME=@FILE for a sensitive one)")
    run.add_argument("--secret", action="append", default=[], metavar="NAME=@FILE", help="read a secret from a file")
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="config file (default: ~/.config/recovery/config.yaml)")
    run.add_argument(
        "--cloud",
        "--os-cloud",
        metavar="NAME",
        help="clouds.yaml entry for cloud steps (default: OS_CLOUD, cloud.name in config, or a sourced openrc)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan and what would be typed; change nothing")
    run.add_argument("--journal", type=Path, metavar="DIR", help="root directory of run journals")
    run.add_argument("--resume", metavar="RUN_ID", help="continue a failed or interrupted run")
    run.add_argument("--json", action="store_true",
                     help="print the report (with --dry-run: the plan) as one JSON object with a schema version")


def _add_inspection_parsers(commands: Any) -> None:
    """The commands that read playbooks and step types and change nothing."""
    validate = _command(
        commands, "validate", "check playbooks without running them",
        "Check playbooks without running them and without reaching any VM or cloud: the YAML, the keys, the step "
        "types and their `with:` parameters, templates, `when`, `retry` and `cleanup`. Every problem is printed at "
        "once, with file, line and key path.",
        "recovery validate playbooks/*.yaml\nrecovery validate --json my-playbook.yaml",
        "0    every playbook is valid\n2    a playbook is invalid or cannot be read",
    )
    validate.add_argument("playbooks", type=Path, nargs="+", metavar="PLAYBOOK")
    validate.add_argument("--json", action="store_true",
                          help="one JSON object: for each playbook, valid or not, its steps or its problems")

    steps = _command(
        commands, "steps", "list every step type with its inputs and outputs",
        "List every step type a playbook may use (built-in, and from installed plug-ins) with its inputs (type, "
        "required or default, description) and outputs. --schema prints a JSON Schema (draft 2020-12) of "
        "playbooks for editors: with the yaml-language-server (VS Code's YAML extension, neovim, Helix) a first "
        "line `# yaml-language-server: $schema=recovery-playbook.schema.json` completes and checks a playbook "
        "as it is typed.",
        "recovery steps | less\nrecovery steps --json\nrecovery steps --schema > recovery-playbook.schema.json",
        "0    printed\n2    an installed plug-in's steps cannot be loaded",
    )
    shape = steps.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the step types as one JSON object")
    shape.add_argument("--schema", action="store_true", help="a JSON Schema of playbooks, for editors")

    inputs = _command(
        commands, "inputs", "list a playbook's inputs and secrets, and where each may come from",
        "List a playbook's inputs (type, default or required, choices, sensitive, environment variable) and "
        "secrets, and where each may come from: -e NAME=VALUE, -e NAME=@FILE for a sensitive input, "
        "--secret NAME=@FILE, an environment variable, a prompt.",
        "recovery inputs playbooks/restore-access-serial.yaml\nrecovery inputs --json playbooks/rotate-keypair.yaml",
        "0    printed\n2    the playbook is invalid or cannot be read",
    )
    inputs.add_argument("playbook", type=Path, metavar="PLAYBOOK")
    inputs.add_argument("--json", action="store_true", help="one JSON object with a schema version")


def _add_lab_parsers(commands: Any) -> None:
    lab = _command(
        commands, "lab", "the built-in local lab VM (loopback only)",
        "The built-in lab: a throwaway VM-like target on 127.0.0.1 (a user with a console password, sshd, a "
        "serial console behind websockify, optionally a VNC one) to try recoveries on. `up` and `down` need root.",
        "sudo recovery lab up\nrecovery lab status\nsudo recovery lab down",
        "as each of up, status and down says (recovery lab up --help)",
    )
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, text, description, examples, exits in _LAB_COMMANDS:
        sub = _command(lab_commands, name, text, description, examples, exits)
        sub.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_LAB_DIR,
            metavar="DIR",
            help=f"lab directory (default {DEFAULT_LAB_DIR}); refused if another user could change it"
            + ("; created if missing" if name == "up" else ""),
        )
        if name in ("up", "status"):
            sub.add_argument("--json", action="store_true", help="print the lab as one JSON object (with a schema)")
        if name == "up":
            sub.add_argument("--console", choices=("serial", "vnc"), default="serial",
                             help="vnc adds a VNC console (x11vnc showing an xterm running login)")


def _add_revoke_parser(commands: Any) -> None:
    """`recovery revoke`; its flags live in recovery.revoke.command (standard library only at import)."""
    from recovery.revoke.command import add_arguments

    revoke = _command(
        commands, "revoke", "remove a stolen key from every host of a fleet, and prove it no longer logs in",
        "For every host, concurrently: log in with the admin key, remove the lines holding the key from the "
        "files sshd reads the user's keys from (AuthorizedKeysFile: authorized_keys2 and "
        "/etc/ssh/authorized_keys/%u too; every user's with --all-users; a backup first, owner and modes kept), "
        "read them back, and with --stolen-key prove the stolen key is now rejected (auth_rejected). Hosts that are "
        "down or reject the admin key are reported and the run goes on. No prompt: --dry-run looks first. "
        "With --cloud the hosts are the cloud's servers, and the Nova key pairs holding the key (those of the "
        "credentials' user) are deleted first, once confirmed: asked on a terminal, or --yes.",
        "recovery revoke --public-key stolen.pub --inventory hosts.yaml --key ~/.ssh/ops --dry-run\n"
        "recovery revoke --fingerprint SHA256:... --inventory hosts.yaml --key ~/.ssh/ops \\\n"
        "    --known-hosts known_hosts --stolen-key stolen_ed25519 --format json --output revoke.json\n"
        "recovery revoke --public-key stolen.pub --cloud prod --user ubuntu --key ~/.ssh/ops \\\n"
        "    --known-hosts known_hosts --yes",
        "0    every host is proven clean, and no Nova key pair holds the key\n1    a host still holds the key, "
        "accepts the stolen key, or could not be checked; a Nova key pair holding it was kept; the cloud "
        "could not be read\n2    usage errors, a cloud not in clouds.yaml (nothing was changed)\n"
        + _INTERRUPTED + "; the partial report was written",
    )
    add_arguments(revoke)


def _add_audit_parser(commands: Any) -> None:
    """`recovery audit`; its defaults and limits live in recovery.audit, imported only when it runs."""
    audit = _command(
        commands, "audit", "check that the expected key still logs in to every VM of a fleet",
        "Check, concurrently, that the expected key still logs in to every host of an inventory or cloud; "
        "optionally remediate failed hosts with a recovery playbook.",
        "recovery audit --inventory hosts.yaml --key ~/.ssh/ops --known-hosts known_hosts\n"
        "recovery audit --cloud mycloud --user ubuntu --key ~/.ssh/ops --accept-new \\\n"
        "    --format prometheus --output /var/lib/node_exporter/textfile/recovery.prom --shard 0/4\n"
        "recovery audit --inventory hosts.yaml --remediate playbooks/restore-access-serial.yaml --yes",
        "0    every host is ok\n1    a host failed (or could not be checked)\n2    usage errors\n" + _INTERRUPTED,
    )
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--inventory", type=Path, metavar="FILE",
        help="inventory: YAML (hosts: and defaults:), or an Ansible one (YAML or INI)",
    )
    source.add_argument(
        "--cloud",
        "--os-cloud",
        metavar="NAME",
        nargs="?",
        const="",
        help="audit every server of this clouds.yaml entry (no NAME: OS_CLOUD, or a sourced openrc)",
    )
    audit.add_argument(
        "-l", "--limit", metavar="PATTERN",
        help="only these inventory hosts: names, groups, '*' globs, joined by ':' or ','",
    )
    audit.add_argument("--server-filter", metavar="REGEX", help="with --cloud: only servers whose name matches")
    audit.add_argument("--network", help="with --cloud: network whose fixed address to use, lacking a floating one")
    audit.add_argument("--check-console", action="store_true",
                       help="with --cloud: also check a console can be opened and whether the guest agent is enabled")
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
    add_jump_flags(audit, key_default="the host's key")
    audit.add_argument(
        "--format", choices=("table", "json", "junit", "prometheus"), default="table", help="report format"
    )
    audit.add_argument("--output", type=Path, metavar="FILE", help="write the report here (atomically), not stdout")
    audit.add_argument("--shard", metavar="I/N", help="audit only shard I (from 0) of N")
    audit.add_argument("--remediate", type=Path, metavar="PLAYBOOK", help="run this recovery playbook for failed hosts")
    audit.add_argument("--max-remediations", type=int, default=1, metavar="N", help="remediate at most N hosts (1)")
    audit.add_argument("--yes", action="store_true", help="remediate without asking")
    audit.add_argument("--config", type=Path, metavar="FILE", help="config file for remediation runs")
    audit.add_argument("--journal", type=Path, metavar="DIR", help="root directory of remediation run journals")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, -v and -q counted wherever they were given.

    Raises:
        UsageError: bad arguments; an unknown flag comes with the flag probably meant.
    """
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
    except UsageError as exc:  # `recovery --verison`: "COMMAND is required" is not the whole story
        known = _every_flag(parser)
        words = sys.argv[1:] if argv is None else argv
        unknown = [word for word in words if word.startswith("--") and word.partition("=")[0] not in known]
        raise UsageError(f"{exc}{_flag_hint(parser, unknown, known)}") from None
    if extras:
        command = _command_parser(parser, args)
        command.print_usage(sys.stderr)
        raise UsageError(f"{command.prog}: unrecognized arguments: {' '.join(extras)}{_flag_hint(command, extras)}")
    args.verbose += getattr(args, "more_verbose", 0)
    args.quiet = args.quiet or getattr(args, "more_quiet", False)
    for name in ("more_verbose", "more_quiet"):
        if hasattr(args, name):
            delattr(args, name)
    if args.quiet and args.verbose:
        raise UsageError("recovery: -q and -v ask for less and for more output; give one of them")
    return args


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's commands by name (empty for a parser without commands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command (and lab command) that was given."""
    for dest in ("command", "lab_command"):
        chosen = subcommands(parser).get(getattr(args, dest, None) or "")
        if chosen is None:
            break
        parser = chosen
    return parser


def _every_flag(parser: argparse.ArgumentParser) -> list[str]:
    """The flags of a parser and of all its commands."""
    flags = [flag for action in parser._actions for flag in action.option_strings]
    return flags + [flag for sub in subcommands(parser).values() for flag in _every_flag(sub)]


def _flag_hint(parser: argparse.ArgumentParser, extras: Sequence[str], known: Sequence[str] = ()) -> str:
    """`--dryrun`: did you mean --dry-run?"""
    known = known or [flag for action in parser._actions for flag in action.option_strings]
    hints = []
    for word in extras:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
            hints += [f"{word}: did you mean {close[0]}?"] if close else []
    return f" ({'; '.join(hints)})" if hints else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for the console script and `python -m recovery`."""
    try:
        args = parse_arguments(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    from recovery.cli.log import setup_logging

    setup_logging(args.verbose, quiet=args.quiet)
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
    if args.command == "revoke":
        from recovery.revoke.command import run_revoke

        return run_revoke(args)
    if args.command == "validate":
        return command_validate(args.playbooks, as_json=args.json)
    if args.command == "steps":
        return command_steps(as_json=args.json, schema=args.schema)
    if args.command == "inputs":
        return command_inputs(args.playbook, as_json=args.json)
    if args.command == "completion":
        from recovery.cli.completion import completion_script

        print(completion_script(args.shell, build_parser()))
        return EXIT_OK
    if args.command == "lab":
        return command_lab(args)
    return command_demo(args.console, quiet=args.quiet)


def _print_json(document: dict[str, Any]) -> None:
    """Every JSON document the CLI prints starts with its `schema` version."""
    print(json.dumps({"schema": SCHEMA, **document}, indent=2))


# --- validate, steps and inputs --------------------------------------------------------------


def command_validate(paths: Sequence[Path], *, as_json: bool = False) -> int:
    from recovery.engine.playbook import load_playbook
    from recovery.errors import PlaybookError, Problem

    status = EXIT_OK
    results = []
    for path in paths:
        try:
            playbook = load_playbook(path)
        except PlaybookError as exc:
            problems, message = exc.problems, str(exc)
        except UsageError as exc:
            problems, message = [Problem(str(path), None, "", str(exc))], f"error: {exc}"
        else:
            results.append({"path": str(path), "valid": True, "steps": len(playbook.steps), "problems": []})
            if not as_json:
                print(f"{path}: ok ({len(playbook.steps)} steps)")
            continue
        status = EXIT_USAGE
        results.append({"path": str(path), "valid": False, "problems": [dataclasses.asdict(p) for p in problems]})
        if not as_json:
            print(message, file=sys.stderr)
    if as_json:
        _print_json({"playbooks": results})
    return status


def command_steps(*, as_json: bool = False, schema: bool = False) -> int:
    from recovery.engine.catalog import step_types

    types = step_types()
    if schema:
        from recovery.engine.schema import playbook_schema

        print(json.dumps(playbook_schema(types), indent=2))
        return EXIT_OK
    if as_json:
        _print_json({"steps": [_step_type_json(step_type) for step_type in types.values()]})
        return EXIT_OK
    for step_type in types.values():
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


def _step_type_json(step_type: StepType) -> dict[str, Any]:
    return {
        "name": step_type.name,
        "summary": step_type.summary,
        "repeatable": step_type.repeatable,
        "retryable": step_type.retryable,
        "changes": step_type.changes,
        "inputs": [
            {"name": spec.name, "type": spec.type_name, "required": spec.required,
             "default": None if spec.required else spec.default, "description": spec.description}
            for spec in step_type.inputs()
        ],
        "outputs": dict(step_type.outputs),
    }


def command_inputs(path: Path, *, as_json: bool = False) -> int:
    """`recovery inputs`: what a playbook asks for, and every way to give it, in the order a run looks."""
    from recovery.engine.playbook import load_playbook

    playbook = load_playbook(path)
    inputs = [_input_json(decl) for decl in playbook.inputs.values()]
    secrets = [_secret_json(decl) for decl in playbook.secrets.values()]
    if as_json:
        _print_json({"playbook": str(path), "name": playbook.name, "inputs": inputs, "secrets": secrets})
        return EXIT_OK
    lines = [f"{path}: {playbook.name}", "", "inputs (-e NAME=VALUE):" if inputs else "inputs: none"]
    for item in inputs:
        facts = [item["type"], "required" if item["required"] else f"default {json.dumps(item['default'])}"]
        facts += ["one of " + ", ".join(map(str, item["choices"]))] if item["choices"] else []
        facts += ["sensitive: masked, never saved"] if item["sensitive"] else []
        lines.append(f"  {item['name']} ({'; '.join(facts)})" + (f": {item['description']}" if item["description"]
                                                               else ""))
        if len(item["sources"]) > 1:
            lines.append(f"      from: {', '.join(source['text'] for source in item['sources'])}")
    lines += ["", "secrets:" if secrets else "secrets: none"]
    for item in secrets:
        lines.append(f"  {item['name']} ({'required' if item['required'] else 'optional'})"
                     + (f": {item['description']}" if item["description"] else ""))
        lines.append(f"      from: {', '.join(source['text'] for source in item['sources'])}")
    print("\n".join(lines))
    return EXIT_OK


def _input_json(decl: InputDecl) -> dict[str, Any]:
    sources = [{"kind": "option", "text": f"-e {decl.name}=VALUE"}]
    if decl.sensitive:
        sources.append({"kind": "file", "text": f"-e {decl.name}=@FILE"})
    if decl.env:
        sources.append({"kind": "env", "text": f"environment variable {decl.env}"})
    return {
        "name": decl.name, "type": decl.type, "required": decl.required, "default": decl.default,
        "choices": list(decl.choices), "sensitive": decl.sensitive, "env": decl.env,
        "description": decl.description.strip(), "sources": sources,
    }


def _secret_json(decl: SecretDecl) -> dict[str, Any]:
    sources = [{"kind": "file", "text": f"--secret {decl.name}=@FILE"}]
    if decl.env:
        sources.append({"kind": "env", "text": f"environment variable {decl.env}"})
    if decl.prompt:
        sources.append({"kind": "prompt", "text": f"a prompt on a terminal ({decl.prompt!r})"})
    return {
        "name": decl.name, "required": decl.required, "env": decl.env, "prompt": decl.prompt,
        "description": decl.description.strip(), "sources": sources,
    }


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
    from recovery.engine.cancel import CancelToken
    from recovery.engine.signals import interrupt_on_signals

    if args.dry_run and args.json:
        return _dry_run_json(args)
    disable_core_dumps()
    cancel = CancelToken()
    with interrupt_on_signals(on_signal=cancel.cancel):
        return _run(args, cancel)


def _prepare(args: argparse.Namespace) -> tuple[Config, Playbook, dict[str, str]]:
    """What `run` and `run --dry-run --json` both start from: the config, the playbook and its `-e` inputs."""
    from recovery.engine.config import load_config
    from recovery.engine.playbook import load_playbook
    from recovery.engine.sources import input_values

    config = load_config(args.config)
    if args.cloud:
        config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name=args.cloud))
    playbook = load_playbook(args.playbook)
    given, notes = input_values(playbook, _pairs(args.inputs, "-e"), os.environ)
    for note in [] if args.quiet else notes:
        print(note, file=sys.stderr)
    return config, playbook, given


def _dry_run_json(args: argparse.Namespace) -> int:
    """`run --dry-run --json`: the plan as one JSON object, for programs; the pre-flight refuses as the run would."""
    import recovery.api

    config, playbook, given = _prepare(args)
    plan = recovery.api.dry_run_plan(
        playbook, given, config=config, journal_root=args.journal or config.journal.dir, resume=args.resume
    )
    print(json.dumps(plan, indent=2))
    return EXIT_OK


def _run(args: argparse.Namespace, cancel: CancelToken) -> int:
    import getpass

    import recovery.api
    from recovery.cli.hints import resume_command
    from recovery.engine.journal import STATUS_INTERRUPTED, STATUS_SUCCEEDED
    from recovery.engine.report import exit_code, summary_line
    from recovery.engine.sources import secret_values

    config, playbook, given = _prepare(args)
    journal_root = args.journal or config.journal.dir
    # Every check the run makes before it changes anything, before any password prompt: a typo or an
    # unknown run id is exit 2 at once, not after the password was typed.
    plan = recovery.api.dry_run(playbook, given, config=config, journal_root=journal_root, resume=args.resume)
    if args.dry_run:
        print(plan)
        return EXIT_OK
    prompt = getpass.getpass if sys.stdin.isatty() else None
    secrets = secret_values(playbook, _pairs(args.secret, "--secret"), os.environ, prompt=prompt,
                            in_use=recovery.api.secrets_in_use(playbook, given, config=config,
                                                               journal_root=journal_root, resume=args.resume))
    _quiet_if_unmaskable(secrets.values())
    try:
        report = recovery.api.run(
            playbook, given, secrets, config=config, journal_root=journal_root, resume=args.resume,
            cancel=cancel, progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
            confirm=_yes_on_terminal if sys.stdin.isatty() else None,
        )
    except recovery.api.RunInterrupted as interrupted:
        report = interrupted.report
    _print_report(report, args.json)
    resume = resume_command(
        playbook, report.run_id, journal_root=args.journal, cloud=args.cloud, config=args.config, given=given,
        secret_files=args.secret,
    )
    if report.status == STATUS_INTERRUPTED:
        _print_interrupted(report, resume)
    elif report.journal_error:
        print(f"error: {report.journal_error}", file=sys.stderr)
    else:
        print(summary_line(report), file=sys.stderr)
        if report.status != STATUS_SUCCEEDED:
            print(f"to resume once the cause is fixed:\n  {resume}", file=sys.stderr)
    return exit_code(report)


def _yes_on_terminal(question: str) -> bool:
    """A yes/no question on stderr (stdout carries the report); anything but y or yes is a no."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _quiet_if_unmaskable(secrets: Iterable[Secret]) -> None:
    """A secret of 1-3 characters cannot be scrubbed: no debug output for this run (the report says so)."""
    from recovery.safety.redact import too_short_to_mask

    if any(too_short_to_mask(value) for value in secrets):
        from recovery.cli.log import without_debug_output

        without_debug_output("a secret shorter than 4 characters is held and could not be masked")


def _print_interrupted(report: RunReport, resume: str) -> None:
    """What an interrupted operator needs at once: what the cleanup did, where the report is, how to go on."""
    lines = [f"interrupted{f' during step {report.failed_step}' if report.failed_step else ''}."]
    lines += [f"  {change}" for change in report.vm_changes if "cut off mid-way" in change]
    done = report.rolled_back
    lines.append("cleanup done (newest first): " + ("; ".join(done) if done else "nothing was left to clean up"))
    lines += [f"  {note}" for note in report.notes if note.startswith("cleanup")]
    lines.append(f"report: {Path(report.journal) / 'report.md'}")
    lines.append(f"resume with:\n  {resume}")
    print("\n".join(lines), file=sys.stderr)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.to_json())
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
    from recovery.engine.signals import interrupt_on_signals
    from recovery.lab import summary

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


def command_demo(console: str, *, quiet: bool = False) -> int:
    """`recovery demo`: SIGTERM and SIGHUP take the Ctrl-C path (the lab is stopped), no core dumps."""
    from recovery.cli.demo import run_demo
    from recovery.engine.signals import interrupt_on_signals

    disable_core_dumps()
    with interrupt_on_signals():
        return run_demo(console=console, quiet=quiet)
