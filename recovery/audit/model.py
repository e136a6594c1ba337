"""What an audit is about and what it found: hosts, one result per host, the report.

Plain frozen dataclasses and no I/O, so the inventory loaders, the checker, the
renderers and the remediation driver agree on one shape and can each be tested
with hand-made values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.ssh.diagnosis import Failure

if TYPE_CHECKING:
    from recovery.ssh.hostkeys import RecordedKey
    from recovery.ssh.jump import JumpHop

__all__ = [
    "CONSOLE_KINDS",
    "AuditReport",
    "ConsoleAccess",
    "GuestAgent",
    "Host",
    "HostResult",
    "Remediation",
    "Status",
]

# The consoles `--check-console` asks for: the keys of `recovery.cloud.CONSOLE_KINDS`, written
# out because importing recovery.cloud would add ~17 ms to the start of every audit.
CONSOLE_KINDS = ("serial", "novnc")


class Status(StrEnum):
    """Each host's result. The values are a contract (JSON, JUnit, Prometheus labels).

    Every `Failure` of `recovery.ssh.diagnosis` is a status of the same name; `ok`,
    `no_address` (nothing to connect to) and `protocol_error` (something
    listens, but it does not speak SSH: a web server, a proxy, a wrong port)
    are the audit's own.
    """

    OK = "ok"
    AUTH_REJECTED = Failure.AUTH_REJECTED.value
    REFUSED = Failure.REFUSED.value
    PROTOCOL_ERROR = "protocol_error"
    TIMEOUT = Failure.TIMEOUT.value
    HOST_KEY_CHANGED = Failure.HOST_KEY_CHANGED.value
    HOST_KEY_UNKNOWN = Failure.HOST_KEY_UNKNOWN.value
    DNS_ERROR = Failure.DNS_ERROR.value
    NO_ADDRESS = "no_address"
    ERROR = Failure.ERROR.value


@dataclass(frozen=True)
class Host:
    """One machine to check.

    `address` is None when the inventory or the cloud knows no address for it.
    `keys` are tried in order; the first that logs in is the one reported.
    `host_key` is a pinned fingerprint (`SHA256:...`), which wins over any
    known_hosts entry but `@revoked`. `server_id` is set for hosts that came
    from a cloud. `inputs` and `secrets` (secret name, file holding it) are
    what a remediation playbook run gets for this host beyond what the audit
    knows; pairs rather than dicts, so a `Host` stays hashable. `jumps` are the
    bastions on the way, first hop first (`recovery.ssh.jump`); empty: connected directly.
    """

    name: str
    address: str | None
    port: int
    user: str
    keys: tuple[Path, ...]
    host_key: str | None = None
    server_id: str | None = None
    note: str = ""
    inputs: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, Path], ...] = ()
    jumps: tuple[JumpHop, ...] = ()

    @property
    def where(self) -> str:
        """`address:port` as messages and the table show it (`-` when there is no address)."""
        return f"{self.address}:{self.port}" if self.address else "-"


@dataclass(frozen=True)
class GuestAgent:
    """Whether the server's image enables the QEMU guest agent: a way in without a console password.

    `enabled` is the image property `hw_qemu_guest_agent` read as Nova reads it;
    None when the properties could not be read, and `reason` says why. `admin_user`
    is the image's `os_admin_user`, the account a `changePassword` sets (root when
    None). `source` is where the properties came from: `image ID`, or `volume ID`
    for a server booted from a volume.
    """

    enabled: bool | None
    admin_user: str | None = None
    source: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ConsoleAccess:
    """Which consoles the cloud would open for a server (`--check-console`), and why not the others.

    `guest_agent` is the other route a recovery may take on that server (None when not asked).
    """

    available: tuple[str, ...]
    problems: tuple[str, ...] = ()
    guest_agent: GuestAgent | None = None


@dataclass(frozen=True)
class HostResult:
    """What checking one host found; fingerprints and paths only, never key material.

    `seconds` is the latency of the whole check (resolve, connect, handshake,
    authentication). `key_fingerprint` and `key_path` name the key that logged
    in (for `ok`); `host_key_fingerprint` is what the server offered, when it
    got that far, so an operator can pin it.
    """

    host: Host
    status: Status
    seconds: float
    message: str = ""
    key_fingerprint: str | None = None
    key_path: Path | None = None
    host_key_fingerprint: str | None = None
    host_key_trusted_on_first_use: bool = False
    console: ConsoleAccess | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True)
class Remediation:
    """One recovery playbook run for a failed host, or why none was run.

    `outcome` is `succeeded`, `failed`, `interrupted`, `declined` (the operator
    said no) or `skipped` (over `--max-remediations`, or not a failure a
    recovery can fix). A run that started has its own journal and report in
    `journal`.
    """

    host: str
    outcome: str
    message: str
    run_id: str | None = None
    journal: Path | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class AuditReport:
    """The whole audit, as every renderer sees it; results in inventory order.

    `not_checked` lists the hosts an interrupted audit never reached. `engine` names
    the SSH library that made the checks (`libssh2`, or `paramiko` where ssh2-python
    cannot be imported: see `recovery.audit.engine`); None in a report made by hand.
    `known_hosts_added` are the host keys `--accept-new` appended to known_hosts, the VMs'
    and the jump hosts' alike.
    """

    results: tuple[HostResult, ...]
    started_at: datetime
    seconds: float
    shard: str | None = None
    interrupted: bool = False
    not_checked: tuple[Host, ...] = ()
    remediations: tuple[Remediation, ...] = field(default=())
    engine: str | None = None
    known_hosts_added: tuple[RecordedKey, ...] = ()

    def counts(self) -> dict[Status, int]:
        """How many hosts ended in each status; every status is present, zeros included."""
        seen = Counter(result.status for result in self.results)
        return {status: seen.get(status, 0) for status in Status}

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(result for result in self.results if not result.ok)

    def remediation_for(self, name: str) -> Remediation | None:
        """The remediation of the host called `name`, if there was one (or a reason there was none)."""
        return next((item for item in self.remediations if item.host == name), None)
