"""Every error `recovery` raises on purpose, and the exit code each one means.

    RecoveryError
    ├── UsageError                      exit 2: bad arguments or config
    │   ├── ConfigError
    │   └── PlaybookError               carries every problem found, each with file:line: path
    ├── StepError(step, attempt)        exit 1: a step failed while running
    │   ├── ChannelError                the console/session could not be used
    │   │   ├── ChannelTimeout          the console did not answer in time
    │   │   ├── ChannelClosed           the console went away mid-conversation
    │   │   └── LoginRejected           the console refused the user or password
    │   ├── GuestCommandError           a command typed into the VM reported failure
    │   ├── NotPossible                 found, before anything changed, that the VM offers no such way in
    │   ├── AgentError(command, blocked)  the VM's guest agent was unreachable, silent or refused
    │   ├── PublishError                publishing or withdrawing the public key failed
    │   │   └── PublishUnavailable      5xx or a reset from object storage (transient)
    │   ├── CloudError(status_code, request_id)   the cloud API refused or failed
    │   │   └── CloudUnavailable        5xx, 409 or a reset (transient)
    │   ├── KeyGenerationError
    │   ├── VerifyError                 the SSH login with the new key did not succeed
    │   │   ├── AuthRejected
    │   │   ├── HostKeyMismatch
    │   │   ├── HostKeyUnknown
    │   │   ├── ConnectionRefused
    │   │   └── ConnectTimeout
    │   └── TemplateError               a value could not be rendered at run time
    ├── InternalError                   a bug; the traceback is in the run's debug.log
    ├── JournalError                    the run journal is unreadable or unwritable
    └── LabError                        the built-in lab could not start or stop
        └── UnsafeLabDirectory          exit 2: a lab directory others could tamper with

`TransientError` is a mix-in: the runner retries an error only when it carries it
*and* the step declares itself safe to retry. Drivers raise these from foreign
exceptions (`raise X(...) from exc`) so nothing above them imports paramiko or
websocket exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AgentError",
    "AuthRejected",
    "ChannelClosed",
    "ChannelError",
    "ChannelTimeout",
    "CloudError",
    "CloudUnavailable",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionRefused",
    "GuestCommandError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "InternalError",
    "JournalError",
    "KeyGenerationError",
    "LabError",
    "LoginRejected",
    "NotPossible",
    "PlaybookError",
    "Problem",
    "PublishError",
    "PublishUnavailable",
    "RecoveryError",
    "StepError",
    "TemplateError",
    "TransientError",
    "UnsafeLabDirectory",
    "UsageError",
    "VerifyError",
]

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RecoveryError(Exception):
    """Base of every error raised on purpose; `exit_code` is what the CLI returns."""

    exit_code = EXIT_STEP_FAILED


class TransientError:
    """Mix-in: the failure may go away by itself (a booting sshd, a busy console)."""


class UsageError(RecoveryError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a playbook, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PlaybookError(UsageError):
    """A playbook is invalid; `problems` lists all that was found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0))
        count = len(self.problems)
        head = "invalid playbook" if count == 1 else f"invalid playbook ({count} problems)"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class StepError(RecoveryError):
    """A step failed. The runner fills in `step` and `attempt`; drivers leave them empty."""

    def __init__(self, message: str, *, transcript_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.step: str | None = None
        self.attempt = 1
        self.transcript_tail = list(transcript_tail)[-20:]


class ChannelError(StepError):
    pass


class ChannelTimeout(ChannelError, TransientError):
    pass


class ChannelClosed(ChannelError):
    pass


class LoginRejected(ChannelError):
    pass


class GuestCommandError(StepError):
    pass


class NotPossible(StepError):
    """A step found, before it changed anything, that this way in does not exist on this VM.

    Raised where no driver error says it already (the image's properties give the server no guest
    agent, so Nova cannot set a password): a `choose:` route's probe raising it moves on to the next
    route (`recovery.engine.routes.not_possible`).
    """


class AgentError(StepError):
    """The guest agent (qemu-ga, through QEMU, libvirt or Proxmox) could not do what was asked.

    `command` is the agent command that failed (`guest-exec`), if one was sent; `blocked` is
    true when the agent answered that the command is disabled or unknown (RHEL-family guests
    block `guest-exec` and `guest-file-*`), so another command may still do the job.
    """

    def __init__(
        self, message: str, *, command: str | None = None, blocked: bool = False,
        transcript_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message, transcript_tail=transcript_tail)
        self.command = command
        self.blocked = blocked


class PublishError(StepError):
    pass


class PublishUnavailable(PublishError, TransientError):
    pass


class CloudError(StepError):
    """The cloud said no. `request_id` (x-openstack-request-id) goes into the operator's ticket."""

    def __init__(
        self, message: str, *, status_code: int | None = None, request_id: str | None = None
    ) -> None:
        suffix = f" (HTTP {status_code}" if status_code else ""
        if request_id:
            suffix += f", request {request_id}" if suffix else f" (request {request_id}"
        super().__init__(message + (suffix + ")" if suffix else ""))
        self.status_code = status_code
        self.request_id = request_id


class CloudUnavailable(CloudError, TransientError):
    pass


class KeyGenerationError(StepError):
    pass


class VerifyError(StepError):
    pass


class AuthRejected(VerifyError, TransientError):
    """Transient only within a short grace window: sshd may read a file being written."""


class HostKeyMismatch(VerifyError):
    pass


class HostKeyUnknown(VerifyError):
    pass


class ConnectionRefused(VerifyError, TransientError):
    pass


class ConnectTimeout(VerifyError, TransientError):
    pass


class TemplateError(StepError):
    pass


class InternalError(RecoveryError):
    """A bug in recovery, not a problem with the VM or the input; the message says where the traceback is."""


class JournalError(RecoveryError):
    pass


class LabError(RecoveryError):
    pass


class UnsafeLabDirectory(LabError):
    """The lab, as root, would write where another user can plant symlinks or swap files."""

    exit_code = EXIT_USAGE
