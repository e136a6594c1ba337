"""`--dry-run`: the plan, with every value rendered as far as it can be and secrets masked.

The plan is the pre-flight's forecast (`recovery.engine.preflight`), so a dry run refuses
exactly what the real run would refuse, and shows what the real run would do:
outputs of earlier steps do not exist yet and appear as `<steps.ID.outputs.NAME>`,
unless the step declares them in advance (typed inline, there is no URL, so the
plan shows the inline command the real run types). Steps that type into the
console show the exact lines they would type.

A `choose:` step shows its routes in the order they are tried, each with its steps, or
the reason it is skipped (its `when` is false, a step of it cannot succeed), and whether
it reboots and will be asked about.

`render_plan` writes it for people; `plan_document` gives the same plan as one JSON
object (with a `schema` version) for programs. Both read one forecast, so they cannot
disagree about a value, a `when` or a typed line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery.engine import preflight
from recovery.engine.config import Config
from recovery.engine.playbook import Playbook
from recovery.engine.registry import InputTypeError, build_params, describe_type
from recovery.engine.templating import Unknown
from recovery.safety.redact import Secret

SCHEMA = 1
"""Version of the JSON plan; raised when a key changes meaning or disappears."""


def render_plan(playbook: Playbook, inputs: Mapping[str, object], config: Config) -> str:
    """The dry-run text: steps in the order they would run, cleanup and always phases included.

    Raises:
        PreflightError: the same problems the real run would stop at, before changing anything.
    """
    phases = _phases(playbook, inputs, config)
    lines = [f"Plan for {playbook.path} (dry run: nothing is changed)", ""]
    for number, item in enumerate(phases["main"], start=1):
        lines += _describe(number, item)
    if phases["cleanup"]:
        lines.append("Cleanup, newest first, also after a failure:")
        for item in phases["cleanup"]:
            lines += _describe(None, item)
    if phases["always"]:
        lines.append("Always, whatever happened:")
        for item in phases["always"]:
            lines += _describe(None, item)
    return "\n".join(lines)


def plan_document(playbook: Playbook, inputs: Mapping[str, object], config: Config) -> dict[str, Any]:
    """The dry run as one JSON-ready object: the steps of each phase in the order they would run.

    Each step has its `when` and the decision (`runs`: true, false, or null when decided at
    run time), its rendered `with:` values (secrets and values not known yet as their labels,
    as the text plan shows them) and, for a step that types into the console, `would_type`.

    Raises:
        PreflightError: as `render_plan`.
    """
    phases = _phases(playbook, inputs, config)
    return {
        "schema": SCHEMA,
        "playbook": str(playbook.path),
        "dry_run": True,
        "steps": [_step_json(phase, item) for phase, items in phases.items() for item in items],
    }


def _phases(
    playbook: Playbook, inputs: Mapping[str, object], config: Config
) -> dict[str, list[preflight.Forecast]]:
    """Forecasts of the main steps, the cleanup steps (newest first) and the `always` steps, in run order."""
    # A plan reads no secret: a required one will be there; whether an optional one will is not known (a route
    # that needs it is then "decided at run time", not promised).
    secrets: dict[str, Secret | Unknown] = {
        name: Secret(f"<{name}>", f"<{name}>") if decl.required else Unknown(f"<{name}>")
        for name, decl in playbook.secrets.items()
    }
    forecasts = {item.spec.id: item for item in preflight.check(playbook, inputs, secrets, config)}
    main = [s for s in playbook.steps if not s.always]
    return {
        "main": [forecasts[spec.id] for spec in main],
        "cleanup": [forecasts[c.id] for c in reversed([c for s in main for c in s.cleanup])],
        "always": [forecasts[spec.id] for spec in playbook.steps if spec.always],
    }


def _step_json(phase: str, item: preflight.Forecast) -> dict[str, Any]:
    spec = item.spec
    if isinstance(item, preflight.ChoiceForecast):
        return {
            "id": spec.id, "uses": spec.uses, "title": spec.title, "phase": phase, "when": spec.when,
            "runs": item.runs,
            "routes": [
                {"id": route.route.id, "title": route.route.title, "when": route.route.when, "runs": route.runs,
                 "reason": route.reason, "reboots": route.route.reboots, "asks": route.asks,
                 "steps": [_step_json(phase, step) for step in route.steps]}
                for route in item.routes
            ],
        }
    data: dict[str, Any] = {
        "id": spec.id, "uses": spec.uses, "title": spec.title, "phase": phase, "when": spec.when, "runs": item.runs,
    }
    if item.runs is False:
        data.update({"with": {}, "would_type": None})
        return data
    shown = _shown_values(item)
    data["with"] = {name: _json_value(shown[name]) for name in spec.params}
    data["would_type"] = _typed(item, shown)
    return data


def _json_value(value: object) -> object:
    """A value as JSON shows it: a secret or anything else not plain data by its text, which is masked."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _describe(number: int | None, item: preflight.Forecast) -> list[str]:
    if isinstance(item, preflight.ChoiceForecast):
        return _describe_choice(number or 0, item)
    spec = item.spec
    head = f"{number}. " if number is not None else "- "
    out = [f"{head}{spec.id}: {spec.uses} — {spec.title}"]
    if spec.when:
        decided = {True: "runs", False: "skipped", None: "decided at run time"}[item.runs]
        out.append(f"     when: {spec.when} → {decided}")
    if item.runs is False:
        out.append("")
        return out
    shown = _shown_values(item)
    for name in spec.params:
        out.append(f"     {name}: {shown[name]}")
    typed = _typed(item, shown)
    if typed is not None:
        out.append("     would type:")
        out += [f"       | {line}" for line in typed]
    out.append("")
    return out


def _describe_choice(number: int, item: preflight.ChoiceForecast) -> list[str]:
    spec = item.spec
    out = [f"{number}. {spec.id}: choose — {spec.title}"]
    if spec.when:
        decided = {True: "runs", False: "skipped", None: "decided at run time"}[item.runs]
        out.append(f"     when: {spec.when} → {decided}")
    if item.runs is False:
        return [*out, ""]
    out.append("     routes, in order: the first that is possible runs; a route is left for the next only when a "
               "probe step finds it not possible, before it changed anything")
    first = next(iter(item.candidates), None)
    for letter, route in zip("abcdefghijklmnopqrstuvwxyz", item.routes, strict=False):
        if route.runs is False:
            verdict = f"skipped: {route.reason}"
        else:
            verdict = "tried first" if route is first else "tried if the ones before it are not possible"
            if route.runs is None:
                verdict += f", if at run time {route.route.when} holds"
        if route.asks:
            verdict += "; it reboots the VM: asked on a terminal, else skipped (-e allow_reboot=true to allow it)"
        out.append(f"   {letter}) route {route.route.id} — {route.route.title}: {verdict}")
        if route.runs is not False:
            for step in route.steps:
                out += [f"     {line}" if line else line for line in _describe(None, step)]
    out.append("")
    return out


def _shown_values(item: preflight.StepForecast) -> dict[str, object]:
    annotations = {input_spec.name: input_spec.annotation for input_spec in item.step_type.inputs()}
    return {name: _shown(item.values[name], annotations[name]) for name in item.values}


def _typed(item: preflight.StepForecast, shown: Mapping[str, object]) -> list[str] | None:
    """The lines the step would type into the console; None for a step that types nothing."""
    if item.step_type.preview is None:
        return None
    try:
        return item.step_type.preview(build_params(item.step_type, shown))
    except (InputTypeError, ValueError) as exc:
        return [f"<cannot show the typed lines: {exc}>"]


def _shown(value: object, annotation: object) -> object:
    """A value not known yet is shown by its label; one that will be a secret (a signed URL) stays one."""
    if not isinstance(value, Unknown):
        return value
    if describe_type(annotation).startswith("secret"):
        return Secret(value.label, value.label)
    return value.label
