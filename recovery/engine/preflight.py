"""Pre-flight: refuse a run that cannot succeed before it changes anything.

A playbook's values are known at different times: inputs at once, a cloud
lookup's outputs after the lookup, a new key's fingerprint only after the key
exists. `forecast` renders every step's parameters as far as they are known
(values not known yet are `templating.Unknown`), runs the checks each step type
declares next to its parameters, and says for each step whether it will run.

The runner calls it twice: before the first step (inputs and configuration),
and again right before the first step that changes anything (a key written, a
key published, a console opened), when the read-only lookups before it (server,
host key, console URL) have filled in what they can. `--dry-run` calls it with
nothing run, shows the same values, and exits 2 on the same problems.

A `choose:` step is forecast route by route (`ChoiceForecast`): a route whose `when`
is false, or one of whose steps cannot succeed, is ruled out with the reason; the
problems of a route are not the run's problems, unless every route is ruled out.
The runner forecasts each route again, with what is known by then, before it tries it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recovery.engine import templating
from recovery.engine.catalog import step_types
from recovery.engine.config import Config
from recovery.engine.playbook import ALLOW_REBOOT, Playbook, Route, StepSpec
from recovery.engine.registry import InputTypeError, StepType, coerce
from recovery.engine.templating import Unknown
from recovery.errors import UsageError
from recovery.safety.redact import Secret

__all__ = [
    "ChoiceForecast", "Forecast", "PreflightError", "RouteForecast", "StepForecast", "check", "forecast",
    "forecast_route", "secrets_in_use", "unknown_run",
]


class PreflightError(UsageError):
    """The run cannot succeed as given; nothing was changed. One line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = "the run cannot succeed as given, so nothing was changed"
        head += ":" if count == 1 else f" ({count} problems):"
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass
class StepForecast:
    """What one step will do, as far as can be told before running it."""

    spec: StepSpec
    step_type: StepType
    runs: bool | None  # None: its `when` depends on something not known yet
    values: dict[str, object] = field(default_factory=dict)  # rendered `with:`; Unknown where not known yet
    problems: list[str] = field(default_factory=list)  # each names the parameter, not the step


@dataclass
class RouteForecast:
    """Whether one route of a `choose:` will be tried, and its steps as far as they can be told."""

    route: Route
    runs: bool | None  # False: ruled out (`reason` says why); None: decided at run time
    reason: str | None = None
    asks: bool = False  # it reboots and allow_reboot is not set: asked on a terminal, else skipped
    steps: list[StepForecast] = field(default_factory=list)


@dataclass
class ChoiceForecast:
    """A `choose:` step: each route's forecast, in the order they are tried."""

    spec: StepSpec
    runs: bool | None
    routes: list[RouteForecast] = field(default_factory=list)

    @property
    def candidates(self) -> list[RouteForecast]:
        return [route for route in self.routes if route.runs is not False]

    @property
    def problems(self) -> list[str]:
        """One problem when every route is ruled out, listing each route's reason."""
        if self.routes and not self.candidates:
            return [no_route_message([(r.route.id, r.route.title, r.reason or "") for r in self.routes])]
        return []


Forecast = StepForecast | ChoiceForecast


def no_route_message(reasons: Sequence[tuple[str, str, str]]) -> str:
    """Why no route of a choice is possible: one line per route (id, title, reason)."""
    lines = "".join(f"\n    - {route_id} ({title}): {reason}" for route_id, title, reason in reasons)
    return f"no route is possible:{lines}"


def unknown_run() -> dict[str, object]:
    """`run.*` for a plan made before the run exists (a dry run)."""
    return {"id": Unknown("<run id>"), "dir": Unknown("<run dir>")}


def forecast(
    playbook: Playbook,
    inputs: Mapping[str, object],
    secrets: Mapping[str, Secret | Unknown | None],
    config: Config,
    *,
    run: Mapping[str, object] | None = None,
    done: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Forecast]:
    """Every step of the playbook (cleanup steps included, routes inside their choice), rendered as far as is known.

    Args:
        inputs, secrets: the run's inputs and secrets (placeholders, or Unknown, for a dry run).
        run: `run.id` and `run.dir`; unknown when omitted.
        done: outputs of steps that already ran, by step id; those steps are not checked again.
    """
    types = step_types()
    done = done or {}
    namespace: dict[str, Any] = {
        "inputs": dict(inputs),
        "secrets": {name: secrets.get(name) for name in playbook.secrets},
        "steps": {},
        "run": dict(run) if run is not None else unknown_run(),
    }
    result: list[Forecast] = []
    for spec in playbook.steps:
        if spec.routes:
            result.append(_forecast_choice(spec, namespace, config, done))
            continue
        for each in (spec, *spec.cleanup):
            item = _forecast_or_done(each, types[each.uses], namespace, config, done)
            if item is not None:
                result.append(item)
    return result


def _forecast_or_done(
    spec: StepSpec, step_type: StepType, namespace: dict[str, Any], config: Config,
    done: Mapping[str, Mapping[str, object]],
) -> StepForecast | None:
    if spec.id in done:
        namespace["steps"][spec.id] = {"outputs": {**dict.fromkeys(step_type.outputs), **done[spec.id]}}
        return None
    item = _forecast_step(spec, step_type, namespace, config)
    namespace["steps"][spec.id] = {"outputs": _expected_outputs(item)}
    return item


def forecast_route(
    spec: StepSpec, route: Route, namespace: Mapping[str, Any], config: Config,
    done: Mapping[str, Mapping[str, object]] | None = None,
) -> RouteForecast:
    """One route of the choice `spec` with `namespace` as it is now; ruled out when its `when` is false or a
    step that will run cannot succeed. `namespace` is not changed."""
    types = step_types()
    scratch: dict[str, Any] = {**namespace, "steps": dict(namespace["steps"])}
    runs = _decide(route.when, scratch)
    if runs is False:
        return RouteForecast(route, False, route.skip_reason)
    allowed = scratch["inputs"].get(ALLOW_REBOOT)
    item = RouteForecast(route, runs, asks=route.reboots and not (isinstance(allowed, bool) and allowed))
    for step in route.steps:
        for each in (step, *step.cleanup):
            forecast_item = _forecast_or_done(each, types[each.uses], scratch, config, done or {})
            if forecast_item is not None:
                item.steps.append(forecast_item)
    problems = [f"{_where(s.spec)}: {p}" for s in item.steps if s.runs for p in s.problems]
    if problems:
        item.runs, item.reason = False, "not possible: " + "; ".join(dict.fromkeys(problems))
    return item


def _forecast_choice(
    spec: StepSpec, namespace: dict[str, Any], config: Config, done: Mapping[str, Mapping[str, object]]
) -> ChoiceForecast:
    """Each route, then the namespace after the choice: known where one route alone is left, else unknown."""
    item = ChoiceForecast(spec, runs=_decide(spec.when, namespace))
    if item.runs is not False:
        item.routes = [forecast_route(spec, route, namespace, config, done) for route in spec.routes]
    candidates = item.candidates
    single = candidates[0] if len(candidates) == 1 and candidates[0].runs else None
    types = step_types()
    for route in spec.routes:
        for step in route.steps:
            for each in (step, *step.cleanup):
                names = types[each.uses].outputs
                if each.id in done:
                    values: dict[str, object] = {**dict.fromkeys(names), **done[each.id]}
                elif single is not None and single.route is route:
                    found = next(s for s in single.steps if s.spec.id == each.id)
                    values = _expected_outputs(found)
                elif item.runs is False or not any(c.route is route for c in candidates):
                    values = dict.fromkeys(names)
                else:
                    values = {name: Unknown(f"<steps.{each.id}.outputs.{name}>") for name in names}
                namespace["steps"][each.id] = {"outputs": values}
    outputs: dict[str, object] = {name: Unknown(f"<steps.{spec.id}.outputs.{name}>") for name in spec.outputs}
    if item.runs is False:
        outputs = dict.fromkeys(spec.outputs)
    elif single is not None:
        outputs["route"] = single.route.id
        for name, text in single.route.outputs.items():
            with contextlib.suppress(templating.UndefinedReference):  # the runner says it, when it gets there
                outputs[name] = templating.render(templating.parse(text), namespace)
    namespace["steps"][spec.id] = {"outputs": outputs}
    return item


def check(
    playbook: Playbook,
    inputs: Mapping[str, object],
    secrets: Mapping[str, Secret | Unknown | None],
    config: Config,
    *,
    run: Mapping[str, object] | None = None,
    done: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Forecast]:
    """`forecast`, raising when a step that will run cannot succeed, or a choice has no possible route.

    Raises:
        PreflightError: every problem found, each naming the step and the value at fault.
    """
    steps = forecast(playbook, inputs, secrets, config, run=run, done=done)
    # One input used by several steps (the user name) is one problem, said once, at its first step.
    first: dict[str, Forecast] = {}
    for item in steps:
        for problem in item.problems if item.runs else ():
            first.setdefault(problem, item)
    problems = [f"{_where(item.spec)}: {problem}" for problem, item in first.items()]
    if problems:
        raise PreflightError(problems)
    return steps


_SECRET_REFERENCE = re.compile(r"\bsecrets\.([A-Za-z_][A-Za-z0-9_-]*)")


def secrets_in_use(playbook: Playbook, inputs: Mapping[str, object], config: Config) -> set[str]:
    """The declared secrets a run with these inputs uses: all but those whose every step will not run.

    A required secret is asked for only then: a playbook may offer two ways in, a console password or one
    set through the cloud (`-e set_password=true`), and the way its inputs turn off needs no secret. A
    secret no step refers to stays in use, as declared (a plugin may read it).
    """
    placeholders = {name: Secret(f"<{name}>", f"<{name}>") for name in playbook.secrets}
    used: set[str] = set()
    referenced: set[str] = set()
    for texts, runs in _references(forecast(playbook, inputs, placeholders, config)):
        names = {name for text in texts for name in _SECRET_REFERENCE.findall(text)}
        referenced |= names
        if runs:
            used |= names
    return used | (set(playbook.secrets) - referenced)


def _references(items: Sequence[Forecast]) -> list[tuple[list[str], bool]]:
    """The template texts of each step, choice and route, and whether it may run (a route of a choice too)."""
    result = []
    for item in items:
        result.append(([item.spec.when or "", *_texts(item.spec.params)], item.runs is not False))
        if isinstance(item, ChoiceForecast):
            for route in item.routes:
                may_run = item.runs is not False and route.runs is not False
                result.append(([route.route.when or "", *route.route.outputs.values()], may_run))
                result += [(texts, runs and may_run) for texts, runs in _references(route.steps)]
    return result


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _texts(item)]
    return []


def _forecast_step(spec: StepSpec, step_type: StepType, namespace: Mapping[str, Any], config: Config) -> StepForecast:
    item = StepForecast(spec, step_type, runs=_runs(spec, namespace))
    if item.runs is False:
        return item
    declared = {input_spec.name: input_spec for input_spec in step_type.inputs()}
    for name, input_spec in declared.items():
        if name not in spec.params:
            item.values[name] = input_spec.default
            continue
        raw = spec.params[name]
        origin = _origin(raw)
        try:
            value = templating.render_value(raw, namespace)
        except templating.UndefinedReference as exc:
            item.problems.append(f"with.{name}{origin}: {exc}")
            item.values[name] = Unknown(f"<{raw}>")
            continue
        if not isinstance(value, Unknown):
            try:
                value = coerce(value, input_spec.annotation)
            except InputTypeError as exc:
                item.problems.append(f"with.{name}{origin}: {exc}")
                value = Unknown(f"<{raw}>")
            else:
                problem = input_spec.check(value) if input_spec.check and value is not None else None
                if problem:
                    item.problems.append(f"with.{name}{origin}: {problem}")
        item.values[name] = value
    if step_type.check is not None:
        item.problems += step_type.check(item.values, config)
    return item


_ONE_INPUT = re.compile(r"\{\{\s*inputs\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")


def _where(spec: StepSpec) -> str:
    return f"step {spec.id} ({spec.uses}" + (f", line {spec.line})" if spec.line else ")")


def _origin(raw: object) -> str:
    """Where a value came from, in the words the user typed: `-e ssh_port`, or the template."""
    if not isinstance(raw, str) or "{{" not in raw:
        return ""
    single = _ONE_INPUT.fullmatch(raw.strip())
    return f" (-e {single.group(1)})" if single else f" (from {raw})"


def _runs(spec: StepSpec, namespace: Mapping[str, Any]) -> bool | None:
    return _decide(spec.when, namespace)


def _decide(when: str | None, namespace: Mapping[str, Any]) -> bool | None:
    if when is None:
        return True
    try:
        decided = templating.render(templating.parse(when), namespace)
    except templating.UndefinedReference:
        return None  # the runner reports it, with the step, when it gets there
    return None if isinstance(decided, Unknown) else bool(decided)


def _expected_outputs(item: StepForecast) -> dict[str, object]:
    """Null for a step that will not run (as the runner does), else what `predict` knows, else Unknown."""
    names = item.step_type.outputs
    if item.runs is False:
        return dict.fromkeys(names)
    outputs: dict[str, object] = {name: Unknown(f"<steps.{item.spec.id}.outputs.{name}>") for name in names}
    if item.runs and item.step_type.predict is not None:
        outputs.update(item.step_type.predict(item.values))
    return outputs

