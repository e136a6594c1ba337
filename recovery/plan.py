"""`--dry-run`: the plan, with every value rendered as far as it can be and secrets masked.

The plan is the pre-flight's forecast (`recovery.preflight`), so a dry run refuses
exactly what the real run would refuse, and shows what the real run would do:
outputs of earlier steps do not exist yet and appear as `<steps.ID.outputs.NAME>`,
unless the step declares them in advance (typed inline, there is no URL, so the
plan shows the inline command the real run types). Steps that type into the
console show the exact lines they would type.
"""

from __future__ import annotations

from collections.abc import Mapping

from recovery import preflight
from recovery.config import Config
from recovery.playbook import Playbook
from recovery.redact import Secret
from recovery.registry import InputTypeError, build_params, describe_type
from recovery.templating import Unknown


def render_plan(playbook: Playbook, inputs: Mapping[str, object], config: Config) -> str:
    """The dry-run text: steps in the order they would run, cleanup and always phases included.

    Raises:
        PreflightError: the same problems the real run would stop at, before changing anything.
    """
    secrets = {name: Secret(f"<{name}>", f"<{name}>") for name in playbook.secrets}
    forecasts = {item.spec.id: item for item in preflight.check(playbook, inputs, secrets, config)}
    lines = [f"Plan for {playbook.path} (dry run: nothing is changed)", ""]
    main = [s for s in playbook.steps if not s.always]
    always = [s for s in playbook.steps if s.always]
    for number, spec in enumerate(main, start=1):
        lines += _describe(number, forecasts[spec.id])
    cleanup = [c for s in main for c in s.cleanup]
    if cleanup:
        lines.append("Cleanup, newest first, also after a failure:")
        for spec in reversed(cleanup):
            lines += _describe(None, forecasts[spec.id])
    if always:
        lines.append("Always, whatever happened:")
        for spec in always:
            lines += _describe(None, forecasts[spec.id])
    return "\n".join(lines)


def _describe(number: int | None, item: preflight.StepForecast) -> list[str]:
    spec, step_type = item.spec, item.step_type
    head = f"{number}. " if number is not None else "- "
    out = [f"{head}{spec.id}: {spec.uses} — {spec.title}"]
    if spec.when:
        decided = {True: "runs", False: "skipped", None: "decided at run time"}[item.runs]
        out.append(f"     when: {spec.when} → {decided}")
    if item.runs is False:
        out.append("")
        return out
    annotations = {input_spec.name: input_spec.annotation for input_spec in step_type.inputs()}
    shown = {name: _shown(item.values[name], annotations[name]) for name in item.values}
    for name in spec.params:
        out.append(f"     {name}: {shown[name]}")
    if step_type.preview is not None:
        try:
            typed = step_type.preview(build_params(step_type, shown))
        except (InputTypeError, ValueError) as exc:
            typed = [f"<cannot show the typed lines: {exc}>"]
        out.append("     would type:")
        out += [f"       | {line}" for line in typed]
    out.append("")
    return out


def _shown(value: object, annotation: object) -> object:
    """A value not known yet is shown by its label; one that will be a secret (a signed URL) stays one."""
    if not isinstance(value, Unknown):
        return value
    if describe_type(annotation).startswith("secret"):
        return Secret(value.label, value.label)
    return value.label
