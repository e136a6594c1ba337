"""The built-in lab: a stand-in VM on loopback, made of real parts (see `recovery.lab.lab`).

Importing this package is cheap (stdlib only); the websocket client is imported
only while a lab starts.
"""

from recovery.lab.lab import (
    LabInfo,
    LabStatus,
    Seed,
    down,
    read_authorized_keys,
    replace_console_target,
    ssh_paths_modes,
    start_sshd,
    status,
    stop_process,
    up,
)
from recovery.lab.processes import listening_addresses

__all__ = [
    "LabInfo",
    "LabStatus",
    "Seed",
    "down",
    "listening_addresses",
    "read_authorized_keys",
    "replace_console_target",
    "ssh_paths_modes",
    "start_sshd",
    "status",
    "stop_process",
    "up",
]
