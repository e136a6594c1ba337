"""Settings that belong to the operator's machine rather than to a playbook.

Precedence, lowest first: built-in defaults < config file < environment
(`RECOVERY_*`) < command-line flags. The file is namespaced (`journal:`, `keys:`,
`console:`, `ssh:`, `publish:`) so that later drivers get their own subtree
instead of a flat bag of options. Unknown keys are errors, reported with the file
and line, because a misspelt setting silently ignored is worse than none.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recovery.engine.journal import default_root
from recovery.errors import ConfigError
from recovery.safety import readers


def _default_keys_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "recovery"


@dataclass(frozen=True)
class JournalConfig:
    dir: Path = field(default_factory=default_root, metadata={"doc": "where run journals are kept"})


@dataclass(frozen=True)
class KeysConfig:
    dir: Path = field(default_factory=_default_keys_dir, metadata={"doc": "where new key pairs are written"})


@dataclass(frozen=True)
class ConsoleConfig:
    login_timeout: float = field(default=60.0, metadata={"doc": "seconds to reach a shell prompt"})
    command_timeout: float = field(default=120.0, metadata={"doc": "seconds for a typed command's marker"})


@dataclass(frozen=True)
class SSHConfig:
    timeout: float = field(default=10.0, metadata={"doc": "connect, banner and auth timeout in seconds"})


@dataclass(frozen=True)
class HTTPPublishConfig:
    bind: str = field(default="127.0.0.1", metadata={"doc": "address the one-shot HTTP server binds"})
    port: int = field(default=0, metadata={"doc": "0 picks a free port"})
    advertise_host: str | None = field(default=None, metadata={"doc": "host name the VM uses to reach us"})


@dataclass(frozen=True)
class SwiftPublishConfig:
    container: str = field(default="recovery-keys", metadata={"doc": "private container for published keys"})
    digest: str = field(default="auto", metadata={"doc": "TempURL digest: auto (best allowed), sha256, sha512"})
    key_scope: str = field(default="account", metadata={"doc": "where the Temp-URL key lives: account or container"})
    host_rewrite: str | None = field(default=None, metadata={"doc": "scheme://host:port the VM uses for storage"})


@dataclass(frozen=True)
class S3PublishConfig:
    endpoint: str | None = field(default=None, metadata={"doc": "S3 endpoint URL (else AWS_ENDPOINT_URL)"})
    region: str | None = field(default=None, metadata={"doc": "signing region (else AWS_DEFAULT_REGION)"})
    bucket: str | None = field(default=None, metadata={"doc": "bucket for published keys"})


@dataclass(frozen=True)
class PublishConfig:
    http: HTTPPublishConfig = field(default_factory=HTTPPublishConfig)
    swift: SwiftPublishConfig = field(default_factory=SwiftPublishConfig)
    s3: S3PublishConfig = field(default_factory=S3PublishConfig)


@dataclass(frozen=True)
class CloudConfig:
    name: str | None = field(default=None, metadata={"doc": "clouds.yaml entry (else OS_CLOUD, or --cloud)"})


@dataclass(frozen=True)
class Config:
    journal: JournalConfig = field(default_factory=JournalConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    ssh: SSHConfig = field(default_factory=SSHConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)


ENV_OVERRIDES = {
    "RECOVERY_JOURNAL_DIR": ("journal", "dir"),
    "RECOVERY_KEYS_DIR": ("keys", "dir"),
    "OS_CLOUD": ("cloud", "name"),
}


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "recovery" / "config.yaml"


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file (the given one, else the default path if it exists), then env.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key or wrong type; names file and line.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    chosen = Path(path) if path is not None else default_config_path()
    if path is not None or chosen.is_file():
        data, lines = _read(chosen)
    for variable, key_path in ENV_OVERRIDES.items():
        if env.get(variable):
            section = data.setdefault(key_path[0], {})
            if isinstance(section, dict):
                section[key_path[1]] = env[variable]
    problems: list[str] = []
    config = _build(Config, data, (), problems, chosen.name, lines)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    assert isinstance(config, Config)
    return config


def _read(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = readers.read_text(path, what="config", limit=readers.TEXT_LIMIT)
        node = readers.compose_yaml(text, path.name)
        data = readers.construct_yaml(node, path.name)
    except readers.InputFileError as exc:
        raise ConfigError(str(exc)) from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of sections (journal:, keys:, ...)")
    lines: dict[tuple[str, ...], int] = {}
    _lines(node, (), lines)
    return data, lines


def _lines(node: yaml.Node | None, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = (*path, str(key.value))
            out[key_path] = key.start_mark.line + 1
            _lines(value, key_path, out)


def _build(
    cls: type, data: object, path: tuple[str, ...], problems: list[str], file: str, lines: dict[tuple[str, ...], int]
) -> object:
    where = f"{file}:{lines.get(path, '?')}: {'.'.join(path)}" if path else file
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        key_path = (*path, str(key))
        key_where = f"{file}:{lines.get(key_path, '?')}: {'.'.join(key_path)}"
        if key not in fields:
            problems.append(f"{key_where}: unknown setting (known: {', '.join(fields)})")
            continue
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, key_path, problems, file, lines)
            continue
        converted = _convert(value, default, fields[key].type)
        if converted is _INVALID:
            problems.append(f"{key_where}: expected {_expected(default, fields[key].type)}, got {value!r}")
        else:
            kwargs[key] = converted
    return cls(**kwargs)


_INVALID = object()


def _convert(value: object, default: object, annotation: object) -> object:
    if value is None and "None" in str(annotation):
        return None
    if isinstance(default, Path) or "Path" in str(annotation):
        return Path(os.path.expanduser(str(value))) if isinstance(value, str) else _INVALID
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _INVALID
    if isinstance(default, int) and not isinstance(default, bool):
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if isinstance(default, float):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _INVALID
    return value if isinstance(value, str) else _INVALID


def _expected(default: object, annotation: object) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, (int, float)):
        return "a number"
    return "a path" if "Path" in str(annotation) else "text"
