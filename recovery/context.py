"""What a step gets to work with: an explicit context instead of globals.

Steps are thin glue between the playbook and the drivers. Everything they may
touch (the journal, the report, the open console, the deadline, the cleanup
stack) arrives here, so a unit test can hand a step a context full of fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recovery.config import Config
from recovery.errors import StepError
from recovery.journal import Journal
from recovery.report import RunReport

if TYPE_CHECKING:
    from recovery.cloud import Cloud
    from recovery.console import ConsoleSession


@dataclass
class Cleanup:
    description: str
    action: Callable[[], None]


@dataclass
class SharedState:
    """Live objects that outlive one step: the console session, pending cleanups."""

    console: ConsoleSession | None = None
    cloud: Cloud | None = None
    cleanups: list[Cleanup] = field(default_factory=list)


@dataclass
class StepContext:
    run_id: str
    run_dir: Path
    journal: Journal
    config: Config
    report: RunReport
    shared: SharedState
    step_id: str = ""
    deadline: float = float("inf")

    def remaining(self) -> float:
        """Seconds left before this step's timeout; drivers bound their waits by it."""
        return max(0.0, self.deadline - time.monotonic())

    def defer(self, description: str, action: Callable[[], None]) -> None:
        """Run `action` when the run ends, whether it succeeded, failed or was interrupted."""
        self.shared.cleanups.append(Cleanup(description, action))

    def require_cloud(self) -> Cloud:
        """The run's cloud connection, opened on first use from --cloud, OS_CLOUD or the config.

        Raises:
            StepError: no cloud is named anywhere.
        """
        if self.shared.cloud is None:
            name = self.config.cloud.name
            if not name:
                raise StepError(
                    "this step talks to a cloud, but none is named: pass --cloud NAME (an entry of "
                    "clouds.yaml) or set OS_CLOUD"
                )
            from recovery.cloud import connect

            cloud = connect(name)
            self.shared.cloud = cloud
            self.defer(f"closed the connection to cloud {name}", cloud.close)
        return self.shared.cloud

    def require_console(self) -> ConsoleSession:
        if self.shared.console is None:
            raise StepError("no console is open: a console.open step must come before this one")
        return self.shared.console
