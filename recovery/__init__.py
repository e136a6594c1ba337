"""recovery: get SSH access back to a VM through its console, safely and with proof.

The public API is small on purpose; the CLI (`recovery.cli`) is built on it. Names are
imported on first use, so `recovery --help` does not pay for YAML parsing and the
step registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recovery.errors import PlaybookError, RecoveryError, StepError, UsageError
    from recovery.playbook import Playbook, load_playbook
    from recovery.redact import Secret

__all__ = ["Playbook", "PlaybookError", "RecoveryError", "Secret", "StepError", "UsageError", "load_playbook"]
__version__ = "0.1.0"

_HOMES = {
    "Playbook": "recovery.playbook",
    "load_playbook": "recovery.playbook",
    "PlaybookError": "recovery.errors",
    "RecoveryError": "recovery.errors",
    "StepError": "recovery.errors",
    "UsageError": "recovery.errors",
    "Secret": "recovery.redact",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'recovery' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
