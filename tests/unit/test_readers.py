"""Hostile files at every entry point that reads one: each ends in our error, naming the file, quickly."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from recovery.audit.inventory import HostDefaults, load_inventory
from recovery.cli.main import main
from recovery.engine.config import load_config
from recovery.engine.playbook import load_playbook
from recovery.engine.sources import secret_values
from recovery.errors import ConfigError, KeyGenerationError, UsageError
from recovery.safety import readers
from recovery.ssh.hostkeys import KnownHosts
from recovery.ssh.keys import generate_keypair, load_keypair

ROOT = Path(__file__).resolve().parents[2]
SERIAL = ROOT / "playbooks" / "restore-access-serial.yaml"

# Nine anchors of nine aliases each: 9**9 values once expanded, a few hundred bytes written.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8)
)
DEEP = "a: " + "[" * 200 + "]" * 200 + "\n"  # libyaml stops at 1000 itself


@dataclass(frozen=True)
class Entry:
    """One place where the tool reads a file the user named."""

    name: str
    valid: str
    load: Callable[[Path], object]
    error: type[Exception]
    limit: int
    is_yaml: bool = True
    pipes: bool = True


def _secret(path: Path) -> object:
    return secret_values(load_playbook(SERIAL), {"console_password": f"@{path}"}, {}, prompt=None)


def _inventory(path: Path) -> object:
    return load_inventory(path, HostDefaults(user="ops", keys=(path.parent / "key",)))


ENTRIES = [
    Entry("playbook", "steps:\n  - {id: key, uses: keys.generate}\n", load_playbook, UsageError, readers.TEXT_LIMIT),
    Entry("config", "console: {login_timeout: 5}\n", lambda p: load_config(p, env={}), ConfigError, readers.TEXT_LIMIT),
    Entry("inventory", "hosts:\n  - name: web-1\n", _inventory, UsageError, readers.INVENTORY_LIMIT),
    Entry("secret", "hunter2\n", _secret, UsageError, readers.SECRET_LIMIT, is_yaml=False),
    Entry("known_hosts", "# none yet\n", KnownHosts.load, UsageError, readers.KNOWN_HOSTS_LIMIT, is_yaml=False),
]
YAML_ENTRIES = [entry for entry in ENTRIES if entry.is_yaml]
TEXT_ENTRIES = [entry for entry in ENTRIES if entry.name != "known_hosts"]


def _ids(entry: Entry) -> str:
    return entry.name


@pytest.fixture
def quick_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipe nobody writes to fails after 0.3 s instead of WRITER_WAIT, to keep the unit layer fast."""
    monkeypatch.setattr(readers, "WRITER_WAIT", 0.3)


def _refused(entry: Entry, path: Path, *needles: str) -> str:
    with pytest.raises(entry.error) as caught:
        entry.load(path)
    message = str(caught.value)
    assert path.name in message
    for needle in needles:
        assert needle in message
    return message


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_regular_file_and_a_symlink_to_one_load(entry: Entry, tmp_path: Path) -> None:
    target = tmp_path / "..2026_12_06" / "file"  # as Kubernetes mounts a Secret or a ConfigMap
    target.parent.mkdir()
    target.write_text(entry.valid)
    link = tmp_path / "file.yaml"
    link.symlink_to(target)

    assert entry.load(target) is not None
    assert entry.load(link) is not None


@pytest.mark.parametrize("entry", TEXT_ENTRIES, ids=_ids)
def test_bytes_that_are_not_utf8_are_refused_with_their_offset_and_line(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(entry.valid.encode() + "# caf\u00e9\n".encode("latin-1"))

    _refused(entry, path, "not UTF-8", f"offset {len(entry.valid.encode()) + 5}", "line")


def test_known_hosts_skips_a_line_that_is_not_utf8_as_ssh_does(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(b"# caf\xe9\nnot a \xff key line\n")

    assert KnownHosts.load(path).lookup("example.org", 22) == []


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_device_is_refused(entry: Entry, device: str) -> None:
    _refused(entry, Path(device), "device")


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_directory_is_refused(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.mkdir()
    _refused(entry, path, "directory")


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_file_over_the_cap_is_refused_without_reading_it(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(entry.limit + 1)  # sparse: costs no disk and no time
    _refused(entry, path, "more than")


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_missing_file_is_refused(entry: Entry, tmp_path: Path) -> None:
    _refused(entry, tmp_path / "missing.yaml", "No such file")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.usefixtures("quick_pipes")
@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_fifo_nobody_writes_to_fails_quickly(entry: Entry, fifo: Path) -> None:
    started = time.monotonic()
    _refused(entry, fifo, "pipe", "nothing was written")
    assert time.monotonic() - started < 10


@contextmanager
def writing(path: Path, data: bytes, *, hold: float = 0.0) -> Iterator[None]:
    """A process-like writer in a thread: opens the FIFO (waiting for a reader), writes, holds it open, closes."""
    done = threading.Event()

    def write() -> None:
        try:
            with path.open("wb") as handle:
                handle.write(data)
                handle.flush()
                done.wait(hold)
        except BrokenPipeError:  # the reader refused and left: expected in the refusal tests
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        if thread.is_alive():  # the reader never opened the FIFO: let the writer's open() return
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        thread.join(timeout=10)


@pytest.mark.parametrize("entry", ENTRIES, ids=_ids)
def test_a_fifo_that_is_written_to_loads(entry: Entry, fifo: Path) -> None:
    with writing(fifo, entry.valid.encode()):
        assert entry.load(fifo) is not None


def test_a_pipe_whose_writer_never_finishes_times_out(fifo: Path) -> None:
    started = time.monotonic()
    with writing(fifo, b"half a secr", hold=30), pytest.raises(readers.InputFileError) as caught:
        readers.read_bytes(fifo, what="--secret x file", limit=100, timeout=0.5)
    assert "did not finish within 0.5 s" in str(caught.value)
    assert time.monotonic() - started < 10


def test_a_pipe_that_sends_more_than_the_cap_is_refused(fifo: Path) -> None:
    with writing(fifo, b"y\n" * 50_000), pytest.raises(readers.InputFileError) as caught:
        readers.read_bytes(fifo, what="playbook", limit=1000)
    assert f"cannot read playbook {fifo}: more than the 1000 bytes allowed came through the pipe" in str(caught.value)


def test_dev_stdin_as_a_pipe_is_read() -> None:
    script = "from recovery.safety.readers import read_text; print(read_text('/dev/stdin', what='t', limit=100))"
    result = subprocess.run(
        [sys.executable, "-c", script], input="from a pipe\n", capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout == "from a pipe\n\n"


def test_a_process_substitution_is_read() -> None:
    """`--secret password=@<(pass show console)`: bash hands over /dev/fd/63, a pipe."""
    script = (
        "import sys; from recovery.safety.readers import read_text; "
        "print(read_text(sys.argv[1], what='t', limit=100))"
    )
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "{script}" <(printf hunter2)'],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert result.stdout == "hunter2\n"


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(readers.InputFileError, match="socket"):
            readers.read_bytes(path, what="inventory", limit=100)


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhunter2")
    assert readers.read_text(path, what="secret", limit=100) == "hunter2"


# --- YAML -----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", YAML_ENTRIES, ids=_ids)
def test_an_alias_bomb_is_refused_quickly_in_little_memory(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        message = _refused(entry, path, "once aliases are expanded")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 20 * 1024 * 1024
    assert f"{path.name}:" in message  # with its line


@pytest.mark.parametrize("entry", YAML_ENTRIES, ids=_ids)
def test_deep_nesting_is_refused(entry: Entry, tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP)
    _refused(entry, path, f"{path.name}:1:", f"nested deeper than {readers.MAX_DEPTH} levels")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("a: &a [1, *a]\n", 1, "the alias *a is inside its own anchor"),
        ("a: 1\nb: 2024-13-45\n", 2, "cannot read '2024-13-45' as !!timestamp: month must be in 1..12"),
        ("a: 1\nb: " + "9" * 5000 + "\n", 2, "as !!int: Exceeds the limit (4300 digits)"),
        ("a:\n  <<: {b: 1}\n", 2, "merge keys (<<) are not supported"),
        ("a: =\n", 1, "'=' is read as !!value, which is not supported"),
        ("a: !python/object:os.system x\n", 1, "is read as !python/object:os.system, which is not supported"),
        ("a: !!set {b}\n", 1, "the tag !!set is not supported on a list or mapping"),
        ("a: !!str [1]\n", 1, "the tag !!str is not supported on a list or mapping"),
        ("a: !!map x\n", 1, "'x' is read as !!map, which is not supported"),
        ("a: !!bool abc\n", 1, "'abc' is not a valid !!bool"),
        ("a: !!timestamp abc\n", 1, "'abc' is not a valid !!timestamp"),
        ("a: !!int ''\n", 1, "'' is not a valid !!int"),
        ("a: !!float '-'\n", 1, "'-' is not a valid !!float"),
        ("a: !!binary 'a b'\n", 1, "cannot read 'a b' as !!binary: failed to decode base64 data"),
        ("a: 2001-12-14t21:59:43.10+25:00\n", 1, "as !!timestamp: offset must be a timedelta"),
        ("a: 1\n---\nb: 2\n", 2, "not valid YAML: but found another document"),
        ("a: 1\nb: \x07\n", 2, "not valid YAML: character U+0007"),
        ("a: *nothing\n", 1, "not valid YAML: found undefined alias"),
    ],
)
def test_yaml_that_would_fail_later_is_refused_with_its_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(readers.YamlError) as caught:
        readers.compose_yaml(text, "f.yaml")
    assert (caught.value.file, caught.value.line) == ("f.yaml", line)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"f.yaml:{line}: ")


@pytest.fixture
def pure_python_readers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """recovery.safety.readers as it loads where PyYAML was built without libyaml."""
    monkeypatch.setitem(sys.modules, "yaml._yaml", None)  # makes `from yaml._yaml import ...` fail
    spec = importlib.util.spec_from_file_location("readers_without_libyaml", readers.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module._Events.__module__ == spec.name  # the fallback, not libyaml's CParser
    return module


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (ALIAS_BOMB, 6, "once aliases are expanded"),
        (DEEP, 1, "nested deeper than 64 levels"),
        ("a: &a [1, *a]\n", 1, "the alias *a is inside its own anchor"),
        ("a: 1\nb: 2024-13-45\n", 2, "month must be in 1..12"),
        ("a: 1\nb: \x07\n", 2, "not valid YAML: character U+0007"),
        ("a: [1\n", 2, "not valid YAML"),
    ],
)
def test_without_libyaml_the_same_limits_hold(
    pure_python_readers: ModuleType, text: str, line: int, reason: str
) -> None:
    with pytest.raises(pure_python_readers.YamlError) as caught:
        pure_python_readers.compose_yaml(text, "f.yaml")
    assert caught.value.line == line
    assert reason in caught.value.reason


def test_explicit_tags_that_fit_their_value_are_fine() -> None:
    text = "a: !!int '12'\nb: !!str 1\nc: !!binary aGk=\nd: !!bool yes\ne: !!null ''\nf: !!float 1.5e+999\n"
    node = readers.compose_yaml(text, "f.yaml")
    data = readers.construct_yaml(node, "f.yaml")
    assert data == {"a": 12, "b": "1", "c": b"hi", "d": True, "e": None, "f": float("inf")}


def test_aliases_within_the_budget_are_fine() -> None:
    node = readers.compose_yaml("base: &base {user: ops}\nhosts: [*base, *base]\n", "f.yaml")
    assert readers.construct_yaml(node, "f.yaml") == {"base": {"user": "ops"}, "hosts": [{"user": "ops"}] * 2}


def test_an_empty_document_is_none() -> None:
    assert readers.compose_yaml("# nothing\n", "f.yaml") is None
    assert readers.construct_yaml(None, "f.yaml") is None


def test_a_list_as_a_mapping_key_is_refused_by_construct() -> None:
    node = readers.compose_yaml("? [a]\n: b\n", "f.yaml")
    with pytest.raises(readers.YamlError, match=r"f.yaml:1: found unhashable key"):
        readers.construct_yaml(node, "f.yaml")


# --- private keys ----------------------------------------------------------------------------


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return generate_keypair(tmp_path / "keys" / "id_ed25519").private_path


def test_a_key_behind_symlinks_loads(key: Path, tmp_path: Path) -> None:
    link = tmp_path / "mounted"
    link.symlink_to(key)
    Path(f"{link}.pub").symlink_to(f"{key}.pub")
    assert load_keypair(link, None).sha256 == load_keypair(key, None).sha256


def test_a_key_that_is_a_pipe_is_refused_at_once(fifo: Path) -> None:
    started = time.monotonic()
    with pytest.raises(KeyGenerationError, match=f"cannot read key file {fifo}: it is a pipe"):
        load_keypair(fifo, None)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_key_that_is_a_device_is_refused(device: str) -> None:
    with pytest.raises(KeyGenerationError, match=f"cannot read key file {device}: it is a device"):
        load_keypair(Path(device), None)


def test_a_key_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with path.open("wb") as handle:
        handle.truncate(readers.SECRET_LIMIT + 1)
    with pytest.raises(KeyGenerationError, match="more than the 64 KiB"):
        load_keypair(path, None)


def test_a_key_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyGenerationError, match="it is a directory"):
        load_keypair(tmp_path, None)


def test_a_key_readable_by_others_is_still_refused(key: Path) -> None:
    key.chmod(0o644)
    with pytest.raises(KeyGenerationError, match="has mode 0644"):
        load_keypair(key, None)


# --- the command line: exit 2, the file named, no traceback -----------------------------------


def _exit_two(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    return err


def test_validate_refuses_a_device_and_an_alias_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _exit_two(["validate", "/dev/zero"], "cannot read playbook /dev/zero: it is a device", capsys)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    _exit_two(["validate", str(bomb)], "bomb.yaml:", capsys)


def test_run_refuses_a_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"console:\n  login_timeout: 5 # \xe9\n")
    _exit_two(["run", str(SERIAL), "--config", str(config), "--dry-run"], f"config {config}: it is not UTF-8", capsys)


def test_audit_refuses_a_deep_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(DEEP)
    _exit_two(["audit", "--inventory", str(inventory)], f"{inventory}:1: nested deeper than", capsys)


def test_audit_refuses_a_known_hosts_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_keypair(tmp_path / "audit_key").private_path
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"defaults: {{user: ops, key: {key}}}\nhosts:\n  - name: pending\n")
    argv = ["audit", "--inventory", str(inventory), "--known-hosts", "/dev/zero"]
    _exit_two(argv, "cannot read known hosts file /dev/zero: it is a device", capsys)


def test_a_secret_fifo_nobody_writes_to_is_exit_two_within_seconds(
    fifo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real WRITER_WAIT, through the whole command."""
    argv = [
        "run", str(SERIAL), "--journal", str(tmp_path / "runs"), "--secret", f"console_password=@{fifo}",
        "-e", "console_url=ws://127.0.0.1:9/?token=tok-123456", "-e", "ssh_host=127.0.0.1", "-e", "user=ops",
        "-e", "trust_first_use=true",
    ]  # fmt: skip
    started = time.monotonic()
    _exit_two(argv, f"cannot read --secret console_password file {fifo}: it is a pipe and nothing was written", capsys)
    assert time.monotonic() - started < readers.WRITER_WAIT + 10
