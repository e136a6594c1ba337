"""`recovery audit`: does the expected key still log in to every VM of a fleet, and if not, why?

From Python, `check(hosts, ...)` returns an `AuditReport` (see `recovery.audit.api`);
the command line stands on it. One module per job:

    model.py            hosts, results, the report (plain dataclasses)
    api.py              check(): the audit as a function, the CLI's and any program's
    inventory.py        the YAML inventory, checked with file:line for every problem
    ansible_inventory.py  an Ansible inventory (YAML or INI) instead, told apart by content
    ansible_groups.py   Ansible's groups, children and variable precedence, as hosts
    host_limit.py       `--limit`: host names, groups and globs, for both
    cloud_inventory.py  a cloud's servers as hosts (`--cloud`), and console checks
    shard.py            `--shard I/N`, a stable split by host name
    engine.py           one host's check over SSH: the engine boundary, host keys and failures named
    libssh2_engine.py   the default engine (ssh2-python)
    paramiko_engine.py  the engine where ssh2-python cannot be imported
    scheduler.py        worker threads, results in order, Ctrl-C or a cancel keeps what is done
    progress.py         the live line on a terminal
    remediate.py        recovery playbook runs for failed hosts, within a limit
    render.py           table, JSON, JUnit XML, Prometheus textfile
    command.py          the command itself: flags, wiring, exit codes

Names are imported on first use, so `recovery --help` does not load any of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recovery.audit.api import MAX_CONCURRENCY, AuditInterrupted, check
    from recovery.audit.engine import ENGINES, AuditKey, HostTrust, load_keys
    from recovery.audit.model import AuditReport, ConsoleAccess, Host, HostResult, Status
    from recovery.audit.render import FORMATS, render
    from recovery.ssh.hostkeys import KnownHosts, KnownHostsAppender

__all__ = [
    "ENGINES",
    "FORMATS",
    "MAX_CONCURRENCY",
    "AuditInterrupted",
    "AuditKey",
    "AuditReport",
    "ConsoleAccess",
    "Host",
    "HostResult",
    "HostTrust",
    "KnownHosts",
    "KnownHostsAppender",
    "Status",
    "check",
    "load_keys",
    "render",
]

_HOMES = {
    "check": "recovery.audit.api",
    "AuditInterrupted": "recovery.audit.api",
    "MAX_CONCURRENCY": "recovery.audit.api",
    "ENGINES": "recovery.audit.engine",
    "AuditKey": "recovery.audit.engine",
    "HostTrust": "recovery.audit.engine",
    "load_keys": "recovery.audit.engine",
    "AuditReport": "recovery.audit.model",
    "ConsoleAccess": "recovery.audit.model",
    "Host": "recovery.audit.model",
    "HostResult": "recovery.audit.model",
    "Status": "recovery.audit.model",
    "FORMATS": "recovery.audit.render",
    "render": "recovery.audit.render",
    "KnownHosts": "recovery.ssh.hostkeys",
    "KnownHostsAppender": "recovery.ssh.hostkeys",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'recovery.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
