"""A real Nova on 127.0.0.1 for tests: API, conductor, scheduler, compute and Placement in one process.

Run with the Nova venv's python (see ensure_nova_venv.sh), never with the project's:

    ../../.cache/venv-nova/bin/python nova_server.py --serial-target 127.0.0.1:PORT \
        [--vnc-target 127.0.0.1:PORT] [--console-log FILE] [--spec FILE|-]

Nova's own functional-test fixtures (shipped in the nova wheel) do the heavy lifting:
in-memory sqlite for the API and cell databases, the `fake://` message transport,
the real Placement app, and in-process doubles of Glance, Neutron and Cinder. What
this script adds is what a client in *another process* needs:

- the compute API on a real HTTP port. The fixtures only serve it through
  wsgi-intercept inside the process, and stub keystonemiddleware so that the
  identity comes from `X-Auth-*` headers; a tiny middleware supplies those, since
  Nova 34 has no noauth pipeline.
- Nova's own console proxy (`NovaProxyRequestHandler`, what nova-serialproxy and
  nova-novncproxy run) on real ports. It runs in threads of this process rather
  than websockify's forked children: it validates each token against the
  in-memory database and asks the compute manager, over the in-process fake
  transport, whether the port is right, and neither survives a fork.
- a fake virt driver whose serial/VNC consoles are the TCP targets given on the
  command line (the lab's serial line), and whose console log is a file the
  test writes (cloud-init's host key block, say).

- the driver's `set_admin_password` (Nova's changePassword), which the fake driver leaves
  empty, done as libvirt's driver does it against a real guest agent's socket (the agent
  test VM's): refused without the image property hw_qemu_guest_agent (409), unanswered
  (501, libvirt's "agent unresponsive"), else `guest-set-user-password` for the image's
  os_admin_user, else root.

The spec (JSON, from --spec FILE or stdin with `--spec -`) says which servers to boot:

    {"servers": [{"name": "web-1", "fixed_ip": "10.0.0.5", "floating_ip": "127.0.0.1"},
                 {"name": "off", "fixed_ip": "10.0.0.9", "status": "SHUTOFF"},
                 {"name": "vm", "fixed_ip": "10.0.0.7",  # optional, the password-set route:
                  "image_properties": {"hw_qemu_guest_agent": "True", "os_admin_user": "debian"},
                  "image_deleted": false,             # true: no image left to read properties from
                  "agent_socket": "/path/qga.sock"}], # the guest agent's socket (may be a symlink)
     "agent_timeout": 5,                    # optional: seconds before an agent counts as silent
     "keypair_types": ["ssh-rsa"],          # optional: refuse other imports, like some clouds
     "max_microversion": "2.5"}             # optional: an old cloud without remote-consoles

Every server is on network "private" (subnet 10.0.0.0/24); a floating IP is
reported the way Neutron reports one. When ready, one JSON line goes to stdout:

    {"api_port": P, "compute_url": "http://127.0.0.1:P/v2.1", "serial_proxy_port": S,
     "novnc_proxy_port": V, "project_id": "...", "servers": {"web-1": ["<uuid>"], ...},
     "pid": 1234, "ready_seconds": 6.6}

SIGTERM (or SIGINT) stops the HTTP servers and exits 0. Logs go to stderr.
"""

from __future__ import annotations

import os

# Native threads, not eventlet: the API, the proxies and the services share one
# process and the fixtures' threading mode. Must be set before nova is imported.
os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"

import argparse
import base64
import copy
import json
import logging
import random
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from typing import Any, ClassVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

# Before anything that imports eventlet (oslo.service does): in threading mode
# Nova refuses to start once eventlet has been imported.
from nova import monkey_patch

monkey_patch.patch()

# Imported before any fixture runs: GenericPoisonFixture replaces os.uname with a
# function that raises, and websockify and the proxy call it on import.
import nova.console.websocketproxy as websocketproxy  # noqa: E402
import websockify  # noqa: E402
from nova import crypto, exception  # noqa: E402
from nova.api.openstack import api_version_request  # noqa: E402
from nova.console import type as console_type  # noqa: E402
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional import integrated_helpers  # noqa: E402
from nova.virt import fake  # noqa: E402

LOG = logging.getLogger("nova_server")
# INFO whatever the root level: one line per API request (see _AuthHeaders).
REQUEST_LOG = logging.getLogger("nova_server.requests")
REQUEST_LOG.setLevel(logging.INFO)
HOST = "127.0.0.1"
NETWORK_CIDR = "10.0.0.0/24"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"  # the Glance fixture's first image
FLAVOR_ID = "1"  # m1.tiny from DefaultFlavorsFixture
BOOT_TIMEOUT = 60.0
ROLES = "admin,member,reader"


class _Consoles:
    """Where the fake driver's consoles and console log point; set from the command line."""

    serial: tuple[str, int] | None = None
    vnc: tuple[str, int] | None = None
    log_file: str | None = None


class _Machines:
    """The real machines behind the fake driver (--machines): QEMU command lines by event.

    rescue stops whatever this process runs for the instance and starts the rescue VM, whose serial
    port (a TCP server) becomes the instance's serial console; unrescue stops it and starts the
    server's own VM (a cold boot from its disk; tests/cloud/rescue_bed.py). boot starts a machine
    when the server is created; reboot (a hard one) stops the machine and starts another, as
    libvirt's driver destroys the domain and creates it again: the old console closes, and the new
    one may have another port (tests/e2e/test_boot_recovery.py). An event the spec does not name
    starts nothing. Started here, stopped here (by Popen), and at exit.
    """

    spec: ClassVar[dict[str, Any] | None] = None
    running: ClassVar[dict[str, subprocess.Popen[bytes]]] = {}
    serial: ClassVar[dict[str, tuple[str, int]]] = {}

    @classmethod
    def start(cls, instance: str, which: str) -> None:
        entry = (cls.spec or {}).get(which)
        if entry is None:
            return
        cls.stop(instance)
        with open(entry["log"], "ab") as log:
            cls.running[instance] = subprocess.Popen(
                entry["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )
        if entry.get("serial"):
            cls.serial[instance] = (entry["serial"][0], int(entry["serial"][1]))
        else:
            cls.serial.pop(instance, None)
        LOG.warning("rescue hook: %s for %s, pid %d", which, instance, cls.running[instance].pid)

    @classmethod
    def stop(cls, instance: str) -> None:
        process = cls.running.pop(instance, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @classmethod
    def stop_all(cls) -> None:
        for instance in list(cls.running):
            cls.stop(instance)


class _Agents:
    """Each server's guest agent socket, by server name, and how long an agent may stay silent."""

    sockets: ClassVar[dict[str, str]] = {}
    timeout: float = 5.0


def _agent_command(path: str, command: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One QEMU guest agent command after a guest-sync (which skips what an earlier client left unread)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        stream = sock.makefile("rwb")
        sync = random.randint(1, 2**31 - 1)
        stream.write(json.dumps({"execute": "guest-sync", "arguments": {"id": sync}}).encode() + b"\n")
        stream.flush()
        while True:
            line = stream.readline()
            if not line:
                raise OSError("the guest agent closed the connection")
            if json.loads(line.strip(b"\xff \r\n") or b"{}").get("return") == sync:
                break
        stream.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        stream.flush()
        line = stream.readline()
        if not line:
            raise OSError("the guest agent closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply


class ConsoleFakeDriver(fake.FakeDriver):
    """Nova's fake driver, but its consoles are real TCP endpoints, its log a real file, and it sets
    passwords through a real guest agent."""

    def set_admin_password(self, instance, new_pass):
        # As nova.virt.libvirt.driver.LibvirtDriver.set_admin_password does it.
        if not instance.image_meta.properties.get("hw_qemu_guest_agent", False):
            raise exception.QemuGuestAgentNotEnabled()
        path = _Agents.sockets.get(instance.display_name)
        if path is None:
            raise NotImplementedError()
        user = instance.image_meta.properties.get("os_admin_user") or "root"
        arguments = {"username": user, "password": base64.b64encode(new_pass.encode()).decode(), "crypted": False}
        try:
            reply = _agent_command(path, "guest-set-user-password", arguments, _Agents.timeout)
        except (OSError, ValueError) as exc:  # libvirt: VIR_ERR_AGENT_UNRESPONSIVE
            LOG.warning("guest agent of %s did not answer: %s", instance.display_name, exc)
            raise NotImplementedError() from exc
        if "error" in reply:
            raise exception.InternalError(
                f"guest-set-user-password for {user!r}: {reply['error'].get('desc', reply['error'])}")

    def get_serial_console(self, context, instance):
        if instance.uuid in _Machines.serial:
            host, port = _Machines.serial[instance.uuid]
            return console_type.ConsoleSerial(host=host, port=port)
        if _Consoles.serial is None:
            raise exception.ConsoleTypeUnavailable(console_type="serial")
        host, port = _Consoles.serial
        return console_type.ConsoleSerial(host=host, port=port)

    def spawn(self, context, instance, *args, **kwargs):
        super().spawn(context, instance, *args, **kwargs)
        _Machines.start(instance.uuid, "boot")

    def reboot(self, context, instance, network_info, reboot_type, *args, **kwargs):
        super().reboot(context, instance, network_info, reboot_type, *args, **kwargs)
        if reboot_type.lower() == "hard":
            _Machines.start(instance.uuid, "reboot")

    def rescue(self, context, instance, network_info, image_meta, rescue_password, block_device_info, share_info):
        """Like libvirt: the rescue machine is started (not yet booted) when this returns."""
        _Machines.start(instance.uuid, "rescue")

    def unrescue(self, context, instance):
        super().unrescue(context, instance)
        _Machines.start(instance.uuid, "unrescue")

    def get_vnc_console(self, context, instance):
        if _Consoles.vnc is None:
            raise exception.ConsoleTypeUnavailable(console_type="novnc")
        host, port = _Consoles.vnc
        return console_type.ConsoleVNC(host=host, port=port)

    def get_console_output(self, context, instance):
        if _Consoles.log_file is None:
            return ""
        with open(_Consoles.log_file, encoding="utf-8", errors="replace") as f:
            return f.read()


class NovaTestCloud(integrated_helpers._IntegratedTestBase):
    """The fixture set of Nova's own integrated tests, driven by hand instead of by a test runner."""

    ADMIN_API = True
    microversion = "latest"
    # No lock directory: nothing this server does takes an oslo external lock.
    REQUIRES_LOCKING = False

    def test_serve(self) -> None:
        """Unused: testtools needs a test method name to build a case."""

    def _setup_services(self) -> None:
        # The wheel installs api-paste.ini under the venv's prefix, not next to the
        # package where Nova's default ($pybasedir/etc/nova) looks for it.
        self.flags(api_paste_config=os.path.join(sys.prefix, "etc", "nova", "api-paste.ini"), group="wsgi")
        # Nova loads the driver by name from nova.virt; give ours a name there.
        fake.ConsoleFakeDriver = ConsoleFakeDriver
        self.flags(compute_driver="fake.ConsoleFakeDriver")
        super()._setup_services()

    def configure_consoles(self, serial_proxy_port: int, novnc_proxy_port: int) -> None:
        """Point the access URLs the API hands out at this process's proxies."""
        # A machine's serial port is a console of its own (--machines).
        self.flags(enabled=_Consoles.serial is not None or _Machines.spec is not None, group="serial_console")
        self.flags(base_url=f"ws://{HOST}:{serial_proxy_port}/", group="serial_console")
        self.flags(enabled=_Consoles.vnc is not None, group="vnc")
        self.flags(novncproxy_base_url=f"http://{HOST}:{novnc_proxy_port}/vnc_auto.html", group="vnc")

    def configure_network(self, servers: list[dict[str, Any]]) -> dict[int, str]:
        """Give the Neutron double our subnet, one port per server, and the floating IPs.

        Returns the port ID for each server's index in `servers`.
        """
        neutron = self.neutron
        subnet = copy.deepcopy(neutron.subnet_1)
        subnet.update(
            cidr=NETWORK_CIDR, gateway_ip="10.0.0.1", allocation_pools=[{"start": "10.0.0.2", "end": "10.0.0.254"}]
        )
        neutron._subnets[subnet["id"]] = subnet
        floating: dict[str, dict[str, Any]] = {}
        ports: dict[int, str] = {}
        for index, spec in enumerate(servers):
            port = copy.deepcopy(neutron.port_1)
            port.update(
                id=str(uuid.uuid4()),
                mac_address="fa:16:3e:00:00:%02x" % (index + 1),
                fixed_ips=[{"ip_address": spec["fixed_ip"], "subnet_id": subnet["id"]}],
            )
            neutron._ports[port["id"]] = port
            ports[index] = port["id"]
            if spec.get("floating_ip"):
                floating[port["id"]] = {
                    "id": str(uuid.uuid4()),
                    "floating_ip_address": spec["floating_ip"],
                    "fixed_ip_address": spec["fixed_ip"],
                    "port_id": port["id"],
                    "floating_network_id": str(uuid.uuid4()),
                    "status": "ACTIVE",
                }

        def list_floatingips(retrieve_all: bool = True, **params: Any) -> dict[str, Any]:
            found = [
                fip
                for fip in floating.values()
                if all(fip.get(key) == value for key, value in params.items() if key != "fields")
            ]
            return {"floatingips": copy.deepcopy(found)}

        # The Neutron client double looks methods up on the fixture instance.
        neutron.list_floatingips = list_floatingips
        return ports

    def boot(self, servers: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Boot the servers of the spec and bring each to its status; their IDs by name.

        Polled every 50 ms: the fixtures' own helper sleeps 0.5 s between polls,
        which made start-up 1.5 s longer for four servers.
        """
        for spec in servers:
            if spec.get("status", "ACTIVE") not in ("ACTIVE", "SHUTOFF"):
                raise SystemExit(f"nova_server: status {spec['status']!r} of {spec['name']!r} is not ACTIVE or SHUTOFF")
        ports = self.configure_network(servers)
        images = {index: self._image(spec["image_properties"]) for index, spec in enumerate(servers)
                  if "image_properties" in spec}
        created = [
            self.api.post_server(
                {
                    "server": self._build_server(
                        name=spec["name"],
                        image_uuid=images.get(index, IMAGE_ID),
                        flavor_id=FLAVOR_ID,
                        networks=[{"port": ports[index]}],
                    )
                }
            )
            for index, spec in enumerate(servers)
        ]
        self._wait_for_status(created, "ACTIVE")
        for index, spec in enumerate(servers):
            if spec.get("image_deleted") and index in images:
                del self.glance.images[images[index]]  # as after `openstack image delete`
        stopping = [server for server, spec in zip(created, servers, strict=True) if spec.get("status") == "SHUTOFF"]
        for server in stopping:
            self.api.post_server_action(server["id"], {"os-stop": None})
        self._wait_for_status(stopping, "SHUTOFF")
        ids: dict[str, list[str]] = {}
        for server, spec in zip(created, servers, strict=True):
            ids.setdefault(spec["name"], []).append(server["id"])
        return ids

    def _image(self, properties: dict[str, str]) -> str:
        """A copy of the fixture's first image with these properties; its ID."""
        image = copy.deepcopy(self.glance.images[IMAGE_ID])
        image.pop("id")
        image["name"] = "image-" + "-".join(f"{k}-{v}" for k, v in sorted(properties.items()))
        image["properties"] = {**image.get("properties", {}), **properties}
        return str(self.glance.create(None, image)["id"])

    def _wait_for_status(self, servers: list[dict[str, Any]], status: str) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        waiting = {server["id"] for server in servers}
        while waiting:
            for server_id in sorted(waiting):
                current = self.api.get_server(server_id)["status"]
                if current == status:
                    waiting.discard(server_id)
                elif current == "ERROR" or time.monotonic() > deadline:
                    raise SystemExit(f"nova_server: server {server_id} is {current}, not {status}")
            time.sleep(0.05 if waiting else 0)


def restrict_keypair_types(allowed: list[str]) -> None:
    """Refuse imports of other key types exactly as an older Nova does (400, "failed to generate fingerprint")."""
    real = crypto.generate_fingerprint

    def generate_fingerprint(public_key: str) -> str:
        if public_key.split(" ", 1)[0] not in allowed:
            raise exception.InvalidKeypair(reason="failed to generate fingerprint")
        return real(public_key)

    crypto.generate_fingerprint = generate_fingerprint


def cap_microversion(maximum: str) -> None:
    """Make the API advertise and accept at most `maximum`, like an older cloud."""
    from nova.api.openstack.compute import versions

    api_version_request._MAX_API_VERSION = maximum
    versions.VERSIONS["v2.1"]["version"] = maximum


class _AuthHeaders:
    """Inject the identity headers that Nova's stubbed keystone context reads, and log each request.

    The request line (`api request {json}`: method, path, the client's
    X-OpenStack-Request-ID and User-Agent) is what a cloud operator searches
    Nova's logs for; tests read it from the log file. Tokens are never logged.
    """

    def __init__(self, app: Any, project_id: str) -> None:
        self.app = app
        self.project_id = project_id

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        seen = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "global_request_id": environ.get("HTTP_X_OPENSTACK_REQUEST_ID"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        REQUEST_LOG.info("api request %s", json.dumps(seen))
        environ["HTTP_X_AUTH_USER"] = "admin"
        environ["HTTP_X_AUTH_PROJECT_ID"] = self.project_id
        environ["HTTP_X_ROLES"] = ROLES
        return self.app(environ, start_response)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("api: " + format, *args)


class _ConsoleProxy(websockify.websocketproxy.LibProxyServer):
    """websockify's threaded server with Nova's request handler: what nova-serialproxy runs, minus the fork."""

    daemon_threads = True
    # Read by NovaProxyRequestHandler: no VeNCrypt/TLS negotiation with the target.
    security_proxy = None

    def __init__(self, port: int) -> None:
        super().__init__(
            RequestHandlerClass=websocketproxy.NovaProxyRequestHandler,
            listen_host=HOST,
            listen_port=port,
        )


def _log_to_stderr(level: int) -> None:
    """Send Nova's logs to stderr (the caller's log file) instead of the fixtures' in-memory capture.

    The capture would grow with every request for as long as the server runs, and
    nobody would read it.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def _serve(server: socketserver.BaseServer, name: str) -> threading.Thread:
    # A short poll interval: shutdown() waits for the loop to notice, once per server.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True)
    thread.start()
    return thread


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--serial-target", type=_target, help="HOST:PORT of the raw serial console (TCP)")
    parser.add_argument("--vnc-target", type=_target, help="HOST:PORT of a VNC server")
    parser.add_argument("--console-log", help="file whose text is every server's console log")
    parser.add_argument("--spec", help="JSON spec file, or - for stdin")
    parser.add_argument("--port", type=int, default=0, help="compute API port (0: any free)")
    parser.add_argument("--serial-proxy-port", type=int, default=0)
    parser.add_argument("--novnc-proxy-port", type=int, default=0)
    parser.add_argument("--machines", help="JSON file: the machines boot, reboot, rescue and unrescue start")
    parser.add_argument("--debug", action="store_true", help="Nova's debug logs on stderr")
    return parser.parse_args(argv)


def _read_spec(source: str | None) -> dict[str, Any]:
    if source is None:
        return {"servers": []}
    if source == "-":
        text = sys.stdin.read()
    else:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    spec = json.loads(text)
    for server in spec.get("servers", []):
        if "name" not in server or "fixed_ip" not in server:
            raise SystemExit(f"nova_server: each server needs a name and a fixed_ip: {server!r}")
    return spec


def main(argv: list[str]) -> int:
    """Start everything, print the ready line, serve until SIGTERM; the exit code."""
    started = time.monotonic()
    args = _parse_args(argv)
    # Nova 34's fixtures keep the databases in sqlite files (WAL) under tempfile's
    # directory and remove them in cleanups we never run (see the end of this file):
    # give them a directory of our own to remove.
    workdir = tempfile.mkdtemp(prefix="nova-server-")
    tempfile.tempdir = workdir
    try:
        return _run(args, started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, started: float) -> int:
    spec = _read_spec(args.spec)
    _Consoles.serial = args.serial_target
    _Consoles.vnc = args.vnc_target
    _Consoles.log_file = args.console_log
    if args.machines:
        with open(args.machines, encoding="utf-8") as f:
            _Machines.spec = json.load(f)
    _Agents.sockets = {server["name"]: server["agent_socket"] for server in spec.get("servers", [])
                       if server.get("agent_socket")}
    _Agents.timeout = float(spec.get("agent_timeout", _Agents.timeout))
    if spec.get("keypair_types"):
        restrict_keypair_types(spec["keypair_types"])
    if spec.get("max_microversion"):
        cap_microversion(spec["max_microversion"])

    # Bind every port first: the access URLs the API hands out must name the real ones.
    serial_proxy = _ConsoleProxy(args.serial_proxy_port)
    novnc_proxy = _ConsoleProxy(args.novnc_proxy_port)

    cloud = NovaTestCloud("test_serve")
    cloud.setUp()
    # The fixtures turn some warnings into errors for Nova's own tests; here they
    # would only kill a request thread.
    warnings.resetwarnings()
    warnings.simplefilter("ignore")
    _log_to_stderr(logging.DEBUG if args.debug else logging.WARNING)
    cloud.configure_consoles(serial_proxy.server_address[1], novnc_proxy.server_address[1])
    ids = cloud.boot(spec.get("servers", []))

    project_id = nova_fixtures.PROJECT_ID
    api = _ThreadingWSGIServer((HOST, args.port), _QuietHandler)
    api.set_app(_AuthHeaders(cloud.api_fixture.app(), project_id))
    servers = [api, serial_proxy, novnc_proxy]
    for server, name in zip(servers, ("api", "serial-proxy", "novnc-proxy"), strict=True):
        _serve(server, name)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api_port = api.server_address[1]
    print(
        json.dumps(
            {
                "api_port": api_port,
                "compute_url": f"http://{HOST}:{api_port}/v2.1",
                "serial_proxy_port": serial_proxy.server_address[1],
                "novnc_proxy_port": novnc_proxy.server_address[1],
                "project_id": project_id,
                "servers": ids,
                "pid": os.getpid(),
                "ready_seconds": round(time.monotonic() - started, 2),
            }
        ),
        flush=True,
    )
    stop.wait()
    _Machines.stop_all()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        traceback.print_exc(file=sys.__stderr__)
        code = 1
    sys.__stderr__.flush()
    sys.stdout.flush()
    # Not sys.exit: the services' executor threads never end, and futurist's
    # atexit hook would wait for them forever.
    os._exit(code)
