"""recovery: get SSH access back to a VM through its console, safely and with proof.

The public API is small on purpose, and the CLI (`recovery.cli.main`) stands on it:

- `run(playbook, inputs, secrets, ...) -> RunReport` and `dry_run(...)`, in `recovery.api`;
- `CancelToken` to stop a run from any thread, `RunInterrupted` for a Ctrl-C that reached one;
- `load_playbook`, `Playbook`, `Config`, `Secret`, the `RunReport`;
- the driver boundaries `Channel` (a console) and `Publisher` (where the VM downloads a key),
  for plug-ins registered under the entry point groups `recovery.steps`, `recovery.channels`
  and `recovery.publishers`;
- the errors, rooted at `RecoveryError` (see `recovery.errors` for the tree and exit codes);
- `PLAYBOOKS_DIR`, the built-in playbooks.

Names are imported on first use, so `recovery --help` does not pay for YAML parsing and the
step registry.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recovery.api import RunInterrupted, dry_run, run
    from recovery.channels import Channel
    from recovery.engine.cancel import Cancelled, CancelToken
    from recovery.engine.config import Config
    from recovery.engine.playbook import Playbook, load_playbook
    from recovery.engine.preflight import PreflightError
    from recovery.engine.report import RunReport
    from recovery.errors import (
        InternalError,
        JournalError,
        PlaybookError,
        RecoveryError,
        StepError,
        UsageError,
    )
    from recovery.publishers import Publisher
    from recovery.safety.redact import Secret

__all__ = [
    "PLAYBOOKS_DIR",
    "CancelToken",
    "Cancelled",
    "Channel",
    "Config",
    "InternalError",
    "JournalError",
    "Playbook",
    "PlaybookError",
    "PreflightError",
    "Publisher",
    "RecoveryError",
    "RunInterrupted",
    "RunReport",
    "Secret",
    "StepError",
    "UsageError",
    "dry_run",
    "load_playbook",
    "run",
]
__version__ = "0.1.0"

# In a source tree a symlink to the top-level playbooks/; in an installed wheel, real files.
PLAYBOOKS_DIR = (Path(__file__).parent / "playbooks").resolve()

_HOMES = {
    "run": "recovery.api",
    "dry_run": "recovery.api",
    "RunInterrupted": "recovery.api",
    "CancelToken": "recovery.engine.cancel",
    "Cancelled": "recovery.engine.cancel",
    "Channel": "recovery.channels",
    "Config": "recovery.engine.config",
    "Playbook": "recovery.engine.playbook",
    "load_playbook": "recovery.engine.playbook",
    "PreflightError": "recovery.engine.preflight",
    "Publisher": "recovery.publishers",
    "InternalError": "recovery.errors",
    "JournalError": "recovery.errors",
    "PlaybookError": "recovery.errors",
    "RecoveryError": "recovery.errors",
    "StepError": "recovery.errors",
    "UsageError": "recovery.errors",
    "Secret": "recovery.safety.redact",
    "RunReport": "recovery.engine.report",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'recovery' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
