"""The lab: a stand-in VM on loopback, made of real parts.

`up` creates a throwaway user with a console password and an "old" key in its
authorized_keys, an OpenSSH sshd that admits only that user by key, and a serial
console (a pty running agetty, bridged to TCP, behind websockify with a token
URL like Nova's). Recovery code, the demo and the tests all run against it.

Everything the lab starts is recorded in `DIR/lab.json`, so `status` and `down`
work from another process later. While `up` runs, `DIR/started.json` records the
user before it is created and each daemon the moment it starts, so `down` finds
them even when `up` was killed. `down` stops only what those files record, after
checking each PID still runs our program, then deletes the user. The directory
rules (root's, writable by nobody else, never a symlink) are in `recovery.lab.directory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import secrets
import stat
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from recovery.cli.hints import program
from recovery.errors import LabError
from recovery.lab import console, processes, sshd, users, vnc
from recovery.lab.commands import find_tool, fingerprint, generate_key
from recovery.lab.directory import DIRECTORY_MODE, claim, create_exclusive, trusted
from recovery.lab.layout import Layout
from recovery.safety.files import write_atomic
from recovery.safety.redact import Secret

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Generous for a loaded CI machine; the lab is normally up in 1-2 s.
_READY_TIMEOUT = 20.0
# What each recorded process's command line must contain, besides the lab
# directory, before we signal it: PIDs are reused once a process is gone.
_PROGRAMS = {"sshd": "sshd", "serial_port": "serial_port.py", "websockify": "websockify", **vnc.PROGRAMS}
# The public face first, so no new console client arrives while the line hangs up.
_STOP_ORDER = (*vnc.PROGRAMS, "websockify", "serial_port", "sshd")
CONSOLES = ("serial", "vnc")
_REQUIRED_TOOLS = (
    ("useradd", "passwd"),
    ("chpasswd", "passwd"),
    ("userdel", "passwd"),
    ("ssh-keygen", "openssh-client"),
    ("sshd", "openssh-server"),
    ("login", "login"),
)


@dataclass(frozen=True)
class Seed:
    """The state of the user's ~/.ssh before any recovery, for the edge cases tests need.

    Attributes:
        trailing_newline: end authorized_keys with a newline; False reproduces the
            file where a naive `>>` would glue the new key onto the last line.
        ssh_dir: create ~/.ssh at all; False leaves no ~/.ssh and no authorized_keys.
        ssh_dir_mode: the mode of ~/.ssh, e.g. 0o777, which sshd's StrictModes refuses.
        extra_lines: lines written after the old key (comments, other keys, options).
    """

    trailing_newline: bool = True
    ssh_dir: bool = True
    ssh_dir_mode: int = 0o700
    extra_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.ssh_dir_mode <= 0o7777:
            raise LabError(f"Seed.ssh_dir_mode must be a file mode such as 0o700, not {self.ssh_dir_mode:o}.")
        if any("\n" in line or "\r" in line for line in self.extra_lines):
            raise LabError("Each of Seed.extra_lines must be a single line, without \\n or \\r.")


@dataclass(frozen=True)
class LabInfo:
    """Everything a client needs to use a running lab; saved as DIR/lab.json (0600).

    The console password itself is only in `console_password_file`; call
    `console_password()` to get it as a `Secret`.
    """

    directory: Path
    user: str
    console_url: str
    console_port: int
    serial_port: int
    console_password_file: Path
    ssh_host: str
    ssh_port: int
    host_key_fingerprint: str
    host_public_key: str
    old_key_path: Path
    old_key_fingerprint: str
    old_public_key: str
    sshd_log: Path
    pids: dict[str, int]
    vnc_console_url: str = ""  # with `up(console="vnc")`: vnc://127.0.0.1:PORT (no password)

    @property
    def home(self) -> Path:
        return Layout(self.directory).home(self.user)

    @property
    def authorized_keys(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    @property
    def console_token(self) -> str:
        return parse_qs(urlsplit(self.console_url).query)["token"][0]

    @property
    def consoles(self) -> tuple[str, ...]:
        """The consoles this lab has: always "serial", and "vnc" when it was started with one."""
        return CONSOLES if self.vnc_console_url else ("serial",)

    def url_of(self, console: str) -> str:
        """The URL of the lab's `console` ("serial" or "vnc"), as a playbook's console_url takes it."""
        return self.vnc_console_url if console == "vnc" else self.console_url

    def console_password(self) -> Secret:
        """The lab user's console password, masked wherever it is formatted."""
        return Secret(self.console_password_file.read_text().strip())

    def to_json(self) -> str:
        """The lab.json text: paths as strings, keys sorted, no secret in it."""
        data = {
            key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, directory: Path) -> LabInfo:
        """Read DIR/lab.json.

        Raises:
            LabError: there is no lab in `directory`, or its lab.json is damaged.
        """
        path = Layout(directory).info
        try:
            data = json.loads(_read_record(path))
            hints = typing.get_type_hints(cls)
            fields: dict[str, Any] = {key: Path(value) if hints[key] is Path else value for key, value in data.items()}
            info = cls(**fields)
        except FileNotFoundError as exc:
            raise LabError(
                f"There is no lab in {directory}: {path.name} is missing. "
                f"Start one with `{program()} lab up --dir {directory}`."
            ) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(
                f"The lab's record {path} is damaged ({exc}), so it is unknown what to stop. "
                "Look at it, stop the lab's sshd, serial_port.py and websockify by hand, and "
                "delete the rcvlab-* user with userdel."
            ) from exc
        users.require_lab_user_name(info.user)
        return info


@dataclass(frozen=True)
class LabStatus:
    """A lab's health (whether each recorded process runs, each port listens, the user exists) and its `info`."""

    info: LabInfo
    user_exists: bool
    processes: dict[str, bool]
    ports: dict[str, bool]

    @property
    def directory(self) -> Path:
        return self.info.directory

    @property
    def user(self) -> str:
        return self.info.user

    @property
    def healthy(self) -> bool:
        return self.user_exists and all(self.processes.values()) and all(self.ports.values())


@dataclass
class _Started:
    """What `up` has created so far, so a failure or a signal can undo exactly that.

    Kept in memory for `up`'s own rollback, and in `DIR/started.json` for a `down`
    after `up` was killed outright: the user's name before useradd runs, each PID
    before anything waits for the daemon to be ready.
    """

    record: Path
    user: str | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def begin(self) -> None:
        """Create the record, failing if one exists (another `up`, or one that was interrupted).

        Raises:
            LabError: the record exists.
        """
        create_exclusive(self.record, self._text())

    def add_user(self, name: str) -> None:
        self.user = name
        self._save()

    def add_process(self, name: str, pid: int) -> None:
        self.pids[name] = pid  # first, so the rollback knows it even if the file cannot be written
        self._save()

    def _save(self) -> None:
        write_atomic(self.record, self._text())

    def _text(self) -> str:
        return json.dumps({"user": self.user, "pids": self.pids}, sort_keys=True) + "\n"

    @classmethod
    def load(cls, record: Path) -> _Started:
        """Read a started.json left by an `up` that never finished.

        Raises:
            LabError: the file is damaged, or names a user the lab could not have made.
        """
        try:
            data = json.loads(_read_record(record))
            started = cls(record, user=data["user"], pids=dict(data["pids"]))
            if started.user is not None:
                users.require_lab_user_name(started.user)
            if not all(isinstance(pid, int) and name in _PROGRAMS for name, pid in started.pids.items()):
                raise ValueError("a PID that is not a number, or a part the lab does not have")
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(
                f"The record {record} of an interrupted lab start is damaged ({exc}), so it is unknown "
                "what to stop. Look at it, stop the lab's sshd, serial_port.py and websockify by hand, "
                "and delete the rcvlab-* user with userdel."
            ) from exc
        return started


def up(directory: Path, *, seed: Seed = Seed(), password: Secret | None = None, console: str = "serial") -> LabInfo:
    """Start a lab in `directory` and wait until it answers.

    Args:
        directory: where the lab keeps its files and the user's home. A missing
            one is created (0711); an existing one must belong to root, be
            writable by nobody else and not be a symlink, and so must every
            directory above it (sticky ones such as /tmp excepted). Every parent
            must also be searchable by other users (the lab user must reach its
            home), which /tmp is and pytest's tmp_path is not.
        seed: the state of ~/.ssh to start from.
        password: the console password to give the lab user; random if None.
        console: "vnc" adds a VNC console (an xterm running login, shown by x11vnc) to the serial one.

    Returns:
        The running lab, also written to DIR/lab.json.

    Raises:
        UnsafeLabDirectory: another user could change `directory`; nothing was written.
        LabError: not root, a tool is missing, a lab already runs there, or a
            part failed to start; whatever had started is stopped and the user
            removed before this is raised. KeyboardInterrupt does the same.
    """
    if console not in CONSOLES:
        raise LabError(f"The lab's console is one of {', '.join(CONSOLES)}, not {console!r}.")
    _require_root()
    _preflight()
    if console == "vnc":
        vnc.require_tools()
    layout = _claim_directory(directory)
    started = _begin(layout)
    try:
        _clear_leftovers(layout)
        info = _start(layout, seed, started, password)
        if console == "vnc":
            vnc_url, _ = vnc.start(layout, started.add_process, _READY_TIMEOUT)
            info = dataclasses.replace(info, vnc_console_url=vnc_url, pids=dict(started.pids))
        for name in info.consoles:
            create_exclusive(layout.console_url(name), info.url_of(name) + "\n")
        write_atomic(layout.info, info.to_json())
        layout.started.unlink()
    except BaseException:
        _rollback(layout, started)
        raise
    log.info("lab up in %s: ssh %s:%d, user %s", layout.directory, HOST, info.ssh_port, info.user)
    return info


def status(directory: Path) -> LabStatus:
    """Which recorded processes still run our programs, and which ports listen or answer.

    The console and serial ports are checked for a listening socket rather than
    connected to: a connection would take the console from whoever uses it.

    Raises:
        UnsafeLabDirectory: another user could change `directory`; nothing was read.
        LabError: there is no lab in `directory`, or only what an interrupted `up` left.
    """
    info = LabInfo.load(_existing_lab(trusted(directory)))
    ports = {
        "ssh": sshd.answers(info.ssh_port),
        "console": HOST in processes.listening_addresses(info.console_port),
        "serial_port": HOST in processes.listening_addresses(info.serial_port),
    }
    if info.vnc_console_url:
        ports["vnc"] = HOST in processes.listening_addresses(urlsplit(info.vnc_console_url).port or 0)
    return LabStatus(
        info=info,
        user_exists=users.uid_of(info.user) is not None,
        processes={name: _is_ours(info.directory, name, pid) for name, pid in info.pids.items()},
        ports=ports,
    )


def down(directory: Path) -> None:
    """Stop the lab in `directory`, delete its user and home, and remove its state files.

    Also stops what an `up` that was killed had started, from its started.json.
    Idempotent: parts already gone are skipped, and a directory without a lab
    is left alone. The logs stay, for whoever must explain a failure.

    Raises:
        UnsafeLabDirectory: another user could change `directory`; nothing was read or stopped.
        LabError: something would not stop; the records are then kept so down can run again.
    """
    layout = Layout(trusted(directory))
    user: str | None
    if layout.info.exists():
        info = LabInfo.load(layout.directory)
        user, pids = info.user, info.pids
    elif layout.started.exists():
        started = _Started.load(layout.started)
        user, pids = started.user, started.pids
        log.info("the lab start in %s was interrupted; stopping what it had started", layout.directory)
    else:
        log.info("no lab in %s; nothing to stop", layout.directory)
        return
    _teardown(layout, user, pids)
    log.info("lab in %s is down; user %s removed", layout.directory, user)


def stop_process(info: LabInfo, name: str) -> None:
    """Stop one part of a running lab, e.g. "sshd" to make a later SSH check fail.

    Raises:
        LabError: `name` is not one of the lab's processes.
    """
    if name not in info.pids:
        raise LabError(f"The lab has no process called {name!r}; it has {sorted(info.pids)}.")
    _stop_recorded(info.directory, name, info.pids[name])


def start_sshd(info: LabInfo) -> LabInfo:
    """Start the lab's sshd again on its port (no-op if it runs); records the new PID at once.

    Returns:
        `info` with the new sshd PID, also saved to lab.json.

    Raises:
        LabError: sshd did not come back.
    """
    if _is_ours(info.directory, "sshd", info.pids["sshd"]):
        return info
    layout = Layout(info.directory)
    restarted = [info]

    def record(pid: int) -> None:
        restarted.append(dataclasses.replace(info, pids={**info.pids, "sshd": pid}))
        write_atomic(layout.info, restarted[-1].to_json())

    pid = sshd.start(layout, record)
    try:
        sshd.wait_ready(layout, pid=pid, port=info.ssh_port, timeout=_READY_TIMEOUT)
    except LabError:
        processes.stop(pid)
        raise
    return restarted[-1]


def replace_console_target(info: LabInfo, host: str, port: int) -> None:
    """Point the console URL's token at host:port (e.g. a fault-injecting proxy).

    websockify reads the token file on each connection, so this takes effect for
    the next websocket; an open one keeps its target. Restore the lab with
    `replace_console_target(info, info.ssh_host, info.serial_port)`.

    Raises:
        LabError: `host` is not in 127.0.0.0/8.
    """
    _require_loopback(host)
    console.write_target(Layout(info.directory), info.console_token, host, port)


def read_authorized_keys(info: LabInfo) -> bytes | None:
    """The user's authorized_keys exactly as on disk, or None if there is none."""
    try:
        return info.authorized_keys.read_bytes()
    except FileNotFoundError:
        return None


def ssh_paths_modes(info: LabInfo) -> dict[str, int | None]:
    """Permission bits of the paths StrictModes checks: "home", "ssh_dir", "authorized_keys".

    None for a path that does not exist.
    """
    paths = {
        "home": info.home,
        "ssh_dir": info.authorized_keys.parent,
        "authorized_keys": info.authorized_keys,
    }
    return {name: _mode(path) for name, path in paths.items()}


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return None


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "The lab must run as root: it creates a throwaway user with useradd, sets its "
            "console password with chpasswd, and runs agetty and /bin/login on a pty, which "
            "only root may do. Run it again as root (for example with sudo, or as the root "
            "user of a container or CI job); nothing was started."
        )


def _preflight() -> None:
    """Find every tool before creating anything, so a missing package costs no cleanup."""
    for name, package in _REQUIRED_TOOLS:
        find_tool(name, package)
    console.require_websockify()


def _require_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        loopback = False
    if not loopback:
        raise LabError(
            f"The lab only ever uses addresses in 127.0.0.0/8, and {host!r} is not one: its "
            "user and console password are throwaway, and must not be reachable from outside."
        )


def _claim_directory(directory: Path) -> Layout:
    """The lab directory, checked and created (see `recovery.lab.directory`)."""
    plain = Path(os.path.abspath(directory))
    if any(char in str(plain) for char in '"\n'):
        raise LabError(
            f"The lab directory {str(plain)!r} contains a double quote or a newline, which "
            "cannot be written into sshd's configuration file. Choose a plainer path."
        )
    _require_searchable_parents(plain)
    return Layout(claim(plain))


def _begin(layout: Layout) -> _Started:
    """Create started.json, exclusively: of two `up` in one directory, the second stops here.

    lab.json is looked at again once started.json is ours: a concurrent `up` that
    finished meanwhile wrote it before removing its own started.json.

    Raises:
        LabError: a lab is set up or being started in the directory, or its start was interrupted.
    """
    for record, what in ((layout.info, "A lab is already set up"), (layout.started, "A lab start was interrupted")):
        if os.path.lexists(record):
            raise LabError(
                f"{what} in {layout.directory} (it has {record.name}). Stop it with "
                f"`{program()} lab down --dir {layout.directory}` first, or use another directory."
            )
    started = _Started(layout.started)
    started.begin()
    if os.path.lexists(layout.info):
        layout.started.unlink()
        raise LabError(f"Another `lab up` has just set up a lab in {layout.directory}; use another directory.")
    return started


def _clear_leftovers(layout: Layout) -> None:
    """Remove what a stopped lab left (its logs among them), and make the directory for the homes."""
    for path in (*layout.state_files(), *layout.logs(), *vnc.files(layout)):
        if path != layout.started:
            path.unlink(missing_ok=True)
    layout.homes.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
    os.chmod(layout.homes, DIRECTORY_MODE)


def _existing_lab(directory: Path) -> Path:
    """`directory`, after saying what to do if it holds only an interrupted start."""
    layout = Layout(directory)
    if not layout.info.exists() and layout.started.exists():
        raise LabError(
            f"The lab start in {directory} was interrupted, so there is no lab to use, but what it had "
            f"started may still run. Stop it with `{program()} lab down --dir {directory}`, then start a "
            f"new lab with `{program()} lab up --dir {directory}`."
        )
    return directory


def _read_record(path: Path) -> str:
    """A lab record's text, never through a symlink.

    Raises:
        FileNotFoundError: there is no such record.
        LabError: it is a symlink, or not readable by this user (the lab's records are root's).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError as exc:
        raise LabError(f"{path} is readable by root only, as the lab's secrets are: run this as root.") from exc
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise LabError(f"{path} is a symbolic link; the lab never wrote one, so it is not read.") from exc
    with os.fdopen(descriptor, encoding="utf-8") as record:
        return record.read()


def _require_searchable_parents(directory: Path) -> None:
    """Checked before anything is created."""
    for parent in directory.parents:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue  # `claim` creates it 0755
        if not mode & stat.S_IXOTH:
            raise LabError(
                f"The lab user's home would be under {directory}, but {parent} is not "
                "searchable by other users, so neither login nor sshd could reach it. Use a "
                f"directory under /tmp or /var/tmp, or run `chmod o+x {parent}`."
            )


def _start(layout: Layout, seed: Seed, started: _Started, password: Secret | None) -> LabInfo:
    """Start every part, slowest first, then wait for all of them together."""
    deadline = time.monotonic() + _READY_TIMEOUT
    console.start_serial_port(layout, lambda pid: started.add_process("serial_port", pid))
    _, console_port = console.start_websockify(layout, lambda pid: started.add_process("websockify", pid))
    old_public_key = generate_key(layout.old_key, comment="rcvlab-old-key")
    user = _create_user(layout, seed, started, old_public_key, password)
    ssh_port = processes.free_port()
    host_public_key = sshd.configure(layout, port=ssh_port, user=user.name)
    sshd.start(layout, lambda pid: started.add_process("sshd", pid))

    serial_port = console.wait_serial_port(layout, pid=started.pids["serial_port"], timeout=_remaining(deadline))
    token = secrets.token_urlsafe(24)
    console.write_target(layout, token, HOST, serial_port)
    console_url = f"ws://{HOST}:{console_port}/?token={token}"
    sshd.wait_ready(layout, pid=started.pids["sshd"], port=ssh_port, timeout=_remaining(deadline))
    console_pids = {name: started.pids[name] for name in ("serial_port", "websockify")}
    console.wait_login_prompt(layout, url=console_url, pids=console_pids, timeout=_remaining(deadline))
    return LabInfo(
        directory=layout.directory,
        user=user.name,
        console_url=console_url,
        console_port=console_port,
        serial_port=serial_port,
        console_password_file=layout.console_password,
        ssh_host=HOST,
        ssh_port=ssh_port,
        host_key_fingerprint=fingerprint(host_public_key),
        host_public_key=host_public_key,
        old_key_path=layout.old_key,
        old_key_fingerprint=fingerprint(old_public_key),
        old_public_key=old_public_key,
        sshd_log=layout.sshd_log,
        pids=dict(started.pids),
    )


def _create_user(
    layout: Layout, seed: Seed, started: _Started, old_public_key: str, password: Secret | None
) -> users.LabUser:
    """The lab user, its console password, and its ~/.ssh as `seed` says."""
    name = users.new_user_name()
    started.add_user(name)
    user = users.create_user(name, layout.homes)
    users.set_console_password(user, layout.console_password, password.reveal() if password else None)
    if seed.ssh_dir:
        users.seed_authorized_keys(
            user,
            [old_public_key, *seed.extra_lines],
            trailing_newline=seed.trailing_newline,
            ssh_dir_mode=seed.ssh_dir_mode,
        )
    return user


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _rollback(layout: Layout, started: _Started) -> None:
    """Undo a failed `up`, keeping the original error the one that is raised."""
    log.error("the lab in %s failed to start; stopping what was started", layout.directory)
    try:
        _teardown(layout, started.user, started.pids)
    except LabError:
        log.exception("cleaning up the failed lab in %s failed too", layout.directory)


def _teardown(layout: Layout, user: str | None, pids: dict[str, int]) -> None:
    """Stop the recorded processes, remove the user, then the state files.

    Every part is attempted even when one fails; the failures are raised
    together at the end and the state files (lab.json among them) are kept.
    """
    problems: list[str] = []
    for name in _STOP_ORDER:
        if name in pids:
            try:
                _stop_recorded(layout.directory, name, pids[name])
            except LabError as exc:
                problems.append(str(exc))
    if user is not None:
        try:
            users.remove_user(user, layout.home(user))
        except LabError as exc:
            problems.append(str(exc))
    with contextlib.suppress(OSError):  # only if no other lab user's home is left in it
        layout.homes.rmdir()
    if problems:
        raise LabError(f"The lab in {layout.directory} was not fully stopped. " + " ".join(problems))
    for path in (*layout.state_files(), *vnc.files(layout)):
        path.unlink(missing_ok=True)


def _is_ours(directory: Path, name: str, pid: int) -> bool:
    """True if `pid` runs and its command line is the lab program `name` for `directory`."""
    command = processes.command_line(pid)
    return processes.alive(pid) and _PROGRAMS[name] in command and f"{directory}/" in command


def _stop_recorded(directory: Path, name: str, pid: int) -> None:
    if not _is_ours(directory, name, pid):
        log.info("%s (pid %d) is not running any more", name, pid)
        return
    processes.stop(pid)
    log.info("stopped %s (pid %d)", name, pid)
