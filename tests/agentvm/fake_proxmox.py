"""An HTTP fake of the Proxmox VE API's agent endpoints, relaying to a QEMU guest agent.

What it serves is what pveproxy serves for `qm guest exec`: HTTPS on a loopback port with a
certificate of its own CA (the fake makes one, as a Proxmox cluster does), the token checked in
`Authorization: PVEAPIToken=...`, `POST .../agent/exec` (form fields `command`, repeated, and
`input-data`, which Proxmox base64-encodes for the agent) and `GET .../agent/exec-status?pid=N`
(Proxmox decodes out-data and err-data to text). Behind it is any agent transport: the test VM's
real qemu-ga (`UnixSocketTransport`) or a scripted one. Errors come back as Proxmox words them:
HTTP 500 with the agent's message, 401 for a bad token, 500 "does not exist" for an unknown VM.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from recovery.agent.qga import Transport
from recovery.errors import AgentError

_PATH = re.compile(r"/api2/json/nodes/(?P<node>[^/]+)/qemu/(?P<vmid>\d+)/agent/(?P<endpoint>[a-z-]+)")


@dataclass
class FakeProxmox:
    url: str  # proxmox://127.0.0.1:PORT/NODE/VMID?ca=CAFILE
    cafile: Path
    requests: list[dict[str, Any]] = field(default_factory=list)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1, and its key: the cluster CA and pveproxy's cert in one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake pve")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "pve-root-ca.pem", directory / "pveproxy.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextmanager
def serving(transport: Transport, token: str, *, node: str = "pve", vmid: str = "100") -> Iterator[FakeProxmox]:
    """The fake API on a free loopback port for the VM `vmid` on `node`, its agent behind `transport`."""
    directory = Path(tempfile.mkdtemp(prefix="rcv-fake-pve-"))
    cert, key = make_certificate(directory)
    state: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `requests` instead."""

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            self._handle(parts.path, parse_qs(parts.query))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self._handle(self.path, parse_qs(self.rfile.read(length).decode(), keep_blank_values=True))

        def _handle(self, path: str, form: dict[str, list[str]]) -> None:
            state["fake"].requests.append({"method": self.command, "path": path, "form": form,
                                           "authorization": self.headers.get("Authorization")})
            if self.headers.get("Authorization") != f"PVEAPIToken={token}":
                return self._reply(401, "authentication failure", None)
            found = _PATH.fullmatch(path)
            if not found or found["node"] != node:
                return self._reply(404, "no such resource", None)
            if found["vmid"] != vmid:
                return self._reply(500, f"Configuration file 'nodes/{node}/qemu-server/{found['vmid']}.conf' does "
                                   "not exist", None)
            try:
                if found["endpoint"] == "exec" and self.command == "POST":
                    arguments: dict[str, object] = {"path": form["command"][0], "arg": form["command"][1:],
                                                    "capture-output": True}
                    if "input-data" in form:
                        arguments["input-data"] = base64.b64encode(form["input-data"][0].encode()).decode()
                    return self._reply(200, "OK", transport.command("guest-exec", arguments, 30))
                if found["endpoint"] == "exec-status" and self.command == "GET":
                    status = dict(transport.command("guest-exec-status", {"pid": int(form["pid"][0])}, 30))
                    for name in ("out-data", "err-data"):
                        if name in status:
                            status[name] = base64.b64decode(status[name]).decode("utf-8", "replace")
                    status["exited"] = int(bool(status.get("exited")))
                    return self._reply(200, "OK", status)
            except AgentError as exc:
                text = str(exc).split(": ", 1)[-1] if exc.blocked else "QEMU guest agent is not running"
                return self._reply(500, f"Agent error: {text}", None)
            return self._reply(501, f"Method '{self.command} {path}' not implemented", None)

        def _reply(self, status: int, reason: str, data: object) -> None:
            body = json.dumps({"data": data, **({"message": reason + "\n"} if status != 200 else {})}).encode()
            self.send_response(status, reason)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    fake = FakeProxmox(f"proxmox://127.0.0.1:{port}/{node}/{vmid}?ca={cert}", cert)
    state["fake"] = fake
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        for path in (cert, key):
            path.unlink()
        directory.rmdir()
