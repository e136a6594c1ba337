"""Power control of a VM, for the routes that must reboot it: a reset that starts it from power-on.

Two ways: QEMU's own monitor (QMP) on a unix socket, for a VM run directly under QEMU
(`qmp+unix:///path/to/qmp.sock`, the socket of `-qmp unix:PATH,server=on,wait=off`), and Nova's
hard reboot for a server in the cloud given with --cloud. Both restart the VM at once, as the
power button would: whatever runs in it gets no warning, so the boot loader route only resets a
VM whose console it is about to take over.

A third, for a VM whose VNC console is all there is: `ctrl-alt-del`, the keys sent over that
console. The running system performs the reboot (systemd's ctrl-alt-del.target: its services stop
first), or ignores it where that target is masked: the route then waits for GRUB in vain and says
so. A kernel that no init told otherwise (init=/bin/sh) restarts at once, and the BIOS resets.
"""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from recovery.errors import StepError

if TYPE_CHECKING:
    from recovery.cloud import Cloud

__all__ = ["CTRL_ALT_DEL", "CtrlAltDelPower", "NovaPower", "PowerControl", "QmpPower", "power_for",
           "power_url_problem"]

SCHEMES = ("qmp+unix",)
CTRL_ALT_DEL = "ctrl-alt-del"
EXPECTED = ("expected qmp+unix:///path/to/qmp.sock, QEMU's QMP socket, or ctrl-alt-del, sent over the VNC "
            "console; for a cloud server give -e server=NAME with --cloud instead")


class PowerError(StepError):
    """The VM could not be reset."""


class PowerControl(Protocol):
    def describe(self) -> str:
        """What resets the VM, for messages and the report."""

    def reset(self, timeout: float) -> None:
        """Restart the VM from power-on now (start it if it is stopped)."""


def power_url_problem(url: str) -> str | None:
    """Why `url` is not a power control we can drive, or None."""
    if url == CTRL_ALT_DEL:
        return None
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return f"{url!r}: unsupported power control ({EXPECTED})"
    if not unquote(parts.path):
        return f"{url!r}: no socket path (expected qmp+unix:///path/to/qmp.sock)"
    return None


@runtime_checkable
class KeyboardReboot(Protocol):
    def send_ctrl_alt_del(self) -> None: ...


def power_for(url: str, console: object = None) -> PowerControl:
    """The power control `url` names; `ctrl-alt-del` is sent over `console`, which must be a VNC console."""
    problem = power_url_problem(url)
    if problem:
        raise PowerError(problem)
    if url == CTRL_ALT_DEL:
        if not isinstance(console, KeyboardReboot):
            raise PowerError("power=ctrl-alt-del sends the keys over the VM's VNC console, and this console is not "
                             "one (give a vnc:// console URL, or another power control)")
        return CtrlAltDelPower(console)
    return QmpPower(unquote(urlsplit(url).path))


class CtrlAltDelPower:
    """Ctrl-Alt-Del sent over the VNC console (see the module docstring)."""

    def __init__(self, console: KeyboardReboot) -> None:
        self.console = console

    def describe(self) -> str:
        return ("Ctrl-Alt-Del sent over the VNC console: the running system reboots, or ignores it where its "
                "ctrl-alt-del.target is masked")

    def reset(self, timeout: float) -> None:
        self.console.send_ctrl_alt_del()


class QmpPower:
    """QEMU's monitor: `system_reset`, then `cont` where the VM is stopped (started with -S, paused)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"QEMU's QMP socket {self.path}"

    def reset(self, timeout: float) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(max(timeout, 1.0))
                sock.connect(self.path)
                stream = sock.makefile("rwb")
                self._reply(stream)  # the greeting
                self._execute(stream, "qmp_capabilities")
                self._execute(stream, "system_reset")
                if self._execute(stream, "query-status").get("status") != "running":
                    self._execute(stream, "cont")
        except OSError as exc:
            raise PowerError(
                f"cannot reset the VM through {self.describe()}: {exc}. Is QEMU running with "
                "-qmp unix:PATH,server=on,wait=off, and is this the path?") from exc

    def _execute(self, stream: Any, command: str) -> Any:
        stream.write(json.dumps({"execute": command}).encode() + b"\n")
        stream.flush()
        reply = self._reply(stream)
        if "error" in reply:
            raise PowerError(f"QEMU refused {command} on {self.describe()}: {reply['error']}")
        return reply.get("return", {})

    @staticmethod
    def _reply(stream: Any) -> dict[str, Any]:
        while True:
            line = stream.readline()
            if not line:
                raise OSError("QEMU closed the QMP connection")
            message: dict[str, Any] = json.loads(line)
            if "event" not in message:  # events (RESET, RESUME) come in between: not answers
                return message


class NovaPower:
    """Nova's hard reboot (the cloud's power cycle), waiting until Nova has taken it."""

    def __init__(self, cloud: Cloud, server_id: str) -> None:
        self.cloud, self.server_id = cloud, server_id

    def describe(self) -> str:
        return f"Nova's hard reboot of server {self.server_id}"

    def reset(self, timeout: float) -> None:
        """Raises CloudError where Nova refuses the reboot (its reason and request ID in the message)."""
        self.cloud.hard_reboot(self.server_id)
        deadline = time.monotonic() + timeout
        # Nova answers 202 before the hypervisor acts; the console shows the reset when it happens.
        while time.monotonic() < deadline:
            if self.cloud.server_state(self.server_id).status in ("HARD_REBOOT", "ACTIVE"):
                return
            time.sleep(0.5)
        raise PowerError(f"{self.describe()} was not taken by Nova within {timeout:.0f} s")
