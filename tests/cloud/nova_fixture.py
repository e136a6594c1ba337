"""Start the real Nova test cloud (nova_server.py) from a test, and point openstacksdk at it.

    with running_nova(("127.0.0.1", lab.serial_port), console_log, [NovaServerSpec("web-1", "10.0.0.5",
                      floating_ip="127.0.0.1")]) as nova:
        nova.clouds_yaml(tmp / "clouds.yaml", "nova-test")
        # OS_CLIENT_CONFIG_FILE=tmp/clouds.yaml, then openstack.connect(cloud="nova-test")

Nova runs in a subprocess with its own virtualenv (.cache/venv-nova, made by
ensure_nova_venv.sh on first use): its ~130 pinned packages must not meet the
project's, and Nova's fixtures patch process-wide state (os.uname, warnings
filters, the eventlet import) that the test process must keep. A missing or
broken venv is a failure with the installer's output, never a skip.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.processes import stop_child

HERE = Path(__file__).resolve().parent
ENSURE_VENV = HERE / "ensure_nova_venv.sh"
SERVER_SCRIPT = HERE / "nova_server.py"
# Nova's own start is ~7 s on our 2-core machines; leave room for a loaded CI host.
READY_TIMEOUT = 180.0  # loose: a busy 2-core CI machine has taken 91 s
# The first install downloads ~400 MB of wheels (~45 s measured).
INSTALL_TIMEOUT = 900.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class NovaServerSpec:
    """A server to boot: on network "private" (10.0.0.0/24) at `fixed_ip`, optionally with a floating IP."""

    name: str
    fixed_ip: str
    floating_ip: str | None = None
    status: str = "ACTIVE"  # or "SHUTOFF"
    # The password-set route: booted from an image with these properties (hw_qemu_guest_agent,
    # os_admin_user), deleted after the boot if `image_deleted`; changePassword goes to the guest
    # agent on `agent_socket` (the agent test VM's, or a symlink to it).
    image_properties: dict[str, str] | None = None
    image_deleted: bool = False
    agent_socket: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "fixed_ip": self.fixed_ip, "status": self.status}
        if self.floating_ip:
            data["floating_ip"] = self.floating_ip
        if self.image_properties is not None:
            data["image_properties"] = dict(self.image_properties)
            data["image_deleted"] = self.image_deleted
        if self.agent_socket:
            data["agent_socket"] = self.agent_socket
        return data


@dataclass(frozen=True)
class NovaCloud:
    """A running test Nova: where its API and console proxies listen, and the servers it booted."""

    compute_url: str
    api_port: int
    serial_proxy_port: int
    novnc_proxy_port: int
    project_id: str
    servers: dict[str, list[str]]
    pid: int
    log_path: Path
    ready_seconds: float = field(default=0.0)

    def server_id(self, name: str) -> str:
        """The ID of the one server booted with this name."""
        ids = self.servers[name]
        if len(ids) != 1:
            raise KeyError(f"{len(ids)} servers are named {name!r}")
        return ids[0]

    def clouds_yaml(self, path: Path, name: str, **extra: Any) -> Path:
        """Write (or merge into) `path` an entry `name` that `openstack.connect(cloud=name)` opens.

        The entry is `auth_type: none` with `compute_endpoint_override`: this Nova
        takes its identity from headers its middleware injects, so any token, or
        none, is fine. `extra` keys are merged into the entry (e.g. an
        `object_store_endpoint_override`, or `auth_type: admin_token` with an
        `auth` block for a Swift that wants a token). Other entries in the file
        are kept.
        """
        data: dict[str, Any] = {}
        if path.exists():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entry = data.setdefault("clouds", {}).setdefault(name, {})
        entry.update(
            {
                "auth_type": "none",
                "compute_endpoint_override": self.compute_url,
                "region_name": "RegionOne",
            }
        )
        entry.update(extra)
        path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        return path

    def api_requests(self) -> list[dict[str, Any]]:
        """Every compute API request so far, as the server logged it: method, path,
        global_request_id (the client's X-OpenStack-Request-ID) and user_agent."""
        marker = "api request "
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line.split(marker, 1)[1]) for line in text.splitlines() if marker in line]

    def log_tail(self, lines: int = 40) -> str:
        """The end of Nova's stderr log, for failure messages."""
        return _tail(self.log_path, lines)


def nova_python() -> Path:
    """The Nova venv's python, installing the venv first if needed (about 45 s, once).

    Raises:
        RuntimeError: the install failed; the message has the installer's output.
    """
    try:
        completed = subprocess.run(
            ["bash", str(ENSURE_VENV)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{ENSURE_VENV} did not finish in {INSTALL_TIMEOUT:.0f} s") from exc
    if completed.returncode != 0:
        raise RuntimeError(
            f"{ENSURE_VENV} failed (exit {completed.returncode}); the test Nova needs its venv.\n"
            f"{completed.stderr[-4000:]}"
        )
    return Path(completed.stdout.strip().splitlines()[-1])


@contextmanager
def running_nova(
    serial_target: tuple[str, int] | None,
    console_log: str | Path | None,
    servers: Sequence[NovaServerSpec],
    *,
    vnc_target: tuple[str, int] | None = None,
    keypair_types: Sequence[str] | None = None,
    max_microversion: str | None = None,
    machines: Path | None = None,
    agent_timeout: float | None = None,
) -> Iterator[NovaCloud]:
    """Start nova_server.py, wait until it is ready, yield it, and stop it (by PID) on exit.

    Args:
        serial_target: (host, port) of the raw serial console every server's serial
            console leads to (the lab's `serial_port`); None disables serial consoles.
        console_log: a file whose text is every server's console log (read anew on
            each request, so a test may rewrite it).
        servers: what to boot.
        vnc_target: (host, port) of a VNC server; None disables VNC consoles.
        keypair_types: if given, refuse to import other key types, as some clouds do.
        max_microversion: if given, the API's maximum (e.g. "2.5": no remote-consoles API).
        machines: a JSON file of the real machines the fake driver starts on boot, hard reboot, rescue and
            unrescue (tests/cloud/rescue_bed.py, tests/e2e/test_boot_recovery.py).
        agent_timeout: seconds before a server's guest agent counts as silent (changePassword: 501).

    Raises:
        RuntimeError: the venv could not be installed, or Nova did not become ready
            in time (the message has the end of its log).
    """
    python = nova_python()
    spec: dict[str, Any] = {"servers": [server.to_json() for server in servers]}
    if keypair_types:
        spec["keypair_types"] = list(keypair_types)
    if max_microversion:
        spec["max_microversion"] = max_microversion
    if agent_timeout is not None:
        spec["agent_timeout"] = agent_timeout
    command = [str(python), str(SERVER_SCRIPT), "--spec", "-"]
    if serial_target:
        command += ["--serial-target", f"{serial_target[0]}:{serial_target[1]}"]
    if vnc_target:
        command += ["--vnc-target", f"{vnc_target[0]}:{vnc_target[1]}"]
    if console_log is not None:
        command += ["--console-log", str(console_log)]
    if machines is not None:
        command += ["--machines", str(machines)]

    # Ours to remove whatever happens to the server: its log, and its TMPDIR, where
    # Nova's fixtures keep their sqlite databases.
    workdir = Path(tempfile.mkdtemp(prefix="nova-fixture-"))
    (workdir / "tmp").mkdir()
    log_path = workdir / "nova-server.log"
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    for leaked in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE", "PYTHONPATH"):
        env.pop(leaked, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=HERE
        )
    ready = False
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
        info = _wait_ready(process, log_path)
        ready = True
        yield NovaCloud(
            compute_url=info["compute_url"],
            api_port=info["api_port"],
            serial_proxy_port=info["serial_proxy_port"],
            novnc_proxy_port=info["novnc_proxy_port"],
            project_id=info["project_id"],
            servers={name: list(ids) for name, ids in info["servers"].items()},
            pid=process.pid,
            log_path=log_path,
            ready_seconds=float(info.get("ready_seconds", 0.0)),
        )
    finally:
        stop_child(process, STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(workdir / "tmp", ignore_errors=True)
        if ready:  # a failed start keeps its log: the error message names it
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    """Poll for the one JSON line nova_server.py prints when ready, up to READY_TIMEOUT."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"the test Nova was not ready after {READY_TIMEOUT:.0f} s; its log ({log_path}) ends:\n"
                + _tail(log_path, 40)
            )
        readable, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
        if readable:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                process.wait(timeout=STOP_TIMEOUT)
                raise RuntimeError(
                    f"the test Nova exited with {process.returncode} before it was ready; "
                    f"its log ({log_path}) ends:\n" + _tail(log_path, 40)
                )
            buffer += chunk
    result: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
    return result


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(log unreadable: {exc})"
