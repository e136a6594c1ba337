"""`--dry-run`: the plan, with every value rendered as far as it can be and secrets masked.

Outputs of earlier steps do not exist yet, so they appear as `<steps.ID.outputs.NAME>`.
Steps that type into the console show the exact lines they would type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery import templating
from recovery.playbook import Playbook, StepSpec
from recovery.redact import Secret
from recovery.registry import InputTypeError, build_params, describe_type, step_types


def _namespace(playbook: Playbook, inputs: Mapping[str, object]) -> dict[str, Any]:
    """Inputs and masked secrets as given; each step's outputs a placeholder, or null if skipped."""
    namespace: dict[str, Any] = {
        "inputs": dict(inputs),
        "secrets": {name: Secret(f"<{name}>", f"<{name}>") for name in playbook.secrets},
        "steps": {},
        "run": {"id": "<run id>", "dir": "<run dir>"},
    }
    for spec in playbook.all_steps():
        names = step_types()[spec.uses].outputs
        skipped = spec.when is not None and _when(spec.when, namespace) == "skipped"
        namespace["steps"][spec.id] = {
            "outputs": {name: None if skipped else f"<steps.{spec.id}.outputs.{name}>" for name in names}
        }
    return namespace


def render_plan(playbook: Playbook, inputs: Mapping[str, object]) -> str:
    """The dry-run text: steps in the order they would run, cleanup and always phases included."""
    namespace = _namespace(playbook, inputs)
    lines = [f"Plan for {playbook.path} (dry run: nothing is changed)", ""]
    main = [s for s in playbook.steps if not s.always]
    always = [s for s in playbook.steps if s.always]
    for number, spec in enumerate(main, start=1):
        lines += _describe(number, spec, namespace)
    cleanup = [c for s in main for c in s.cleanup]
    if cleanup:
        lines.append("Cleanup, newest first, also after a failure:")
        for spec in reversed(cleanup):
            lines += _describe(None, spec, namespace)
    if always:
        lines.append("Always, whatever happened:")
        for spec in always:
            lines += _describe(None, spec, namespace)
    return "\n".join(lines)


def _describe(number: int | None, spec: StepSpec, namespace: Mapping[str, Any]) -> list[str]:
    step_type = step_types()[spec.uses]
    head = f"{number}. " if number is not None else "- "
    out = [f"{head}{spec.id}: {spec.uses} — {spec.title}"]
    if spec.when:
        out.append(f"     when: {spec.when} → {_when(spec.when, namespace)}")
    rendered: dict[str, object] = {}
    annotations = {spec.name: spec.annotation for spec in step_type.inputs()}
    for name, value in spec.params.items():
        try:
            rendered[name] = _placeholder_fit(templating.render_value(value, namespace), annotations.get(name))
        except templating.UndefinedReference as exc:
            rendered[name] = f"<cannot render: {exc}>"
        out.append(f"     {name}: {rendered[name]}")
    if step_type.preview is not None:
        try:
            typed = step_type.preview(build_params(step_type, rendered))
        except (InputTypeError, ValueError) as exc:
            typed = [f"<cannot show the typed lines: {exc}>"]
        out.append("     would type:")
        out += [f"       | {line}" for line in typed]
    out.append("")
    return out


def _placeholder_fit(value: object, annotation: object) -> object:
    """A placeholder for an output that will be a secret (a signed URL) is shown as one."""
    placeholder = isinstance(value, str) and value.startswith("<steps.")
    if placeholder and annotation is not None and describe_type(annotation).startswith("secret"):
        return Secret(str(value), str(value))
    return value


def _when(text: str, namespace: Mapping[str, Any]) -> str:
    try:
        value = templating.render(templating.parse(text), namespace)
    except templating.UndefinedReference:
        return "decided at run time"
    return "runs" if value and not (isinstance(value, str) and value.startswith("<steps.")) else "skipped"

