"""Plug-ins: step types, channels and publishers that other packages add, found through entry points.

A package declares, in its pyproject.toml (as pytest and pyinfra plug-ins do):

    [project.entry-points."recovery.steps"]
    mysteps = "mypackage.steps"                 # a module whose @step functions register on import
    [project.entry-points."recovery.channels"]
    ipmi = "mypackage.ipmi:IpmiChannel"         # the URL scheme it drives -> "module:Class"
    [project.entry-points."recovery.publishers"]
    gcs = "mypackage.gcs:GcsPublisher"          # the publish scheme -> "module:Class"

Nothing is imported until it is used, as for the built-in drivers. A built-in name
always wins over a plug-in's: a plug-in cannot take over `ws://` or `swift`.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from recovery.errors import ConfigError

__all__ = ["CHANNELS_GROUP", "PUBLISHERS_GROUP", "STEPS_GROUP", "load_step_modules", "targets"]

STEPS_GROUP = "recovery.steps"
CHANNELS_GROUP = "recovery.channels"
PUBLISHERS_GROUP = "recovery.publishers"

log = logging.getLogger(__name__)


def _origin(entry: EntryPoint) -> str:
    package = entry.dist.name if entry.dist is not None else "an unknown package"
    return f"plug-in {entry.name!r} ({entry.group} = {entry.value!r}, from {package})"


def targets(group: str, builtin: dict[str, str]) -> dict[str, str]:
    """`builtin` (name -> "module:Class") completed with the plug-ins of `group`; built-ins win."""
    found = dict(builtin)
    for entry in entry_points(group=group):
        if entry.name in builtin:
            log.warning("%s is ignored: %r is built in", _origin(entry), entry.name)
        elif ":" not in entry.value:
            log.warning("%s is ignored: it must name a class as 'module:Class'", _origin(entry))
        else:
            found.setdefault(entry.name, entry.value)
    return found


@cache
def load_step_modules() -> None:
    """Import every module registered under `recovery.steps`, once; their @step functions register.

    Raises:
        ConfigError: a plug-in cannot be imported; the message names it and its package.
    """
    for entry in entry_points(group=STEPS_GROUP):
        try:
            importlib.import_module(entry.value.partition(":")[0])
        except Exception as exc:  # a plug-in's own bug: name it rather than fail inside it
            raise ConfigError(
                f"{_origin(entry)} cannot be loaded: {type(exc).__name__}: {exc}; uninstall or fix that package"
            ) from exc
