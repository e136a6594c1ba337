"""Where a run's inputs and secrets come from: `-e`, `@FILE`, the environment, a prompt.

Kept apart from the CLI because the audit's remediation reads its inventory's
`secrets:` files the same way, and an application using `recovery.run` may too.
Nothing here prints: what a user should be told comes back as notes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from recovery.engine.playbook import Playbook
from recovery.errors import UsageError
from recovery.safety.readers import SECRET_LIMIT, read_text
from recovery.safety.redact import Secret

__all__ = ["Prompt", "input_values", "secret_values"]

Prompt = Callable[[str], str]
"""Asks the operator for a secret without echo (getpass.getpass); None where nobody can answer."""


def input_values(
    playbook: Playbook, given: Mapping[str, str], env: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """`-e` values, with a sensitive input's `@FILE` read, and inputs not given taken from their `env:`.

    A sensitive value on the command line is visible to every local user in `ps`; it
    still works (scripts use it), with a note saying how to keep it out. An input taken
    from the environment gets a note too: a stale export must not act unseen.

    Returns:
        The values, and the notes for the operator.

    Raises:
        UsageError: an `@FILE` cannot be read.
    """
    values = dict(given)
    notes = []
    for name, value in given.items():
        decl = playbook.inputs.get(name)
        if decl is None or not decl.sensitive:
            continue
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            values[name] = read_text(path, what=f"-e {name}=@FILE", limit=SECRET_LIMIT).rstrip("\r\n")
        elif value:
            where = f"-e {name}=@FILE" + (f" or {decl.env}" if decl.env else "")
            notes.append(f"note: -e {name}=... is visible to every local user in the process list; use {where}")
    for name, decl in playbook.inputs.items():
        if name not in values and decl.env and env.get(decl.env):
            values[name] = env[decl.env]
            notes.append(f"input {name}: from {decl.env}")
    return values, notes


def secret_values(
    playbook: Playbook, given: Mapping[str, str], env: Mapping[str, str], *, prompt: Prompt | None,
    in_use: Collection[str] | None = None,
) -> dict[str, Secret]:
    """Each declared secret from `NAME=@FILE`, else its environment variable, else `prompt`.

    A secret not `in_use` (`preflight.secrets_in_use`: no step that runs refers to it) is neither
    prompted for nor required.

    Raises:
        UsageError: a required secret has no source, a given one is not `@FILE`, or its file is empty.
    """
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
            text = read_text(Path(source[1:]).expanduser(), what=f"--secret {name} file", limit=SECRET_LIMIT)
            value = text.rstrip("\r\n")
            if not value:
                # `<(pass show x)` whose command failed gives an empty pipe: never type an empty password.
                raise UsageError(f"--secret {name}: {source[1:]} is empty (did the command behind it fail?)")
            values[name] = Secret(value, f"<{name}>")
        elif decl.env and env.get(decl.env):
            values[name] = Secret(env[decl.env], f"<{name}>")
        elif in_use is not None and name not in in_use:
            continue
        elif prompt is not None and decl.prompt is not None:
            values[name] = Secret(prompt(f"{decl.prompt}: "), f"<{name}>")
        elif decl.required:
            hint = f"set {decl.env}, " if decl.env else ""
            raise UsageError(f"secret {name!r} is missing: {hint}or pass --secret {name}=@FILE")
    return values
