"""Start, watch and stop the lab's daemons, and touch no process we cannot prove is ours.

The daemons outlive the call that starts them (and usually the process: `recovery
lab up` exits and `recovery lab down` comes later), so they run in sessions of
their own and are found again by PID. Before signalling a recorded PID we check
its command line, since a PID can be reused once our process has gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from recovery.errors import LabError

log = logging.getLogger(__name__)

_POLL_INTERVAL = 0.02
_STOP_GRACE = 3.0
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def poll_until(check: Callable[[], bool], timeout: float) -> bool:
    """Call `check` until it returns True or `timeout` seconds pass; says which happened.

    The lab's readiness waits are all this bounded loop, never a guessed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)


def spawn(
    argv: Sequence[str], *, log_path: Path, record: Callable[[int], None] | None = None, stdin_fd: int | None = None
) -> int:
    """Start `argv` as a daemon in a new session, pass its PID to `record` (if given), return the PID.

    stdout and stderr go to `log_path`, appended to and never through a symlink.
    SIGINT, SIGTERM and SIGHUP (which `lab up` turns into KeyboardInterrupt) wait
    until `record` has returned, so a signal can never leave a daemon running that
    `down` does not know about; the daemon itself starts with no signal blocked.

    posix_spawn rather than subprocess.Popen: the daemon outlives this call, and a
    Popen object dropped while its child runs warns. A new session makes the PID
    lead its own process group, so `stop` can signal everything it forked.

    Raises:
        LabError: the program could not be started.
    """
    stdin_action = (
        (os.POSIX_SPAWN_DUP2, stdin_fd, 0)
        if stdin_fd is not None
        else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    )
    actions = [
        stdin_action,
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    with _signals_deferred():
        try:
            pid = os.posix_spawn(argv[0], list(argv), os.environ, file_actions=actions, setsid=True, setsigmask=())
        except OSError as exc:
            raise LabError(f"Could not start `{' '.join(argv)}`: {exc}.") from exc
        log.debug("started pid %d: %s", pid, " ".join(argv))
        if record is not None:
            record(pid)
    return pid


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back until the block ends; they are delivered then.

    Only this thread's mask changes, which covers `recovery lab up` and the demo: they
    start the lab from the main thread with no other thread that could take the signal.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines a daemon wrote to its log, on one line, for an error message."""
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return "(no log written)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty)"


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """The name in /proc/PID/stat and the fields after it (state, parent, ...); None when there is no such process.

    The name is read up to the last ")": a program may put anything in its name, ")" and spaces included.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return name, rest.split()


def _state(pid: int) -> str | None:
    """The one-letter state of `pid`, or None when there is no such process."""
    found = _stat(pid)
    return found[1][0] if found is not None else None


def children(pid: int) -> list[tuple[int, str]]:
    """(PID, name) of every process whose parent is `pid`."""
    found = []
    for child in _all_pids():
        stat = _stat(child)
        if stat is not None and int(stat[1][1]) == pid:
            found.append((child, stat[0]))
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: when the lab was started by
    another process, its daemons belong to init, which may never reap them."""
    _reap(pid)
    return _state(pid) not in (None, "Z", "X")


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces ("" if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def stop(pid: int, *, grace: float = _STOP_GRACE) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `grace` seconds, reap.

    Raises:
        LabError: the process survived SIGKILL (it is stuck in the kernel).
    """
    _signal_group(pid, signal.SIGTERM)
    if poll_until(lambda: not alive(pid), grace):
        return
    log.warning("pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, grace)
    _signal_group(pid, signal.SIGKILL)
    if not poll_until(lambda: not alive(pid), grace):
        raise LabError(
            f"Process {pid} did not exit even after SIGKILL; it is probably stuck in the "
            f"kernel (see `cat /proc/{pid}/stack`). Stop it by hand, then run down again."
        )


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _uids(pid: int) -> set[int]:
    """Real, effective, saved and filesystem uid of `pid` (empty if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return set()
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return {int(field) for field in line.split()[1:]}
    return set()


def _all_pids() -> Iterator[int]:
    return (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def user_processes(uid: int) -> list[int]:
    """Live processes running under `uid` in any of their uids."""
    return [pid for pid in _all_pids() if uid in _uids(pid) and alive(pid)]


def kill_user_processes(uid: int, *, timeout: float = 5.0) -> None:
    """SIGKILL every process of `uid` until none is left; new ones may fork meanwhile.

    SIGKILL, not SIGTERM: an interactive bash ignores SIGTERM.

    Raises:
        LabError: processes of `uid` were still running after `timeout` seconds.
    """

    def sweep() -> bool:
        remaining = user_processes(uid)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not remaining

    if not poll_until(sweep, timeout):
        raise LabError(
            f"Processes of uid {uid} kept running after {timeout:.0f} s of SIGKILL: "
            f"{user_processes(uid)}. Stop them by hand, then run down again."
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server that cannot bind port 0 itself (sshd)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Every local address with a TCP socket in LISTEN state on `port`, IPv4 and IPv6.

    Read from /proc/net rather than by connecting, which would take the serial
    console from whoever is using it.
    """
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                address, hex_port = fields[1].split(":")
                if fields[3] == _LISTEN and int(hex_port, 16) == port:
                    found.add(_decode_address(address, family))
    return found


def _decode_address(hex_address: str, family: socket.AddressFamily) -> str:
    """The kernel prints each 32-bit word of the address in host byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)
