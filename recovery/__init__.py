"""recovery: get SSH access back to a VM through its console, safely and with proof.

The public API is small on purpose; the CLI (`recovery.cli`) is built on it.
"""

from recovery.errors import PlaybookError, RecoveryError, StepError, UsageError
from recovery.playbook import Playbook, load_playbook
from recovery.redact import Secret

__all__ = ["Playbook", "PlaybookError", "RecoveryError", "Secret", "StepError", "UsageError", "load_playbook"]
__version__ = "0.1.0"
