"""Every file a user hands the tool is read here: a playbook, `--config`, `--inventory`,
`--secret NAME=@FILE`, `--known-hosts`, `--key`.

The tool runs during an incident, often from a script or a pod, so a file may be
a Kubernetes Secret (a symlink into `..data/`), `/dev/stdin`, a process
substitution such as `<(pass show console)`, or something nobody meant to give
it. The rules:

- A regular file, or a symlink to one, is read whole, up to a size cap.
- A pipe (FIFO) is read up to the same cap, never blocking: it is opened with
  `O_NONBLOCK` and polled. If no process holds its other end (a `mkfifo` nobody
  writes to) that is an error after `WRITER_WAIT` seconds; if a writer is there
  but the data has not all arrived after `PIPE_TIMEOUT` seconds, that is an error too.
- Devices (`/dev/zero`, a terminal), directories and sockets are refused before
  they are opened, because opening some devices already does something.
- Text must be UTF-8; the error names the byte offset and line that are not.

The caps, chosen so that a real input fits many times over and a hostile one
cannot take the machine's memory:

- playbooks and the config: 1 MiB (`TEXT_LIMIT`) and 100,000 YAML nodes;
  the shipped playbooks are under 10 KiB and a few hundred nodes;
- an inventory: 4 MiB (`INVENTORY_LIMIT`) and 500,000 nodes, about 40,000
  hosts (an inventory host is 7 to 14 nodes; 10,000 hosts are about 0.6 MiB and
  take 2 to 4 s to read on a busy 2-core machine, the worst 4 MiB 9 to 17 s and
  150 MB: benchmarks/readers.py);
- a known_hosts file: 64 MiB (`KNOWN_HOSTS_LIMIT`), 100,000 hosts with three keys each;
- a secret or an SSH key file: 64 KiB (`SECRET_LIMIT`); a 16384-bit RSA key is 13 KiB.

YAML goes through `compose_yaml`: libyaml's (or PyYAML's) event parser under
PyYAML's composer, with three extra checks while the node tree is built, so
that nothing after it can be made to loop or explode:

- the document's size *with every alias expanded* is counted against the node
  budget, so a "billion laughs" alias bomb stops after a few aliases instead of
  after the memory is gone (the consumers walk the tree with aliases expanded);
  an alias inside its own anchor (`&a [*a]`) is refused;
- nesting deeper than `MAX_DEPTH` levels is refused (the composer is recursive);
- every scalar that could fail to construct is constructed once, so a value
  that looks like a date but is not one (`2024-13-45`), an integer of 5,000
  digits, `=`, a `<<` merge key, or an explicit tag that does not fit its value
  (`!!bool abc`, `!!map x`) is reported with its line here, not as a traceback
  in whoever reads it later. Collections may carry only the plain `!!map` and
  `!!seq` tags, scalars only the standard scalar tags.

Every problem is an `InputFileError` (a `UsageError`: exit 2) whose one-paragraph
message names the file, and the line where there is one.
"""

from __future__ import annotations

import os
import select
import stat
import time
from collections.abc import Callable

import yaml
import yaml.composer
import yaml.constructor
import yaml.resolver

from recovery.errors import UsageError

__all__ = [
    "INVENTORY_LIMIT",
    "INVENTORY_NODES",
    "KNOWN_HOSTS_LIMIT",
    "MAX_DEPTH",
    "PIPE_TIMEOUT",
    "SECRET_LIMIT",
    "TEXT_LIMIT",
    "TEXT_NODES",
    "WRITER_WAIT",
    "InputFileError",
    "YamlError",
    "compose_yaml",
    "construct_yaml",
    "read_bytes",
    "read_text",
]

KIB = 1024
MIB = 1024 * KIB
TEXT_LIMIT = 1 * MIB
INVENTORY_LIMIT = 4 * MIB
KNOWN_HOSTS_LIMIT = 64 * MIB
SECRET_LIMIT = 64 * KIB
TEXT_NODES = 100_000
INVENTORY_NODES = 500_000
MAX_DEPTH = 64
PIPE_TIMEOUT = 30.0  # a writer that is there may be slow: `pass` asking gpg-agent for a passphrase
WRITER_WAIT = 3.0  # a pipe with no writer at all will stay empty: say so quickly
_CHUNK = 64 * KIB
_POLL_GAP = 0.05


class InputFileError(UsageError):
    """A file the user gave cannot be taken: wrong kind, too big, not UTF-8, hostile or broken YAML."""


class YamlError(InputFileError):
    """YAML that cannot be used; `file`, `line` (1-based, or None) and `reason` are kept apart for reports."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")


# --- bytes and text -----------------------------------------------------------------------


def read_bytes(
    path: str | os.PathLike[str],
    *,
    what: str,
    limit: int,
    pipes: bool = True,
    timeout: float | None = None,
    writer_wait: float | None = None,
) -> bytes:
    """The whole content of a regular file (or a symlink to one), or of a pipe when `pipes`.

    :param what: what the file is, for messages: "playbook", "--secret token file".
    :param limit: the most bytes accepted; a longer file is refused, not truncated.
    :param pipes: False where a pipe makes no sense (a private key needs its mode checked
        and its `.pub` beside it).
    :param timeout: seconds for a pipe with a writer to deliver everything (`PIPE_TIMEOUT`).
    :param writer_wait: seconds for a pipe without a writer to get one (`WRITER_WAIT`).
    :raises InputFileError: missing, unreadable, a device, directory or socket, too big, or a
        pipe that stays silent.
    """
    name = os.fspath(path)

    def refuse(reason: str) -> InputFileError:
        return InputFileError(f"cannot read {what} {name}: {reason}")

    try:
        before = os.stat(name)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    kind = _kind(before.st_mode, pipes)
    if kind is not None:
        raise refuse(kind)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino) or _kind(opened.st_mode, pipes):
            raise refuse("it was replaced while being opened; try again")
        if stat.S_ISFIFO(opened.st_mode):
            return _read_pipe(
                fd,
                limit,
                PIPE_TIMEOUT if timeout is None else timeout,
                WRITER_WAIT if writer_wait is None else writer_wait,
                refuse,
            )
        if opened.st_size > limit:
            raise refuse(f"it is {_size(opened.st_size)}, more than the {_size(limit)} a {what} may have")
        data = _read_file(fd, limit, refuse)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    return data


def read_text(
    path: str | os.PathLike[str],
    *,
    what: str,
    limit: int,
    pipes: bool = True,
    timeout: float | None = None,
    writer_wait: float | None = None,
) -> str:
    """`read_bytes`, decoded as UTF-8 (a leading byte order mark is dropped).

    :raises InputFileError: as `read_bytes`, or the bytes are not UTF-8 (the message gives
        the offset and line of the first bad byte).
    """
    data = read_bytes(path, what=what, limit=limit, pipes=pipes, timeout=timeout, writer_wait=writer_wait)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputFileError(
            f"cannot read {what} {os.fspath(path)}: it is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}, line {line}); save it as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")


def _kind(mode: int, pipes: bool) -> str | None:
    """Why a file of this type is refused, or None when it may be read."""
    if stat.S_ISREG(mode) or (pipes and stat.S_ISFIFO(mode)):
        return None
    if stat.S_ISFIFO(mode):
        return "it is a pipe, and this must be a regular file"
    if stat.S_ISDIR(mode):
        return "it is a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a file (a terminal is one too: pipe the text in, or give a file)"
    return "it is a socket or another special file, not a regular file"


def _read_file(fd: int, limit: int, refuse: Callable[[str], InputFileError]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:  # it grew after fstat, or it is a /proc file that reports size 0
            raise refuse(f"it is more than the {_size(limit)} allowed")
    return b"".join(chunks)


def _read_pipe(
    fd: int, limit: int, timeout: float, writer_wait: float, refuse: Callable[[str], InputFileError]
) -> bytes:
    """Read a pipe opened O_NONBLOCK until its writer closes it, bounded in size and time.

    An empty non-blocking read means EOF only once a writer has been seen: before that,
    read() returns b"" because no process has the pipe open for writing yet (EAGAIN means
    a writer is there and has not written).
    """
    start = time.monotonic()
    chunks: list[bytes] = []
    total = 0
    writer = False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        try:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        except BlockingIOError:
            writer = True
            chunk = None
        if chunk:
            writer = True
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise refuse(f"more than the {_size(limit)} allowed came through the pipe")
            continue
        if chunk == b"" and writer:
            return b"".join(chunks)
        waited = time.monotonic() - start
        if not writer and waited >= writer_wait:
            raise refuse(
                f"it is a pipe and nothing was written to it within {writer_wait:g} s "
                "(is the command that should feed it running?)"
            )
        if writer and waited >= timeout:
            raise refuse(f"it is a pipe and its writer did not finish within {timeout:g} s")
        left = (timeout if writer else writer_wait) - waited
        # Without a writer Linux may report the pipe as hung up at once: wait a little anyway.
        if poller.poll(max(1, int(min(left, 1.0) * 1000))) and chunk == b"":
            time.sleep(_POLL_GAP)


def _size(count: int) -> str:
    if count >= MIB:
        return f"{count / MIB:.1f} MiB"
    return f"{count / KIB:.0f} KiB" if count >= KIB else f"{count} bytes"


# --- YAML -----------------------------------------------------------------------------------

try:
    from yaml._yaml import CParser as _Events
except ImportError:  # PyYAML built without libyaml: its own (slower) scanner and parser

    class _Events(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


_YAML = "tag:yaml.org,2002:"
_COLLECTION_TAGS = {_YAML + "map", _YAML + "seq"}
_MERGE = _YAML + "merge"
# Scalars with these tags must look like what the tag says (`!!bool abc` does not), which
# PyYAML checks only for implicit tags: its constructors assume the value matched.
_TYPED_TAGS = {_YAML + name for name in ("int", "float", "bool", "null", "timestamp")}
# The constructors that can still fail on a well-formed value: 2024-13-45, 5000 digits, bad base64.
_CHECKED_TAGS = {_YAML + name for name in ("int", "timestamp", "binary")}
_SCALAR_TAGS = {_YAML + "str", _YAML + "binary", *_TYPED_TAGS}


class _Budget(Exception):
    """Raised inside the composer; `compose_yaml` turns it into a YamlError with the line."""

    def __init__(self, mark: object, reason: str) -> None:
        super().__init__(reason)
        self.mark = mark
        self.reason = reason


class _BoundedComposer(yaml.composer.Composer, _Events, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's composer over an event parser, counting expanded nodes and depth as it goes."""

    def __init__(self, text: str, max_nodes: int, max_depth: int) -> None:
        _Events.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.depth = 0
        self.expanded = 0  # nodes in the document with every alias replaced by what it names
        self.sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once it is complete

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        assert event is not None  # the parser asked for a node, so an event is there
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Budget(event.start_mark, f"nested deeper than {self.max_depth} levels")
        try:
            before = self.expanded
            node = super().compose_node(parent, index)
            assert node is not None
            if isinstance(event, yaml.AliasEvent):
                size = self.sizes.get(id(node))
                if size is None:
                    raise _Budget(event.start_mark, f"the alias *{event.anchor} is inside its own anchor")
                self.expanded += size
            else:
                self.expanded += 1
                if isinstance(event, yaml.NodeEvent) and event.anchor is not None:  # only these can be aliased
                    self.sizes[id(node)] = self.expanded - before
                if isinstance(node, yaml.ScalarNode):
                    self._check_scalar(node)
                elif node.tag not in _COLLECTION_TAGS:
                    tag = node.tag.replace(_YAML, "!!")
                    raise _Budget(node.start_mark, f"the tag {tag} is not supported on a list or mapping")
            if self.expanded > self.max_nodes:
                raise _Budget(
                    event.start_mark,
                    f"more than {self.max_nodes:,} values once aliases are expanded "
                    "(an alias bomb, or far bigger than any real input)",
                )
            return node
        finally:
            self.depth -= 1

    def _check_scalar(self, node: yaml.ScalarNode) -> None:
        if node.tag == _MERGE:
            raise _Budget(node.start_mark, "merge keys (<<) are not supported: write the keys out")
        tag = node.tag.replace(_YAML, "!!")
        if node.tag not in _SCALAR_TAGS:
            raise _Budget(node.start_mark, f"{node.value[:40]!r} is read as {tag}, which is not supported here")
        if node.tag in _TYPED_TAGS:
            implicit = self.resolve(yaml.ScalarNode, node.value, (True, False))  # type: ignore[no-untyped-call]
            if implicit != node.tag:
                raise _Budget(node.start_mark, f"{node.value[:40]!r} is not a valid {tag}")
        if node.tag not in _CHECKED_TAGS:
            return
        try:
            self.construct_object(node)
        except (ValueError, yaml.YAMLError) as exc:
            reason = str(getattr(exc, "problem", None) or exc).split(";")[0]
            raise _Budget(
                node.start_mark, f"cannot read {node.value[:40]!r} as {tag}: {reason} (quote it if it is text)"
            ) from exc
        finally:
            self.constructed_objects.pop(node, None)


def compose_yaml(text: str, file: str, *, max_nodes: int = TEXT_NODES, max_depth: int = MAX_DEPTH) -> yaml.Node | None:
    """The node tree of a single-document YAML text, or None for an empty one.

    Nodes keep their marks, so callers report lines. After this returns, walking the
    tree with aliases expanded visits at most `max_nodes` nodes at most `max_depth` deep,
    and every scalar node can be constructed with `SafeConstructor` without error.

    :param file: names the text in messages.
    :raises YamlError: not valid YAML, more than one document, over the budget or depth,
        an unsupported tag or merge key, or a scalar that cannot be constructed.
    """
    try:
        composer = _BoundedComposer(text, max_nodes, max_depth)  # PyYAML's own reader checks the text here
        try:
            return composer.get_single_node()
        finally:
            composer.dispose()
    except _Budget as exc:
        raise YamlError(file, _line(exc.mark), exc.reason) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError(file, line, f"not valid YAML: {_reason(exc)}") from None
    except yaml.YAMLError as exc:
        raise YamlError(file, _line(getattr(exc, "problem_mark", None)), f"not valid YAML: {_reason(exc)}") from None


def construct_yaml(node: yaml.Node | None, file: str) -> object:
    """Plain Python data (dicts, lists, scalars) from a node tree `compose_yaml` returned.

    Aliases become shared objects, not copies.

    :raises YamlError: a mapping key that is itself a list or mapping.
    """
    if node is None:
        return None
    try:
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:
        raise YamlError(file, _line(getattr(exc, "problem_mark", None)), _reason(exc)) from None


def _line(mark: object) -> int | None:
    line = getattr(mark, "line", None)  # PyYAML's Mark or libyaml's
    return line + 1 if isinstance(line, int) else None


def _reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"character U+{code:04X}: {exc.reason}"
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    return f"{problem} ({context})" if problem and context else str(problem or exc)
