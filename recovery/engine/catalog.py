"""Every step type a playbook may use: the built-in ones and those of installed plug-ins.

Kept apart from `recovery.engine.registry` so that the registry imports no step (the steps
import it to register themselves), and the step modules are loaded on first use only,
which keeps `recovery --help` from loading them.
"""

from __future__ import annotations

from collections.abc import Mapping

from recovery.engine.plugins import load_step_modules
from recovery.engine.registry import StepType, registered

__all__ = ["step_types"]


def step_types() -> Mapping[str, StepType]:
    """Every registered step type by name, sorted.

    Raises:
        ConfigError: an installed plug-in's steps cannot be loaded.
    """
    import recovery.steps  # noqa: F401  (importing the package registers the built-in steps)

    load_step_modules()
    return registered()
