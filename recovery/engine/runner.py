"""Runs a validated playbook: render inputs, apply timeout and retry, record everything.

Three phases, like try/finally:

1. *main*: steps in order (skipping those whose `when` is false) until one fails;
2. *cleanup*: everything registered for cleanup, newest first: the `cleanup:`
   steps of every step that started, and what drivers deferred (withdrawing a
   published key, closing the console). Runs after a failure or Ctrl-C too, and
   one failing cleanup does not stop the others;
3. *always*: steps marked `always: true`, in order, whatever happened before.

A `choose:` step runs the first of its routes that is possible (`_choose`): a route is
skipped for its `when`, for a reboot nobody allowed, for its pre-flight, or for a "not
possible" failure of one of its probe steps, whose cleanups then run before the next route
starts (`recovery.engine.routes`). The record of the choice (the route entered, why each
other was skipped) is saved as the route starts, so `--resume` goes back into that route.

Retries live here and only here (tenacity), for steps that declare themselves
retryable and errors that are `TransientError`. Timeouts are deadlines handed to
the step through its context; drivers bound every wait by them.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from recovery.engine import preflight, routes, templating
from recovery.engine.cancel import CancelToken
from recovery.engine.catalog import step_types
from recovery.engine.config import Config
from recovery.engine.context import Cleanup, SharedState, StepContext
from recovery.engine.heartbeat import Heartbeat
from recovery.engine.journal import (
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    STATUS_SUCCEEDED,
    Journal,
)
from recovery.engine.playbook import Playbook, Route, StepSpec
from recovery.engine.registry import InputTypeError, StepType, build_params
from recovery.engine.report import RouteChoice, RunReport, StepRecord
from recovery.errors import JournalError, KeyGenerationError, RecoveryError, StepError, TemplateError, TransientError
from recovery.safety.redact import MASK, MIN_SCRUB_LEN, Secret, too_short_to_mask

log = logging.getLogger(__name__)

DEFAULT_STEP_TIMEOUT = 300.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunRequest:
    playbook: Playbook
    inputs: Mapping[str, object]
    secrets: Mapping[str, Secret]
    config: Config


def _waiting_line(spec: StepSpec, context: StepContext) -> str:
    return f"{spec.id}: waiting for {context.waiting or spec.title}"


class _NotPossible(Exception):
    """A probe step of a route found the route not possible; the route is left for the next one."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Runner:
    """One run of one playbook into one journal. Use `run()` once."""

    def __init__(
        self,
        request: RunRequest,
        journal: Journal,
        *,
        previous: Mapping[str, Mapping[str, Any]] | None = None,
        progress: Progress = lambda line: None,
        cancel: CancelToken | None = None,
        confirm: routes.Confirm | None = None,
    ) -> None:
        """`confirm` asks before a route that reboots (a terminal prompt); without it such a route is skipped
        unless the input allow_reboot is true."""
        self.request = request
        self.confirm = confirm
        self.journal = journal
        self.previous = previous or {}
        self.progress = progress
        self.cancel = cancel or CancelToken()
        self.types = step_types()
        self.report = RunReport(
            run_id=journal.run_id, playbook=str(request.playbook.path), journal=str(journal.directory)
        )
        self.shared = SharedState(warm=sorted({
            name for spec in request.playbook.all_steps() if spec.uses in self.types
            for name in self.types[spec.uses].warm
        }))
        self.namespace: dict[str, Any] = {
            "inputs": dict(request.inputs),
            # A declared secret that is optional and was not given is null, like an unset input.
            "secrets": {name: request.secrets.get(name) for name in request.playbook.secrets},
            "steps": {},
            "run": {"id": journal.run_id, "dir": str(journal.directory)},
        }
        self._index = {spec.id: n for n, spec in enumerate(request.playbook.all_steps(), start=1)}
        self._current_step: str | None = None
        if self.previous:
            self._carry_over_earlier_report()

    def _carry_over_earlier_report(self) -> None:
        """A resumed run skips the key generation; its report must still name the key."""
        if not self.journal.path("report.json").is_file():
            return
        earlier = self.journal.read_json("report.json")
        self.report.keys = list(earlier.get("keys") or [])
        self.report.notes.append(
            f"resumed after an earlier attempt that {earlier.get('status')}"
            + (f" at step {earlier['failed_step']}: {earlier.get('error')}" if earlier.get("failed_step") else "")
        )

    # -- the three phases -------------------------------------------------------------------

    def run(self) -> RunReport:
        """Execute the playbook. KeyboardInterrupt is re-raised after cleanup, with the report saved.

        SIGTERM and SIGHUP arrive here as KeyboardInterrupt too (`recovery.engine.signals`).

        Raises:
            JournalError: the outcome could not be saved (a full disk); the report is
                still complete in `self.report`, for the CLI to print.
        """
        started = time.monotonic()
        self.report.started_at = _now()
        self._stop_transcript_for_short_secrets()
        for spec in self._main_and_route_steps():
            # Known before the pre-flight, which must take them as done: it would refuse the key file
            # that the earlier attempt's key step wrote.
            outputs = self._done_earlier(spec)
            if outputs is not None:
                self.namespace["steps"][spec.id] = {"outputs": outputs}
        self._save_run(STATUS_RUNNING)
        self.journal.event("run_started", playbook=str(self.request.playbook.path), resumed=bool(self.previous))
        interrupted = False
        unsaved: JournalError | None = None
        try:
            self._main_phase()
        except KeyboardInterrupt:
            interrupted = True
            self.report.status = STATUS_INTERRUPTED
            self.report.error = f"interrupted ({self.cancel.reason or 'Ctrl-C'})"
            self._record_cut_off_step()
            self.journal.event("run_interrupted", step=self._current_step)
        except Exception as exc:  # a usage error found late, or a bug: record it, clean up, let the CLI say it
            self.report.status = STATUS_FAILED
            self.report.failed_step = self._current_step
            expected = isinstance(exc, RecoveryError)
            self.report.error = str(exc) if expected else f"internal error: {type(exc).__name__}: {exc}"
            self._log_event("run_crashed", step=self._current_step, error=self.report.error)
            raise
        finally:
            self._cleanup_phase()
            if self.report.status == STATUS_RUNNING:
                self.report.status = STATUS_SUCCEEDED
            self._always_phase()
            self.report.finished_at = _now()
            self.report.seconds = round(time.monotonic() - started, 3)
            try:
                unsaved = self._save_outcome()
            except KeyboardInterrupt:  # a Ctrl-C in the last milliseconds must not cost the report
                self.report.notes.append("a Ctrl-C arrived while this report was being saved; saved again")
                unsaved = self._save_outcome()
        if interrupted:
            raise KeyboardInterrupt
        if unsaved is not None:
            raise unsaved
        return self.report

    def _main_and_route_steps(self) -> list[StepSpec]:
        result = []
        for spec in self.request.playbook.steps:
            result.append(spec)
            result += [inner for route in spec.routes for inner in route.steps]
        return result

    def _stop_transcript_for_short_secrets(self) -> None:
        """A secret of 1-3 characters cannot be scrubbed: keep no transcript, say so in the report."""
        held = {**{f"secrets.{n}": v for n, v in self.request.secrets.items()},
                **{f"inputs.{n}": v for n, v in self.request.inputs.items() if isinstance(v, Secret)}}
        short = sorted(name for name, value in held.items() if value is not None and too_short_to_mask(value))
        if short:
            reason = (f"{', '.join(short)} {'is' if len(short) == 1 else 'are'} shorter than {MIN_SCRUB_LEN} "
                      "characters, too short to mask without masking ordinary words")
            self.journal.stop_transcript(reason)
            self.report.notes.append(f"no transcript and no debug output were kept for this run: {reason}")

    def _record_cut_off_step(self) -> None:
        """A step the interrupt cut off may have done part of its work: say so, never 'not started'."""
        record = next((r for r in reversed(self.report.timeline) if r.status == "running"), None)
        if record is None:
            return
        record.status = STATUS_INTERRUPTED
        record.error = "cut off mid-way by the interrupt: it may have changed the VM"
        self.report.failed_step = record.id
        self.report.vm_changes.append(
            f"step {record.id} ({record.uses}) was cut off mid-way: it may have changed the VM; "
            "check the VM (or resume, which repeats the step safely)"
        )
        spec = next(s for s in self.request.playbook.all_steps() if s.id == record.id)
        self._save_step(spec, record, outputs={})

    def _save_outcome(self) -> JournalError | None:
        """run.json, report.json and report.md, as far as the disk allows; the first failure, if any."""
        if self.journal.transcript_problem and not any("transcript" in note for note in self.report.notes):
            self.report.notes.append(self.journal.transcript_problem)
        failure: JournalError | None = None
        saves: list[Callable[[], None]] = [
            lambda: self._save_run(self.report.status),
            lambda: self.journal.write_json("report.json", self.report.to_json()),
            lambda: self.journal.write_text("report.md", self.report.to_markdown()),
            lambda: self.journal.event("run_finished", status=self.report.status),
        ]
        for save in saves:
            try:
                save()
            except JournalError as exc:
                failure = failure or exc
        return failure

    def _log_event(self, kind: str, **fields: object) -> None:
        """An event whose loss must not change the outcome (the disk may be what failed)."""
        try:
            self.journal.event(kind, **fields)
        except JournalError as exc:
            log.warning("%s", exc)

    def _main_phase(self) -> None:
        """The steps in order; the pre-flight before the first, and again before the first that changes anything."""
        self._preflight()
        ran_since_check = checked_before_change = False
        for spec in self.request.playbook.steps:
            if spec.always:
                continue
            self.cancel.raise_if_cancelled()
            if (spec.routes or self.types[spec.uses].changes) and not checked_before_change:
                if ran_since_check:  # the lookups before it may have filled in what was unknown
                    self._preflight()
                checked_before_change = True
            if not (self._choose(spec) if spec.routes else self._execute(spec, phase="main")):
                return
            ran_since_check = True

    def _preflight(self) -> None:
        """Raises PreflightError (exit 2) when a step that will run cannot succeed; nothing has changed yet."""
        self._current_step = "pre-flight"
        done = {step_id: entry["outputs"] for step_id, entry in self.namespace["steps"].items()}
        preflight.check(
            self.request.playbook,
            self.request.inputs,
            self.namespace["secrets"],
            self.request.config,
            run=self.namespace["run"],
            done=done,
        )
        self.journal.event("preflight_passed", after=sorted(done))

    def _cleanup_phase(self, *, down_to: int = 0, route: bool = False) -> None:
        """Newest first. A second Ctrl-C cuts short only the cleanup it lands in, never the rest.

        (SIGTERM and SIGHUP after the first interrupt are ignored by `recovery.engine.signals`.)
        A journal that cannot be written does not make a cleanup count as failed. For a `route` given up,
        `down_to` keeps the older cleanups (it undoes only its own), and a Ctrl-C there is the first one:
        it stops the run, and the rest of the route's cleanups run in the run's own cleanup phase.
        """
        while len(self.shared.cleanups) > down_to:
            cleanup = self.shared.cleanups.pop()
            try:
                cleanup.action()
            except KeyboardInterrupt:
                if route:
                    self.report.notes.append(f"cleanup interrupted by Ctrl-C: {cleanup.description}")
                    raise
                self.report.notes.append(f"cleanup interrupted by a second Ctrl-C: {cleanup.description}")
                self.progress(f"    cleanup cut short by Ctrl-C: {cleanup.description}; going on with the rest")
                self._log_event("cleanup_interrupted", what=cleanup.description)
                continue
            except Exception as exc:  # a failed cleanup must not stop the next one
                log.warning("cleanup failed: %s: %s", cleanup.description, exc)
                self.report.notes.append(f"cleanup FAILED: {cleanup.description}: {exc}")
                if self.report.status == STATUS_RUNNING:
                    self.report.status = STATUS_FAILED
                    self.report.failed_step = "cleanup"
                    self.report.error = f"{cleanup.description} failed: {exc}"
                self._log_event("cleanup_failed", what=cleanup.description, error=str(exc))
                continue
            self.report.rolled_back.append(cleanup.description)
            self._log_event("cleanup_done", what=cleanup.description)

    def _always_phase(self) -> None:
        for spec in self.request.playbook.steps:
            if spec.always:
                try:
                    self._execute(spec, phase="always")
                except KeyboardInterrupt:
                    self.report.notes.append(f"step {spec.id} interrupted")
                    return
        self._cleanup_phase()  # an always-step may defer cleanups of its own

    # -- a choice of routes ------------------------------------------------------------------

    def _choose(self, spec: StepSpec) -> bool:
        """Run the first possible route of a `choose:` step; returns False when the run must stop."""
        self._current_step = spec.id
        record = StepRecord(id=spec.id, uses=spec.uses, status="running")
        choice = RouteChoice(step=spec.id, title=spec.title)
        self.report.timeline.append(record)
        self.report.choices.append(choice)
        try:
            if not self._wanted(spec):
                record.status = "skipped"
                self.namespace["steps"][spec.id] = {"outputs": dict.fromkeys(spec.outputs)}
                for inner in (inner for route in spec.routes for inner in route.steps):
                    self.namespace["steps"][inner.id] = {"outputs": dict.fromkeys(self.types[inner.uses].outputs)}
                self._finish(spec, record, outputs={}, note="condition is false")
                return True
        except StepError as exc:
            return self._fail(spec, record, exc, started=time.monotonic())
        self.progress(f"[{self._index[spec.id]}] {spec.id}: {spec.title}: choosing a route ...")
        self.journal.event("choice_started", step=spec.id, routes=[route.id for route in spec.routes])
        earlier = self._earlier_route(spec)
        started = time.monotonic()
        try:
            return self._first_possible(spec, record, choice, earlier, started)
        except KeyboardInterrupt:
            record.status = STATUS_INTERRUPTED
            self._save_choice(spec, record, choice)
            raise
        except StepError as exc:  # a route's `when` that cannot be rendered
            return self._fail(spec, record, exc, started=started, outputs=self._choice_outputs(spec, choice))

    def _first_possible(
        self, spec: StepSpec, record: StepRecord, choice: RouteChoice, earlier: str | None, started: float
    ) -> bool:
        """Each route in turn until one runs to its end (True), fails after its probes (False), or none is left."""
        for route in spec.routes:
            if earlier is not None and route.id != earlier:
                self._skip_route(spec, choice, route, f"not tried again: the earlier attempt went into route "
                                 f"{earlier}, and a resumed run goes on with it")
                continue
            reason = self._route_blocked(spec, route)
            if reason is not None:
                self._skip_route(spec, choice, route, reason)
                continue
            choice.route = route.id
            self._save_choice(spec, record, choice)
            try:
                ran = self._run_route(spec, route)
            except _NotPossible as exc:
                choice.route = None
                self._skip_route(spec, choice, route, str(exc))
                if self.report.failed_step is not None:  # undoing what the route set up failed: stop here
                    record.status = "failed"
                    record.error = f"route {route.id} was not possible, and undoing what it set up failed"
                    self._save_choice(spec, record, choice)
                    return False
                continue
            record.seconds = round(time.monotonic() - started, 3)
            if not ran:
                record.status = "failed"
                record.error = f"route {route.id} failed at step {self.report.failed_step}"
                self._save_choice(spec, record, choice)
                return False
            return self._chosen(spec, record, choice, route)
        reasons = [(r.id, r.title, choice.skipped.get(r.id, "")) for r in spec.routes]
        error = StepError(f"{spec.id}: {preflight.no_route_message(reasons)}")
        self._fail(spec, record, error, started=started, outputs=self._choice_outputs(spec, choice))
        return False

    def _earlier_route(self, spec: StepSpec) -> str | None:
        """The route an earlier attempt of this run went into, if any: a resumed run goes on with it."""
        outputs = (self.previous.get(spec.id) or {}).get("outputs") or {}
        route = outputs.get("route")
        return route if isinstance(route, str) and any(r.id == route for r in spec.routes) else None

    def _route_blocked(self, spec: StepSpec, route: Route) -> str | None:
        """Why the route is not tried, known before it starts: its `when`, its pre-flight, a reboot not allowed.

        Raises:
            TemplateError: its `when` refers to something that is not there (a fault of the playbook).
        """
        if not self._holds(route.when):
            return route.skip_reason
        done = {step_id: entry["outputs"] for step_id, entry in self.namespace["steps"].items()}
        forecast = preflight.forecast_route(spec, route, self.namespace, self.request.config, done)
        if forecast.runs is False:
            return forecast.reason or route.skip_reason
        if forecast.asks:
            question = routes.reboot_question(spec.id, route.id, route.title)
            if self.confirm is None:
                return ("it reboots the VM, and rebooting was not allowed: give -e allow_reboot=true, "
                        "or run on a terminal to be asked")
            self.journal.event("reboot_asked", step=spec.id, route=route.id)
            if not self.confirm(question):
                return "it reboots the VM, and the operator answered no"
            self.report.notes.append(f"{spec.id}: route {route.id} reboots the VM; the operator agreed on the terminal")
        return None

    def _run_route(self, spec: StepSpec, route: Route) -> bool:
        """The route's steps; raises _NotPossible (after undoing what the route set up) when a probe finds it
        impossible, returns False when the run must stop."""
        self.progress(f"    route {route.id}: {route.title}")
        self.journal.event("route_started", step=spec.id, route=route.id)
        mark, console = len(self.shared.cleanups), self.shared.console
        try:
            for index, inner in enumerate(route.steps):
                self.cancel.raise_if_cancelled()
                if not self._execute(inner, phase="main", probe=index < route.probes):
                    return False
        except _NotPossible:
            self._cleanup_phase(down_to=mark, route=True)  # the next route starts from where this one found the VM
            self.shared.console = console  # one the route opened is closed now
            raise
        return True

    def _skip_route(self, spec: StepSpec, choice: RouteChoice, route: Route, reason: str) -> None:
        choice.skipped[route.id] = reason
        for inner in route.steps:  # later steps see only the outputs of the route that ran
            self.namespace["steps"][inner.id] = {"outputs": dict.fromkeys(self.types[inner.uses].outputs)}
        self.progress(f"    route {route.id} skipped: {reason}")
        self._log_event("route_skipped", step=spec.id, route=route.id, reason=reason)

    def _chosen(self, spec: StepSpec, record: StepRecord, choice: RouteChoice, route: Route) -> bool:
        """The route ran: its outputs under the choice's id, the record saved, the report told."""
        outputs = self._choice_outputs(spec, choice)
        try:
            for name, text in route.outputs.items():
                outputs[name] = templating.render_value(text, self.namespace)
        except templating.UndefinedReference as exc:
            return self._fail(spec, record, TemplateError(f"outputs of route {route.id}: {exc}"),
                              started=time.monotonic())
        self.namespace["steps"][spec.id] = {"outputs": outputs}
        record.status = "succeeded"
        skipped = "; ".join(f"{key} skipped: {why}" for key, why in choice.skipped.items())
        self.report.notes.append(f"{spec.id}: route {route.id} ({route.title}) was used"
                                 + (f"; {skipped}" if skipped else ""))
        self._finish(spec, record, outputs=outputs, note=f"route {route.id}")
        return True

    def _choice_outputs(self, spec: StepSpec, choice: RouteChoice) -> dict[str, object]:
        return {**dict.fromkeys(spec.outputs), "route": choice.route, "skipped": dict(choice.skipped)}

    def _save_choice(self, spec: StepSpec, record: StepRecord, choice: RouteChoice) -> None:
        self._save_step(spec, record, outputs=self._choice_outputs(spec, choice))

    # -- one step ---------------------------------------------------------------------------

    def _execute(self, spec: StepSpec, *, phase: str, probe: bool = False) -> bool:
        """Run one step; returns False when the run must stop (the failure is recorded).

        Raises:
            _NotPossible: `probe` is set and the step failed with an error saying its route is not possible.
        """
        step_type = self.types[spec.uses]
        self._current_step = spec.id
        record = StepRecord(id=spec.id, uses=spec.uses, status="running", phase=phase)
        self.report.timeline.append(record)
        outputs = self._done_earlier(spec)
        if outputs is not None:
            try:
                self._check_resumed_key(spec, step_type, outputs)
            except StepError as exc:
                return self._fail(spec, record, exc, started=time.monotonic())
            self.namespace["steps"][spec.id] = {"outputs": outputs}
            record.status = "resumed"
            self._finish(spec, record, outputs=outputs, note="done in the earlier attempt")
            return True
        try:
            if not self._wanted(spec):
                self.namespace["steps"][spec.id] = {"outputs": dict.fromkeys(step_type.outputs)}
                record.status = "skipped"
                self._finish(spec, record, outputs={}, note="condition is false")
                return True
            params = self._params(spec, step_type)
        except StepError as exc:
            return self._fail(spec, record, exc, started=time.monotonic())
        started = time.monotonic()
        self.progress(f"[{self._index[spec.id]}] {spec.id}: {spec.title} ...")
        self.journal.event("step_started", step=spec.id, uses=spec.uses)
        try:
            outputs = self._with_retry(spec, step_type, params, record)
        except StepError as exc:
            if probe and routes.not_possible(exc):
                record.status, record.error = "not_possible", str(exc)
                record.seconds = round(time.monotonic() - started, 3)
                self._finish(spec, record, outputs={}, note=str(exc))
                raise _NotPossible(f"not possible: step {spec.id} ({spec.uses}): {exc}") from exc
            return self._fail(spec, record, exc, started=started)
        finally:
            # After the step, so its cleanup steps run before what its drivers deferred.
            self._register_cleanup_steps(spec)
        record.seconds = round(time.monotonic() - started, 3)
        record.status = "succeeded"
        self.namespace["steps"][spec.id] = {"outputs": {**dict.fromkeys(step_type.outputs), **outputs}}
        self._finish(spec, record, outputs=outputs)
        return True

    def _wanted(self, spec: StepSpec) -> bool:
        return self._holds(spec.when)

    def _holds(self, when: str | None) -> bool:
        """A `when` of a step, a choice or a route, now.

        Raises:
            TemplateError: it refers to something that is not there.
        """
        if when is None:
            return True
        try:
            return bool(templating.render(templating.parse(when), self.namespace))
        except templating.UndefinedReference as exc:
            raise TemplateError(f"when: {exc}") from exc

    def _params(self, spec: StepSpec, step_type: StepType) -> object:
        try:
            rendered = {k: templating.render_value(v, self.namespace) for k, v in spec.params.items()}
            return build_params(step_type, rendered)
        except (templating.UndefinedReference, InputTypeError) as exc:
            raise TemplateError(f"inputs of {spec.uses} could not be prepared: {exc}") from exc

    def _with_retry(self, spec: StepSpec, step_type: StepType, params: object, record: StepRecord) -> dict[str, object]:
        timeout = spec.timeout or DEFAULT_STEP_TIMEOUT
        deadline = time.monotonic() + timeout
        policy = spec.retry
        delay, max_delay = (policy.delay, policy.max_delay) if policy else (1.0, 1.0)
        retrying = Retrying(
            stop=stop_after_delay(timeout) | stop_after_attempt(policy.attempts if policy else 1),
            # delay * 2**n plus up to 1 s of jitter, at most max_delay: wait_exponential_jitter's formula,
            # written out because tenacity renamed its first parameter (`multiplier` fails before 9.2,
            # `initial` warns from 9.2), so one call works with every tenacity from the floor up.
            wait=lambda retry_state: min(
                delay * 2 ** (retry_state.attempt_number - 1) + random.uniform(0, 1), max_delay
            ),
            retry=retry_if_exception(lambda error: isinstance(error, TransientError)),
            before_sleep=lambda retry_state: self._record_retry(spec, retry_state),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.cancel.raise_if_cancelled()
                record.attempts = attempt.retry_state.attempt_number
                context = StepContext(
                    run_id=self.journal.run_id,
                    run_dir=self.journal.directory,
                    journal=self.journal,
                    config=self.request.config,
                    report=self.report,
                    shared=self.shared,
                    step_id=spec.id,
                    deadline=deadline,
                )
                with Heartbeat(self.progress, functools.partial(_waiting_line, spec, context)):
                    outputs = step_type.function(context, params)
                unknown = set(outputs) - set(step_type.outputs)
                if unknown:
                    raise RuntimeError(f"{spec.uses} returned undeclared outputs {sorted(unknown)}")
                return outputs
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover

    def _record_retry(self, spec: StepSpec, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.progress(f"    retrying {spec.id} in {delay:.1f} s: {error}")
        self.journal.event("step_retry", step=spec.id, attempt=state.attempt_number, error=str(error))

    def _register_cleanup_steps(self, spec: StepSpec) -> None:
        for child in spec.cleanup:
            self.shared.cleanups.append(Cleanup(f"cleanup step {child.id} ({child.uses})", self._cleanup_action(child)))

    def _cleanup_action(self, spec: StepSpec) -> Callable[[], None]:
        def action() -> None:
            if not self._execute(spec, phase="cleanup"):
                raise StepError(f"cleanup step {spec.id} failed")

        return action

    def _fail(
        self, spec: StepSpec, record: StepRecord, exc: StepError, *, started: float,
        outputs: Mapping[str, object] | None = None,
    ) -> bool:
        exc.step = spec.id
        exc.attempt = max(record.attempts, 1)
        record.status = "failed"
        record.error = str(exc)
        record.seconds = round(time.monotonic() - started, 3)
        if self.report.failed_step is None:
            self.report.status = STATUS_FAILED
            self.report.failed_step = spec.id
            self.report.error = str(exc)
        self.progress(f"    FAILED {spec.id}: {exc}")
        self.journal.event(
            "step_failed",
            step=spec.id,
            error=str(exc),
            error_type=type(exc).__name__,
            transcript_tail=exc.transcript_tail,
        )
        self._save_step(spec, record, outputs=outputs or {})
        return False

    def _finish(self, spec: StepSpec, record: StepRecord, *, outputs: Mapping[str, object], note: str = "") -> None:
        suffix = f" ({note})" if note else f" ({record.seconds:.2f} s)"
        self.progress(f"    {record.status} {spec.id}{suffix}")
        self.journal.event(f"step_{record.status}", step=spec.id, seconds=record.seconds)
        self._save_step(spec, record, outputs=outputs)

    def _save_step(self, spec: StepSpec, record: StepRecord, *, outputs: Mapping[str, object]) -> None:
        self.journal.save_step(
            self._index[spec.id],
            spec.id,
            {"id": spec.id, "uses": spec.uses, "status": record.status, "phase": record.phase,
             "seconds": record.seconds, "attempts": record.attempts, "error": record.error, "outputs": outputs},
        )

    def _done_earlier(self, spec: StepSpec) -> dict[str, object] | None:
        """The outputs of a step that must not repeat (a key generated) and that an earlier attempt finished.

        "resumed" counts as finished too: a run resumes any number of times.
        """
        earlier = self.previous.get(spec.id)
        if spec.routes:
            return None  # a choice is made again, in the route the earlier attempt went into (`_choose`)
        if earlier and earlier.get("status") in ("succeeded", "resumed") and not self.types[spec.uses].repeatable:
            return dict(earlier.get("outputs") or {})
        return None

    def _check_resumed_key(self, spec: StepSpec, step_type: StepType, outputs: Mapping[str, object]) -> None:
        """A key pair from the earlier attempt must still be the one its public key (maybe on the VM) says.

        Raises:
            KeyGenerationError: the files are gone, unreadable, or hold another key.
        """
        private_path, public_key = outputs.get("private_key_path"), outputs.get("public_key")
        if not isinstance(private_path, str) or not isinstance(public_key, str):
            return
        from recovery.ssh.keys import fingerprint_sha256, load_keypair

        passphrase = getattr(self._params(spec, step_type), "passphrase", None)
        pair = load_keypair(Path(private_path), passphrase if isinstance(passphrase, Secret) else None)
        saved = fingerprint_sha256(public_key)
        if pair.sha256 != saved:
            raise KeyGenerationError(
                f"the earlier attempt made key {saved}, but {private_path} now holds {pair.sha256}; the VM may "
                "trust only the earlier one. Put that key back, or start a new run instead of resuming"
            )

    def _save_run(self, status: str) -> None:
        """run.json: what --resume reads back. Sensitive inputs are never saved, whatever their shape."""
        declared = self.request.playbook.inputs
        inputs = {
            name: MASK if (name in declared and declared[name].sensitive and value) else value
            for name, value in self.request.inputs.items()
        }
        self.journal.write_json(
            "run.json",
            {
                "run_id": self.journal.run_id,
                "playbook": str(self.request.playbook.path.resolve()),
                "inputs": inputs,
                "status": status,
                "failed_step": self.report.failed_step,
                "started_at": self.report.started_at,
            },
        )
