"""The boot loader route before the VM: the pre-flight's refusals, and the root form of the install script."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from recovery.engine import preflight
from recovery.engine.config import Config
from recovery.engine.playbook import load_playbook, resolve_inputs
from recovery.engine.preflight import PreflightError
from recovery.errors import StepError
from recovery.guest import ExitCode, build_install_script, build_root_install_script, explain_exit, parse_report
from recovery.power import NovaPower, power_for

PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "restore-access-boot.yaml"
PIN = "SHA256:" + "A" * 43
GOOD = {"console_url": "ws://127.0.0.1:9/", "power": "qmp+unix:///run/vm/qmp.sock", "ssh_host": "127.0.0.1",
        "user": "debian", "host_key_fingerprint": PIN, "allow_reboot": "true"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C7okWi0dh2l9GKJl new"


def check(**given: str) -> list[preflight.StepForecast]:
    playbook = load_playbook(PLAYBOOK)
    return preflight.check(playbook, resolve_inputs(playbook, given), {}, Config())


def test_good_direct_inputs_pass() -> None:
    steps = {item.spec.id: item for item in check(**GOOD)}
    assert steps["install"].runs is True
    assert steps["find"].runs is False


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"allow_reboot": "false"}, "with.allow_reboot (-e allow_reboot): is not true: the boot loader route resets"),
        ({"power": ""}, "nothing can reset the VM: give -e power=qmp+unix:///path/to/qmp.sock"),
        ({"power": "ipmi://bmc/"}, "unsupported power control"),
        ({"power": "qmp+unix://"}, "no socket path"),
        ({"console_url": "ssh://127.0.0.1:22"}, "unsupported scheme 'ssh'"),
        ({"user": ""}, "with.user (-e user): is empty"),
    ],
)
def test_what_cannot_work_is_refused_before_anything_changes(change: dict[str, str], expected: str) -> None:
    given = {**GOOD, **change}
    with pytest.raises(PreflightError) as caught:
        check(**given)
    assert caught.value.exit_code == 2
    assert expected in str(caught.value)


@pytest.mark.parametrize("url", ["vnc://127.0.0.1:5900", "vnc+ws://127.0.0.1:6080/?token=T"])
def test_a_vnc_console_is_a_console_for_the_route(url: str) -> None:
    """GRUB's VGA screen is read by glyphs (recovery.channels.grub_vnc): a VNC URL is no longer refused."""
    steps = {item.spec.id: item for item in check(**{**GOOD, "console_url": url})}
    assert steps["install"].runs is True


def test_allow_reboot_left_out_is_refused() -> None:
    given = {name: value for name, value in GOOD.items() if name != "allow_reboot"}
    with pytest.raises(PreflightError, match="allow_reboot"):
        check(**given)


def root_script(user: str = "debian") -> str:
    digest = hashlib.sha256(f"{KEY}\n".encode()).hexdigest()
    return build_root_install_script(build_install_script(KEY, sha256=digest, nonce="n0nce123"), user).raw()


def test_the_root_form_runs_the_same_install_script_as_the_user() -> None:
    text = root_script()
    inner = build_install_script(KEY, sha256=hashlib.sha256(f"{KEY}\n".encode()).hexdigest(), nonce="n0nce123").raw()
    assert "as_user <<'RECOVERY_USER_n0nce123'\n" + inner + "RECOVERY_USER_n0nce123\n" in text
    assert "u='debian'" in text
    assert "chown" not in text  # what the user's script creates is the user's
    # The owner comes from the VM's own /etc/passwd; / is writable first, synced and read-only after.
    assert text.index("remount,rw") < text.index("/etc/passwd") < text.index("as_user <<") < text.index("remount,ro")


def test_the_root_form_of_the_terse_install_prints_its_facts_with_the_nonce(tmp_path: Path) -> None:
    """The terse install (a VNC screen) prints `RCV-$n facts=...`: it sets n itself, so inside the root
    form's here-document too, where a facts line `RCV- facts=...` would never be read."""
    digest = hashlib.sha256(f"{KEY}\n".encode()).hexdigest()
    install = build_install_script(KEY, sha256=digest, nonce="n0nce123", facts="compact", run_tag="run1")
    lines = list(build_root_install_script(install, "debian").lines)
    user_shell = lines[lines.index("as_user <<'RECOVERY_USER_n0nce123'") + 1:lines.index("RECOVERY_USER_n0nce123")]
    done = subprocess.run(["/bin/sh"], input="\n".join(map(str, user_shell)) + "\n", capture_output=True, text=True,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=30, check=False)
    facts = parse_report(done.stdout, "n0nce123")
    assert facts.added, done.stdout + done.stderr
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == KEY + "\n"


@pytest.mark.parametrize("user", ["-oops", "a b", "x;reboot", ""])
def test_the_root_form_takes_only_a_plain_user_name(user: str) -> None:
    with pytest.raises(ValueError, match="not a user name"):
        root_script(user)


def test_the_root_forms_facts_and_failures_are_read() -> None:
    output = "RCV-n0nce123 owner=1000:1000\nRCV-n0nce123 switch=setpriv\nRCV-n0nce123 added=yes\n" \
             "RCV-n0nce123 exit=0\nRCV-n0nce123 relabel=autorelabel\n"
    facts = parse_report(output, "n0nce123")
    assert facts.ok
    assert facts.added
    assert dict(facts.facts)["owner"] == "1000:1000"
    assert dict(facts.facts)["relabel"] == "autorelabel"
    failed = parse_report("RCV-n0nce123 error=no-such-user\nRCV-n0nce123 exit=20\n", "n0nce123")
    assert failed.exit_code == ExitCode.NO_SUCH_USER
    assert "/etc/passwd" in explain_exit(ExitCode.NO_SUCH_USER)


class FakeQmp:
    """A QMP server on a unix socket: the greeting, then an answer per command, an event in between."""

    def __init__(self, path: Path, status: str) -> None:
        self.status = status
        self.commands: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.server:
            connection, _ = self.server.accept()
        with connection, connection.makefile("rwb") as stream:
            stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            stream.flush()
            for line in stream:
                command = json.loads(line)["execute"]
                self.commands.append(command)
                if command == "system_reset":
                    stream.write(b'{"event": "RESET", "data": {"guest": false}}\n')
                answer = {"status": self.status} if command == "query-status" else {}
                stream.write(json.dumps({"return": answer}).encode() + b"\n")
                stream.flush()


@pytest.mark.parametrize(("status", "commands"), [
    ("running", ["qmp_capabilities", "system_reset", "query-status"]),
    ("prelaunch", ["qmp_capabilities", "system_reset", "query-status", "cont"]),  # started with -S: powered off
])
def test_qmp_resets_the_vm_and_starts_a_stopped_one(tmp_path: Path, status: str, commands: list[str]) -> None:
    fake = FakeQmp(tmp_path / "qmp.sock", status)
    power_for(f"qmp+unix://{tmp_path}/qmp.sock").reset(timeout=10)
    fake.thread.join(10)
    assert fake.commands == commands


def test_ctrl_alt_del_is_a_power_control_of_a_vnc_console() -> None:
    steps = {item.spec.id: item for item in check(**{**GOOD, "console_url": "vnc://127.0.0.1:5900",
                                                      "power": "ctrl-alt-del"})}
    assert steps["install"].runs is True
    pressed: list[str] = []
    console = SimpleNamespace(send_ctrl_alt_del=lambda: pressed.append("ctrl-alt-del"))
    power = power_for("ctrl-alt-del", console)
    power.reset(timeout=10)
    assert pressed == ["ctrl-alt-del"]
    assert "the running system reboots" in power.describe()


def test_ctrl_alt_del_without_a_vnc_console_is_refused() -> None:
    with pytest.raises(StepError, match="power=ctrl-alt-del sends the keys over the VM's VNC console"):
        power_for("ctrl-alt-del", SimpleNamespace(send=lambda data: None))


def test_a_missing_qmp_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"cannot reset the VM through QEMU's QMP socket .*-qmp unix:PATH"):
        power_for(f"qmp+unix://{tmp_path}/none.sock").reset(timeout=2)


class FakeCloud:
    """The cloud, as far as a hard reboot goes: Nova takes it after one more look."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.statuses = iter(["BUILD", "HARD_REBOOT"])

    def hard_reboot(self, server_id: str) -> None:
        self.calls.append(server_id)

    def server_state(self, server_id: str) -> SimpleNamespace:
        return SimpleNamespace(status=next(self.statuses, "HARD_REBOOT"))


def test_nova_power_is_a_hard_reboot() -> None:
    cloud = FakeCloud()
    power = NovaPower(cloud, "srv-1")  # type: ignore[arg-type]
    power.reset(timeout=10)
    assert cloud.calls == ["srv-1"]
    assert "hard reboot of server srv-1" in power.describe()
