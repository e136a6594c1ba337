"""A real OpenStack Swift all-in-one on 127.0.0.1, with tempauth, TempURL and S3.

The proxy, account, container and object servers are PyPI `swift` (pinned in
`swift/requirements.txt`) run from their own virtualenv, `.cache/venv-swift`, which
`ensure_swift_venv.sh` builds; memcached (tempauth keeps its tokens there) comes from
Debian. Everything lives in one temp dir: `swift_dir` with its own `swift.conf` and
rings (part power 6, one replica, one device), the device directory, the server
configs and one log file that collects the servers' syslog datagrams (there is no
/dev/log here, and Swift would otherwise send them to UDP 514).

Accounts and users (tempauth):
    test:tester / testing     owner of AUTH_test (``.admin``): reads and sets Temp-URL keys;
                              also the S3 access key / secret
    test:tester3 / testing3   no group: sees AUTH_test only through an ACL, never its keys
    admin:admin / admin       reseller admin: reaches any AUTH_<name>, so a test that
                              changes account metadata can take an account of its own

A missing venv or memcached fails the test with the command that installs them.
"""

from __future__ import annotations

import http.client
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from recovery.lab.processes import free_port
from tests.processes import stop_child

HERE = Path(__file__).resolve().parent
VENV = HERE.parent.parent / ".cache" / "venv-swift"
TEMPLATES = HERE / "swift"
ENSURE = HERE / "ensure_swift_venv.sh"
HOST = "127.0.0.1"
DEVICE = "d1"
READY_WITHIN = 30.0  # seconds; a cold start takes 2-4 s on our 2-core machines
PORT_ATTEMPTS = 3  # fresh ports when another program took one first (parallel test workers)
STORAGE_SERVERS = ("account", "container", "object")


class SwiftFixtureError(RuntimeError):
    """The test cluster could not be set up; the message says what to install or read."""


@dataclass
class _Process:
    """One server process: how to start it, and the running one if any."""

    name: str
    argv: list[str]
    port: int
    output: Path  # stdout/stderr: startup tracebacks land here, not in the syslog file
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.output.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only ever our own PID."""
        if self.popen is not None:
            stop_child(self.popen)

    def check_alive(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            tail = self.output.read_text(errors="replace")[-2000:] if self.output.exists() else ""
            code = None if self.popen is None else self.popen.returncode
            raise SwiftFixtureError(f"{self.name} is not running (exit {code}); its output:\n{tail}")

    def rss_bytes(self) -> int:
        assert self.popen is not None
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class _SyslogReceiver:
    """Appends every UDP datagram the servers log to one file, on a daemon thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)  # closing a socket does not wake a blocked recv: poll a flag
        self.port: int = self.sock.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swift-syslog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.path.open("ab", buffering=0) as out:
            while not self._stopping.is_set():
                try:
                    data = self.sock.recv(65535)
                except TimeoutError:
                    continue
                out.write(data.rstrip(b"\x00\n") + b"\n")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.sock.close()


@dataclass
class SwiftCluster:
    """A running test cluster and what a test needs to reach it."""

    proxy_url: str  # http://127.0.0.1:PORT
    root: Path
    log_path: Path  # the servers' syslog lines (proxy access log included)
    user: str = "test:tester"
    key: str = "testing"
    s3_region: str = "us-east-1"
    _processes: dict[str, _Process] = field(default_factory=dict, repr=False)

    @property
    def auth_url(self) -> str:
        """tempauth's v1 auth endpoint: GET with X-Auth-User / X-Auth-Key."""
        return self.proxy_url + "/auth/v1.0"

    @property
    def storage_url(self) -> str:
        """The storage URL of `user`'s account, AUTH_test."""
        return self.account_url("test")

    def account_url(self, account: str) -> str:
        """The storage URL of AUTH_<account> (created on first write: account_autocreate)."""
        return f"{self.proxy_url}/v1/AUTH_{account}"

    @property
    def s3_endpoint(self) -> str:
        """s3api answers on the proxy itself, path-style only."""
        return self.proxy_url

    @property
    def s3_access_key(self) -> str:
        return self.user

    @property
    def s3_secret_key(self) -> str:
        return self.key

    def token(self, user: str | None = None, key: str | None = None) -> str:
        """A tempauth token for `user` (default test:tester), valid for a day."""
        request = urllib.request.Request(
            self.auth_url, headers={"X-Auth-User": user or self.user, "X-Auth-Key": key or self.key}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            token: str = response.headers["X-Auth-Token"]
            return token

    def admin_token(self) -> str:
        """A reseller admin's token: it works on every AUTH_<name> account."""
        return self.token("admin:admin", "admin")

    def fresh_account(self) -> str:
        """The storage URL of a new, empty account, reachable with `admin_token()`."""
        return self.account_url("t" + secrets.token_hex(6))

    def object_store_settings(self, storage_url: str | None = None, token: str | None = None) -> dict[str, Any]:
        """The keys to add to a clouds.yaml cloud entry so that openstacksdk reaches this Swift.

        tempauth is not Keystone, so openstacksdk authenticates with `admin_token`: the
        token is sent as X-Auth-Token, and the endpoint override makes the object-store
        service resolve to the storage URL without a catalog (`auth_type: none` would send
        no token, and Swift answers 401). A Nova entry can merge these keys in: with
        `admin_token`, Nova's endpoint comes from its own `compute_endpoint_override`, and
        a test Nova that injects its identity headers ignores the token.
        """
        url = storage_url or self.storage_url
        return {
            "auth_type": "admin_token",
            "auth": {"endpoint": url, "token": token or self.token()},
            "object_store_endpoint_override": url,
        }

    def write_clouds_yaml(self, path: Path, cloud: str = "swift-test") -> Path:
        """Write a clouds.yaml with one entry, `cloud`, for test:tester's account."""
        path.write_text(yaml.safe_dump({"clouds": {cloud: self.object_store_settings()}}), encoding="utf-8")
        path.chmod(0o600)
        return path

    def stop_proxy(self) -> None:
        """Stop the proxy (an outage as the client sees it: connection refused)."""
        self._processes["proxy"].stop()

    def start_proxy(self) -> None:
        """Start the proxy again on the same port; tokens survive (they live in memcached)."""
        self.start_server("proxy")

    def stop_server(self, name: str) -> None:
        """Stop one of proxy, account, container, object (a stopped object server gives 503s)."""
        self._processes[name].stop()

    def start_server(self, name: str) -> None:
        process = self._processes[name]
        process.start()
        _wait_healthy([process])

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each process (memcached included), for the record."""
        return {name: process.rss_bytes() for name, process in self._processes.items()}


def _render(template: str, target: Path, **values: object) -> Path:
    text = Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)
    target.write_text(text, encoding="utf-8")
    return target


def _healthy(process: _Process) -> None:
    process.check_alive()
    if process.name == "memcached":
        socket.create_connection((HOST, process.port), timeout=1).close()
        return
    with urllib.request.urlopen(f"http://{HOST}:{process.port}/healthcheck", timeout=2) as response:
        response.read()


def _wait_healthy(processes: list[_Process]) -> None:
    """Poll each process until it answers, for at most READY_WITHIN seconds in all."""
    for attempt in Retrying(
        stop=stop_after_delay(READY_WITHIN),
        wait=wait_fixed(0.05),
        retry=retry_if_exception_type(OSError),  # refused, reset, HTTP errors: not up yet
        reraise=True,
    ):
        with attempt:
            for process in processes:
                _healthy(process)


def _cluster(
    root: Path,
    ports: Mapping[str, int],
    user: str,
    log_port: int,
    proxy_template: str,
    allowed_digests: str,
    proxy_values: Mapping[str, object] | None,
) -> dict[str, _Process]:
    """memcached, the storage servers and the proxy, configured for `ports` (not started yet)."""
    swift_dir, devices = root / "etc", root / "srv"
    common = {"user": user, "swift_dir": swift_dir, "log_port": log_port}
    processes: dict[str, _Process] = {}
    memcached = ["memcached", "-l", HOST, "-p", str(ports["memcached"]), "-U", "0", "-m", "16", "-t", "1"]
    if os.geteuid() == 0:
        memcached += ["-u", user]  # memcached refuses to run as root without it
    processes["memcached"] = _Process("memcached", memcached, ports["memcached"], root / "memcached.out")

    _render("swift.conf.in", swift_dir / "swift.conf")
    subprocess.run(
        [VENV / "bin" / "python", TEMPLATES / "build_rings.py", swift_dir, DEVICE]
        + [str(ports[name]) for name in STORAGE_SERVERS],
        check=True,
        capture_output=True,
    )
    for name in STORAGE_SERVERS:
        conf = _render(
            "storage-server.conf.in",
            root / f"{name}-server.conf",
            port=ports[name],
            devices=devices,
            server=name,
            **common,
        )
        processes[name] = _Process(
            name, [str(VENV / "bin" / f"swift-{name}-server"), str(conf)], ports[name], root / f"{name}.out"
        )
    conf = _render(
        proxy_template,
        root / "proxy-server.conf",
        proxy_port=ports["proxy"],
        memcache_port=ports["memcached"],
        allowed_digests=allowed_digests,
        **common,
        **(proxy_values or {}),
    )
    processes["proxy"] = _Process(
        "proxy", [str(VENV / "bin" / "swift-proxy-server"), str(conf)], ports["proxy"], root / "proxy.out"
    )
    return processes


def _port_taken(error: Exception, processes: Iterable[_Process]) -> bool:
    """Did another program take one of the ports `free_port` handed out before our server bound it?

    Parallel test workers pick free ports at the same time: another worker's sshd answering our
    health check, or a server of ours that died of EADDRINUSE, means "pick new ports", not a
    broken Swift.
    """
    if isinstance(error, http.client.HTTPException):
        return True
    return any(
        "Address already in use" in process.output.read_text(errors="replace")
        for process in processes
        if process.output.exists()
    )


def _check_prerequisites() -> None:
    if not (VENV / "bin" / "swift-proxy-server").exists():
        raise SwiftFixtureError(f"the Swift virtualenv is missing: run {ENSURE}")
    if shutil.which("memcached") is None:
        raise SwiftFixtureError(f"memcached is missing: run {ENSURE} as root (apt-get install memcached)")


def _check_xattrs(directory: Path) -> None:
    """The object server keeps metadata in user xattrs; tmpfs before Linux 6.6 has none."""
    probe = directory / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.recovery", b"1")
    except OSError as exc:
        raise SwiftFixtureError(
            f"{directory} does not support user xattrs ({exc}); point TMPDIR at an ext4 or xfs directory"
        ) from exc
    finally:
        probe.unlink()


@contextmanager
def running_swift(
    allowed_digests: str = "sha1 sha256 sha512",
    proxy_template: str = "proxy-server.conf.in",
    proxy_values: Mapping[str, object] | None = None,
) -> Iterator[SwiftCluster]:
    """Start memcached and the four Swift servers; stop them (by PID) and remove everything on exit.

    Args:
        allowed_digests: the tempurl filter's ``allowed_digests`` (what GET /info reports).
        proxy_template, proxy_values: another proxy config in `swift/` and the values it needs
            beyond the common ones; keystone_fixture.py uses them for authtoken + keystoneauth.
    Raises:
        SwiftFixtureError: the venv or memcached is missing, or a server did not come up.
    """
    _check_prerequisites()
    root = Path(tempfile.mkdtemp(prefix="rcv-swift-"))
    swift_dir, devices = root / "etc", root / "srv"
    (devices / DEVICE).mkdir(parents=True)
    swift_dir.mkdir()
    _check_xattrs(devices / DEVICE)
    syslog = _SyslogReceiver(root / "swift.log")
    user = pwd.getpwuid(os.geteuid()).pw_name
    processes: dict[str, _Process] = {}
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            ports = {name: free_port() for name in ("memcached", "proxy", *STORAGE_SERVERS)}
            processes = _cluster(root, ports, user, syslog.port, proxy_template, allowed_digests, proxy_values)
            try:
                for process in processes.values():
                    process.start()
                _wait_healthy(list(processes.values()))
                break
            except (SwiftFixtureError, http.client.HTTPException) as exc:
                taken = _port_taken(exc, processes.values())
                for process in reversed(processes.values()):
                    process.stop()
                    process.output.unlink(missing_ok=True)
                if attempt == PORT_ATTEMPTS or not taken:
                    raise
        yield SwiftCluster(
            proxy_url=f"http://{HOST}:{ports['proxy']}",
            root=root,
            log_path=syslog.path,
            _processes=processes,
        )
    finally:
        for process in reversed(processes.values()):
            process.stop()
        syslog.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure() -> None:
    """Print start time, RSS and a token round trip: `python -m tests.cloud.swift_fixture`."""
    started = time.monotonic()
    with running_swift() as cluster:
        ready = time.monotonic() - started
        token_started = time.monotonic()
        cluster.token()
        print(f"ready in {ready:.2f} s; first token in {time.monotonic() - token_started:.3f} s")
        rss = cluster.rss_bytes()
        for name, size in rss.items():
            print(f"  {name:10} {size / 2**20:6.1f} MiB")
        print(f"  {'total':10} {sum(rss.values()) / 2**20:6.1f} MiB")


if __name__ == "__main__":
    measure()
