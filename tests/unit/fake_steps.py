"""Step types that exist only in the tests: they record what the runner made them do."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from recovery.engine.config import Config
from recovery.engine.context import StepContext
from recovery.engine.journal import Journal
from recovery.engine.playbook import parse_playbook
from recovery.engine.registry import Outputs, doc, step
from recovery.engine.runner import Runner, RunRequest
from recovery.errors import ChannelTimeout, StepError
from recovery.safety.redact import Text

CALLS: list[str] = []
log = logging.getLogger("tests.fake_steps")


@dataclass(frozen=True)
class RecordParams:
    message: Text = doc("what to record", default="")
    fail: bool = doc("fail with a permanent error", default=False)
    transient_failures: int = doc("fail this many attempts with a transient error first", default=0)


_attempts: dict[str, int] = {}


@step("test.record", params=RecordParams, outputs={"message": "the message", "attempts": "tries"},
      repeatable=True, retryable=True)
def record(ctx: StepContext, params: RecordParams) -> Outputs:
    """Record the call; fail as asked."""
    _attempts[ctx.step_id] = _attempts.get(ctx.step_id, 0) + 1
    CALLS.append(f"{ctx.step_id}:{params.message}")
    log.warning("step %s got %s", ctx.step_id, params.message)
    if _attempts[ctx.step_id] <= params.transient_failures:
        raise ChannelTimeout(f"transient failure {_attempts[ctx.step_id]}")
    if params.fail:
        raise StepError(f"{ctx.step_id} failed on purpose")
    ctx.defer(f"undo {ctx.step_id}", lambda: CALLS.append(f"undo:{ctx.step_id}"))
    return {"message": params.message, "attempts": _attempts[ctx.step_id]}


@dataclass(frozen=True)
class OnceParams:
    value: str = doc("a value to remember", default="v")


@step("test.once", params=OnceParams, outputs={"value": "the value"}, repeatable=False)
def once(ctx: StepContext, params: OnceParams) -> Outputs:
    """A step that must not run twice across a resume."""
    CALLS.append(f"{ctx.step_id}:once")
    return {"value": params.value}


@step("test.interrupt", params=OnceParams, outputs={}, repeatable=True)
def interrupt(ctx: StepContext, params: OnceParams) -> Outputs:
    """Behave like an operator pressing Ctrl-C."""
    CALLS.append(f"{ctx.step_id}:interrupt")
    raise KeyboardInterrupt


def reset() -> None:
    CALLS.clear()
    _attempts.clear()


@step("test.crash", params=OnceParams, outputs={}, repeatable=True)
def crash(ctx: StepContext, params: OnceParams) -> Outputs:
    """Behave like a bug in a step."""
    raise ZeroDivisionError("a bug")


# Playbooks and a runner call that several test modules share.

TWO_STEPS = """
steps:
  - id: first
    uses: test.record
    with: {message: one}
  - id: second
    uses: test.record
    with: {message: two}
"""

RESUMABLE = """
steps:
  - id: key
    uses: test.once
    with: {value: first-key}
  - id: work
    uses: test.record
    with: {message: "{{ steps.key.outputs.value }}", fail: "{{ inputs.fail }}"}
inputs:
  fail: {type: boolean, default: false}
"""


def run(tmp_path: Path, text: str, *, inputs=None, secrets=None, previous=None, journal=None):
    """Run playbook `text` with the test step types; returns the report and the journal."""
    playbook = parse_playbook(text, tmp_path / "book.yaml")
    journal = journal or Journal.create(tmp_path / "runs")
    runner = Runner(RunRequest(playbook, inputs or {}, secrets or {}, Config()), journal, previous=previous)
    return runner.run(), journal
