"""The built-in step types. Importing this package registers them all.

Steps are thin glue: they take typed parameters, call a driver, add facts to the
report and return outputs. Drivers are imported inside the step functions so
that `recovery validate` and `recovery steps` never load paramiko or cryptography.
"""

from recovery.steps import agent, authorized_keys, bootloader, cloud, console, keys, publish, report, rescue, ssh

__all__ = [
    "agent", "authorized_keys", "bootloader", "cloud", "console", "keys", "publish", "report", "rescue", "ssh",
]
