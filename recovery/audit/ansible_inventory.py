"""Ansible inventories (YAML or INI) read as the audit's and revoke's hosts, without Ansible installed.

Teams keep their fleet in an Ansible inventory; making them copy it into the
project's format means two lists that drift apart. So `--inventory` also takes
the subset of Ansible's `yaml` and `ini` inventory plugins that says where a
host is and how to log in: groups and `children`, inline host vars, group vars
(`vars:`, `[group:vars]`), `host:port` names, and the variables
`recovery.audit.ansible_groups` reads and merges as Ansible does.

What would change where or as whom a host is reached and is not read here is
exit 2, naming it and its line, never a silent guess: a vault-encrypted value or
file, a `group_vars/` or `host_vars/` directory beside the file (refused only when
it is there), a host range (`web[01:20]`), Jinja in a value read, a dynamic
plugin inventory (`plugin:`), a jump host in `ansible_ssh_common_args`, a
connection other than SSH. Hosts with `ansible_connection=local` are the machine
running recovery, not reached over SSH: they are skipped with a warning. Other
variables (`ansible_become`, `ansible_python_interpreter`, ...) are not read.

The format is told by content, not by the file's name: an INI section header, or
YAML whose top-level keys are groups (`all:` with `hosts:`, `children:`, `vars:`);
a file with `defaults:` or a top-level `hosts:` list is the project's own format,
read by `recovery.audit.inventory` exactly as before. `--limit`
(`recovery.audit.host_limit`) chooses hosts in either.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import yaml

from recovery.audit.ansible_groups import JINJA, VAULT_HEADER, Inventory, Var
from recovery.audit.host_limit import select
from recovery.audit.inventory import HostDefaults, parse_inventory
from recovery.audit.model import Host
from recovery.errors import UsageError
from recovery.safety import readers

__all__ = ["load_any"]

log = logging.getLogger(__name__)

_YAML_SUFFIXES = (".yaml", ".yml", ".json")
# Ansible's ini plugin: `[name]`, `[name:vars]`, `[name:children]`, a comment after it.
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?")
_CHILD = re.compile(r"([^:\]\s#;]+)\s*(?:[#;].*)?")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:(?=[ \t]|$)", re.MULTILINE)
_SEQUENCE_START = re.compile(r"-(?:\s|$)|\[")
_VAULT_TAG = re.compile(r"(?<![\w!])!vault(?=\s|$)", re.MULTILINE)
_GROUP_KEYS = ("hosts", "children", "vars")
_UNQUOTED = re.compile(r"[^'\"\\]*")
_BLANKS = re.compile(r"[ \t\r\n]+")


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
    reader = _Reader(str(path))
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


# --- which format -----------------------------------------------------------------------------


def _detect(text: str, file: str) -> tuple[str, yaml.Node | None]:
    """("project" | "yaml" | "ini", the YAML tree when it was composed for an Ansible YAML file).

    The project's format is recognised from the text alone where it can be (`defaults:` or a
    `hosts:` list at the top), so its files are composed once, by its own reader.
    """
    first = next(_significant(text), None)
    if first is not None and first[1].startswith(VAULT_HEADER):
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


class _Reader(Inventory):
    """An inventory filled from the text of an INI or YAML file, as Ansible's ini and yaml plugins read them."""

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
                if JINJA.search(section):
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
            words = _words(line)
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

    def ini_var(self, line: str, into: dict[str, Var], number: int, where: str) -> None:
        if "=" not in line:
            self.problem(number, where, f"expected key=value, got {line[:80]!r}")
            return
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # Ansible reads a quoted value as a Python string literal
        into[key] = self.ini_value(key, value, number, where)

    def ini_value(self, key: str, value: str, number: int, where: str) -> Var:
        if value.startswith(VAULT_HEADER):
            self.vault(number, f"{where}.{key}")
        return Var(value, number)

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
        if JINJA.search(name):
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

    def yaml_vars(self, node: yaml.Node, into: dict[str, Var], path: str) -> None:
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
                if isinstance(scalar, str) and scalar.startswith(VAULT_HEADER):
                    self.vault(_line(value), f"{path}.{name}")
                into[name] = Var(scalar, _line(value))
            else:
                into[name] = Var(None, _line(value), scalar=False)


def _words(line: str) -> list[str]:
    """The words of a host line as Ansible splits them (shlex, `#` comments); without quotes, 10 times faster."""
    if _UNQUOTED.fullmatch(line):
        return [word for word in _BLANKS.split(line.split("#", 1)[0]) if word]
    return shlex.split(line, comments=True)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
