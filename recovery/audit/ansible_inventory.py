"""Ansible inventories (YAML or INI) read as the audit's hosts, without Ansible, and `--limit`.

Teams keep their fleet in an Ansible inventory; making them copy it into the
project's format means two lists that drift apart. So `--inventory` also takes
the subset of Ansible's `yaml` and `ini` inventory plugins that says where a
host is and how to log in: groups and `children`, host vars inline, group vars
(`vars:`, `[group:vars]`), `ansible_host`, `ansible_port`, `ansible_user` and their
legacy `ansible_ssh_*` names (old inventories are full of them; where both are
set the `ansible_ssh_*` one wins, at whatever level, as in Ansible's ssh and
paramiko connections), `ansible_ssh_private_key_file` (or `ansible_private_key_file`),
and `host:port` host names. Variables merge as
Ansible merges them: `all`, then each group from parent to child (groups at the
same depth by `ansible_group_priority`, then name), then the host's own.

What would change where or how a host is reached and is not read here is exit 2,
naming it and its line, never a silent guess: a vault-encrypted value or file,
a `group_vars/` or `host_vars/` directory beside the file, a host range
(`web[01:20]`), Jinja in a value read here, a dynamic plugin inventory
(`plugin:`), a jump host in `ansible_ssh_common_args`, a connection other than
SSH. Hosts with `ansible_connection=local` are the machine running recovery, not
reached over SSH: they are skipped with a warning. Other variables
(`ansible_become`, `ansible_python_interpreter`, ...) are not the audit's business
and are not read.

The format is told by content: an INI section header first, or YAML whose
top-level keys are groups (`all:` with `hosts:`, `children:`, `vars:`); a file
with `defaults:` or a `hosts:` list is the project's own format, read by
`recovery.audit.inventory` exactly as before.

`--limit` takes host names, group names (every host below the group), `*` and
`?` globs over both, joined by `:` or `,`; `all` is every host. Exclusions (`!`),
intersections (`&`), regular expressions (`~`), subscripts (`web[0]`) and
`@FILE` are refused, and so is a term that matches nothing: a typo in an incident
must not quietly audit, or revoke on, fewer hosts than meant.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recovery.audit.inventory import HostDefaults, parse_inventory
from recovery.audit.model import Host
from recovery.errors import Problem, UsageError
from recovery.safety import readers

__all__ = ["load_any", "select"]

log = logging.getLogger(__name__)

_YAML_SUFFIXES = (".yaml", ".yml", ".json")
# Ansible's ini plugin: `[name]`, `[name:vars]`, `[name:children]`, a comment after it.
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?")
_CHILD = re.compile(r"([^:\]\s#;]+)\s*(?:[#;].*)?")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:(?=[ \t]|$)", re.MULTILINE)
_SEQUENCE_START = re.compile(r"-(?:\s|$)|\[")
_VAULT_TAG = re.compile(r"(?<![\w!])!vault(?=\s|$)", re.MULTILINE)
_HOST_PORT = re.compile(r"([^:\s]+):(\d+)")
_JINJA = ("{{", "{%", "{#")
_VAULT_TEXT = "$ANSIBLE_VAULT"
_GROUP_KEYS = ("hosts", "children", "vars")
_MAX_PORT = 65535

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


def load_any(text: str, path: Path, fallback: HostDefaults, limit: str | None) -> list[Host]:
    """The hosts of an inventory in any format `--inventory` takes, chosen by `limit`.

    :param text: the file's content, read by `recovery.safety.readers`.
    :param path: the file, for messages, relative `key:` paths and the `group_vars/` check.
    :param limit: a `--limit` pattern, or None for every host.
    :raises UsageError: the inventory is invalid or outside the subset read, or `limit` is.
    """
    kind, root = _detect(text, str(path))
    if kind == "project":
        hosts = parse_inventory(text, str(path), base=path.parent, fallback=fallback)
        if limit is None:
            return hosts
        chosen = set(select([host.name for host in hosts], {"all": [host.name for host in hosts]}, limit))
        return [host for host in hosts if host.name in chosen]
    _refuse_vars_directories(path)
    reader = _Inventory(str(path))
    if kind == "ini":
        reader.read_ini(text)
    else:
        reader.read_yaml(text, root)
    reader.finish()
    reader.raise_problems()
    names = list(reader.hosts)
    if not names:
        raise UsageError(f"{path}: this Ansible inventory lists no hosts: nothing to check")
    if limit is not None:
        names = select(names, reader.members(), limit)
    hosts = [host for host in (reader.host(name, fallback) for name in names) if host is not None]
    reader.raise_problems()
    if reader.skipped:
        log.warning(
            "%s: not checked, as their ansible_connection is local (this machine, not reached over SSH): %s",
            path, ", ".join(reader.skipped),
        )
    if not hosts:
        raise UsageError(f"{path}: no host to check: every host chosen has ansible_connection=local")
    return hosts


def select(names: Sequence[str], groups: dict[str, list[str]], limit: str) -> list[str]:
    """The host names a `--limit` pattern chooses, in inventory order.

    :param names: every host's name, in inventory order.
    :param groups: every group's hosts, descendants included (`all` too).
    :raises UsageError: an unsupported pattern, or a term that matches nothing.
    """
    terms = [term.strip() for term in re.split("," if "," in limit else ":", limit)]
    terms = [term for term in terms if term]
    if not terms:
        raise UsageError(f"--limit {limit!r}: no host or group named; give names, groups or globs such as 'web*'")
    chosen: set[str] = set()
    for term in terms:
        problem = _unsupported_term(term)
        if problem is not None:
            raise UsageError(f"--limit {limit!r}: {term!r}: {problem}")
        matched = _matches(term, groups, names)
        if not matched:
            group_names = ", ".join(sorted(groups)[:20])
            raise UsageError(
                f"--limit {limit!r}: {term!r} matches no host or group of the inventory (its groups: {group_names}); "
                "a term that matches nothing is refused, so that a typo does not quietly leave hosts out"
            )
        chosen.update(matched)
    return [name for name in names if name in chosen]


def _unsupported_term(term: str) -> str | None:
    if term.startswith(("!", "&")):
        return (
            "exclusions (!) and intersections (&) are not supported: list the hosts and groups to include, "
            "joined by ':' or ','"
        )
    if term.startswith("~"):
        return "regular expressions (~) are not supported: use names, groups and '*' globs"
    if term.startswith("@"):
        return "limit files (@FILE) are not read: join the names with ',' instead"
    if "[" in term:
        return "subscripts and ranges ([...]) are not supported: name the hosts, or use a '*' glob"
    return None


def _matches(term: str, groups: dict[str, list[str]], known: Sequence[str]) -> set[str]:
    if term in ("all", "*"):
        return set(known)
    if term in groups:
        return set(groups[term])
    if term in known:
        return {term}
    if "*" not in term and "?" not in term:
        return set()
    found = {name for name in known if fnmatch.fnmatchcase(name, term)}
    for group, members in groups.items():
        if fnmatch.fnmatchcase(group, term):
            found.update(members)
    return found


# --- which format -----------------------------------------------------------------------------


def _detect(text: str, file: str) -> tuple[str, yaml.Node | None]:
    """("project" | "yaml" | "ini", the YAML tree when it was composed for an Ansible YAML file).

    The project's format is recognised from the text alone where it can be (`defaults:` or a
    `hosts:` list at the top), so its files are composed once, by its own reader.
    """
    first = next(_significant(text), None)
    if first is not None and first[1].startswith(_VAULT_TEXT):
        raise UsageError(
            f"{file}:{first[0]}: the inventory is encrypted with Ansible Vault, which recovery does not decrypt: "
            f"give it a decrypted copy (ansible-vault view {file} > hosts.yaml), kept where others cannot read it"
        )
    if first is not None and _SECTION.fullmatch(first[1]):
        return "ini", None
    if _looks_like_project(text):
        return "project", None
    try:
        root = readers.compose_yaml(_VAULT_TAG.sub("!!str", text), file, max_nodes=readers.INVENTORY_NODES)
    except readers.YamlError:
        root = None
    if isinstance(root, yaml.MappingNode):
        _refuse_plugin(root, file)
        if _ansible_shaped(root):
            return "yaml", root
    elif first is not None and _ini_shaped(text, file):
        return "ini", None
    return "project", None


def _significant(text: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of every line that is not blank or a comment."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and line[0] not in "#;":
            yield number, line


def _looks_like_project(text: str) -> bool:
    """`defaults:` at the top, or a top-level `hosts:` whose value is a list: the project's format."""
    for match in _TOP_KEY.finditer(text):
        if match.group(1) == "defaults":
            return True
        if match.group(1) == "hosts":
            end = text.find("\n", match.end())
            rest = text[match.end() : end if end >= 0 else len(text)].split(" #")[0].strip()
            if not rest and end >= 0:
                rest = next((line for _, line in _significant(text[end + 1 :])), "")
            return bool(_SEQUENCE_START.match(rest))
    return False


def _refuse_plugin(root: yaml.MappingNode, file: str) -> None:
    for key, value in root.value:
        if key.value == "plugin" and isinstance(value, yaml.ScalarNode):
            raise UsageError(
                f"{file}:{key.start_mark.line + 1}: this is an Ansible inventory plugin's configuration "
                f"(plugin: {value.value}), which asks a cloud or a script for its hosts: recovery reads only "
                "static inventories. With Ansible: ansible-inventory -i FILE --list --yaml --output hosts.yaml, "
                "then --inventory hosts.yaml (for OpenStack, `recovery audit --cloud` lists the servers itself)"
            )


def _ansible_shaped(root: yaml.MappingNode) -> bool:
    """Every top-level value is a group (a mapping or empty), and one at least has hosts:, children: or vars:."""
    shaped = False
    for _key, value in root.value:
        if isinstance(value, yaml.MappingNode):
            shaped = shaped or any(str(key.value) in _GROUP_KEYS for key, _ in value.value)
        elif not (isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
            return False
    return shaped


def _ini_shaped(text: str, file: str) -> bool:
    """Text that is no YAML mapping, with an INI section header, or (not named .yaml) only host lines."""
    if any(_SECTION.fullmatch(line) for _, line in _significant(text)):
        return True
    if file.endswith(_YAML_SUFFIXES):
        return False
    for _number, line in _significant(text):
        words = line.split(" #")[0].split()
        if "=" in words[0] or words[0].endswith(":") or not all("=" in word for word in words[1:]):
            return False
    return True


def _refuse_vars_directories(path: Path) -> None:
    for name in ("group_vars", "host_vars"):
        directory = path.parent / name
        if os.path.lexists(directory):
            raise UsageError(
                f"{directory} is beside the inventory {path}: Ansible would read the variables in it (addresses, "
                f"ports, users) and recovery does not read {name}/, so hosts could be reached at the wrong address "
                "or as the wrong user. Put the variables recovery needs in the inventory file itself and give it "
                "from another directory, or where Ansible is installed write one file with them all: "
                f"ansible-inventory -i {path} --list --yaml --output hosts.yaml"
            )


# --- the inventory: groups, hosts, variables ----------------------------------------------------


@dataclass(frozen=True)
class _Var:
    """A variable as written: its value (None when it is a list or mapping, never read) and where."""

    value: str | int | float | bool | None
    line: int | None
    scalar: bool = True


@dataclass
class _Group:
    name: str
    vars: dict[str, _Var] = field(default_factory=dict)
    children: dict[str, int | None] = field(default_factory=dict)  # child -> the line naming it
    hosts: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    depth: int = 0
    ancestors: frozenset[str] = frozenset()


@dataclass
class _HostEntry:
    line: int | None
    vars: dict[str, _Var] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


class _Inventory:
    """Groups and hosts as Ansible's inventory plugins build them, and the problems found on the way."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.groups: dict[str, _Group] = {"all": _Group("all")}
        self.hosts: dict[str, _HostEntry] = {}
        self.problems: list[Problem] = []
        self.skipped: list[str] = []
        self._order: list[str] = []

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

    def group(self, name: str) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group(name)
            self._order.append(name)
        return self.groups[name]

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        self.group(parent).children.setdefault(child, line)
        self.group(child).parents.add(parent)

    def add_host(self, pattern: str, group: str, line: int | None, path: str) -> _HostEntry | None:
        """The host a host pattern names (`name`, `name:port`, an IPv6 address), now a member of `group`."""
        name, port = self.host_pattern(pattern, line, path)
        if name is None:
            return None
        entry = self.hosts.setdefault(name, _HostEntry(line))
        if group not in entry.groups:
            entry.groups.append(group)
            self.group(group).hosts.append(name)
        if port is not None:
            entry.vars["ansible_port"] = _Var(port, line)
        return entry

    def host_pattern(self, pattern: str, line: int | None, path: str) -> tuple[str | None, int | None]:
        if not pattern or any(char.isspace() for char in pattern):
            self.problem(line, path, f"{pattern!r} is not a host name (empty, or with spaces)")
            return None, None
        if any(mark in pattern for mark in _JINJA):
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

    # --- INI -------------------------------------------------------------------------------------

    def read_ini(self, text: str) -> None:
        """Ansible's ini plugin: hosts before any section are `ungrouped`; sections are `[g]`, `[g:vars]`,
        `[g:children]`; a `:vars` or `:children` naming a group that no section defines is an error."""
        section, kind = "ungrouped", "hosts"
        defined = {"all", "ungrouped"}
        wanted: dict[str, tuple[int, str]] = {}  # group -> (line, the section that needs it defined)
        for number, line in _significant(text):
            if line.startswith("[") and (_SECTION.fullmatch(line) or line.endswith("]")):  # else a host range
                header = _SECTION.fullmatch(line)
                if header is None or header.group(2) not in (None, "vars", "children"):
                    self.problem(
                        number, "",
                        f"not a section header Ansible reads: {line[:80]!r} (expected [group], [group:vars] or "
                        "[group:children], with no spaces in the name)",
                    )
                    kind = "broken"
                    continue
                section, kind = header.group(1), header.group(2) or "hosts"
                if any(mark in section for mark in _JINJA):
                    self.problem(number, "", f"group {section!r}: Jinja in a group name is not evaluated by recovery")
                self.group(section)
                if kind == "vars":
                    wanted.setdefault(section, (number, f"[{section}:vars]"))
                else:
                    defined.add(section)
                continue
            where = f"[{section}:{kind}]" if kind != "hosts" else f"[{section}]"
            if kind == "hosts":
                self.ini_host(line, section, number, where)
            elif kind == "vars":
                self.ini_var(line, self.group(section).vars, number, where)
            elif kind == "children":
                child = _CHILD.fullmatch(line)
                if child is None:
                    self.problem(number, where, f"expected a group name, got {line[:80]!r}")
                    continue
                self.add_child(section, child.group(1), number)
                wanted.setdefault(child.group(1), (number, f"[{section}:children]"))
        for name, (number, where) in wanted.items():
            if name not in defined:
                what = "is for" if where.endswith(":vars]") else "names"
                self.problem(number, where, f"{where} {what} the group {name!r}, which no section defines")

    def ini_host(self, line: str, section: str, number: int, where: str) -> None:
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            self.problem(number, where, f"cannot read the host line: {exc}")
            return
        if not words:
            return
        entry = self.add_host(words[0], section, number, where)
        if entry is None:
            return
        for word in words[1:]:
            if "=" not in word:
                self.problem(number, where, f"expected key=value host variables after the host name, got {word!r}")
                continue
            key, value = word.split("=", 1)
            entry.vars[key] = self.ini_value(key, value, number, where)

    def ini_var(self, line: str, into: dict[str, _Var], number: int, where: str) -> None:
        if "=" not in line:
            self.problem(number, where, f"expected key=value, got {line[:80]!r}")
            return
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # Ansible reads a quoted value as a Python string literal
        into[key] = self.ini_value(key, value, number, where)

    def ini_value(self, key: str, value: str, number: int, where: str) -> _Var:
        if value.startswith(_VAULT_TEXT):
            self.vault(number, f"{where}.{key}")
        return _Var(value, number)

    def vault(self, line: int | None, path: str) -> None:
        self.problem(
            line, path,
            "a vault-encrypted value: recovery does not decrypt Ansible Vault. It reads only where and how hosts "
            "are reached (ansible_host, ansible_port, ansible_user, the key): give it a copy of the inventory "
            "without the encrypted values",
        )

    # --- YAML ------------------------------------------------------------------------------------

    def read_yaml(self, text: str, root: yaml.Node | None) -> None:
        """Ansible's yaml plugin: top-level keys are groups (children of `all`), each with hosts:, children:, vars:."""
        if _VAULT_TAG.search(text):
            try:
                root = readers.compose_yaml(text, self.file, max_nodes=readers.INVENTORY_NODES)
            except readers.YamlError as exc:
                if "!vault" not in exc.reason:
                    raise
                self.vault(exc.line, "")
                return
        assert isinstance(root, yaml.MappingNode)  # _detect checked the shape
        for key, value in root.value:
            name = self.name(key, "")
            if name is not None:
                if name != "all":
                    self.add_child("all", name, key.start_mark.line + 1)
                self.yaml_group(name, value, name)

    def name(self, node: yaml.Node, path: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
            self.problem(_line(node), path, "expected a name here, not a list, mapping or nothing")
            return None
        return str(node.value)

    def yaml_group(self, name: str, node: yaml.Node, path: str) -> None:
        if any(mark in name for mark in _JINJA):
            self.problem(_line(node), path, f"group {name!r}: Jinja in a group name is not evaluated by recovery")
            return
        group = self.group(name)
        if _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.problem(_line(node), path, "expected a group: a mapping with hosts:, children: or vars:")
            return
        for key, value in node.value:
            field_name = str(key.value)
            where = f"{path}.{field_name}"
            if field_name == "vars":
                self.yaml_vars(value, group.vars, where)
            elif field_name == "hosts":
                self.yaml_hosts(name, value, where)
            elif field_name == "children":
                self.yaml_children(name, value, where)
            else:
                self.problem(
                    _line(key), where,
                    "unknown key in a group (Ansible's are hosts:, children: and vars:; recovery reads no other)",
                )

    def yaml_hosts(self, group: str, node: yaml.Node, path: str) -> None:
        if _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.problem(
                _line(node), path,
                "expected a mapping of host names (each with its variables, or empty); a list of hosts is the "
                "project's own format, which has them under a top-level hosts: with defaults:",
            )
            return
        for key, value in node.value:
            name = self.name(key, path)
            if name is None:
                continue
            entry = self.add_host(name, group, _line(key), f"{path}.{name}")
            if entry is not None:
                self.yaml_vars(value, entry.vars, f"{path}.{name}")

    def yaml_children(self, parent: str, node: yaml.Node, path: str) -> None:
        if _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.problem(_line(node), path, "expected a mapping of child groups")
            return
        for key, value in node.value:
            name = self.name(key, path)
            if name is not None:
                self.add_child(parent, name, _line(key))
                self.yaml_group(name, value, f"{path}.{name}")

    def yaml_vars(self, node: yaml.Node, into: dict[str, _Var], path: str) -> None:
        if _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.problem(_line(node), path, "expected a mapping of variables")
            return
        for key, value in node.value:
            name = self.name(key, path)
            if name is None:
                continue
            if isinstance(value, yaml.ScalarNode):
                constructed = yaml.constructor.SafeConstructor().construct_object(value)
                scalar = constructed if isinstance(constructed, str | int | float | bool) else str(constructed)
                into[name] = _Var(scalar, _line(value))
            else:
                into[name] = _Var(None, _line(value), scalar=False)

    # --- the whole ------------------------------------------------------------------------------

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
        """Depth (the longest path from `all`, as Ansible) and ancestors, in topological order; a loop is a problem."""
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        while ready:
            name = ready.pop()
            group = self.groups[name]
            for child in group.children:
                below = self.groups[child]
                below.depth = max(below.depth, group.depth + 1)
                below.ancestors = below.ancestors | group.ancestors | {name}
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

    def members(self) -> dict[str, list[str]]:
        """Every group's hosts, those of its descendants included, in inventory order."""
        found: dict[str, list[str]] = {name: [] for name in self.groups}
        for host, entry in self.hosts.items():
            for name in self._groups_of(entry):
                found[name].append(host)
        return found

    def _groups_of(self, entry: _HostEntry) -> set[str]:
        return {"all"}.union(*(self.groups[name].ancestors | {name} for name in entry.groups))

    def effective_vars(self, name: str) -> dict[str, _Var]:
        """`all`, then groups by (depth, ansible_group_priority, name), then the host: later wins, as Ansible."""
        entry = self.hosts[name]
        merged: dict[str, _Var] = {}
        for group in sorted((self.groups[g] for g in self._groups_of(entry)), key=self._rank):
            merged.update(group.vars)
        merged.update(entry.vars)
        return merged

    def _rank(self, group: _Group) -> tuple[int, int, str]:
        priority = group.vars.get("ansible_group_priority")
        value = priority.value if priority is not None else 1
        try:
            number = int(value) if not isinstance(value, bool) and value is not None else 1
        except ValueError:
            self.problem(priority.line if priority else None, f"{group.name}.ansible_group_priority",
                         f"expected a whole number, got {value!r}")
            number = 1
        return group.depth, number, group.name

    def host(self, name: str, fallback: HostDefaults) -> Host | None:
        """The audit's `Host` for an inventory host, or None (a problem recorded, or skipped as local)."""
        values = self.effective_vars(name)
        entry = self.hosts[name]
        path = name
        read: dict[str, str | int | None] = {}
        for var in _READ:
            found = values.get(var)
            if found is None:
                continue
            where = f"{path}: {var}"
            if not found.scalar:
                self.problem(found.line, where, "expected a single value, not a list or mapping")
            elif isinstance(found.value, str) and any(mark in found.value for mark in _JINJA):
                self.problem(found.line, where, f"{found.value[:60]!r} is a Jinja template, which recovery does not "
                             "evaluate: write the value itself")
            elif isinstance(found.value, str) and found.value.startswith(_VAULT_TEXT):
                self.vault(found.line, where)
            elif isinstance(found.value, bool | float):
                self.problem(found.line, where, f"expected text or a number, got {found.value!r}")
            else:
                read[var] = found.value
                continue
            return None
        address, port, user, key = (_last(names, read) for names in (_ADDRESS, _PORT, _USER, _KEY))
        connection = str(read.get("ansible_connection") or "ssh")
        if connection in _LOCAL_CONNECTIONS:
            self.skipped.append(name)
            return None
        if connection not in _SSH_CONNECTIONS:
            self.problem(
                values["ansible_connection"].line, f"{path}: ansible_connection",
                f"{connection!r} is not SSH, which is all recovery speaks: leave the host out with --limit",
            )
            return None
        for var in _SSH_ARGS:
            if var in read and _JUMP_OPTIONS.search(str(read[var])):
                self.problem(
                    values[var].line, f"{path}: {var}",
                    "names a jump host (ProxyJump, ProxyCommand or -J), and recovery reads no ssh options from an "
                    "Ansible inventory: it would connect directly. Give the jump host on the command line (--jump)",
                )
                return None
        return self.build(name, entry, (address, port, user, key), values, fallback)

    def build(self, name: str, entry: _HostEntry, picked: tuple[str | int | None, ...], values: dict[str, _Var],
              fallback: HostDefaults) -> Host | None:
        address, port, user, key = picked
        line = entry.line
        number: int | None = 22
        if port is not None:
            text = str(port)
            number = int(text) if text.isdigit() else None
            if number is None or not 1 <= number <= _MAX_PORT:
                where = values.get("ansible_port") or values.get("ansible_ssh_port")
                self.problem(where.line if where else line, f"{name}: ansible_port",
                             f"expected a port number from 1 to {_MAX_PORT}, got {port!r}")
                return None
        user = user or fallback.user
        keys = (Path(os.path.expanduser(str(key))),) if key else fallback.keys
        if not user:
            self.problem(line, name, f"host {name!r} has no user: set ansible_user (for it or a group), or pass --user")
        if not keys:
            self.problem(line, name, f"host {name!r} has no key: set ansible_ssh_private_key_file, or pass --key")
        if not user or not keys or number is None:
            return None
        return Host(name=name, address=str(address or name), port=number, user=str(user), keys=tuple(keys))


def _last(names: tuple[str, ...], read: dict[str, str | int | None]) -> str | int | None:
    """The value of the last of `names` that is set (not empty)."""
    return next((read[name] for name in reversed(names) if read.get(name) not in (None, "")), None)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
