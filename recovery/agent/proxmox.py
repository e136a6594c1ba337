"""`proxmox://HOST[:PORT]/NODE/VMID[?ca=/path/to/pve-root-ca.pem]`: the guest agent through the Proxmox VE API.

Proxmox owns the agent socket of its VMs and offers `agent/exec` and `agent/exec-status`
(`qm guest exec`), authenticated by an API token (`USER@REALM!NAME=SECRET`, sent as
`Authorization: PVEAPIToken=...`; it needs VM.Monitor, or VM.GuestAgent.Unrestricted on PVE 8.3
and later). Proxmox base64-encodes `input-data` itself and decodes the output, so both travel as
text. Its API has no guest-ssh-* endpoints: where an agent blocks guest-exec, this route ends
with a message. pveproxy listens on 8006 with a certificate of the cluster's own CA: `ca=` names
that CA's file (/etc/pve/pve-root-ca.pem on a node); without it the system's CAs are used.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from recovery.agent import ExecResult
from recovery.errors import AgentError
from recovery.safety.redact import Secret

__all__ = ["ProxmoxAgent"]

DEFAULT_PORT = 8006
_POLL = (0.05, 0.1, 0.2, 0.3)


class ProxmoxAgent:
    """`GuestAgent` over the Proxmox VE API of one VM."""

    scheme: ClassVar[str] = "proxmox"

    def __init__(self, host: str, port: int, node: str, vmid: str, token: Secret | None,
                 *, cafile: str | None = None) -> None:
        self.host, self.port, self.node, self.vmid = host, port, node, vmid
        self.token = token
        self.cafile = cafile
        self.where = f"Proxmox VM {vmid} on node {node} ({host}:{port})"

    @staticmethod
    def url_problem(url: str) -> str | None:
        parts = urlsplit(url)
        segments = [segment for segment in parts.path.split("/") if segment]
        shape = "proxmox://HOST[:PORT]/NODE/VMID"
        if not parts.hostname or len(segments) != 2:
            return f"{url}: a Proxmox agent is {shape}"
        if not segments[1].isdigit():
            return f"{url}: the VM id {segments[1]!r} is not a number ({shape})"
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            return f"{url}: the port is not a number ({shape})"
        unknown = set(parse_qs(parts.query)) - {"ca"}
        if parts.username or parts.password:
            return f"{url}: give the API token as a secret (RECOVERY_AGENT_TOKEN), never in the URL"
        if unknown:
            return f"{url}: unknown option {', '.join(sorted(unknown))} (only ca=/path/to/pve-root-ca.pem)"
        return None

    @classmethod
    def from_url(cls, url: str, *, token: Secret | None = None) -> ProxmoxAgent:
        parts = urlsplit(url)
        node, vmid = [segment for segment in parts.path.split("/") if segment]
        cafile = parse_qs(parts.query).get("ca", [None])[0]
        return cls(parts.hostname or "", parts.port or DEFAULT_PORT, node, vmid, token, cafile=cafile)

    def exec(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float) -> ExecResult:
        deadline = time.monotonic() + timeout
        form: dict[str, object] = {"command": list(argv)}
        if stdin:
            form["input-data"] = stdin.decode("utf-8")
        started = self._call("POST", "agent/exec", form, timeout, command="guest-exec")
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise AgentError(f"{self.where} started {argv[0]} but gave no pid: {started!r}", command="guest-exec")
        for polls in range(1_000_000):
            status = self._call("GET", "agent/exec-status", {"pid": pid}, max(deadline - time.monotonic(), 1.0),
                                command="guest-exec-status")
            if isinstance(status, dict) and status.get("exited"):
                code, signal = status.get("exitcode"), status.get("signal")
                return ExecResult(
                    exit_code=code if isinstance(code, int) else None,
                    stdout=str(status.get("out-data", "")).encode(),
                    stderr=str(status.get("err-data", "")).encode(),
                    signal=signal if isinstance(signal, int) else None,
                    truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
                )
            pause = _POLL[min(polls, len(_POLL) - 1)]
            if time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
        raise AgentError(f"{argv[0]} (pid {pid} in {self.where}) was still running after {timeout:.0f} s; it may "
                         "yet finish in the VM", command="guest-exec")

    def add_authorized_keys(self, user: str, keys: Sequence[str], *, timeout: float) -> None:
        raise self._no_ssh_keys()

    def get_authorized_keys(self, user: str, *, timeout: float) -> list[str]:
        raise self._no_ssh_keys()

    def append_newline_if_missing(self, user: str, *, timeout: float) -> bool | None:
        return None  # reached only after add_authorized_keys, which this API does not have

    def close(self) -> None:
        """Each call is its own HTTPS request: nothing stays open."""

    def _no_ssh_keys(self) -> AgentError:
        return AgentError(
            f"the Proxmox API has no guest-ssh-* commands, and the agent of {self.where} blocks guest-exec: "
            "allow guest-exec in the VM's qemu-ga configuration, or use another route (console, boot loader)",
            command="guest-ssh-add-authorized-keys")

    def _call(self, method: str, endpoint: str, params: Mapping[str, object], timeout: float, *, command: str) -> Any:
        if self.token is None:
            raise AgentError(f"{self.where}: a Proxmox agent needs an API token: set RECOVERY_AGENT_TOKEN or pass "
                             "--secret agent_token=@FILE (USER@REALM!NAME=SECRET)", command=command)
        path = f"/api2/json/nodes/{quote(self.node)}/qemu/{quote(self.vmid)}/{endpoint}"
        encoded = urlencode(params, doseq=True)
        headers = {"Authorization": f"PVEAPIToken={self.token.reveal()}", "Accept": "application/json"}
        body = None
        if method == "GET":
            path += f"?{encoded}"
        else:
            body = encoded.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        context = ssl.create_default_context(cafile=self.cafile)
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except ssl.SSLCertVerificationError as exc:
            raise AgentError(f"the certificate of {self.host}:{self.port} is not trusted ({exc.verify_message}): "
                             "add ?ca=/path/to/pve-root-ca.pem (the cluster CA, /etc/pve/pve-root-ca.pem on a node) "
                             "to the agent URL", command=command) from exc
        except TimeoutError as exc:
            raise AgentError(f"{self.host}:{self.port} did not answer {endpoint} within {timeout:.0f} s",
                             command=command) from exc
        except OSError as exc:
            raise AgentError(f"cannot reach the Proxmox API at {self.host}:{self.port}: {exc}",
                             command=command) from exc
        finally:
            connection.close()
        if response.status != 200:
            raise self._refusal(response.status, response.reason, data, endpoint, command)
        try:
            return json.loads(data)["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"the Proxmox API answered {endpoint} with something that is not its JSON: {data[:200]!r}",
                             command=command) from exc

    def _refusal(self, status: int, reason: str, data: bytes, endpoint: str, command: str) -> AgentError:
        text = reason
        try:
            body = json.loads(data)
            text = str(body.get("message") or reason) if isinstance(body, dict) else reason
        except ValueError:
            pass
        text = text.strip()
        lowered = text.lower()
        if status == 401:
            return AgentError(f"the Proxmox API at {self.host}:{self.port} refused the token (HTTP 401: {text}): check "
                              "its USER@REALM!NAME=SECRET form and that it is not expired", command=command)
        if status == 403:
            return AgentError(f"the token may not use the agent of {self.where} (HTTP 403: {text}): it needs "
                              "VM.Monitor (VM.GuestAgent.Unrestricted on PVE 8.3 and later)", command=command)
        if "has been disabled" in lowered or "has not been found" in lowered:
            return AgentError(f"the guest agent of {self.where} refuses {command}: {text}", command=command,
                              blocked=True)
        if "not running" in lowered or "got timeout" in lowered:
            return AgentError(f"the guest agent of {self.where} is not answering ({text}): is qemu-guest-agent running "
                              "in the VM, and is the agent enabled in its options?", command=command)
        if "does not exist" in lowered or status == 404:
            return AgentError(f"{self.where} does not exist ({text}): check the node name and the VM id",
                              command=command)
        return AgentError(f"the Proxmox API failed {endpoint} on {self.where} (HTTP {status}: {text})",
                          command=command)
