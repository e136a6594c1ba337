"""The built-in lab, with every part real: useradd, sshd, agetty on a pty, websockify.

Most tests share one lab (about 1 s to start); those that change its state, or
need a particular `Seed`, start their own. Every fixture calls `down` in its
finalizer, so a failing test leaves no user, process or file behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import websocket

from recovery import lab
from recovery.errors import LabError, UnsafeLabDirectory
from recovery.lab.directory import claim
from recovery.lab.processes import alive, user_processes

pytestmark = pytest.mark.lab

_PROMPT = rb"\$ $"


@contextlib.contextmanager
def _lab_directory(prefix: str = "rcvlab-test-") -> Iterator[Path]:
    """A fresh directory under /tmp (pytest's tmp_path is 0700, which the lab user
    could not pass through to its home); the lab in it is always taken down."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        lab.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[lab.LabInfo]:
    """One lab for the tests that leave it as they found it; a space in its path
    checks that nothing (sshd_config above all) splits paths on whitespace."""
    with _lab_directory(prefix="rcvlab test-") as directory:
        yield lab.up(directory)


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    """A directory for a test that starts (and may break) its own lab."""
    with _lab_directory() as directory:
        yield directory


class Console:
    """A websocket client of the lab console that waits for what it expects to see."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, subprotocols=["binary"], timeout=0.5)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def expect(self, pattern: bytes, timeout: float = 10.0) -> bytes:
        """Everything up to and including the first match of `pattern`."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.pending)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the console; saw {self.pending!r}")
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                frame = self.ws.recv()
                if not frame:  # websocket-client's way of saying the server closed
                    raise websocket.WebSocketConnectionClosedException("console closed")
                self.pending += frame
        seen, self.pending = self.pending[: match.end()], self.pending[match.end() :]
        return seen

    def login(self, info: lab.LabInfo) -> None:
        self.send(b"\r")
        self.expect(rb"login: $")
        self.send(info.user.encode() + b"\r")
        self.expect(rb"Password: $")
        self.send(info.console_password().reveal().encode() + b"\r")
        self.expect(_PROMPT)

    def run(self, command: str) -> str:
        """Run `command` in the console shell and return what it printed.

        The marker is printed by arithmetic, so its echo ("$((40+2))") never
        matches: serial consoles echo and wrap what is typed.
        """
        self.send(command.encode() + b"; echo RC-$((40+2))\r")
        output = self.expect(rb"\r\nRC-42\r\n").decode()
        self.expect(_PROMPT)
        return output

    def close(self) -> None:
        self.ws.close()
        if self.ws.sock is not None:  # close() skips this when the server closed first
            self.ws.sock.close()


@contextlib.contextmanager
def console(info: lab.LabInfo) -> Iterator[Console]:
    client = Console(info.console_url)
    try:
        yield client
    finally:
        client.close()


def ssh_login(info: lab.LabInfo, key_path: Path, known_hosts: Path) -> paramiko.SSHClient:
    """Log in with `key_path`, accepting only the lab's own host key."""
    known_hosts.write_text(f"[{info.ssh_host}]:{info.ssh_port} {info.host_public_key}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        info.ssh_host,
        info.ssh_port,
        username=info.user,
        key_filename=str(key_path),
        allow_agent=False,
        look_for_keys=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
    )
    return client


def remote_user(client: paramiko.SSHClient) -> str:
    _, stdout, _ = client.exec_command("id -un", timeout=5)
    return stdout.read().decode().strip()


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (the serial bridge's agetty or login)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the shared lab -------------------------------------------------------------


def test_every_port_listens_on_loopback_only(shared_lab: lab.LabInfo) -> None:
    for port in (shared_lab.ssh_port, shared_lab.console_port, shared_lab.serial_port):
        assert lab.listening_addresses(port) == {"127.0.0.1"}
    status = lab.status(shared_lab.directory)
    assert status.healthy, status
    assert shared_lab.console_url.startswith(f"ws://127.0.0.1:{shared_lab.console_port}/?token=")


def test_state_files_are_private_and_hold_no_password(shared_lab: lab.LabInfo) -> None:
    password = shared_lab.console_password().reveal()
    record = (shared_lab.directory / "lab.json").read_text()
    assert password not in record
    assert str(shared_lab.console_password_file) in record
    assert password not in repr(shared_lab)
    for path in (
        shared_lab.directory / "lab.json",
        shared_lab.console_password_file,
        shared_lab.old_key_path,
    ):
        assert mode(path) == 0o600, path
    assert lab.LabInfo.load(shared_lab.directory) == shared_lab


def test_console_shows_a_login_prompt(shared_lab: lab.LabInfo) -> None:
    with console(shared_lab) as client:
        client.send(b"\r")
        client.expect(rb"login: $")


def test_console_login_gives_the_lab_users_shell_and_logout_respawns(
    shared_lab: lab.LabInfo,
) -> None:
    with console(shared_lab) as client:
        client.login(shared_lab)
        assert f"{shared_lab.user}\r\nRC-42" in client.run("id -un")
        client.send(b"exit\r")
        client.expect(rb"login: $")


def test_password_crossing_the_console_is_in_no_log(shared_lab: lab.LabInfo) -> None:
    with console(shared_lab) as client:
        client.login(shared_lab)
        client.send(b"exit\r")
        client.expect(rb"login: $")
    password = shared_lab.console_password().reveal()
    for log in ("serial_port.log", "websockify.log", "sshd.log"):
        assert password not in (shared_lab.directory / log).read_text(), log


def test_newest_console_client_wins(shared_lab: lab.LabInfo) -> None:
    with console(shared_lab) as first, console(shared_lab) as second:
        second.send(b"\r")
        second.expect(rb"login: $")
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            first.expect(rb"never", timeout=5)


def test_wrong_token_closes_the_socket(shared_lab: lab.LabInfo) -> None:
    wrong = shared_lab.console_url.replace("token=", "token=wrong")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        websocket.create_connection(wrong, subprotocols=["binary"], timeout=5)


def test_old_key_logs_in_over_ssh_with_the_pinned_host_key(shared_lab: lab.LabInfo, tmp_path: Path) -> None:
    client = ssh_login(shared_lab, shared_lab.old_key_path, tmp_path / "known_hosts")
    try:
        transport = client.get_transport()
        assert transport is not None
        assert transport.get_remote_server_key().fingerprint == shared_lab.host_key_fingerprint
        assert remote_user(client) == shared_lab.user
    finally:
        client.close()
    accepted = f"Accepted publickey for {shared_lab.user} from 127.0.0.1"
    assert any(
        accepted in line and shared_lab.old_key_fingerprint in line
        for line in shared_lab.sshd_log.read_text().splitlines()
    )


def test_console_target_can_be_repointed_and_restored(shared_lab: lab.LabInfo) -> None:
    with socket.create_server(("127.0.0.1", 0)) as decoy:

        def greet() -> None:
            conn, _ = decoy.accept()
            with conn:
                conn.sendall(b"DECOY-SAYS-HI")
                conn.recv(1)

        threading.Thread(target=greet, daemon=True).start()
        lab.replace_console_target(shared_lab, "127.0.0.1", decoy.getsockname()[1])
        try:
            with console(shared_lab) as client:
                client.expect(rb"DECOY-SAYS-HI")
        finally:
            lab.replace_console_target(shared_lab, shared_lab.ssh_host, shared_lab.serial_port)
    with console(shared_lab) as client:
        client.send(b"\r")
        client.expect(rb"login: $")


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "::1", "example.com"])
def test_console_target_must_be_loopback(shared_lab: lab.LabInfo, host: str) -> None:
    with pytest.raises(LabError, match=r"127\.0\.0\.0/8"):
        lab.replace_console_target(shared_lab, host, 22)


def test_up_refuses_a_directory_that_has_a_lab(shared_lab: lab.LabInfo) -> None:
    with pytest.raises(LabError, match="already set up"):
        lab.up(shared_lab.directory)
    assert lab.status(shared_lab.directory).healthy


# --- labs of their own ----------------------------------------------------------


def test_sshd_can_be_stopped_and_started_again(lab_dir: Path, tmp_path: Path) -> None:
    info = lab.up(lab_dir)
    lab.stop_process(info, "sshd")
    status = lab.status(lab_dir)
    assert status.processes == {"sshd": False, "serial_port": True, "websockify": True}
    assert not status.ports["ssh"]
    assert not alive(info.pids["sshd"])

    restarted = lab.start_sshd(info)
    assert restarted.pids["sshd"] != info.pids["sshd"]
    assert lab.LabInfo.load(lab_dir) == restarted
    assert lab.status(lab_dir).healthy
    client = ssh_login(restarted, restarted.old_key_path, tmp_path / "known_hosts")
    with contextlib.closing(client):
        assert remote_user(client) == info.user


def test_down_removes_the_user_its_processes_and_files(lab_dir: Path) -> None:
    info = lab.up(lab_dir)
    uid = pwd.getpwnam(info.user).pw_uid
    with console(info) as client:
        client.login(info)
        client.run("sleep 300 & true")
    started = [*info.pids.values(), *children_of(info.pids["serial_port"])]
    assert user_processes(uid), "the console shell should be running as the lab user"

    lab.down(lab_dir)

    with pytest.raises(KeyError):
        pwd.getpwnam(info.user)
    assert not user_processes(uid)
    assert not [pid for pid in started if alive(pid)]
    assert not info.home.exists()
    for port in (info.ssh_port, info.console_port, info.serial_port):
        assert not lab.listening_addresses(port)
    assert sorted(path.name for path in lab_dir.iterdir()) == [
        "serial_port.log",
        "sshd.log",
        "websockify.log",
    ]
    lab.down(lab_dir)  # idempotent


def test_down_cleans_up_a_half_dead_lab(lab_dir: Path) -> None:
    info = lab.up(lab_dir)
    os.kill(info.pids["websockify"], signal.SIGKILL)
    lab.stop_process(info, "sshd")
    subprocess.run(["userdel", "--force", info.user], check=True)

    lab.down(lab_dir)

    assert not [pid for pid in info.pids.values() if alive(pid)]
    assert not info.home.exists()
    assert not (lab_dir / "lab.json").exists()


def test_seed_without_trailing_newline_and_with_extra_lines(lab_dir: Path) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNvbWUgb3RoZXIga2V5IGJ5dGVzIGhlcmUhIQ other"
    seed = lab.Seed(trailing_newline=False, extra_lines=("# added by hand", other))
    info = lab.up(lab_dir, seed=seed)
    expected = f"{info.old_public_key}\n# added by hand\n{other}".encode()
    assert lab.read_authorized_keys(info) == expected
    modes = lab.ssh_paths_modes(info)
    assert (modes["ssh_dir"], modes["authorized_keys"]) == (0o700, 0o600)
    uid = pwd.getpwnam(info.user).pw_uid
    for path in (info.home, info.authorized_keys.parent, info.authorized_keys):
        assert path.stat().st_uid == uid, path


def test_seed_without_ssh_dir(lab_dir: Path) -> None:
    info = lab.up(lab_dir, seed=lab.Seed(ssh_dir=False))
    assert lab.read_authorized_keys(info) is None
    modes = lab.ssh_paths_modes(info)
    assert (modes["ssh_dir"], modes["authorized_keys"]) == (None, None)
    assert modes["home"] is not None


def test_seed_with_world_writable_ssh_dir_is_refused_by_sshd(lab_dir: Path, tmp_path: Path) -> None:
    info = lab.up(lab_dir, seed=lab.Seed(ssh_dir_mode=0o777))
    assert lab.ssh_paths_modes(info)["ssh_dir"] == 0o777
    with pytest.raises(paramiko.AuthenticationException):
        ssh_login(info, info.old_key_path, tmp_path / "known_hosts")
    assert "bad ownership or modes" in info.sshd_log.read_text()


def test_seed_rejects_a_multi_line_extra() -> None:
    with pytest.raises(LabError, match="single line"):
        lab.Seed(extra_lines=("one\ntwo",))


# --- refusals -------------------------------------------------------------------


def test_up_refuses_a_directory_other_users_cannot_reach(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="not searchable"):
        lab.up(tmp_path / "lab")
    # Other tests on this machine may create lab users meanwhile: look for one of ours only.
    assert not [entry.pw_name for entry in pwd.getpwall() if entry.pw_dir.startswith(f"{tmp_path}/")]
    assert not (tmp_path / "lab").exists()


def test_up_refuses_a_directory_sshd_config_cannot_name() -> None:
    with pytest.raises(LabError, match="double quote"):
        lab.up(Path("/tmp") / 'rcvlab "quoted"')
    assert not (Path("/tmp") / 'rcvlab "quoted"').exists()


def test_up_refuses_to_run_without_root(tmp_path: Path) -> None:
    """Drop the effective uid in a child process, after the imports need no more reading."""
    code = (
        "import os, sys, pathlib\n"
        "from recovery import lab\n"
        "from recovery.errors import LabError\n"
        "os.seteuid(65534)\n"
        "try:\n"
        "    lab.up(pathlib.Path(sys.argv[1]))\n"
        "except LabError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    target = tmp_path / f"lab-{secrets.token_hex(2)}"
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "must run as root" in done.stdout
    assert not target.exists()


def test_a_sticky_directory_above_the_lab_is_fine_a_world_writable_one_is_not() -> None:
    """/tmp's rule: in a sticky directory nobody may rename or delete what another user made."""
    with _lab_directory() as base:
        base.chmod(0o755)
        shared, open_to_all = base / "shared", base / "open"
        for path, bits in ((shared, 0o1777), (open_to_all, 0o777)):
            path.mkdir()
            path.chmod(bits)
        assert claim(shared / "lab") == shared / "lab"
        assert mode(shared / "lab") == 0o711
        with pytest.raises(UnsafeLabDirectory, match=f"{open_to_all} is writable by everyone"):
            claim(open_to_all / "lab")
        assert not (open_to_all / "lab").exists()
