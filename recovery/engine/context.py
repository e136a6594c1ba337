"""What a step gets to work with: an explicit context instead of globals.

Steps are thin glue between the playbook and the drivers. Everything they may
touch (the journal, the report, the open console, the deadline, the cleanup
stack) arrives here, so a unit test can hand a step a context full of fakes.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from recovery.engine.config import Config
from recovery.engine.journal import Journal
from recovery.engine.report import RunReport
from recovery.errors import StepError

if TYPE_CHECKING:
    from recovery.channels.dialogue import ConsoleSession
    from recovery.cloud import Cloud

T = TypeVar("T")


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
    warm: list[str] = field(default_factory=list)  # modules the run's steps declare slow to import (`overlap`)


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

    def overlap(self, wait: Callable[[], T]) -> T:
        """Return `wait()`, a wait on the VM, while this thread imports what the run's later steps will.

        A step that waits on the VM leaves the controller idle, so the slow imports that steps declare
        (`warm=` in `@step`: paramiko's ~0.2 s for the SSH login) are done meanwhile, once per run, and `wait`
        runs in a worker thread. `wait` must only do I/O with modules already imported: imports stay in this
        thread, because two threads importing at once can deadlock on a circular import. Its exception is
        raised here. A module that fails to import is left for the step that needs it to report.
        """
        pending = [name for name in self.shared.warm if name not in sys.modules]
        self.shared.warm = []
        if not pending:
            return wait()
        result: list[T] = []
        failure: list[BaseException] = []

        def work() -> None:
            try:
                result.append(wait())
            except BaseException as exc:  # handed to the step's thread below
                failure.append(exc)

        worker = threading.Thread(target=work, name=f"{self.step_id or 'step'}-wait", daemon=True)
        worker.start()
        for name in pending:
            with contextlib.suppress(Exception):  # the step that imports it reports the failure
                importlib.import_module(name)
        worker.join()  # an interrupt (Ctrl-C) ends the join; the worker then ends at its own timeout
        if failure:
            raise failure[0]
        return result[0]

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
