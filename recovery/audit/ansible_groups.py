"""An Ansible inventory as its plugins build it: groups, hosts, their variables, and each host's `Host`.

The readers (`recovery.audit.ansible_inventory`) fill it; this module holds what is
true whatever the format: `all` above every top group, hosts of no group in
`ungrouped`, a group's depth as the longest path from `all`, variables merged as
Ansible merges them (`all`, then groups by depth, `ansible_group_priority` and
name, then the host's own), and the variables that say where and as whom a host is
reached turned into the audit's `Host`, or into a problem naming the line.

The `ansible_ssh_*` legacy names are read; where both names of a pair are set the
`ansible_ssh_*` one wins, at whatever level, as in Ansible's ssh and paramiko
connection plugins, so a host is reached as Ansible reaches it. A relative
`ansible_ssh_private_key_file` is taken from the current directory, as ssh takes it
under Ansible (the project's own `key:` is relative to the inventory instead).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from recovery.audit.inventory import HostDefaults
from recovery.audit.model import Host
from recovery.errors import Problem, UsageError
from recovery.safety import readers

__all__ = ["JINJA", "VAULT_HEADER", "VAULT_PROBLEM", "HostEntry", "Inventory", "Var"]

JINJA = re.compile(r"\{[{%#]")  # where a Jinja expression, statement or comment opens
VAULT_HEADER = "$ANSIBLE_VAULT"
VAULT_PROBLEM = (
    "a vault-encrypted value: recovery does not decrypt Ansible Vault. It reads only where and how hosts are "
    "reached (ansible_host, ansible_port, ansible_user, the key): give it a copy of the inventory without the "
    "encrypted values"
)
_SPACE = re.compile(r"\s")
_HOST_PORT = re.compile(r"([^:\s]+):([0-9]{1,5})")
_PORT_TEXT = re.compile(r"[0-9]{1,5}")
_MAX_PORT = 65535
# Group memberships worked out (ancestor sets, each host's groups): 10,000 hosts in 20 nested groups
# each are 200,000; a hostile file of groups under many parents at many levels would take minutes.
_WORK_LIMIT = 2_000_000

# The variables read, each with its alias; the last one set wins, as in Ansible's ssh connection plugin.
_ADDRESS = ("ansible_host", "ansible_ssh_host")
_PORT = ("ansible_port", "ansible_ssh_port")
_USER = ("ansible_user", "ansible_ssh_user")
_KEY = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_CONNECTION = ("ansible_connection",)
_SSH_ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
_READ = (*_ADDRESS, *_PORT, *_USER, *_KEY, *_CONNECTION, *_SSH_ARGS)
_SSH_CONNECTIONS = {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh"}
_LOCAL_CONNECTIONS = {"local", "ansible.builtin.local"}
_JUMP_OPTIONS = re.compile(r"ProxyJump|ProxyCommand|(?:^|\s)-J", re.IGNORECASE)


@dataclass(frozen=True)
class Var:
    """A variable as written: its value (None when it is a list or mapping, never read) and where."""

    value: str | int | float | bool | None
    line: int | None
    scalar: bool = True


@dataclass
class Group:
    """A group: its own variables, children, hosts; depth and ancestors once `Inventory.finish` ran."""

    name: str
    vars: dict[str, Var] = field(default_factory=dict)
    children: dict[str, int | None] = field(default_factory=dict)  # child -> the line naming it
    hosts: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    depth: int = 0
    ancestors: frozenset[str] = frozenset()


@dataclass
class HostEntry:
    """A host as written: where it first appears, its own variables, the groups that list it."""

    line: int | None
    vars: dict[str, Var] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


class Inventory:
    """Groups and hosts as Ansible's inventory plugins build them, and the problems found on the way."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.groups: dict[str, Group] = {"all": Group("all")}
        self.hosts: dict[str, HostEntry] = {}
        self.problems: list[Problem] = []
        self.skipped: list[str] = []
        self._order: list[str] = []
        self._work = 0
        self._memberships: dict[str, frozenset[str]] = {}
        self._ranks: dict[str, tuple[int, int, str]] = {}

    def problem(self, line: int | None, path: str, message: str) -> None:
        found = Problem(self.file, line, path, message)
        if found not in self.problems:
            self.problems.append(found)

    def raise_problems(self) -> None:
        if not self.problems:
            return
        problems = sorted(self.problems, key=lambda p: p.line or 0)
        count = len(problems)
        head = "invalid Ansible inventory" if count == 1 else f"invalid Ansible inventory ({count} problems)"
        raise UsageError(head + ":\n" + "\n".join(f"  {problem}" for problem in problems))

    def vault(self, line: int | None, path: str) -> None:
        self.problem(line, path, VAULT_PROBLEM)

    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
            self._order.append(name)
        return self.groups[name]

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        self.group(parent).children.setdefault(child, line)
        self.group(child).parents.add(parent)

    def add_host(self, pattern: str, group: str, line: int | None, path: str) -> HostEntry | None:
        """The host a host pattern names (`name`, `name:port`, an IPv6 address), now a member of `group`."""
        name, port = self.host_pattern(pattern, line, path)
        if name is None:
            return None
        entry = self.hosts.setdefault(name, HostEntry(line))
        if group not in entry.groups:
            entry.groups.append(group)
            self.group(group).hosts.append(name)
        if port is not None:
            entry.vars["ansible_port"] = Var(port, line)
        return entry

    def host_pattern(self, pattern: str, line: int | None, path: str) -> tuple[str | None, int | None]:
        if not pattern or _SPACE.search(pattern):
            self.problem(line, path, f"{pattern!r} is not a host name (empty, or with spaces)")
            return None, None
        if JINJA.search(pattern):
            self.problem(line, path, f"host {pattern!r}: Jinja in a host name is not evaluated by recovery")
            return None, None
        if "[" in pattern:
            self.problem(
                line, path,
                f"host {pattern!r} is a host range, which recovery does not expand: list the hosts one by one "
                f"(ansible-inventory -i FILE --list --yaml --output hosts.yaml does it where Ansible is installed)",
            )
            return None, None
        with_port = _HOST_PORT.fullmatch(pattern)
        if with_port:
            port = int(with_port.group(2))
            if not 1 <= port <= _MAX_PORT:
                self.problem(line, path, f"host {pattern!r}: the port must be 1 to {_MAX_PORT}")
                return None, None
            return with_port.group(1), port
        return pattern, None

    def finish(self) -> None:
        """Top groups under `all`, hosts in no group under `ungrouped`, then depths and ancestors (or loops)."""
        for name in self._order:
            group = self.groups[name]
            if not group.parents and name != "all":
                self.add_child("all", name, None)
        loose = [name for name, entry in self.hosts.items() if set(entry.groups) <= {"all"}]
        if loose:
            for name in loose:
                self.hosts[name].groups.append("ungrouped")
                self.group("ungrouped").hosts.append(name)
            if not self.groups["ungrouped"].parents:
                self.add_child("all", "ungrouped", None)
        self._order_groups()

    def _order_groups(self) -> None:
        """Depth (the longest path from `all`, as Ansible), then ancestors, in topological order.

        A loop is a problem, and so is nesting deeper than `readers.MAX_DEPTH`, found before any
        ancestor set is built: a chain of 100,000 groups would otherwise take minutes.
        """
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order: list[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            group = self.groups[name]
            for child in group.children:
                below = self.groups[child]
                below.depth = max(below.depth, group.depth + 1)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        looped = sorted(name for name, count in waiting.items() if count > 0)
        if looped:
            lines = [line for name in looped for line in self.groups[name].children.values() if line]
            self.problem(
                min(lines) if lines else None, "",
                f"groups are their own ancestors through children: ({', '.join(looped[:10])}): Ansible refuses "
                "such a loop too",
            )
            return
        deepest = max((self.groups[name] for name in order), key=lambda group: group.depth)
        if deepest.depth > readers.MAX_DEPTH:
            self.problem(None, "", f"groups are nested more than {readers.MAX_DEPTH} levels deep (down to "
                         f"{deepest.name!r}), far more than a real inventory")
            return
        for name in order:
            group = self.groups[name]
            lineage = group.ancestors | {name}
            for child in group.children:
                below = self.groups[child]
                below.ancestors = below.ancestors | lineage
                self._spend(len(below.ancestors))

    def _spend(self, work: int) -> None:
        """Count group memberships worked out; a file that needs more than `_WORK_LIMIT` is refused."""
        self._work += work
        if self._work > _WORK_LIMIT:
            raise UsageError(
                f"{self.file}: its groups and hosts make more than {_WORK_LIMIT:,} group memberships once children "
                "are followed (groups under many parents at many levels): far more than a real inventory, so "
                "recovery stops here"
            )

    def members(self) -> dict[str, list[str]]:
        """Every group's hosts, those of its descendants included, in inventory order."""
        found: dict[str, list[str]] = {name: [] for name in self.groups}
        for host in self.hosts:
            for name in self._groups_of(host):
                found[name].append(host)
        return found

    def _groups_of(self, host: str) -> frozenset[str]:
        if host not in self._memberships:
            entry = self.hosts[host]
            groups = frozenset({"all"}.union(*(self.groups[name].ancestors | {name} for name in entry.groups)))
            self._spend(len(groups))
            self._memberships[host] = groups
        return self._memberships[host]

    def effective_vars(self, name: str) -> dict[str, Var]:
        """`all`, then groups by (depth, ansible_group_priority, name), then the host: later wins, as Ansible."""
        merged: dict[str, Var] = {}
        for group in sorted(self._groups_of(name), key=self._rank):
            merged.update(self.groups[group].vars)
        merged.update(self.hosts[name].vars)
        return merged

    def _rank(self, name: str) -> tuple[int, int, str]:
        if name in self._ranks:
            return self._ranks[name]
        group = self.groups[name]
        priority = group.vars.get("ansible_group_priority")
        value = priority.value if priority is not None else 1
        try:
            number = int(value) if not isinstance(value, bool) and value is not None else 1
        except ValueError:
            self.problem(priority.line if priority else None, f"{name}.ansible_group_priority",
                         f"expected a whole number, got {value!r}")
            number = 1
        self._ranks[name] = (group.depth, number, name)
        return self._ranks[name]

    def host(self, name: str, fallback: HostDefaults) -> Host | None:
        """The audit's `Host` for an inventory host, or None (a problem recorded, or skipped as local)."""
        values = self.effective_vars(name)
        read: dict[str, str | int] = {}
        for var in _READ:
            if var in values:
                value, problem = values[var].value, _unreadable(values[var])
                if problem is not None or not isinstance(value, str | int):
                    self.problem(values[var].line, f"{name}: {var}", problem or "expected text or a number")
                    return None
                read[var] = value
        connection = str(read.get("ansible_connection") or "ssh")
        if connection in _LOCAL_CONNECTIONS:
            self.skipped.append(name)
            return None
        if connection not in _SSH_CONNECTIONS:
            self.problem(
                values["ansible_connection"].line, f"{name}: ansible_connection",
                f"{connection!r} is not SSH, which is all recovery speaks: leave the host out with --limit",
            )
            return None
        for var in _SSH_ARGS:
            if var in read and _JUMP_OPTIONS.search(str(read[var])):
                self.problem(
                    values[var].line, f"{name}: {var}",
                    "names a jump host (ProxyJump, ProxyCommand or -J), and recovery reads no ssh options from an "
                    "Ansible inventory: it would connect directly. Give the jump host with --jump where the command "
                    "has it, or leave these hosts out with --limit",
                )
                return None
        return self._build(name, read, values, fallback)

    def _build(
        self, name: str, read: dict[str, str | int], values: dict[str, Var], fallback: HostDefaults
    ) -> Host | None:
        address, port, user, key = (_last(names, read) for names in (_ADDRESS, _PORT, _USER, _KEY))
        line = self.hosts[name].line
        number = 22
        if port is not None:
            number = int(port) if _PORT_TEXT.fullmatch(str(port)) else 0
            if not 1 <= number <= _MAX_PORT:
                where = values.get("ansible_ssh_port") if "ansible_ssh_port" in read else values.get("ansible_port")
                self.problem(where.line if where else line, f"{name}: ansible_port",
                             f"expected a port number from 1 to {_MAX_PORT}, got {port!r}")
                return None
        user = user or fallback.user
        keys = (Path(os.path.expanduser(str(key))),) if key else fallback.keys
        if not user:
            self.problem(line, name, f"host {name!r} has no user: set ansible_user (for it or a group), or pass --user")
        if not keys:
            self.problem(line, name, f"host {name!r} has no key: set ansible_ssh_private_key_file, or pass --key")
        if not user or not keys:
            return None
        return Host(name=name, address=str(address or name), port=number, user=str(user), keys=tuple(keys),
                    jumps=fallback.jumps)  # --jump: Ansible's own ProxyJump is refused above


def _unreadable(var: Var) -> str | None:
    """Why a variable recovery reads cannot be used as it is written, or None."""
    if not var.scalar:
        return "expected a single value, not a list or mapping"
    if isinstance(var.value, bool | float):
        return f"expected text or a number, got {var.value!r}"
    if isinstance(var.value, str) and JINJA.search(var.value):
        return f"{var.value[:60]!r} is a Jinja template, which recovery does not evaluate: write the value itself"
    if isinstance(var.value, str) and var.value.startswith(VAULT_HEADER):
        return VAULT_PROBLEM
    return None


def _last(names: tuple[str, ...], read: dict[str, str | int]) -> str | int | None:
    """The value of the last of `names` that is set (not empty)."""
    for name in reversed(names):
        if read.get(name) not in (None, ""):
            return read[name]
    return None
