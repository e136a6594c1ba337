"""`StepContext.overlap`: a step's wait on the VM runs in a worker while the main thread imports what later
steps declare slow to import (`warm=` in `@step`), and the run's runner collects those declarations."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine.config import Config
from recovery.engine.context import SharedState, StepContext
from recovery.engine.journal import Journal
from recovery.engine.playbook import load_playbook
from recovery.engine.report import RunReport
from recovery.engine.runner import Runner, RunRequest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module that records the thread importing it (in its own `imported_in`)."""
    name = f"warm_probe_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("import threading\nimported_in = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def context(tmp_path: Path, warm: list[str]) -> StepContext:
    journal = Journal.create(tmp_path / "runs")
    return StepContext(
        run_id=journal.run_id, run_dir=journal.directory, journal=journal, config=Config(),
        report=RunReport(journal.run_id, "test"), shared=SharedState(warm=warm), step_id="install",
    )


def test_the_wait_runs_in_a_worker_while_this_thread_imports(tmp_path: Path, probe: str) -> None:
    ctx = context(tmp_path, [probe])
    seen: dict[str, object] = {}

    def wait() -> str:
        seen["thread"] = threading.current_thread().name
        deadline = time.monotonic() + 10
        while probe not in sys.modules:  # it ends only if the import happens while it waits
            assert time.monotonic() < deadline, "the warm module was not imported during the wait"
            time.sleep(0.005)
        return "done"

    assert ctx.overlap(wait) == "done"
    assert seen["thread"] != threading.current_thread().name
    assert sys.modules[probe].imported_in == threading.current_thread().name
    assert ctx.shared.warm == []


def test_the_waits_error_is_raised_in_the_steps_thread(tmp_path: Path, probe: str) -> None:
    def wait() -> str:
        raise TimeoutError("the guest agent did not answer")

    with pytest.raises(TimeoutError, match="did not answer"):
        context(tmp_path, [probe]).overlap(wait)
    assert probe in sys.modules


def test_a_module_that_fails_to_import_is_left_to_the_step_that_needs_it(tmp_path: Path) -> None:
    assert context(tmp_path, ["no_such_module_anywhere"]).overlap(lambda: 42) == 42


def test_with_nothing_to_import_the_wait_runs_in_this_thread(tmp_path: Path) -> None:
    ctx = context(tmp_path, ["sys"])
    assert ctx.overlap(threading.current_thread) is threading.current_thread()


def test_the_runner_collects_what_the_playbooks_steps_warm(tmp_path: Path) -> None:
    playbook = load_playbook(ROOT / "playbooks" / "restore-access-agent.yaml")
    runner = Runner(RunRequest(playbook, {}, {}, Config()), Journal.create(tmp_path / "runs"))
    assert runner.shared.warm == ["paramiko"]


def test_ctrl_c_during_the_wait_reaches_the_step_at_once(tmp_path: Path, probe: str) -> None:
    """The step's thread waits in `join`, which a signal interrupts: Ctrl-C is not held up until the wait ends."""
    ctx = context(tmp_path, [probe])
    release = threading.Event()
    ended: list[bool] = []

    def wait() -> None:
        release.wait(30)
        ended.append(True)

    def interrupted() -> None:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        ctx.overlap(wait)

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    waited_out = bool(ended)
    release.set()
    assert not waited_out, "the interrupt came through only once the wait had ended"
