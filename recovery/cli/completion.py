"""Shell completion scripts for `recovery completion bash|zsh|fish`.

The scripts are small and hand-written; the words they offer (commands, flags,
choices, which flags take a file) are read from the CLI's argparse parser when the
script is printed, so a new flag completes without anyone editing a script.
Playbooks complete as `*.yaml`/`*.yml` files (and directories, to walk into).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["completion_script"]

_FILE_METAVARS = ("FILE", "DIR", "PATH", "PLAYBOOK")  # flags whose value completes as a file name


@dataclass
class _Command:
    """One command's words: its flags, those that take a value, and what the value completes as."""

    path: str  # "run", "lab up"
    flags: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # flags whose value is a file or directory
    choices: dict[str, list[str]] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)  # flags taking some other value (-e NAME=VALUE)
    positional: str = ""  # "file", "playbook", or the choices of a positional, space-separated
    subcommands: list[str] = field(default_factory=list)


def _commands(parser: argparse.ArgumentParser, path: str = "") -> list[_Command]:
    command = _Command(path)
    found = [command]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                command.subcommands.append(name)
                found += _commands(sub, f"{path} {name}".strip())
        elif action.option_strings:
            flags = list(action.option_strings)
            command.flags += flags
            if action.nargs == 0:
                continue
            for flag in flags:
                if action.choices:
                    command.choices[flag] = [str(choice) for choice in action.choices]
                elif action.type is Path or action.metavar in _FILE_METAVARS:
                    command.files.append(flag)
                else:
                    command.values.append(flag)
        elif action.choices:
            command.positional = " ".join(str(choice) for choice in action.choices)
        elif action.type is Path:
            command.positional = "playbook" if "PLAYBOOK" in str(action.metavar) else "file"
    return found


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    commands = _commands(parser)
    if shell == "fish":
        return _fish(commands)
    script = _bash(commands)
    if shell == "zsh":
        # zsh runs bash completion functions through bashcompinit (compinit must have run first):
        # `source <(recovery completion zsh)` in ~/.zshrc.
        return "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


_BASH = """\
# recovery completion for bash: source <(recovery completion bash)
_recovery() {
    local cur prev path="" word i
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    COMPREPLY=()
    # The command path: the words that name commands (`lab up`), skipping flags and their values.
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -*) case " $(_recovery_takes_value "$path") " in *" $word "*) ((i++)) ;; esac ;;
            *) case " $(_recovery_subcommands "$path") " in
                   *" $word "*) path="${path:+$path }$word" ;;
               esac ;;
        esac
    done
    case " $(_recovery_files "$path") " in
        *" $prev "*) _recovery_complete_files "$cur" any; return 0 ;;
    esac
    local choices
    choices="$(_recovery_choices "$path" "$prev")"
    if [[ -n "$choices" ]]; then
        COMPREPLY=($(compgen -W "$choices" -- "$cur")); return 0
    fi
    case " $(_recovery_values "$path") " in
        *" $prev "*) return 0 ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_recovery_flags "$path")" -- "$cur")); return 0
    fi
    local subs
    subs="$(_recovery_subcommands "$path")"
    if [[ -n "$subs" ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur")); return 0
    fi
    case "$(_recovery_positional "$path")" in
        playbook) _recovery_complete_files "$cur" playbook ;;
        file) _recovery_complete_files "$cur" any ;;
        "") ;;
        *) COMPREPLY=($(compgen -W "$(_recovery_positional "$path")" -- "$cur")) ;;
    esac
}

_recovery_complete_files() {
    local IFS=$'\\n'
    if [[ "$2" == playbook ]]; then
        COMPREPLY=($(compgen -d -- "$1") $(compgen -f -X '!*.yaml' -- "$1") $(compgen -f -X '!*.yml' -- "$1"))
    else
        COMPREPLY=($(compgen -f -- "$1"))
    fi
    compopt -o filenames 2>/dev/null  # not in zsh, nor outside a completion
}

"""


def _bash(commands: list[_Command]) -> str:
    tables = {
        "subcommands": {c.path: " ".join(c.subcommands) for c in commands},
        "flags": {c.path: " ".join(c.flags) for c in commands},
        "files": {c.path: " ".join(c.files) for c in commands},
        "values": {c.path: " ".join(c.values) for c in commands},
        "positional": {c.path: c.positional for c in commands},
        "takes_value": {c.path: " ".join([*c.files, *c.values, *c.choices]) for c in commands},
    }
    out = [_BASH]
    for name, table in tables.items():
        out.append(f"_recovery_{name}() {{\n    case \"$1\" in")
        out += [f"        {shlex.quote(path)}) echo {shlex.quote(words)} ;;" for path, words in table.items() if words]
        out.append("    esac\n}\n")
    out.append("_recovery_choices() {\n    case \"$1 $2\" in")
    for command in commands:
        for flag, choices in command.choices.items():
            out.append(f"        {shlex.quote(f'{command.path} {flag}')}) echo {shlex.quote(' '.join(choices))} ;;")
    out.append("    esac\n}\n")
    out.append("complete -F _recovery recovery")
    return "\n".join(out) + "\n"


def _fish(commands: list[_Command]) -> str:
    """fish: one `complete` line per word; a condition on the words already given picks the command."""
    lines = ["# recovery completion for fish: recovery completion fish > ~/.config/fish/completions/recovery.fish",
             "complete -c recovery -f"]
    for command in commands:
        words = command.path.split()
        if words:
            seen = " && ".join(f"__fish_seen_subcommand_from {word}" for word in words)
        else:
            seen = "__fish_use_subcommand"
        if command.subcommands:
            last = f"; and not __fish_seen_subcommand_from {' '.join(command.subcommands)}" if words else ""
            names = shlex.quote(" ".join(command.subcommands))
            lines.append(f"complete -c recovery -n {shlex.quote(seen + last)} -a {names}")
        for flag in command.flags:
            option = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            extra = ""
            if flag in command.files:
                extra = " -r -F"
            elif flag in command.choices:
                extra = f" -r -a {shlex.quote(' '.join(command.choices[flag]))}"
            elif flag in command.values:
                extra = " -r"
            lines.append(f"complete -c recovery -n {shlex.quote(seen)} {option}{extra}")
        if command.positional in ("playbook", "file"):
            lines.append(f"complete -c recovery -n {shlex.quote(seen)} -F")
        elif command.positional:
            lines.append(f"complete -c recovery -n {shlex.quote(seen)} -a {shlex.quote(command.positional)}")
    return "\n".join(lines) + "\n"
