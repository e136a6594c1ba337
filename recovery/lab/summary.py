"""What `lab up` and `lab status` tell their user: how to recover the lab VM, and what to do when it is broken.

Text for people and one JSON object (with a `schema` version) for programs, built
from the same facts, so the two never disagree. Every command shown can be pasted
as it is: `program()` says how to run this installation from a shell.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery.cli.hints import program
from recovery.lab import vnc
from recovery.lab.layout import Layout

if TYPE_CHECKING:
    from recovery.lab.lab import LabInfo, LabStatus

__all__ = ["SCHEMA", "document", "next_step", "program", "recovery_command", "render_status", "render_up"]

# Version of the JSON object `lab up --json` and `lab status --json` print; raised when a field changes meaning.
SCHEMA = 1
# The port `lab status` checks for each part, to name the log that explains a closed port.
_PORT_OWNERS = {"ssh": "sshd", "console": "websockify", "serial_port": "serial_port", "vnc": "x11vnc"}


def recovery_command(info: LabInfo, console: str, playbooks: Path) -> str:
    """The complete `recovery run` that recovers the lab through `console`.

    The password and the console URL (its token) are read from the lab's files,
    so neither appears in the process list.
    """
    words = [
        f"{program()} run",
        shlex.quote(str(playbooks / f"restore-access-{console}.yaml")),
        f"--secret console_password=@{shlex.quote(str(info.console_password_file))}",
        f"-e console_url=@{shlex.quote(str(Layout(info.directory).console_url(console)))}",
        f"-e ssh_host={info.ssh_host} -e ssh_port={info.ssh_port} -e user={info.user}",
        f"-e host_key_fingerprint={info.host_key_fingerprint}",
    ]
    return " ".join(words)


def next_step(info: LabInfo, status: LabStatus) -> str | None:
    """What to do about an unhealthy lab (None when it is healthy): what broke, its log, and the restart."""
    if status.healthy:
        return None
    layout = Layout(info.directory)
    logs = {
        "sshd": layout.sshd_log,
        "serial_port": layout.serial_port_log,
        "websockify": layout.websockify_log,
        **{name: info.directory / file for name, file in vnc.LOGS.items()},
    }
    broken = [name for name, running in status.processes.items() if not running]
    broken += [_PORT_OWNERS[port] for port, up in status.ports.items() if not up and _PORT_OWNERS[port] not in broken]
    problems = [f"{name} is down (its log: {logs[name]})" for name in broken if name in logs]
    if not status.user_exists:
        problems.append(f"the user {info.user} was deleted")
    restart = f"{program()} lab down --dir {shlex.quote(str(info.directory))} && {program()} lab up --dir " + (
        shlex.quote(str(info.directory)) + (" --console vnc" if info.vnc_console_url else "")
    )
    return f"What broke: {'; '.join(problems)}. Start the lab afresh (a new user, keys and ports): {restart}"


def document(info: LabInfo, playbooks: Path, status: LabStatus | None = None) -> dict[str, Any]:
    """The JSON object of `lab up --json` (no `status`) and `lab status --json`.

    Every field of lab.json (no secret: the password stays in its file), the
    recovery command per console, and with `status` the health and next step.
    """
    data: dict[str, Any] = {"schema": SCHEMA, **json.loads(info.to_json())}
    data["recovery_commands"] = {console: recovery_command(info, console, playbooks) for console in info.consoles}
    if status is not None:
        data.update(
            healthy=status.healthy,
            user_exists=status.user_exists,
            processes=status.processes,
            ports=status.ports,
            next_step=next_step(info, status),
        )
    return data


def render_up(info: LabInfo, console: str, playbooks: Path) -> str:
    """The text `lab up` prints: where everything is, and the command that recovers the lab."""
    return "\n".join(
        [
            f"lab VM up in {info.directory} (details in {Layout(info.directory).info})",
            *_facts(info),
            "recover it with:",
            f"  {recovery_command(info, console, playbooks)}",
        ]
    )


def render_status(info: LabInfo, status: LabStatus, playbooks: Path) -> str:
    """The text `lab status` prints: health of each part, the facts, then the next step or the commands."""
    lines = [
        f"lab in {status.directory}: {'healthy' if status.healthy else 'NOT healthy'}",
        *_facts(info),
        f"  user {status.user}: {'present' if status.user_exists else 'missing'}",
        *(f"  process {name}: {'running' if alive else 'stopped'}" for name, alive in status.processes.items()),
        *(f"  port {name}: {'listening' if listening else 'closed'}" for name, listening in status.ports.items()),
    ]
    step = next_step(info, status)
    if step is not None:
        lines += ["next step:", f"  {step}"]
    else:
        for console in info.consoles:
            lines += [f"recover it through its {console} console with:"]
            lines += [f"  {recovery_command(info, console, playbooks)}"]
    return "\n".join(lines)


def _facts(info: LabInfo) -> list[str]:
    facts = [
        *((f"console_url ({console})", info.url_of(console)) for console in info.consoles),
        ("ssh", f"{info.user}@{info.ssh_host} port {info.ssh_port}"),
        ("host key", info.host_key_fingerprint),
        ("console password", f"in {info.console_password_file}"),
    ]
    width = max(len(label) for label, _ in facts) + 1
    return [f"  {label + ':':<{width}} {value}" for label, value in facts]
