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

from recovery.engine.config import Config
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import StepError

if TYPE_CHECKING:
    from recovery.channels.dialogue import ConsoleSession
    from recovery.cloud import Cloud


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
    waiting: str = ""  # what the step waits for now, for the progress line (see `waiting_for`)

    def waiting_for(self, what: str) -> None:
        """Name what the step is about to wait for ("the login prompt"); the progress line shows it."""
        self.waiting = what

    def remaining(self) -> float:
        """Seconds left before this step's timeout; drivers bound their waits by it."""
        return max(0.0, self.deadline - time.monotonic())

    def defer(self, description: str, action: Callable[[], None]) -> None:
        """Run `action` when the run ends, whether it succeeded, failed or was interrupted."""
        self.shared.cleanups.append(Cleanup(description, action))

    def require_cloud(self) -> Cloud:
        """The run's one cloud connection, opened on first use; every step and driver shares it.

        The cloud is the one `recovery.cloud.cloud_to_use` picks (--cloud, OS_CLOUD,
        the config, or a sourced openrc). Every call carries the run's global request
        ID, which the journal and the report record for the cloud's operators.

        Raises:
            StepError: no cloud is named anywhere.
        """
        if self.shared.cloud is None:
            from recovery.cloud import NO_CLOUD, cloud_to_use, connect, global_request_id

            name = cloud_to_use(self.config.cloud.name)
            if name is None:
                raise StepError(f"this step talks to a cloud, but {NO_CLOUD}")
            request_id = global_request_id(self.run_id)
            cloud = connect(name, request_id=request_id)
            self.shared.cloud = cloud
            self.defer(f"closed the connection to cloud {name}", cloud.close)
            self.report.global_request_id = request_id
            self.journal.event("cloud_connected", cloud=name, global_request_id=request_id)
        return self.shared.cloud

    def require_console(self) -> ConsoleSession:
        if self.shared.console is None:
            raise StepError("no console is open: a console.open step must come before this one")
        return self.shared.console
