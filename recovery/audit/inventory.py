"""The inventory file: which hosts to audit, read from YAML and checked before anything connects.

    defaults:                 # optional; any host field but `name`, for every host
      user: ubuntu
      key: ~/.ssh/audit_ed25519
    hosts:
      - name: web-1           # unique
        host: 203.0.113.10    # omitted or empty: the host is reported as no_address
        port: 22              # default 22
        user: ops             # else defaults.user, else --user
        key: keys/web         # a path, relative to this file; else defaults.key, else --key
        host_key: SHA256:...  # a pin; else the --known-hosts file decides
        jump: ops@bastion:22  # jump hosts (bastions), first hop first, as ssh -J: "a@b:22,c@d:22" or a list
        jump_keys: [keys/bastion]         # a key per hop (relative to this file), or one for all; else the host's key
        jump_host_keys: [SHA256:...]      # a pin per hop, or one for all; else the --known-hosts file decides
        inputs:               # for --remediate: playbook inputs (-e NAME=VALUE) for this host
          console_url: wss://console.example.com/?token=...
        secrets:              # for --remediate: playbook secrets, each a file (--secret NAME=@FILE)
          console_password: "@secrets/web-1.password"   # relative to this file

`jump`, `jump_keys` and `jump_host_keys` go together: a host that names `jump`
takes all three from its own mapping, else from `defaults:`, else from `--jump`,
`--jump-keys` and `--jump-host-keys`; `jump: ""` reaches a host directly. A hop
written without `user@` logs in as the host's user. Connections through one jump
host share its login (`recovery.ssh.jump.JumpPool`).

`inputs` and `secrets` may be given in `defaults:` too; a host's map and the
defaults' map are merged, the host's value winning for a name in both. The
audit itself gives a remediation `ssh_host`, `ssh_port`, `user` and
`host_key_fingerprint` from the host's fields, so those are not inputs here.
A secret's value is never written in the inventory, which is shared and
logged more often than a secret should be: only the name of the file holding it.

The format is a contract. Every problem is collected, each with the file and
line it was written on (from the YAML node marks, so duplicate keys, which a
plain `safe_load` silently merges, are caught too), and reported together as a
`UsageError`: exit 2 before a single connection is made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from recovery.audit.model import Host
from recovery.errors import Problem, UsageError, VerifyError
from recovery.safety import readers
from recovery.ssh.hostkeys import parse_pin
from recovery.ssh.jump import JumpHop, check_jump_inputs, parse_jumps

__all__ = ["HostDefaults", "load_inventory", "parse_inventory"]

_HOST_FIELDS = ("name", "host", "port", "user", "key", "host_key", "inputs", "secrets", "jump", "jump_keys",
                "jump_host_keys")
_JUMP_FIELDS = ("jump", "jump_keys", "jump_host_keys")  # each text (comma-separated) or a list of texts
_MAPS = ("inputs", "secrets")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The inputs the audit derives from a host's fields (recovery.audit.remediate): set by those fields.
_DERIVED_INPUTS = {"ssh_host": "host", "ssh_port": "port", "user": "user", "host_key_fingerprint": "host_key"}
_DEFAULT_FIELDS = tuple(name for name in _HOST_FIELDS if name != "name")
_TOP_FIELDS = ("defaults", "hosts")
_MAX_PORT = 65535


@dataclass(frozen=True)
class HostDefaults:
    """What the command line supplies for hosts whose inventory names no user or key."""

    user: str | None = None
    keys: tuple[Path, ...] = ()
    jumps: tuple[JumpHop, ...] = ()


def load_inventory(path: Path, fallback: HostDefaults, limit: str | None = None) -> list[Host]:
    """Read and check an inventory file: this format, or an Ansible one (`recovery.audit.ansible_inventory`).

    :param path: the YAML file; relative `key` paths in it are taken from its directory.
    :param fallback: the `--user` and `--key` values, used where the file names none.
    :param limit: a `--limit` pattern (names, groups, `*` globs), or None for every host.
    :returns: the hosts, in file order.
    :raises UsageError: the file cannot be read, or is invalid (every problem, with file:line).
    """
    from recovery.audit.ansible_inventory import load_any  # it builds on this module

    text = readers.read_text(path, what="inventory", limit=readers.INVENTORY_LIMIT)
    return load_any(text, path, fallback, limit)


def parse_inventory(text: str, file: str, *, base: Path, fallback: HostDefaults) -> list[Host]:
    """`load_inventory` for text already read; `file` names it in messages."""
    reader = _Reader(file, base)
    hosts = reader.read(text, fallback)
    if reader.problems:
        problems = sorted(reader.problems, key=lambda p: p.line or 0)
        head = "invalid inventory" if len(problems) == 1 else f"invalid inventory ({len(problems)} problems)"
        raise UsageError(head + ":\n" + "\n".join(f"  {problem}" for problem in problems))
    return hosts


class _Reader:
    """Walks the YAML node tree, building hosts and collecting problems with their lines."""

    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, path, message))

    def read(self, text: str, fallback: HostDefaults) -> list[Host]:
        try:
            root = readers.compose_yaml(text, self.file, max_nodes=readers.INVENTORY_NODES)
        except readers.YamlError as exc:
            self.problems.append(Problem(self.file, exc.line, "", exc.reason))
            return []
        if root is None:
            self.problems.append(Problem(self.file, None, "", "the inventory is empty: it needs a 'hosts:' list"))
            return []
        top = self.mapping(root, "", _TOP_FIELDS)
        if top is None:
            return []
        defaults = self.fields(top["defaults"], "defaults", _DEFAULT_FIELDS) if "defaults" in top else {}
        hosts_node = top.get("hosts")
        if hosts_node is None:
            self.problem(root, "", "the inventory needs a 'hosts:' list")
            return []
        if not isinstance(hosts_node, yaml.SequenceNode) or not hosts_node.value:
            self.problem(hosts_node, "hosts", "expected a non-empty list of hosts")
            return []
        hosts: list[Host] = []
        first_line: dict[str, int] = {}
        for index, node in enumerate(hosts_node.value):
            path = f"hosts[{index}]"
            fields = self.fields(node, path, _HOST_FIELDS)
            if fields is None:
                continue
            host = self.host(node, path, fields, defaults or {}, fallback)
            if host is None:
                continue
            line = node.start_mark.line + 1
            if host.name in first_line:
                self.problem(node, path, f"duplicate name {host.name!r} (first at line {first_line[host.name]})")
                continue
            first_line[host.name] = line
            hosts.append(host)
        return hosts

    def mapping(self, node: yaml.Node, path: str, allowed: Sequence[str]) -> dict[str, yaml.Node] | None:
        """A mapping node's values by key; unknown and duplicate keys are problems. An empty value is {}."""
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, "expected a mapping")
            return None
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key not in allowed:
                self.problem(key_node, where, f"unknown key (allowed: {', '.join(allowed)})")
            elif key in found:
                self.problem(key_node, where, "duplicate key")
            else:
                found[key] = value_node
        return found

    def fields(self, node: yaml.Node, path: str, allowed: Sequence[str]) -> dict[str, tuple[yaml.Node, object]] | None:
        """Each field's node and value, checked for its type; a field with a bad value is left out."""
        mapping = self.mapping(node, path, allowed)
        if mapping is None:
            return None
        values: dict[str, tuple[yaml.Node, object]] = {}
        for key, value_node in mapping.items():
            value = self.value(value_node, f"{path}.{key}", key)
            if value is not _INVALID:
                values[key] = (value_node, value)
        return values

    def value(self, node: yaml.Node, path: str, key: str) -> object:
        if key in _MAPS:
            return self.named_map(node, path, key)
        if key in _JUMP_FIELDS:
            return self.jump_list(node, path, key)
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, "expected a single value, not a list or mapping")
            return _INVALID
        value = yaml.constructor.SafeConstructor().construct_object(node)
        if value is None:
            return None
        if key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PORT:
                self.problem(node, path, f"expected a port number from 1 to {_MAX_PORT}, got {node.value!r}")
                return _INVALID
            return value
        if not isinstance(value, str):
            self.problem(node, path, f"expected text, got {node.value!r} (quote it)")
            return _INVALID
        if key == "host_key":
            try:
                return parse_pin(value)
            except VerifyError as exc:
                self.problem(node, path, str(exc))
                return _INVALID
        if key == "key":
            return self.base / Path(os.path.expanduser(value))
        return value

    def jump_list(self, node: yaml.Node, path: str, key: str) -> object:
        """`jump`, `jump_keys` or `jump_host_keys` as the comma-separated text the flags take.

        A list is the same values, one per hop; key paths are taken from the inventory's directory.
        """
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not isinstance(node, (yaml.SequenceNode, yaml.ScalarNode)) or not all(
            isinstance(item, yaml.ScalarNode) for item in items
        ):
            self.problem(node, path, "expected text (comma-separated, first hop first) or a list of texts")
            return _INVALID
        values: list[str] = []
        for item in items:
            value = yaml.constructor.SafeConstructor().construct_object(item)
            if value is not None and not isinstance(value, str):
                self.problem(item, path, f"expected text, got {item.value!r} (quote it)")
                return _INVALID
            values += [part.strip() for part in value.split(",")] if value else [""]
        if key == "jump_keys":
            values = [str(self.base / Path(os.path.expanduser(value))) if value else "" for value in values]
        return ",".join(values) if any(values) else ""

    def jumps(
        self, node: yaml.Node, path: str, name: str, user: str,
        fields: dict[str, tuple[yaml.Node, object]], defaults: dict[str, tuple[yaml.Node, object]],
        fallback: HostDefaults,
    ) -> tuple[JumpHop, ...] | None:
        """The host's hops: from its own mapping if it names `jump`, else `defaults:`, else the flags."""
        for source in (fields, defaults):
            strays = [key for key in _JUMP_FIELDS[1:] if key in source and "jump" not in source]
            if strays:
                self.problem(source[strays[0]][0], path, f"{strays[0]} without jump: name the jump hosts beside it")
                return None
        if "jump" not in fields and "jump" not in defaults:
            return fallback.jumps
        source = fields if "jump" in fields else defaults
        jump, keys, pins = (str(source[key][1] or "") if key in source else "" for key in _JUMP_FIELDS)
        problem = check_jump_inputs(jump, keys, pins)
        if problem is None:
            try:
                return parse_jumps(jump, keys=keys, host_keys=pins, default_user=user)
            except ValueError as exc:
                problem = str(exc)
        self.problem(source["jump"][0], path, f"host {name!r}: {problem}")
        return None

    def named_map(self, node: yaml.Node, path: str, key: str) -> object:
        """`inputs:` (name -> text) or `secrets:` (name -> the file holding it, given as `@FILE`)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, f"expected a mapping of {key} by name")
            return _INVALID
        found: dict[str, object] = {}
        valid = True
        for name_node, value_node in node.value:
            name = str(name_node.value)
            where = f"{path}.{name}"
            problem = self.map_entry_problem(name, value_node, key, found)
            if problem is None:
                value = yaml.constructor.SafeConstructor().construct_object(value_node)
                problem, found[name] = self.map_value(value, value_node, key)
            if problem is not None:
                self.problem(value_node if problem.startswith("expected") else name_node, where, problem)
                valid = False
        return found if valid else _INVALID

    def map_entry_problem(self, name: str, value_node: yaml.Node, key: str, found: dict[str, object]) -> str | None:
        if not _NAME.fullmatch(name):
            return "not an input or secret name (letters, digits and '_', not starting with a digit)"
        if name in found:
            return "duplicate key"
        if key == "inputs" and name in _DERIVED_INPUTS:
            return f"the audit gives {name} from the host's '{_DERIVED_INPUTS[name]}:' field; set that instead"
        if not isinstance(value_node, yaml.ScalarNode):
            return "expected a single value, not a list or mapping"
        return None

    def map_value(self, value: object, node: yaml.Node, key: str) -> tuple[str | None, object]:
        """(a problem, or None; the value to keep)."""
        if key == "inputs":
            if value is None or isinstance(value, float):
                return f"expected text or a whole number, got {node.value!r} (quote it)", None
            return None, str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str) or not value.startswith("@") or not value[1:].strip():
            return (
                "expected '@FILE', the file holding the secret (relative to this inventory): a secret "
                "written here would be read by everyone who can read the inventory",
                None,
            )
        return None, self.base / Path(os.path.expanduser(value[1:]))

    def host(
        self,
        node: yaml.Node,
        path: str,
        fields: dict[str, tuple[yaml.Node, object]],
        defaults: dict[str, tuple[yaml.Node, object]],
        fallback: HostDefaults,
    ) -> Host | None:
        """The host a mapping describes: its own fields, else `defaults:`, else the command line."""

        def pick(name: str) -> object:
            for source in (fields, defaults):
                if name in source and source[name][1] is not None:
                    return source[name][1]
            return None

        def merged(name: str) -> dict[str, object]:
            """The defaults' map under the host's: the host wins, name by name."""
            maps = (source[name][1] for source in (defaults, fields) if name in source)
            return {key: value for mapping in maps if isinstance(mapping, dict) for key, value in mapping.items()}

        name = pick("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(node, path, "every host needs a 'name'")
            return None
        user = pick("user") or fallback.user
        key = pick("key")
        keys = (key,) if isinstance(key, Path) else fallback.keys
        if not user:
            self.problem(node, path, f"host {name!r} has no user: set 'user' here or under 'defaults:', or pass --user")
        if not keys:
            self.problem(node, path, f"host {name!r} has no key: set 'key' here or under 'defaults:', or pass --key")
        if not user or not keys:
            return None
        jumps = self.jumps(node, path, name, str(user), fields, defaults, fallback)
        if jumps is None:
            return None
        port = pick("port")
        address = str(pick("host") or "").strip()
        host_key = pick("host_key")
        inputs, secrets = (merged(name) for name in _MAPS)
        return Host(
            name=name,
            address=address or None,
            port=port if isinstance(port, int) else 22,
            user=str(user),
            keys=tuple(keys),
            host_key=str(host_key) if host_key is not None else None,
            inputs=tuple((key, str(value)) for key, value in inputs.items()),
            secrets=tuple((key, value) for key, value in secrets.items() if isinstance(value, Path)),
            jumps=jumps,
        )


_INVALID = object()
